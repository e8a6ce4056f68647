//! The capabilities' costs, each against a baseline measured in the same run:
//!
//! - `http`: a guest's GET to a loopback server (the fetch plugin's `fetch`, through
//!   `wasi:http` and the host's checks) against the same request made by the host with the
//!   same client (hyper's HTTP/1 connection over a fresh TCP connection, as the guest's
//!   sender opens one per request);
//! - unused capabilities: a call of a plugin granted every capability (kv, emit and http
//!   services handed in) that uses none, against the same plugin granted nothing.
//!
//! Run with `cargo xtask build-plugins && cargo bench -p plugboard-wasm --bench capabilities`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use plugboard_core::EventInfo;
use plugboard_engine::{CallOptions, Engine, Registration};
use plugboard_wasm::{
    CapabilityError, Emitter, Grants, HostConfig, HttpAccess, HttpPolicy, KeyValue, Limits,
    WasmHost,
};
use serde_json::json;

fn component(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../target/wasm-plugins/plugin_{name}.wasm"));
    assert!(p.exists(), "run `cargo xtask build-plugins` first");
    p
}

/// A loopback server answering every request with a short body, one connection each.
fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut stream = stream;
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

struct Loopback(u16);

impl HttpPolicy for Loopback {
    fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        !https && host == "127.0.0.1" && port == self.0
    }
    fn allows_address(&self, _: bool, ip: IpAddr, port: u16) -> bool {
        ip.is_loopback() && port == self.0
    }
}

/// The host's request: what the guest's sender does, without the guest.
async fn host_get(port: u16) -> usize {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
        wasmtime_wasi_http::io::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn http(c: &mut Criterion) {
    let port = server();
    let engine = Engine::builder().reference_events(false).build();
    engine
        .declare_dynamic(EventInfo::dynamic("on_reach_fetch", "bench", "fetch"))
        .unwrap();
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let limits = Limits {
        deadline: Duration::from_secs(30),
        ..Limits::default()
    };
    let plugin = Arc::new(
        host.load_file("fetcher", &component("fetch"), limits)
            .unwrap(),
    );
    plugin.set_http(Some(HttpAccess::new(Arc::new(Loopback(port)))));
    engine
        .register_code(
            "on_reach_fetch",
            Registration::new("fetcher"),
            plugin.clone().code(),
        )
        .unwrap();
    engine.start("fetcher").unwrap();
    let url = json!({ "url": format!("http://127.0.0.1:{port}/") });
    let opts = CallOptions::default();
    let out = engine
        .call_json("on_reach_fetch", url.clone(), &opts)
        .unwrap();
    assert_eq!(out["status"], 200, "{out}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(host_get(port)), 2);

    let mut g = c.benchmark_group("http_get_loopback");
    g.bench_function("host", |b| b.iter(|| runtime.block_on(host_get(port))));
    g.bench_function("guest", |b| {
        b.iter(|| {
            engine
                .call_json("on_reach_fetch", url.clone(), &opts)
                .unwrap()
        })
    });
    g.finish();
}

struct NoKv;
impl KeyValue for NoKv {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        Ok(None)
    }
    fn set(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<(), CapabilityError> {
        Ok(())
    }
    fn delete(&self, _: &str) -> Result<bool, CapabilityError> {
        Ok(false)
    }
    fn list_keys(&self, _: &str, _: Option<&str>, _: u32) -> Result<Vec<String>, CapabilityError> {
        Ok(Vec::new())
    }
    fn increment(&self, _: &str, d: i64, _: Option<Duration>) -> Result<i64, CapabilityError> {
        Ok(d)
    }
    fn compare_and_swap(
        &self,
        _: &str,
        _: Option<&[u8]>,
        _: Option<&[u8]>,
        _: Option<Duration>,
    ) -> Result<bool, CapabilityError> {
        Ok(false)
    }
}

struct NoEmit;
impl Emitter for NoEmit {
    fn emit(&self, _: &str, _: &str, _: u32) -> Result<(), CapabilityError> {
        Ok(())
    }
}

fn unused_capabilities(c: &mut Criterion) {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let engine = Engine::builder().reference_events(false).build();
    let mut g = c.benchmark_group("unused_capabilities");
    for (name, granted) in [("none", false), ("all", true)] {
        let event = format!("on_bench_{name}");
        engine
            .declare_dynamic(EventInfo::dynamic(event.clone(), "bench", "hostile"))
            .unwrap();
        let limits = Limits {
            grants: if granted { Grants::ALL } else { Grants::NONE },
            ..Limits::default()
        };
        let plugin = Arc::new(host.load_file(name, &component("hostile"), limits).unwrap());
        if granted {
            plugin.set_kv(Some(Arc::new(NoKv)));
            plugin.set_emitter(Some(Arc::new(NoEmit)));
            plugin.set_http(Some(HttpAccess::new(Arc::new(Loopback(1)))));
        }
        engine
            .register_code(&event, Registration::new(name), plugin.code())
            .unwrap();
        engine.start(name).unwrap();
        let state = json!({ "n": 1, "text": "a small state passed through unchanged" });
        let opts = CallOptions::default();
        g.bench_function(name, |b| {
            b.iter(|| engine.call_json(&event, state.clone(), &opts).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, http, unused_capabilities);
criterion_main!(benches);
