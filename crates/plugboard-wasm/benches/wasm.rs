//! A chain with one wasm plugin handling the `on_user_after_save_failure` state, against a
//! raw wasmtime component call carrying the same bytes through the same typed function;
//! ten wasm plugins in one chain; cold load of a cached plugin. Run with
//! `cargo xtask build-plugins && cargo bench -p plugboard-wasm --bench wasm`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSaveFailure, SaveStatus,
};
use plugboard_engine::{Engine, Registration};
use plugboard_wasm::{HostConfig, Limits, WasmHost};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod raw {
    wasmtime::component::bindgen!({ world: "plugin", path: "../../wit" });
}

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl raw::plugboard::plugin::host::Host for RawState {
    fn log(&mut self, _: raw::plugboard::plugin::host::Level, _: String) {}
    fn settings(&mut self) -> Option<String> {
        None
    }
    fn now_ms(&mut self) -> u64 {
        0
    }
}

fn component(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../target/wasm-plugins/plugin_{name}.wasm"));
    assert!(p.exists(), "run `cargo xtask build-plugins` first");
    p
}

fn state() -> OnUserAfterSaveFailure {
    OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email has already been taken")
            .field("email", "is taken"),
        ip: "203.0.113.9".parse().unwrap_or(Ip::LOCALHOST),
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/signup").header("User-Agent", "bench"),
        modifier_user: ModifierUser::SelfUser,
        extra: serde_json::Value::Null,
    }
}

fn one_plugin(c: &mut Criterion) {
    let mut g = c.benchmark_group("wasm_call");
    g.measurement_time(Duration::from_secs(4));
    let bytes = std::fs::read(component("audit")).unwrap();

    // Baseline: the same component, the same typed `call` export, the same JSON bytes,
    // called straight through wasmtime.
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let comp = wasmtime::component::Component::new(&engine, &bytes).unwrap();
    let mut linker: Linker<RawState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    raw::Plugin::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
    let mut store = wasmtime::Store::new(
        &engine,
        RawState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        },
    );
    let inst = raw::Plugin::instantiate(&mut store, &comp, &linker).unwrap();
    let encoded = serde_json::to_vec(&state()).unwrap();
    g.bench_function("raw_component_call", |b| {
        b.iter(|| {
            inst.plugboard_plugin_guest()
                .call_call(&mut store, "on_user_after_save_failure", &encoded)
                .unwrap()
                .unwrap()
        })
    });

    // The engine: a typed hook whose chain holds the same plugin.
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let e = Engine::new();
    let p = Arc::new(host.load("audit", &bytes, Limits::default()).unwrap());
    e.register_code(
        "on_user_after_save_failure",
        Registration::new("audit"),
        p.clone().code(),
    )
    .unwrap();
    e.start("audit").unwrap();
    let hook = e.hook::<OnUserAfterSaveFailure>().unwrap();
    g.bench_function("chain_one_wasm_plugin", |b| {
        b.iter_batched(state, |s| hook.call(s).unwrap(), BatchSize::SmallInput)
    });

    // Ten wasm plugins in one chain.
    let e10 = Engine::new();
    for i in 0..10 {
        let name = format!("audit{i}");
        let p = Arc::new(host.load(&name, &bytes, Limits::default()).unwrap());
        e10.register_code(
            "on_user_after_save_failure",
            Registration::new(name.clone()).priority(i),
            p.code(),
        )
        .unwrap();
        e10.start(name.as_str()).unwrap();
    }
    let hook10 = e10.hook::<OnUserAfterSaveFailure>().unwrap();
    g.bench_function("chain_ten_wasm_plugins", |b| {
        b.iter_batched(state, |s| hook10.call(s).unwrap(), BatchSize::SmallInput)
    });
    g.finish();

    let memory = p.instance_memory();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion/wasm_call");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("instance-memory.json"),
        format!("{{\"bytes\": {}}}", memory.first().copied().unwrap_or(0)),
    )
    .unwrap();
}

fn cold_load(c: &mut Criterion) {
    let mut g = c.benchmark_group("wasm_load");
    g.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..HostConfig::default()
    };
    let path = component("audit");
    // Fill the disk cache once.
    WasmHost::new(config.clone())
        .unwrap()
        .load_file("audit", &path, Limits::default())
        .unwrap();
    // A fresh host (as after a restart) loading the plugin: read, check, deserialize,
    // validate, pre-instantiate, instantiate once.
    g.bench_function("cold_load_cached", |b| {
        b.iter_batched(
            || WasmHost::new(config.clone()).unwrap(),
            |host| host.load_file("audit", &path, Limits::default()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Whether a binary encoding is worth offering: encode and decode the reference state with
/// JSON and with MessagePack (self-describing, so free JSON such as `extra` still fits).
fn encodings(c: &mut Criterion) {
    let mut g = c.benchmark_group("encoding");
    let mut s = state();
    s.extra = serde_json::json!({ "audited_by": "wasm-audit", "code": "validation_failed" });
    let json = serde_json::to_vec(&s).unwrap();
    let msgpack = rmp_serde::to_vec_named(&s).unwrap();
    g.bench_function("json_roundtrip", |b| {
        b.iter(|| {
            let bytes = serde_json::to_vec(std::hint::black_box(&s)).unwrap();
            serde_json::from_slice::<OnUserAfterSaveFailure>(&bytes).unwrap()
        })
    });
    g.bench_function("msgpack_roundtrip", |b| {
        b.iter(|| {
            let bytes = rmp_serde::to_vec_named(std::hint::black_box(&s)).unwrap();
            rmp_serde::from_slice::<OnUserAfterSaveFailure>(&bytes).unwrap()
        })
    });
    g.finish();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion/encoding");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sizes.json"),
        format!(
            "{{\"json\": {}, \"msgpack\": {}}}",
            json.len(),
            msgpack.len()
        ),
    )
    .unwrap();
}

criterion_group!(benches, one_plugin, cold_load, encodings);
criterion_main!(benches);
