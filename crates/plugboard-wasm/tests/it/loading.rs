//! Loading: the contract check, the compile cache across restarts and corruption.

use plugboard_wasm::{HostConfig, Limits, Origin, WasmError, WasmHost};

use crate::component;

#[test]
fn a_component_of_an_unknown_contract_version_is_refused() {
    let host = crate::host();
    let err = host
        .load_file("future", &component("future"), Limits::default())
        .err()
        .unwrap();
    assert!(matches!(err, WasmError::ContractVersion { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the component implements plugboard:plugin@0.9.0, but this host serves 0.2.x, 0.3.x and 0.4.x"
    );
}

#[test]
fn the_contract_version_is_the_wit_packages_and_the_manifests() {
    // One version, written once in plugboard-core: the WIT file the host is generated
    // from and the package crate's semver form say the same.
    let wit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit/plugin.wit"))
        .unwrap();
    let declared = format!(
        "package plugboard:plugin@{};",
        plugboard_core::CONTRACT_VERSION
    );
    assert!(
        wit.lines().any(|l| l.trim() == declared),
        "wit/plugin.wit lacks `{declared}`"
    );
    // The older contracts the host still serves are kept as they were released.
    for v in ["0.3.0", "0.2.0"] {
        let old = std::fs::read_to_string(format!(
            "{}/contracts/{v}/plugin.wit",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let declared = format!("package plugboard:plugin@{v};");
        assert!(old.lines().any(|l| l.trim() == declared), "{v}");
    }
    assert_eq!(
        plugboard_core::CONTRACT_VERSIONS,
        ["0.4.0", "0.3.0", "0.2.0"]
    );
}

#[test]
fn components_of_every_served_contract_version_load_and_run() {
    let host = crate::host();
    // Built now, against 0.4.0.
    let new = crate::load(&host, "audit", "audit-new");
    assert_eq!(new.contract(), "0.4");
    // A Rust guest imports only the interfaces it calls: the audit does not call kv.
    assert!(!new.imports_kv(), "{:?}", new.imports());
    assert!(crate::load(&host, "ip_ban", "ip-ban").imports_kv());
    // Built against 0.2.0 and committed then (the example package's component).
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/packages/wasm-audit-1.0.0.pbpkg"
    );
    let verified = plugboard_package::verify(
        &std::fs::read(file).unwrap(),
        &plugboard_package::VerifyOptions::default(),
    )
    .unwrap();
    let old = std::sync::Arc::new(
        host.load("audit-old", &verified.component, crate::limits())
            .unwrap(),
    );
    assert_eq!(old.contract(), "0.2");
    // Built against 0.3.0 and committed then.
    let v3 = host
        .load(
            "ip-ban-old",
            &crate::released("ip-ban-1.0.0.pbpkg"),
            crate::limits(),
        )
        .unwrap();
    assert_eq!(v3.contract(), "0.3");
    assert!(v3.imports_kv());
    assert!(!v3.exports_wrapper() && !old.exports_wrapper());
    assert!(
        new.exports_wrapper(),
        "every PDK component of 0.4 exports `wrapper`"
    );
    let engine = plugboard_engine::Engine::new();
    crate::add(
        &engine,
        "on_user_after_save_failure",
        old,
        plugboard_engine::Registration::new("audit-old").priority(10),
    );
    crate::add(
        &engine,
        "on_user_after_save_failure",
        new,
        plugboard_engine::Registration::new("audit-new").priority(20),
    );
    let t = engine.trace_json(
        "on_user_after_save_failure",
        serde_json::json!({
            "error": {"code": "validation_failed", "message": "email taken"},
            "ip": "127.0.0.1",
            "endpoint": "html",
            "status": "added",
            "conn": {"method": "POST", "path": "/users"},
            "modifier_user": "self",
        }),
        &Default::default(),
    );
    let out = t.result.unwrap();
    let ran: Vec<&str> = t.steps.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(ran, ["audit-old", "audit-new"]);
    assert_eq!(out["extra"]["audited_by"], "wasm-audit");
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let host = crate::host();
    let err = host
        .load("junk", b"\0asm but not really", Limits::default())
        .err()
        .unwrap();
    assert!(matches!(err, WasmError::NotAComponent(_)), "{err}");
}

#[test]
fn a_plugin_asking_for_more_memory_than_the_host_allows_is_refused() {
    let host = crate::host();
    let limits = Limits {
        memory: 1 << 30,
        ..Limits::default()
    };
    let err = host
        .load_file("greedy", &component("audit"), limits)
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("asks for 1024 MiB of memory; this host allows 256 MiB"),
        "{err}"
    );
}

#[test]
fn the_cache_survives_a_restart_and_a_corrupted_entry() {
    // Each load instantiates the plugin once, under its deadline: a generous one
    // (`crate::limits`), since the clock is not what this test is about.
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_owned()),
        ..HostConfig::default()
    };
    let first = WasmHost::new(config.clone()).unwrap();
    let p = first
        .load_file("audit", &component("audit"), crate::limits())
        .unwrap();
    assert_eq!(p.origin(), Origin::Compiled);
    drop((p, first));

    // A new host (a restart) loads the compiled artifact instead of compiling.
    let second = WasmHost::new(config.clone()).unwrap();
    let p = second
        .load_file("audit", &component("audit"), crate::limits())
        .unwrap();
    assert_eq!(p.origin(), Origin::Cached);

    // Corrupt the artifact: detected, rebuilt, and the plugin still works.
    let artifact = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let third = WasmHost::new(config).unwrap();
    let p = third
        .load_file("audit", &component("audit"), crate::limits())
        .unwrap();
    assert_eq!(p.origin(), Origin::Rebuilt);
    let engine = plugboard_engine::Engine::new();
    crate::add(
        &engine,
        "on_user_after_save_failure",
        std::sync::Arc::new(p),
        plugboard_engine::Registration::new("audit"),
    );
    assert_eq!(
        engine.chain("on_user_after_save_failure").unwrap(),
        ["audit"]
    );
}

#[test]
fn instance_memory_is_reported_and_capped() {
    let host = crate::host();
    let limits = Limits {
        memory: 4 << 20,
        ..crate::limits()
    };
    let p = host
        .load_file("audit", &component("audit"), limits)
        .unwrap();
    let sizes = p.instance_memory();
    assert_eq!(sizes.len(), 1);
    assert!(sizes[0] > 0 && sizes[0] <= 4 << 20, "{sizes:?}");
}
