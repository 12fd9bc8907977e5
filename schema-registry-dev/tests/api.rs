//! The dev registry's REST API against Confluent's shapes and codes, over real HTTP.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Registry {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Registry {
    async fn start(data_file: &Path) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let data_file = data_file.to_path_buf();
        let server = tokio::spawn(async move {
            schema_registry_dev::run(listener, Some(&data_file), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap();
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            "PUT" => client.put(url),
            other => panic!("unsupported method {other}"),
        };
        let request = match body {
            Some(body) => request
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(body.to_string()),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "application/vnd.schemaregistry.v1+json"
        );
        (status, response.json().await.unwrap())
    }

    async fn register(&self, subject: &str, schema: &Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/subjects/{subject}/versions"),
            Some(json!({ "schema": schema.to_string() })),
        )
        .await
    }
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("schema-registry-dev-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}-{}", std::process::id())
}

fn heartbeat(extra_fields: Vec<Value>) -> Value {
    let mut fields = vec![json!({"name": "beat", "type": "long"})];
    fields.extend(extra_fields);
    json!({"type": "record", "name": "Heartbeat", "namespace": "test", "fields": fields})
}

#[tokio::test]
async fn the_same_schema_registered_twice_gets_the_same_id_even_under_another_subject() {
    let registry = Registry::start(&temp_file("same-id.json")).await;
    let (status, first) = registry.register("a-value", &heartbeat(vec![])).await;
    assert_eq!(status, 200);
    let (_, again) = registry.register("a-value", &heartbeat(vec![])).await;
    let (_, elsewhere) = registry.register("b-value", &heartbeat(vec![])).await;
    assert_eq!(first, again);
    assert_eq!(first, elsewhere);
    assert_eq!(
        registry
            .call("GET", "/subjects/a-value/versions", None)
            .await
            .1,
        json!([1])
    );
    assert_eq!(
        registry.call("GET", "/subjects", None).await.1,
        json!(["a-value", "b-value"])
    );
    registry.stop().await;
}

#[tokio::test]
async fn registered_ids_survive_a_restart() {
    let file = temp_file("restart.json");
    let registry = Registry::start(&file).await;
    registry.register("a-value", &heartbeat(vec![])).await;
    let (_, v2) = registry
        .register(
            "a-value",
            &heartbeat(vec![
                json!({"name": "note", "type": "string", "default": ""}),
            ]),
        )
        .await;
    registry.stop().await;

    let restarted = Registry::start(&file).await;
    let (status, latest) = restarted
        .call("GET", "/subjects/a-value/versions/latest", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(latest["id"], v2["id"]);
    assert_eq!(latest["version"], 2);
    assert_eq!(latest["subject"], "a-value");
    let (status, by_id) = restarted
        .call("GET", &format!("/schemas/ids/{}", v2["id"]), None)
        .await;
    assert_eq!(status, 200);
    assert!(by_id["schema"].as_str().unwrap().contains("note"));
    let (status, listed) = restarted
        .call("GET", &format!("/schemas/ids/{}/versions", v2["id"]), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed, json!([{"subject": "a-value", "version": 2}]));
    let (_, again) = restarted.register("a-value", &heartbeat(vec![])).await;
    assert_eq!(
        again["id"], 1,
        "the old schema keeps its id after the restart"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn lookups_and_errors_use_confluent_codes() {
    let registry = Registry::start(&temp_file("errors.json")).await;
    let (_, id) = registry.register("a-value", &heartbeat(vec![])).await;

    let (status, found) = registry
        .call(
            "POST",
            "/subjects/a-value",
            Some(json!({"schema": heartbeat(vec![]).to_string()})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (found["id"].clone(), found["version"].clone()),
        (id["id"].clone(), json!(1))
    );

    let cases = [
        ("GET", "/subjects/missing/versions", None, 404, 40401),
        ("GET", "/subjects/a-value/versions/9", None, 404, 40402),
        ("GET", "/schemas/ids/999", None, 404, 40403),
        ("GET", "/schemas/ids/999/versions", None, 404, 40403),
        (
            "POST",
            "/subjects/a-value",
            Some(
                json!({"schema": heartbeat(vec![json!({"name": "x", "type": "int"})]).to_string()}),
            ),
            404,
            40403,
        ),
        (
            "POST",
            "/subjects/a-value/versions",
            Some(json!({"schema": "{\"type\": \"nonsense\"}"})),
            422,
            42201,
        ),
        ("GET", "/subjects/a-value/versions/abc", None, 422, 42202),
        (
            "PUT",
            "/config",
            Some(json!({"compatibility": "SIDEWAYS"})),
            422,
            42203,
        ),
        ("GET", "/config/a-value", None, 404, 40408),
    ];
    for (method, path, body, status, code) in cases {
        let (got_status, got) = registry.call(method, path, body).await;
        assert_eq!(
            (got_status, got["error_code"].clone()),
            (status, json!(code)),
            "{method} {path}: {got}"
        );
        assert!(got["message"].is_string());
    }
    registry.stop().await;
}

#[tokio::test]
async fn compatibility_is_backward_by_default_and_configurable_per_subject() {
    let registry = Registry::start(&temp_file("compat.json")).await;
    assert_eq!(
        registry.call("GET", "/config", None).await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    registry.register("a-value", &heartbeat(vec![])).await;
    let without_default = heartbeat(vec![json!({"name": "required", "type": "string"})]);
    let with_default = heartbeat(vec![
        json!({"name": "optional", "type": "string", "default": "x"}),
    ]);

    let check = |schema: &Value| json!({"schema": schema.to_string()});
    let path = "/compatibility/subjects/a-value/versions/latest";
    assert_eq!(
        registry
            .call("POST", path, Some(check(&with_default)))
            .await
            .1,
        json!({"is_compatible": true})
    );
    assert_eq!(
        registry
            .call("POST", path, Some(check(&without_default)))
            .await
            .1,
        json!({"is_compatible": false})
    );
    let (status, rejected) = registry.register("a-value", &without_default).await;
    assert_eq!((status, rejected["error_code"].clone()), (409, json!(409)));

    let (status, set) = registry
        .call(
            "PUT",
            "/config/a-value",
            Some(json!({"compatibility": "NONE"})),
        )
        .await;
    assert_eq!((status, set), (200, json!({"compatibility": "NONE"})));
    assert_eq!(
        registry.call("GET", "/config/a-value", None).await.1,
        json!({"compatibilityLevel": "NONE"})
    );
    let (status, _) = registry.register("a-value", &without_default).await;
    assert_eq!(status, 200, "NONE accepts any change");
    registry.stop().await;
}
