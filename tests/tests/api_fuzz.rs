//! Every service's OpenAPI document is exercised by a property-based API fuzzer
//! (schemathesis, installed by `scripts/test`) against the running services: no request
//! may get a 5xx, and every status and content type a route answers must be the ones its
//! document names (errors as problem+json).

use std::process::Command;

use orderflow_e2e::{SERVICES, Stack, put_account, put_product};

/// The checks that are about the service, not about the fuzzer's guesses: positive-data
/// acceptance is left out because JSON Schema calls 1.0 an integer and serde does not.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance";

#[tokio::test]
async fn no_generated_request_gets_a_5xx_or_an_undocumented_answer() {
    let version = Command::new("schemathesis").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "schemathesis is missing: python3 -m pip install schemathesis (scripts/test does)"
    );
    let mut stack = Stack::start("fuzz", &[]).await;
    // Something to find, so that reads and cancels get past 404.
    put_product(&stack, "fuzz-product", 250, 1_000).await;
    put_account(&stack, "fuzz-customer", 1_000_000).await;
    let mut failures = Vec::new();
    for name in SERVICES {
        let url = format!("{}/openapi.json", stack.url(name));
        let output = tokio::process::Command::new("schemathesis")
            .args(["run", &url, "--checks", CHECKS, "--max-examples", "40"])
            .args(["--no-color", "--suppress-health-check", "all"])
            .output()
            .await
            .unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{name}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
    }
    stack.stop_all().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
