//! How the codec treats a failed schema lookup: only the registry's own "schema not found"
//! (40403) makes a record poison, it is believed for a few seconds and not for the life of
//! the process, and anything else (a proxy's 404 while the registry restarts) is transient.
//! Each test runs its own dev registry in-process, so its schema ids are predictable.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use shared_events::codec::{DecodeError, REMEMBERED_IDS, UNKNOWN_ID_RECHECK, subject_name};
use shared_events::contracts::Contract;
use shared_events::{RegistryCodec, RegistryConfig, TopicNames};
use support::sample_order_placed;
use uuid::Uuid;

/// A dev registry on a free port; while `unrouted` is set, lookups by id get the 404 page a
/// proxy answers when its backend is away.
struct Registry {
    url: String,
    unrouted: Arc<AtomicBool>,
}

impl Registry {
    async fn start() -> Self {
        let unrouted = Arc::new(AtomicBool::new(false));
        let switch = unrouted.clone();
        let app = schema_registry_dev::app(schema_registry_dev::Store::open(None).unwrap()).layer(
            middleware::from_fn(move |request: Request, next: Next| {
                let unrouted = switch.load(Ordering::SeqCst);
                async move {
                    if unrouted && request.uri().path().starts_with("/schemas/ids/") {
                        return (StatusCode::NOT_FOUND, "<html>no route to backend</html>")
                            .into_response();
                    }
                    next.run(request).await
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, unrouted }
    }

    async fn codec(&self) -> RegistryCodec {
        let config = RegistryConfig::at(self.url.clone(), true);
        RegistryCodec::connect(&config, &TopicNames::new("lookups-"))
            .await
            .unwrap()
    }

    /// The id the registry will give the next new schema (ids count up from 1).
    async fn next_id(&self) -> u32 {
        let mut id = 1;
        while reqwest::get(format!("{}/schemas/ids/{id}", self.url))
            .await
            .unwrap()
            .status()
            .is_success()
        {
            id += 1;
        }
        id
    }

    async fn register(&self, subject: &str, schema: &str) -> u32 {
        let response: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/subjects/{subject}/versions", self.url))
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        response["id"].as_u64().unwrap() as u32
    }
}

/// A real record's bytes with its schema id replaced by `id`.
async fn with_schema_id(codec: &RegistryCodec, id: u32) -> Vec<u8> {
    let mut bytes = codec
        .encode(&sample_order_placed(Uuid::now_v7()))
        .await
        .unwrap();
    bytes[1..5].copy_from_slice(&id.to_be_bytes());
    bytes
}

#[tokio::test]
async fn an_id_registered_after_a_record_named_it_is_found_again() {
    let registry = Registry::start().await;
    let codec = registry.codec().await;
    let late = registry.next_id().await;
    let record = with_schema_id(&codec, late).await;

    let first = codec.decode(Some(&record)).await.unwrap_err();
    assert!(
        matches!(first, DecodeError::UnknownSchemaId { id, .. } if id == late),
        "{first}"
    );
    let registered = registry
        .register(
            "late-value",
            r#"{"type": "record", "name": "Late", "namespace": "test", "fields": []}"#,
        )
        .await;
    assert_eq!(registered, late);
    tokio::time::sleep(UNKNOWN_ID_RECHECK).await;

    // Found now: under a subject that is no orderflow contract's.
    let second = codec.decode(Some(&record)).await.unwrap_err();
    assert!(
        matches!(&second, DecodeError::NotAContractSubject { id, subjects, .. }
            if *id == late && subjects == &["late-value"]),
        "{second}"
    );
}

/// A version registered under OrderPlaced's own subject (the registry finds it compatible:
/// a new field with a default) whose new field is `array<array<null>>`: an 808-byte record
/// of it would decode to half a gigabyte. The schema is refused before any record is read.
#[tokio::test]
async fn a_harmful_version_under_a_contract_s_own_subject_is_not_decoded() {
    let registry = Registry::start().await;
    let codec = registry.codec().await;
    let contract = Contract::by_event_type("OrderPlaced").unwrap();
    let mut schema: serde_json::Value = serde_json::from_str(contract.schema_json).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "name": "bomb", "default": [],
            "type": {"type": "array", "items": {"type": "array", "items": "null"}},
        }));
    let subject = subject_name(&TopicNames::new("lookups-"), contract);
    let id = registry.register(&subject, &schema.to_string()).await;
    let record = with_schema_id(&codec, id).await;

    let error = codec.decode(Some(&record)).await.unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnsafeSchema { reason, .. } if reason.contains("take no bytes")),
        "{error}"
    );
}

/// Records naming ever new schema ids: each costs one registry question, and the codec
/// remembers at most REMEMBERED_IDS answers.
#[tokio::test]
async fn the_schema_ids_remembered_are_bounded() {
    let registry = Registry::start().await;
    let codec = registry.codec().await;
    let first_unknown = registry.next_id().await;
    for id in first_unknown..first_unknown + REMEMBERED_IDS as u32 + 100 {
        let record = with_schema_id(&codec, id).await;
        let error = codec.decode(Some(&record)).await.unwrap_err();
        assert!(
            matches!(error, DecodeError::UnknownSchemaId { .. }),
            "{error}"
        );
    }
    assert!(codec.remembered_ids() <= REMEMBERED_IDS);
    // The contracts' own ids are still decoded.
    let event = codec
        .decode(Some(&with_schema_id(&codec, 1).await))
        .await
        .unwrap();
    assert_eq!(event.event_type(), "OrderPlaced");
}

#[tokio::test]
async fn a_404_that_is_not_the_registrys_schema_not_found_is_transient() {
    let registry = Registry::start().await;
    let codec = registry.codec().await;
    let record = codec
        .encode(&sample_order_placed(Uuid::now_v7()))
        .await
        .unwrap();

    registry.unrouted.store(true, Ordering::SeqCst);
    let error = codec.decode(Some(&record)).await.unwrap_err();
    assert!(error.is_transient(), "{error}");

    registry.unrouted.store(false, Ordering::SeqCst);
    let event = codec.decode(Some(&record)).await.unwrap();
    assert_eq!(event.event_type(), "OrderPlaced");
}
