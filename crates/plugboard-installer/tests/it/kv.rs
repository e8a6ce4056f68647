//! The `kv` capability through the installer: a 0.3.0 package's plugins keep data in the
//! store, shared by every host on the database, under the operator's quota; a package
//! that did not ask for it is denied; uninstall removes the data unless kept; and 0.2.0
//! components run beside 0.3.0 ones in one chain.

use std::path::Path;

use plugboard_engine::CallOptions;
use plugboard_installer::UninstallOptions;
use plugboard_testkit::{BOTH, fresh_url};
use serde_json::{Value, json};

use crate::{DEADLINE_MS, HostEnv, component, package};

/// The ip-ban example's manifest, as committed, with the tests' deadline.
pub(crate) fn ip_ban_manifest() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/ip-ban/plugboard.toml");
    std::fs::read_to_string(path).unwrap() + &format!("\n[limits]\ndeadline_ms = {DEADLINE_MS}\n")
}

pub(crate) fn login_failure(ip: &str) -> Value {
    json!({
        "conn": {"method": "POST", "path": "/login"},
        "ip": ip,
        "endpoint": "html",
        "error": {"code": "bad_password", "message": "wrong password"},
    })
}

/// Calls `on_user_login_failure` for `ip`; the plugin's failure, if any.
pub(crate) fn fail_login(env: &HostEnv, ip: &str) -> Option<String> {
    let t = env.engine.trace_json(
        "on_user_login_failure",
        login_failure(ip),
        &CallOptions::default(),
    );
    t.result.err().map(|e| e.to_string())
}

/// Whether `on_user_before_login` for `ip` is halted by ip-ban.
pub(crate) fn banned(env: &HostEnv, ip: &str) -> bool {
    let t = env.engine.trace_json(
        "on_user_before_login",
        json!({ "ip": ip }),
        &CallOptions::default(),
    );
    let out = t.result.unwrap();
    let halted = t.halted_by.as_deref() == Some("ip-ban");
    assert_eq!(halted, out["output"].is_string(), "{out}");
    halted
}

#[test]
fn ip_ban_counts_in_kv_shared_by_two_hosts_and_uninstall_removes_the_data() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        let a = HostEnv::boot(&url, &tmp.path().join("a"));
        let file = package(tmp.path(), &ip_ban_manifest(), &component("ip_ban"));
        a.install(&file).unwrap();
        plugboard_installer::settings::set(
            &a.store,
            a.installer.secrets(),
            "package.ip-ban",
            json!({ "threshold": 3, "window_secs": 3600 }),
        )
        .unwrap();
        a.installer.refresh_settings().unwrap();

        for _ in 0..2 {
            assert_eq!(fail_login(&a, "10.0.0.7"), None, "{backend:?}");
        }
        assert!(!banned(&a, "10.0.0.7"));
        assert_eq!(fail_login(&a, "10.0.0.7"), None);
        assert!(banned(&a, "10.0.0.7"), "{backend:?}");
        assert!(!banned(&a, "10.0.0.8"));
        // The count is in the store, under the package's scope.
        let kv = a.store.kv("ip-ban").unwrap();
        assert_eq!(kv.get("fail:10.0.0.7").unwrap().as_deref(), Some(&b"3"[..]));

        // A second host on the same database sees the same data.
        let b = HostEnv::boot(&url, &tmp.path().join("b"));
        assert!(banned(&b, "10.0.0.7"), "{backend:?}: the second host");
        fail_login(&b, "10.0.0.8");
        assert_eq!(kv.get("fail:10.0.0.8").unwrap().as_deref(), Some(&b"1"[..]));

        // Uninstalled with its data kept, then reinstalled: still banned.
        a.installer
            .uninstall_with(
                "ip-ban",
                UninstallOptions {
                    keep_data: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(kv.usage().unwrap().keys, 2);
        a.install(&file).unwrap();
        assert!(banned(&a, "10.0.0.7"));
        // Uninstalled: the data goes with it.
        a.installer.uninstall("ip-ban", false).unwrap();
        assert_eq!(kv.get("fail:10.0.0.7").unwrap(), None, "{backend:?}");
        assert!(a.store.kv_scopes().unwrap().is_empty());
    }
}

#[test]
fn a_package_that_did_not_ask_for_kv_is_refused_and_the_quota_is_the_operators() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = HostEnv::boot_with(&url, &tmp.path().join("a"), |c| {
        c.kv_quota.max_keys = 2;
    });
    // Its component imports kv and its manifest does not ask for it: refused when packed,
    // and when installed from a package another tool wrote; nothing is written.
    let without = ip_ban_manifest().replace("kv = true\n", "");
    let e = plugboard_testkit::pack(&without, &component("ip_ban")).unwrap_err();
    assert!(e.contains("add `kv = true`"), "{e}");
    let e = env
        .install(&crate::raw_package(
            tmp.path(),
            &without,
            &component("ip_ban"),
        ))
        .unwrap_err();
    assert!(
        matches!(
            &e,
            plugboard_installer::InstallError::Package(
                plugboard_package::PackageError::UndeclaredImport {
                    capability: "kv",
                    ..
                }
            )
        ),
        "{e}"
    );
    assert!(env.store.package("ip-ban").unwrap().is_none());
    assert!(env.store.kv_scopes().unwrap().is_empty());

    // With it: two addresses fit the operator's quota of two keys; a third is refused
    // with the quota named, and nothing is written for it.
    let file = package(tmp.path(), &ip_ban_manifest(), &component("ip_ban"));
    env.install(&file).unwrap();
    assert_eq!(fail_login(&env, "10.0.0.1"), None);
    assert_eq!(fail_login(&env, "10.0.0.2"), None);
    let failure = fail_login(&env, "10.0.0.3").expect("over quota");
    assert!(
        failure.contains("Quota") && failure.contains("2 keys"),
        "{failure}"
    );
    let kv = env.store.kv("ip-ban").unwrap();
    assert_eq!(kv.get("fail:10.0.0.3").unwrap(), None);
    assert_eq!(kv.usage().unwrap().keys, 2);
}

#[test]
fn a_committed_0_2_0_package_and_a_0_3_0_one_run_in_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = HostEnv::boot_with(&url, &tmp.path().join("a"), |_| {});
    // Built against contract 0.2.0 and committed as it was released.
    let old = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/packages/wasm-audit-1.0.0.pbpkg");
    env.install(&old).unwrap();
    // The guard, built now against 0.3.0, after it in the same chain.
    let manifest = crate::manifest("guard-three", "1.0.0", "")
        .replace("priority = 50", "priority = 90")
        .replace("clock = true", "clock = true\nsettings = true");
    env.install(&package(tmp.path(), &manifest, &component("guard")))
        .unwrap();
    let mut state = serde_json::to_value(crate::failure()).unwrap();
    state["error"]["code"] = json!("blocked");
    let t = env
        .engine
        .trace_json("on_user_after_save_failure", state, &CallOptions::default());
    let out = t.result.unwrap();
    let ran: Vec<&str> = t.steps.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(ran, ["wasm-audit", "guard-three"]);
    assert_eq!(t.halted_by.as_deref(), Some("guard-three"));
    assert_eq!(out["extra"]["audited_by"], "wasm-audit", "{out}");
    assert_eq!(out["extra"]["code"], "blocked", "{out}");
}
