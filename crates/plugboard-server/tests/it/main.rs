//! The admin server over real HTTP on loopback: a real SQLite store in a temp dir, a real
//! engine with the reference events and small native plugins, a real installer and wasm
//! host (the `audit` guest plugin, packed into a package).
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod api;
mod auth;
mod kv;
mod packages;
mod stream;

use std::time::Duration;

use plugboard_core::reference::{OnContentPrepare, Payload};
use plugboard_core::{Context, Plugin, Reply};
use plugboard_engine::{Engine, Registration};
use plugboard_installer::{Installer, InstallerConfig};
use plugboard_server::{Server, ServerConfig, ServerOptions, ShutdownHandle};
use plugboard_store::Store;
use plugboard_wasm::{HostConfig, WasmHost};
use serde_json::Value;

/// Adds a greeting to `extra`.
struct Greeter;
impl Plugin<OnContentPrepare> for Greeter {
    fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
        s.extra.insert("greeting".into(), "hello".into());
        Reply::Continue(s)
    }
}

/// Shouts the greeting; hard-depends on `greeter`. Panics when `data.panic` is true;
/// halts when `data.halt` is true.
struct Shouter;
impl Plugin<OnContentPrepare> for Shouter {
    fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
        if s.data.get("panic") == Some(&Value::Bool(true)) {
            panic!("shouter was asked to panic");
        }
        let g = s
            .extra
            .get("greeting")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_uppercase();
        s.extra.insert("shout".into(), g.into());
        if s.data.get("halt") == Some(&Value::Bool(true)) {
            return Reply::Halt(s);
        }
        Reply::Continue(s)
    }
}

pub use plugboard_testkit::component;

/// The per-call deadline the test packages ask for, and the most the test servers allow.
/// The default (100 ms, which also covers instantiating the plugin and its health check
/// at install time) is wall-clock time: on a loaded machine a plugin that does nothing
/// wrong can overrun it and fail a test that is not about the deadline.
pub const DEADLINE_MS: u64 = 60_000;

/// How long to wait for something the server does in the background before failing:
/// only a guard against a hang, not a speed the tests check.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// A package of the `audit` component with one hook on `on_user_after_save_failure`,
/// asking for the generous [`DEADLINE_MS`].
pub fn audit_package(name: &str, version: &str) -> Vec<u8> {
    let manifest = plugboard_testkit::manifest(name, version, "on_user_after_save_failure", "")
        + &format!("\n[limits]\ndeadline_ms = {DEADLINE_MS}\n");
    plugboard_testkit::pack(&manifest, &component("audit")).unwrap()
}

/// Serves `bytes` to every request on a loopback port until the process ends; returns
/// `host:port`.
pub fn file_server(bytes: Vec<u8>) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&bytes);
        }
    });
    addr
}

/// A running server and its parts.
pub struct Env {
    pub base: String,
    pub token: String,
    pub home: tempfile::TempDir,
    pub engine: Engine,
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Env {
    pub fn start() -> Env {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut ServerOptions)) -> Env {
        Self::start_full(tweak, |_| {})
    }

    pub fn start_full(
        tweak: impl FnOnce(&mut ServerOptions),
        installer_tweak: impl FnOnce(&mut InstallerConfig),
    ) -> Env {
        let home = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", home.path().join("plugboard.db").display());
        let store = Store::open(&url).unwrap();
        let engine = store.engine(Engine::builder()).unwrap();
        engine
            .register(Registration::new("greeter").priority(10), Greeter)
            .unwrap();
        engine
            .register(
                Registration::new("shouter")
                    .priority(20)
                    .hard_depends(["greeter"]),
                Shouter,
            )
            .unwrap();
        let host = WasmHost::new(HostConfig {
            cache_dir: Some(home.path().join("cache")),
            ..HostConfig::default()
        })
        .unwrap();
        let mut installer_config = InstallerConfig::new(home.path().join("packages"));
        installer_config.policy.max_limits.deadline_ms = Some(DEADLINE_MS);
        installer_tweak(&mut installer_config);
        let installer = Installer::new(store.clone(), engine.clone(), host, installer_config);
        installer.boot().unwrap();
        engine.finish_boot().unwrap();

        let mut options = ServerOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            ..ServerOptions::default()
        };
        tweak(&mut options);
        let config = ServerConfig::new(store, engine.clone(), home.path().to_owned())
            .installer(installer)
            .options(options);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                tx.send((
                    server.local_addr(),
                    server.first_token().map(str::to_owned),
                    server.shutdown_handle(),
                ))
                .unwrap();
                server.run().await.unwrap();
            });
        });
        let (addr, token, handle) = rx.recv_timeout(PATIENCE).unwrap();
        Env {
            base: format!("http://{addr}"),
            token: token.expect("a first start creates a token"),
            home,
            engine,
            handle,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let mut headers = vec![("authorization", format!("Bearer {}", self.token))];
        let body = body.map(|b| {
            headers.push(("content-type", "application/json".into()));
            serde_json::to_vec(&b).unwrap()
        });
        self.send(method, path, &headers, body)
    }

    /// `GET /metrics` with the admin token.
    pub fn metrics(&self) -> Resp {
        self.send(
            "GET",
            "/metrics",
            &[("authorization", format!("Bearer {}", self.token))],
            None,
        )
    }

    /// Any request.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        let result = match body {
            Some(body) => agent().run(b.body(body).unwrap()),
            None => agent().run(b.body(()).unwrap()),
        };
        Resp::from(result.unwrap())
    }

    /// Logs in with the admin token; returns the cookie (`pb_session=…`) and the CSRF
    /// token.
    pub fn login(&self) -> (String, String) {
        let r = self.send(
            "POST",
            "/login",
            &[(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            Some(format!("token={}", self.token).into_bytes()),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = r
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let s = self.send("GET", "/api/session", &[("cookie", cookie.clone())], None);
        assert_eq!(s.status, 200, "{}", s.body);
        let csrf = s.json()["csrf"].as_str().unwrap().to_owned();
        (cookie, csrf)
    }

    /// Polls `f` until it returns `Some`, for at most [`PATIENCE`].
    pub fn eventually<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        // Only a guard against a hang: a package upload verifies, compiles and checks
        // the component before it answers, which on a busy machine takes minutes.
        .timeout_global(Some(PATIENCE))
        .build()
        .into()
}

/// A response, read whole.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl From<ureq::http::Response<ureq::Body>> for Resp {
    fn from(mut r: ureq::http::Response<ureq::Body>) -> Self {
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        Resp {
            status: r.status().as_u16(),
            headers,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a JSON error with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.json()["error"]["code"], code, "{}", self.body);
        assert!(self.json()["error"]["message"].is_string(), "{}", self.body);
    }
}
