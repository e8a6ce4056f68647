//! A plugin and a wrapper in a second language (Python, built with componentize-py) show
//! that the contract is not Rust-only. Outside CI it is skipped, with a message, when
//! componentize-py is not installed; in CI (`CI=true`, where `.ci/run` installs it) it must run.

use std::path::Path;
use std::sync::Arc;

use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSaveFailure, SaveStatus,
};
use plugboard_engine::{Engine, Registration};
use plugboard_wasm::Limits;

/// Builds `plugins/DIR` against `world` with componentize-py and loads it; `None` (the
/// test skipped) where componentize-py is missing outside CI.
fn load_python(dir: &str, world: &str) -> Option<Arc<plugboard_wasm::WasmPlugin>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = plugboard_testkit::python_component(dir, world)?;
    // CPython makes an 18 MB component: keep its compiled form across test runs.
    let host = plugboard_wasm::WasmHost::new(plugboard_wasm::HostConfig {
        cache_dir: Some(root.join("target/wasm-cache")),
        ..plugboard_wasm::HostConfig::default()
    })
    .unwrap();
    Some(Arc::new(
        host.load_file(
            dir,
            &out,
            // CPython's calls are much slower than a Rust guest's: the default 100 ms
            // deadline would be a race on a busy machine (`crate::limits` is generous).
            Limits {
                memory: 128 << 20,
                ..crate::limits()
            },
        )
        .unwrap(),
    ))
}

#[test]
fn a_python_plugin_joins_a_chain() {
    // The narrowest world with what it uses: componentize-py imports every interface of
    // its world, and a package must ask for each import's capability.
    let Some(plugin) = load_python("python-audit", "plugin-basic") else {
        return;
    };
    let imports = plugin.imports();
    eprintln!("python-audit imports {imports:?}");
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("plugboard:plugin/host@"))
            && !imports.iter().any(|i| i.starts_with("plugboard:plugin/kv@")
                || i.starts_with("plugboard:plugin/events@")),
        "built against plugin-basic, it imports no kv or events: {imports:?}"
    );
    assert_eq!(plugin.contract(), "0.4");
    let engine = Engine::new();
    crate::add(
        &engine,
        "on_user_after_save_failure",
        plugin.clone(),
        Registration::new("python-audit").priority(20),
    );
    // Python reads JSON only; the Rust audit plugin before it reads the binary layout: the
    // chain changes wire between them.
    let event = <OnUserAfterSaveFailure as plugboard_core::Event>::NAME;
    let layout = <OnUserAfterSaveFailure as plugboard_core::Event>::binary_layout();
    assert_eq!(
        plugboard_engine::EncodedStep::wire(&*plugin, event, layout),
        plugboard_core::Wire::Json
    );
    let host2 = crate::host();
    crate::add(
        &engine,
        event,
        crate::load(&host2, "audit", "rust-audit"),
        Registration::new("rust-audit").priority(10),
    );
    let out = engine
        .call::<OnUserAfterSaveFailure>(OnUserAfterSaveFailure {
            error: ErrorPayload::new("validation_failed", "email taken"),
            ip: Ip::LOCALHOST,
            endpoint: Endpoint::Html,
            status: SaveStatus::Added,
            conn: Conn::new("POST", "/users"),
            modifier_user: ModifierUser::SelfUser,
            extra: serde_json::Value::Null,
        })
        .unwrap();
    assert_eq!(out.extra["audited_by"], "python-audit");
    assert_eq!(out.extra["code"], "validation_failed");
    assert_eq!(engine.chain(event).unwrap(), ["rust-audit", "python-audit"]);
}

/// A native step that fails its first call.
struct FailsOnce(std::sync::atomic::AtomicBool);

impl plugboard_core::Plugin<OnUserAfterSaveFailure> for FailsOnce {
    fn call(
        &self,
        s: OnUserAfterSaveFailure,
        _: &plugboard_core::Context<'_>,
    ) -> plugboard_core::Reply<OnUserAfterSaveFailure> {
        let failed_before = self.0.swap(true, std::sync::atomic::Ordering::SeqCst);
        assert!(failed_before, "the first call fails");
        plugboard_core::Reply::Continue(s)
    }
}

#[test]
fn a_python_wrapper_runs_around_a_chain_and_retries_it() {
    // `wrapper-basic`: the host interface, and the `guest` and `wrapper` exports.
    let Some(plugin) = load_python("python-wrapper", "wrapper-basic") else {
        return;
    };
    assert!(plugin.exports_wrapper());
    let engine = Engine::new();
    engine
        .register_code(
            "on_user_after_save_failure",
            Registration::new("python-wrapper"),
            plugin.wrapper_code().unwrap(),
        )
        .unwrap();
    engine.start("python-wrapper").unwrap();
    engine
        .register(
            Registration::new("fails-once"),
            FailsOnce(std::sync::atomic::AtomicBool::new(false)),
        )
        .unwrap();
    engine.start("fails-once").unwrap();
    let state = OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email taken"),
        ip: Ip::LOCALHOST,
        endpoint: Endpoint::Api,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/users"),
        modifier_user: ModifierUser::SelfUser,
        extra: serde_json::Value::Null,
    };
    // The first run fails; the wrapper runs the rest again from its input, which goes
    // through; `after` marks it with the runs its token counted.
    let out = engine
        .call::<OnUserAfterSaveFailure>(state.clone())
        .unwrap();
    assert_eq!(out.extra, serde_json::json!({ "python_runs": 2 }));
    // From then on the step goes through the first time, seeing `before`'s mark.
    let out = engine.call::<OnUserAfterSaveFailure>(state).unwrap();
    assert_eq!(
        out.extra,
        serde_json::json!({ "python_before": true, "python_runs": 1 })
    );
}
