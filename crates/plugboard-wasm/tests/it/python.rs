//! A plugin in a second language (Python, built with componentize-py) shows that the
//! contract is not Rust-only. Outside CI it is skipped, with a message, when
//! componentize-py is not installed; in CI (`CI=true`, where `.ci/run` installs it) it must run.

use std::path::Path;
use std::sync::Arc;

use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSaveFailure, SaveStatus,
};
use plugboard_engine::{Engine, Registration};
use plugboard_wasm::Limits;

#[test]
fn a_python_plugin_joins_a_chain() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The narrowest world with what it uses: componentize-py imports every interface of
    // its world, and a package must ask for each import's capability.
    let Some(out) = plugboard_testkit::python_component("python-audit", "plugin-basic") else {
        return;
    };
    // CPython makes an 18 MB component: keep its compiled form across test runs.
    let host = plugboard_wasm::WasmHost::new(plugboard_wasm::HostConfig {
        cache_dir: Some(root.join("target/wasm-cache")),
        ..plugboard_wasm::HostConfig::default()
    })
    .unwrap();
    let plugin = Arc::new(
        host.load_file(
            "python-audit",
            &out,
            // CPython's calls are much slower than a Rust guest's: the default 100 ms
            // deadline would be a race on a busy machine (`crate::limits` is generous).
            Limits {
                memory: 128 << 20,
                ..crate::limits()
            },
        )
        .unwrap(),
    );
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
