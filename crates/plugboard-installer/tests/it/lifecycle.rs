//! Upgrades under load, boot replay after crashes, isolation of broken packages, and
//! uninstalling a package others depend on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use plugboard_core::Status;
use plugboard_core::reference::OnUserAfterSaveFailure;
use plugboard_installer::InstallError;
use plugboard_testkit::{Backend, fresh_url};

use crate::{HostEnv, component, failure, manifest, package};

#[test]
fn an_upgrade_under_continuous_calls_fails_none() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(&fresh_url(Backend::Sqlite, tmp.path()), tmp.path());
    let v1 = package(
        tmp.path(),
        &manifest("audit", "1.0.0", ""),
        &component("audit"),
    );
    let v2 = package(
        tmp.path(),
        &manifest("audit", "2.0.0", ""),
        &component("probe"),
    );
    let v3 = package(
        tmp.path(),
        &manifest("audit", "3.0.0", ""),
        &component("audit"),
    );
    h.install(&v1).unwrap();
    let hook = h.engine.hook::<OnUserAfterSaveFailure>().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed, old, new) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (hook, stop) = (hook.clone(), stop.clone());
            let (calls, failed, old, new) =
                (calls.clone(), failed.clone(), old.clone(), new.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    match hook.call(failure()) {
                        Ok(s) if s.extra["audited_by"] == "wasm-audit" => {
                            old.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(_) => new.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // Each switch happens under calls: wait until enough have run (by count, not by
    // time, so that a loaded machine only makes the test slower).
    let wait_for_calls = |more: u64| {
        let target = calls.load(Ordering::Relaxed) + more;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while calls.load(Ordering::Relaxed) < target {
            assert!(std::time::Instant::now() < deadline, "calls stalled");
            std::thread::yield_now();
        }
    };
    wait_for_calls(100);
    h.install(&v2).unwrap();
    wait_for_calls(100);
    h.install(&v3).unwrap();
    wait_for_calls(100);
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.join().unwrap();
    }
    let calls = calls.load(Ordering::Relaxed);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "of {calls} calls");
    // Both versions served calls.
    assert!(old.load(Ordering::Relaxed) > 0 && new.load(Ordering::Relaxed) > 0);
    assert_eq!(h.engine.plugin("audit").unwrap().failures, 0);
}

#[test]
fn an_unhealthy_upgrade_leaves_the_running_version_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(&fresh_url(Backend::Sqlite, tmp.path()), tmp.path());
    let v1 = package(
        tmp.path(),
        &manifest("audit", "1.0.0", ""),
        &component("audit"),
    );
    let sick = package(
        tmp.path(),
        &manifest("audit", "1.1.0", ""),
        &component("unhealthy"),
    );
    let done = h.install(&v1).unwrap();
    let files = h.files();
    let e = h.install(&sick).unwrap_err();
    assert_eq!(
        e.to_string(),
        "package `audit` 1.1.0 failed its checks (cannot reach its database); the previous version stays"
    );
    let row = h.store.package("audit").unwrap().unwrap();
    assert_eq!(
        (row.version.as_str(), row.sha256.as_str()),
        ("1.0.0", done.sha256.as_str())
    );
    assert_eq!(h.files(), files);
    assert_eq!(h.call().extra["audited_by"], "wasm-audit");
    assert_eq!(
        h.engine.plugin("audit").unwrap().record.status,
        Status::Started
    );
}

#[test]
fn boot_replays_installed_packages_isolates_broken_ones_and_cleans_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(Backend::Sqlite, tmp.path());
    {
        let h = HostEnv::boot(&url, tmp.path());
        h.install(&package(
            tmp.path(),
            &manifest("audit", "1.0.0", ""),
            &component("audit"),
        ))
        .unwrap();
        h.install(&package(
            tmp.path(),
            &manifest("other", "1.0.0", "plugin = \"other\"\n"),
            &component("probe"),
        ))
        .unwrap();
        h.engine.stop("other").unwrap();
    }
    // What a crash mid-install leaves: a staged file, a placed file no row references,
    // and a record whose package row never committed.
    let packages = tmp.path().join("packages");
    std::fs::write(packages.join(".staging/half-written"), b"partial").unwrap();
    std::fs::create_dir_all(packages.join("ghost")).unwrap();
    std::fs::write(packages.join("ghost/1.0.0-0000.pbpkg"), b"never committed").unwrap();
    std::fs::write(packages.join("audit/0.9.0-1111.pbpkg"), b"stale").unwrap();
    // A local file damaged on disk: the verified copy in the database replaces it.
    let audit_file = std::fs::read_dir(packages.join("audit"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.to_string_lossy().contains("0.9.0"))
        .unwrap();
    std::fs::write(&audit_file, b"bit rot").unwrap();
    {
        let store = plugboard_store::Store::open(&url).unwrap();
        let engine = store.engine(plugboard_engine::Engine::builder()).unwrap();
        let mut mark = serde_json::Map::new();
        mark.insert("package".into(), "ghost".into());
        let mut reg = plugboard_core::Registration::new("ghost");
        reg.extra = vec![mark];
        engine
            .register_json(
                "on_user_after_save_failure",
                reg,
                plugboard_core::from_fn(|s: serde_json::Value, _: &plugboard_core::Context<'_>| {
                    plugboard_core::Reply::Continue(s)
                }),
            )
            .unwrap();
    }
    let h = HostEnv::boot(&url, tmp.path());
    // Both packages came back, with their statuses.
    assert_eq!(h.call().extra["audited_by"], "wasm-audit");
    assert_eq!(
        h.engine.plugin("other").unwrap().record.status,
        Status::Stopped
    );
    assert!(
        h.engine.plugin("ghost").is_none(),
        "the orphan record was removed"
    );
    assert!(!packages.join("ghost").exists());
    assert_eq!(
        std::fs::read_dir(packages.join(".staging"))
            .unwrap()
            .count(),
        0
    );
    assert!(!packages.join("audit/0.9.0-1111.pbpkg").exists());
    assert_ne!(std::fs::read(&audit_file).unwrap(), b"bit rot");
    assert!(h.installer.packages().unwrap().iter().all(|p| p.loaded));

    // A package whose stored bytes are gone on every side fails alone.
    drop(h);
    let store = plugboard_store::Store::open(&url).unwrap();
    let other = store.package("other").unwrap().unwrap();
    std::fs::remove_dir_all(packages.join("other")).unwrap();
    let mut broken = other.clone();
    broken.sha256 = "f".repeat(64);
    // Point the row at bytes nobody has (as a damaged database would).
    let audit_row = store.package("audit").unwrap().unwrap();
    let _ = audit_row;
    drop(store);
    let conn_url = url.clone();
    sqlite_exec(
        &conn_url,
        &format!(
            "UPDATE packages SET sha256 = '{}' WHERE name = 'other'",
            broken.sha256
        ),
    );
    let h = HostEnv::boot(&url, tmp.path());
    let listed = h.installer.packages().unwrap();
    let other = listed.iter().find(|p| p.name == "other").unwrap();
    assert!(!other.loaded);
    assert!(
        other.error.as_deref().unwrap().contains("missing"),
        "{:?}",
        other.error
    );
    let audit = listed.iter().find(|p| p.name == "audit").unwrap();
    assert!(audit.loaded);
    assert_eq!(h.call().extra["audited_by"], "wasm-audit");
    // Reported in the stored row too, for other processes.
    assert!(
        h.store
            .package("other")
            .unwrap()
            .unwrap()
            .load_error
            .is_some()
    );
}

fn sqlite_exec(url: &str, sql: &str) {
    let path = url.trim_start_matches("sqlite://");
    let status = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()", path, sql])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn uninstalling_a_dependency_is_refused_unless_cascade_which_holds_dependents() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(&fresh_url(Backend::Sqlite, tmp.path()), tmp.path());
    h.install(&package(
        tmp.path(),
        &manifest("base", "1.2.0", ""),
        &component("probe"),
    ))
    .unwrap();
    let needs = "\n[dependencies]\nbase = \"^1.0\"\n";
    let user = manifest("user", "1.0.0", "plugin = \"user\"\npriority = 60\n")
        .replace("priority = 50\nplugin", "plugin")
        + needs;
    h.install(&package(tmp.path(), &user, &component("audit")))
        .unwrap();
    assert_eq!(
        h.engine.plugin("user").unwrap().record.status,
        Status::Started
    );
    let e = h.installer.uninstall("base", false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "packages user depend on `base`; uninstall them first, or uninstall with cascade (their plugins are held, not removed)"
    );
    assert!(h.store.package("base").unwrap().is_some());
    let done = h.installer.uninstall("base", true).unwrap();
    assert_eq!(done.held, ["user"]);
    let user = h.engine.plugin("user").unwrap();
    assert_eq!(user.record.status, Status::Held);
    assert!(
        h.store.package("user").unwrap().is_some(),
        "dependents stay installed"
    );
    // Reinstalling the dependency releases them.
    h.install(&package(
        tmp.path(),
        &manifest("base", "1.3.0", ""),
        &component("probe"),
    ))
    .unwrap();
    let user = h.engine.plugin("user").unwrap();
    assert!(
        user.record.status.is_active() && user.in_chain,
        "{:?}",
        user.record.status
    );
    // A dependency of the wrong version is named.
    let e = h
        .install(&package(
            tmp.path(),
            &(manifest("strict", "1.0.0", "plugin = \"strict\"\n")
                + "\n[dependencies]\nbase = \"^2\"\n"),
            &component("audit"),
        ))
        .unwrap_err();
    assert!(matches!(e, InstallError::Dependencies { .. }));
    assert_eq!(
        e.to_string(),
        "package `strict` needs base ^2 (1.3.0 installed)"
    );
}
