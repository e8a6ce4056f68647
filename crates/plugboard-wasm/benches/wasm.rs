//! A chain with one wasm plugin handling the `on_user_after_save_failure` state, against a
//! raw wasmtime component call carrying the same bytes through the same typed function
//! (bare, and with the host's codec); ten wasm plugins in one chain (that do real work,
//! that decode and re-encode the state, that only read it, that never decode it); the
//! floor of a component call; cold load of a cached plugin; the two wires' encode +
//! decode; a sandboxed wrapper around a native step. Run with `cargo xtask build-plugins &&
//! cargo bench -p plugboard-wasm --bench wasm`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use plugboard_core::Wire;
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

impl raw::plugboard::plugin::types::Host for RawState {}

/// The baseline grants no key-value data (the benchmarked plugins do not ask for any).
impl raw::plugboard::plugin::kv::Host for RawState {
    fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, KvError> {
        Err(denied())
    }
    fn set(&mut self, _: String, _: Vec<u8>, _: Option<u64>) -> Result<(), KvError> {
        Err(denied())
    }
    fn delete(&mut self, _: String) -> Result<bool, KvError> {
        Err(denied())
    }
    fn list_keys(&mut self, _: String, _: Option<String>, _: u32) -> Result<Vec<String>, KvError> {
        Err(denied())
    }
    fn increment(&mut self, _: String, _: i64, _: Option<u64>) -> Result<i64, KvError> {
        Err(denied())
    }
    fn compare_and_swap(
        &mut self,
        _: String,
        _: Option<Vec<u8>>,
        _: Option<Vec<u8>>,
        _: Option<u64>,
    ) -> Result<bool, KvError> {
        Err(denied())
    }
}

impl raw::plugboard::plugin::events::Host for RawState {
    fn emit(&mut self, _: String, _: String) -> Result<(), KvError> {
        Err(KvError::Denied("no emit in the baseline".into()))
    }
}

type KvError = raw::plugboard::plugin::types::Error;

fn denied() -> KvError {
    KvError::Denied("no kv in the baseline".into())
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

/// One live instance on a plain engine, or (`sandboxed`) on one configured like the
/// host's: epoch interruption (deadlines) and the pooling allocator.
fn raw_instance(bytes: &[u8], sandboxed: bool) -> (wasmtime::Store<RawState>, raw::Plugin) {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    if sandboxed {
        cfg.epoch_interruption(true);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
    }
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let comp = wasmtime::component::Component::new(&engine, bytes).unwrap();
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
    store.set_epoch_deadline(u64::MAX / 2);
    let inst = raw::Plugin::instantiate(&mut store, &comp, &linker).unwrap();
    (store, inst)
}

/// An engine whose `on_user_after_save_failure` chain holds `n` copies of a plugin.
fn chain(host: &WasmHost, bytes: &[u8], n: u8) -> (Engine, Arc<plugboard_wasm::WasmPlugin>) {
    let e = Engine::new();
    let mut first = None;
    for i in 0..n {
        let name = format!("p{i}");
        let p = Arc::new(host.load(&name, bytes, Limits::default()).unwrap());
        first.get_or_insert_with(|| p.clone());
        e.register_code(
            "on_user_after_save_failure",
            Registration::new(name.clone()).priority(i),
            p.code(),
        )
        .unwrap();
        e.start(name.as_str()).unwrap();
    }
    (e, first.unwrap())
}

fn one_plugin(c: &mut Criterion) {
    use raw::exports::plugboard::plugin::guest::Wire as RawWire;
    let mut g = c.benchmark_group("wasm_call");
    g.measurement_time(Duration::from_secs(4));
    let audit = std::fs::read(component("audit")).unwrap();
    let probe = std::fs::read(component("probe")).unwrap();
    let json = Wire::Json.encode(&state()).unwrap();
    let binary = Wire::Binary.encode(&state()).unwrap();

    // Baselines: the same component, the same typed `call` export, the same bytes the
    // chain carries, called straight through wasmtime on one live instance.
    let (mut store, inst) = raw_instance(&audit, false);
    let (mut sandboxed, sandboxed_inst) = raw_instance(&audit, true);
    g.bench_function("raw_component_call_binary_sandboxed", |b| {
        b.iter(|| {
            sandboxed_inst
                .plugboard_plugin_guest()
                .call_call(
                    &mut sandboxed,
                    "on_user_after_save_failure",
                    RawWire::Binary,
                    &binary,
                )
                .unwrap()
                .unwrap()
        })
    });
    for (name, wire, bytes) in [
        ("raw_component_call_binary", RawWire::Binary, &binary),
        ("raw_component_call_json", RawWire::Json, &json),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                inst.plugboard_plugin_guest()
                    .call_call(&mut store, "on_user_after_save_failure", wire, bytes)
                    .unwrap()
                    .unwrap()
            })
        });
    }
    // What an embedder calling the plugin with wasmtime alone also pays to get a typed
    // state back: encode the state, call, decode the reply (the same codec the chain
    // uses). The chain's overhead over this is Plugboard's own.
    let (mut codec_store, codec_inst) = raw_instance(&audit, false);
    g.bench_function("raw_component_call_binary_with_codec", |b| {
        b.iter_batched(
            state,
            |s| {
                let bytes = Wire::Binary.encode(&s).unwrap();
                drop(s);
                let reply = codec_inst
                    .plugboard_plugin_guest()
                    .call_call(
                        &mut codec_store,
                        "on_user_after_save_failure",
                        RawWire::Binary,
                        &bytes,
                    )
                    .unwrap()
                    .unwrap();
                let raw::exports::plugboard::plugin::guest::Reply::Continue(out) = reply else {
                    panic!("the audit plugin continues")
                };
                Wire::Binary.decode::<OnUserAfterSaveFailure>(&out).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    // The floor of any step: a component call that hands the bytes back untouched.
    let (mut store, inst) = raw_instance(&probe, false);
    g.bench_function("raw_component_call_echo", |b| {
        b.iter(|| {
            inst.plugboard_plugin_guest()
                .call_call(&mut store, "echo", RawWire::Binary, &binary)
                .unwrap()
                .unwrap()
        })
    });
    g.bench_function("raw_component_call_passthrough", |b| {
        b.iter(|| {
            inst.plugboard_plugin_guest()
                .call_call(
                    &mut store,
                    "on_user_after_save_failure",
                    RawWire::Binary,
                    &binary,
                )
                .unwrap()
                .unwrap()
        })
    });

    let host = WasmHost::new(HostConfig::default()).unwrap();
    let (e1, p) = chain(&host, &audit, 1);
    let hook = e1.hook::<OnUserAfterSaveFailure>().unwrap();
    g.bench_function("chain_one_wasm_plugin", |b| {
        b.iter_batched(state, |s| hook.call(s).unwrap(), BatchSize::SmallInput)
    });
    // Ten plugins in one chain, each kind on its own:
    for (id, file) in [
        // real work (decode, build `extra`, encode);
        ("chain_ten_wasm_plugins", "audit"),
        // decode the typed state and encode it back: a step without a plugin's own work;
        ("chain_ten_passthrough_plugins", "probe"),
        // never ask for the state (`call_lazy`): it passes from plugin to plugin as bytes;
        ("chain_ten_observer_plugins", "observer"),
        // read the typed state and decide (`Lazy::get`), as a guard or validator does.
        ("chain_ten_guard_plugins", "guard"),
    ] {
        let bytes = std::fs::read(component(file)).unwrap();
        let (engine, _) = chain(&host, &bytes, 10);
        let hook = engine.hook::<OnUserAfterSaveFailure>().unwrap();
        g.bench_function(id, |b| {
            b.iter_batched(state, |s| hook.call(s).unwrap(), BatchSize::SmallInput)
        });
    }
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

/// The two wires on the host: encode + decode of the reference state (a small `extra`).
fn encodings(c: &mut Criterion) {
    let mut g = c.benchmark_group("encoding");
    let mut s = state();
    s.extra = serde_json::json!({ "audited_by": "wasm-audit", "code": "validation_failed" });
    for (name, wire) in [
        ("json_roundtrip", Wire::Json),
        ("binary_roundtrip", Wire::Binary),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let bytes = wire.encode(std::hint::black_box(&s)).unwrap();
                wire.decode::<OnUserAfterSaveFailure>(&bytes).unwrap()
            })
        });
    }
    g.finish();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion/encoding");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("sizes.json"),
        format!(
            "{{\"json\": {}, \"binary\": {}}}",
            Wire::Json.encode(&s).unwrap().len(),
            Wire::Binary.encode(&s).unwrap().len()
        ),
    )
    .unwrap();
}

/// A sandboxed wrapper (`plugins/safety-net`: its `before` and `after` each decode and
/// re-encode the state as JSON) around a one-step native chain, against the same chain
/// bare: what wrapping costs when the wrapper is a wasm plugin.
fn wasm_wrapper(c: &mut Criterion) {
    let mut g = c.benchmark_group("wasm_wrap");
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let e = Engine::new();
    e.register::<OnUserAfterSaveFailure, _>(
        Registration::new("step"),
        plugboard_core::from_fn(
            |mut s: OnUserAfterSaveFailure, _: &plugboard_core::Context<'_>| {
                s.error.message.push('.');
                plugboard_core::Reply::Continue(s)
            },
        ),
    )
    .unwrap();
    e.start("step").unwrap();
    let bare = e.hook::<OnUserAfterSaveFailure>().unwrap();
    g.bench_function("bare", |b| {
        b.iter_batched(state, |s| bare.call(s).unwrap(), BatchSize::SmallInput)
    });
    let bytes = std::fs::read(component("safety_net")).unwrap();
    let net = Arc::new(host.load("net", &bytes, Limits::default()).unwrap());
    e.register_code(
        "on_user_after_save_failure",
        Registration::new("net"),
        net.wrapper_code().unwrap(),
    )
    .unwrap();
    e.start("net").unwrap();
    let wrapped = e.hook::<OnUserAfterSaveFailure>().unwrap();
    g.bench_function("wrapped", |b| {
        b.iter_batched(state, |s| wrapped.call(s).unwrap(), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, one_plugin, cold_load, encodings, wasm_wrapper);
criterion_main!(benches);
