//! A native-only host: the admin API served without an installer. This target is its own
//! binary (not a module of `it`) because it also runs with `--no-default-features`, where
//! the server has no `packages` feature and does not compile the installer or wasmtime
//! (`cargo xtask test` runs it that way too, and checks the dependency tree).
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

use std::time::Duration;

use plugboard_core::reference::{OnContentPrepare, Payload};
use plugboard_core::{Context, Plugin, Reply};
use plugboard_engine::{Engine, Registration};
use plugboard_server::{Server, ServerConfig, ServerOptions};
use plugboard_store::Store;
use serde_json::{Value, json};

/// Marks the state it saw.
struct Stamp;
impl Plugin<OnContentPrepare> for Stamp {
    fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
        s.extra.insert("stamped".into(), true.into());
        Reply::Continue(s)
    }
}

struct Resp {
    status: u16,
    body: Value,
}

fn request(base: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let b = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {token}"));
    let mut r = match body {
        Some(body) => agent
            .run(
                b.header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .unwrap(),
            )
            .unwrap(),
        None => agent.run(b.body(()).unwrap()).unwrap(),
    };
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

#[test]
fn a_native_only_host_serves_the_admin_api_without_an_installer() {
    let home = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", home.path().join("plugboard.db").display());
    let store = Store::open(&url).unwrap();
    let engine = store.engine(Engine::builder()).unwrap();
    engine.register(Registration::new("stamp"), Stamp).unwrap();
    engine.finish_boot().unwrap();

    let config = ServerConfig::new(store.clone(), engine.clone(), home.path().to_owned()).options(
        ServerOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..ServerOptions::default()
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(Server::bind(config)).unwrap();
    let base = format!("http://{}", server.local_addr());
    let token = server.first_token().unwrap().to_owned();
    let handle = server.shutdown_handle();
    let running = rt.spawn(server.run());

    let api =
        |method: &str, path: &str, body: Option<Value>| request(&base, &token, method, path, body);
    let health = api("GET", "/health", None).body;
    assert_eq!(health["ready"], true);
    // No installer follows packages here.
    assert_eq!(health["store"]["synced_generation"], Value::Null);

    // Events are called through the native plugin.
    let called = api(
        "POST",
        "/api/events/on_content_prepare/call",
        Some(json!({ "state": { "data": {}, "extra": {} } })),
    );
    assert_eq!(called.status, 200, "{}", called.body);
    assert_eq!(called.body["result"]["extra"]["stamped"], true);

    // A lifecycle operation reaches the engine and the store.
    let stopped = api("POST", "/api/plugins/stamp/stop", None);
    assert_eq!(stopped.status, 200, "{}", stopped.body);
    assert_eq!(
        engine.plugin("stamp").unwrap().record.status,
        plugboard_core::Status::Stopped
    );
    let chain = api("GET", "/api/events/on_content_prepare", None);
    assert_eq!(chain.body["chain"], json!([]));

    // The host's own settings are stored.
    let put = api(
        "PUT",
        "/api/settings/my_app",
        Some(json!({ "greeting": "hi" })),
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        store.settings().get("my_app").unwrap(),
        Some(json!({ "greeting": "hi" }))
    );

    // The activity log and the OpenAPI document answer.
    assert_eq!(api("GET", "/api/activity", None).status, 200);
    let doc = api("GET", "/api/openapi.json", None).body;
    let has_packages = doc["paths"].get("/api/packages").is_some();
    assert_eq!(has_packages, cfg!(feature = "packages"));

    // Packages: no installer here, so a clear 404 (or no route at all without the
    // feature).
    let packages = api("GET", "/api/packages", None);
    assert_eq!(packages.status, 404, "{}", packages.body);
    assert_eq!(packages.body["error"]["code"], "not_found");

    handle.shutdown();
    rt.block_on(running).unwrap().unwrap();
}
