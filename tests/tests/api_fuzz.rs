//! Every service's OpenAPI document is exercised by a property-based API fuzzer
//! (schemathesis, installed by `scripts/test`) against the running services: no request
//! may get a 5xx, and every status and content type a route answers must be the ones its
//! document names (errors as problem+json). A request a service rejects writes nothing:
//! `tests/fuzz/write_guard.py` reads, through a row trigger on every table, what was
//! written to the service's database while the request ran.

use std::process::Command;

use orderflow_e2e::{SERVICES, Stack, put_account, put_product};
use sqlx::{Connection, PgConnection};

/// The checks that are about the service, not about the fuzzer's guesses: positive-data
/// acceptance is left out because JSON Schema calls 1.0 an integer and serde does not.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,\
                      rejected_request_wrote_nothing";

/// Makes every row written to any table of `database_url` append one row, naming the
/// table, the operation and the transaction, to `fuzz_rows_written`, which the fuzzer's hook
/// reads around each request.
async fn log_rows_written(database_url: &str) {
    let mut db = PgConnection::connect(database_url).await.unwrap();
    let statements = [
        "CREATE TABLE fuzz_rows_written (
             id BIGSERIAL PRIMARY KEY,
             table_name TEXT NOT NULL,
             operation TEXT NOT NULL,
             transaction_id BIGINT NOT NULL DEFAULT txid_current()
         )",
        "CREATE FUNCTION fuzz_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO fuzz_rows_written (table_name, operation) VALUES (TG_TABLE_NAME, TG_OP);
             RETURN NULL;
         END $$",
        "DO $$
         DECLARE t regclass;
         BEGIN
             FOR t IN SELECT c.oid::regclass FROM pg_class c
                      JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relkind = 'r' AND n.nspname = 'public'
                        AND c.relname <> 'fuzz_rows_written'
             LOOP
                 EXECUTE format('CREATE TRIGGER fuzz_log_row AFTER INSERT OR UPDATE OR DELETE
                                 ON %s FOR EACH ROW EXECUTE FUNCTION fuzz_log_row()', t);
             END LOOP;
         END $$",
    ];
    for statement in statements {
        sqlx::raw_sql(statement).execute(&mut db).await.unwrap();
    }
}

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
    for name in SERVICES {
        log_rows_written(&stack.service(name).database_url).await;
    }
    let hooks_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz");
    // An operator's token: every route is reachable, so the fuzzer gets past 401 and 403
    // (which `authorization.rs` tests route by route).
    let authorization = format!(
        "Authorization: Bearer {}",
        orderflow_e2e::auth::admin_token(orderflow_e2e::auth::OPERATOR)
    );
    let mut failures = Vec::new();
    for name in SERVICES {
        let url = format!("{}/openapi.json", stack.url(name));
        // A request writes synchronously only to its own service's database (services talk
        // to each other only through the outbox, which is in that database too).
        let database_url = stack.service(name).database_url.clone();
        let output = tokio::process::Command::new("schemathesis")
            .args(["run", &url, "--checks", CHECKS, "--max-examples", "40"])
            .args(["--no-color", "--suppress-health-check", "all"])
            .args(["--header", &authorization])
            .env("PYTHONPATH", hooks_dir)
            .env("SCHEMATHESIS_HOOKS", "write_guard")
            .env("FUZZ_DATABASE_URL", database_url)
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
