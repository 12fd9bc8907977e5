//! Every string a request body may carry has a bound in the service's OpenAPI document, and
//! the service holds to it: one character over is a 422 naming the field, never a value
//! copied into the history, the read model, Kafka and the other services.

use orderflow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Ctx, Run, seed};

/// A valid request of each operation that takes a body, to break one field at a time.
struct Operation {
    service: &'static str,
    method: Method,
    /// As the OpenAPI document names it.
    template: &'static str,
    path: String,
    body: Value,
}

/// A string field of a request body: its path as the services name it in a 422
/// (`items[0].product_id`) and its documented `maxLength`, if any.
#[derive(Debug)]
struct StringField {
    path: String,
    max_length: Option<u64>,
}

pub(super) fn every_documented_string_bound_is_checked(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (products, customers) = seed(stack, "bounds", &[(100, 50)], &[100_000]).await;
        let fresh = || {
            format!(
                "bounds-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            )
        };
        let operations = [
            Operation {
                service: "order-service",
                method: Method::POST,
                template: "/orders",
                path: "/orders".into(),
                body: json!({
                    "customer_id": customers[0], "currency": "EUR", "note": "leave at the door",
                    "items": [{"product_id": products[0], "quantity": 1}],
                    "shipping_address": {"recipient": "Bounds", "line1": "1 Long Road",
                        "line2": "Flat 2", "city": "Testville", "postal_code": "12345",
                        "country": "DE"},
                }),
            },
            Operation {
                service: "order-service",
                method: Method::POST,
                template: "/orders/{order_id}/cancel",
                path: format!("/orders/{}/cancel", uuid::Uuid::new_v4()),
                body: json!({"reason": "changed my mind"}),
            },
            Operation {
                service: "inventory-service",
                method: Method::PUT,
                template: "/products/{product_id}",
                path: format!("/products/{}", fresh()),
                body: json!({"name": "Bounds", "unit_price_minor": 100, "currency": "EUR",
                             "available": 1}),
            },
            Operation {
                service: "billing-service",
                method: Method::PUT,
                template: "/accounts/{customer_id}",
                path: format!("/accounts/{}", fresh()),
                body: json!({"currency": "EUR", "credit_limit_minor": 0}),
            },
        ];
        let mut failures = Vec::new();
        let mut checked = 0;
        for operation in &operations {
            let fields = documented_string_fields(stack, operation).await;
            assert!(
                !fields.is_empty(),
                "{}: no string field",
                operation.template
            );
            for field in fields {
                let what = format!(
                    "{} {}: {}",
                    operation.method, operation.template, field.path
                );
                let Some(max_length) = field.max_length else {
                    failures.push(format!("{what}: no maxLength in the OpenAPI document"));
                    continue;
                };
                let mut body = operation.body.clone();
                *pointer(&mut body, &field.path) = json!("x".repeat(max_length as usize + 1));
                let url = format!("{}{}", stack.url(operation.service), operation.path);
                let response = orderflow_e2e::http()
                    .request(operation.method.clone(), url)
                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                let named = problem["errors"]
                    .as_array()
                    .is_some_and(|errors| errors.iter().any(|e| e["field"] == *field.path));
                if status != StatusCode::UNPROCESSABLE_ENTITY || !named {
                    failures.push(format!(
                        "{what}: {} characters answered {status}, not a 422 naming the field: {problem}",
                        max_length + 1
                    ));
                }
                checked += 1;
            }
        }
        println!("{checked} string fields checked one character over their bound");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
}

/// The string fields of `operation`'s request body, as its service's OpenAPI document
/// describes them.
/// Identifiers in URL paths are bounded too, and one over the bound is a 400 that does not
/// repeat it. Before, inventory and billing looked up any string and echoed it in the 404
/// (and logged it), megabytes or control characters included.
pub(super) fn path_identifiers_are_bounded_and_never_echoed(ctx: &Ctx) -> Run<'_> {
    Box::pin(async move {
        let stack = &ctx.0;
        let (long_product, long_customer) = ("p".repeat(65), "c".repeat(201));
        for (service, path, value) in [
            ("inventory-service", "/products", &long_product),
            ("billing-service", "/accounts", &long_customer),
            ("inventory-service", "/products", &"bad%0Aline".to_owned()),
            ("billing-service", "/accounts", &"bad%1B%5B31m".to_owned()),
        ] {
            let url = format!("{}{path}/{value}", stack.url(service));
            for method in [Method::GET, Method::PUT] {
                let response = orderflow_e2e::http()
                    .request(method.clone(), &url)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {url}: {body}");
                let repeated = value.replace("%0A", "\\n").replace("%1B%5B", "\\u001b[");
                assert!(
                    !body.contains(value.as_str()) && !body.contains(&repeated),
                    "{method} {url} repeats the id: {body}"
                );
            }
        }
    })
}

async fn documented_string_fields(stack: &Stack, operation: &Operation) -> Vec<StringField> {
    let url = format!("{}/openapi.json", stack.url(operation.service));
    let document: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let method = operation.method.as_str().to_lowercase();
    let schema = &document["paths"][operation.template][&method]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert!(
        !schema.is_null(),
        "{url}: no body for {method} {}",
        operation.template
    );
    let mut fields = Vec::new();
    collect(&document, schema, String::new(), &mut fields);
    fields
}

fn collect(document: &Value, schema: &Value, path: String, fields: &mut Vec<StringField>) {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return collect(
            document,
            &document["components"]["schemas"][name],
            path,
            fields,
        );
    }
    for alternative in ["oneOf", "anyOf", "allOf"] {
        for schema in schema[alternative].as_array().into_iter().flatten() {
            collect(document, schema, path.clone(), fields);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"string") {
        fields.push(StringField {
            path: path.clone(),
            max_length: schema["maxLength"].as_u64(),
        });
    }
    if types.contains(&"array") {
        collect(document, &schema["items"], format!("{path}[0]"), fields);
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        collect(document, property, path, fields);
    }
}

/// The value at `path` (`a.b[0].c`) of `body`, which must hold it.
fn pointer<'v>(body: &'v mut Value, path: &str) -> &'v mut Value {
    let pointer: String = path
        .split('.')
        .map(|segment| match segment.split_once('[') {
            Some((name, index)) => format!("/{name}/{}", index.trim_end_matches(']')),
            None => format!("/{segment}"),
        })
        .collect();
    body.pointer_mut(&pointer)
        .unwrap_or_else(|| panic!("{path} is not in the body"))
}
