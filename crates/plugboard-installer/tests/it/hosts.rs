//! Several hosts sharing one database: a package installed, upgraded or uninstalled through
//! one is applied by the others within seconds, each verifying it again.

use std::time::{Duration, Instant};

use plugboard_testkit::{BOTH, fresh_url};

use crate::{HostEnv, component, manifest, package};

/// Waits for `ok`: generously, since how fast a loaded machine compiles and applies a
/// package is not what these tests check (the CLI's tests time propagation).
fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn other_hosts_apply_installs_upgrades_and_uninstalls() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        let (home_a, home_b) = (tmp.path().join("a"), tmp.path().join("b"));
        let a = HostEnv::boot(&url, &home_a);
        let b = HostEnv::boot(&url, &home_b);
        let _watch = b.store.watch(&b.engine);
        let _follow = b.installer.follow(Duration::from_millis(100));

        a.install(&package(
            tmp.path(),
            &manifest("audit", "1.0.0", ""),
            &component("audit"),
        ))
        .unwrap();
        wait_for("host B to load the package", || {
            b.engine
                .call::<plugboard_core::reference::OnUserAfterSaveFailure>(crate::failure())
                .map(|s| s.extra["audited_by"] == "wasm-audit")
                .unwrap_or(false)
        });
        // B loaded the bytes from the database into its own directory.
        assert!(home_b.join("packages/audit").exists(), "{backend:?}");

        a.install(&package(
            tmp.path(),
            &manifest("audit", "2.0.0", ""),
            &component("probe"),
        ))
        .unwrap();
        wait_for("host B to upgrade", || {
            b.installer
                .packages()
                .unwrap()
                .iter()
                .any(|p| p.version == "2.0.0" && p.loaded)
                && b.call().extra.is_null()
        });

        a.installer.uninstall("audit", false).unwrap();
        wait_for("host B to remove the package", || {
            b.engine.plugin("audit").is_none() && !home_b.join("packages/audit").exists()
        });
        assert!(b.call().extra.is_null());
    }
}
