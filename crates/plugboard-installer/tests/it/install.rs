//! Installing, upgrading, rolling back and uninstalling; refusals write nothing.

use plugboard_core::Status;
use plugboard_installer::{InstallAction, InstallError, InstallOptions};
use plugboard_package::PackageError;
use plugboard_testkit::{BOTH, fresh_url};

use crate::{HostEnv, component, manifest, package};

#[test]
fn install_upgrade_rollback_and_uninstall_on_both_backends() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let h = HostEnv::boot(&fresh_url(backend, tmp.path()), tmp.path());
        let v1 = package(
            tmp.path(),
            &manifest("audit", "1.0.0", ""),
            &component("audit"),
        );
        let done = h.install(&v1).unwrap();
        assert_eq!(
            (done.action, done.version.as_str(), done.plugins.clone()),
            (InstallAction::Install, "1.0.0", vec!["audit".to_owned()])
        );
        // It runs in the event's chain, and its record is owned by the package.
        assert_eq!(h.call().extra["audited_by"], "wasm-audit", "{backend:?}");
        let info = h.engine.plugin("audit").unwrap();
        assert_eq!(info.record.status, Status::Started);
        assert_eq!(plugboard_installer::owner(&info.record), Some("audit"));
        let listed = h.installer.packages().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].loaded && listed[0].error.is_none());

        // The same version again: refused unless forced.
        let again = h.install(&v1).unwrap_err();
        assert!(matches!(again, InstallError::NotNewer { .. }), "{again}");
        let forced = h
            .installer
            .install(
                v1.to_str().unwrap(),
                &InstallOptions {
                    force: true,
                    ..Default::default()
                },
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(forced.action, InstallAction::Reinstall);

        // An upgrade to a version whose code differs (the pass-through probe).
        let v2 = package(
            tmp.path(),
            &manifest("audit", "1.1.0", ""),
            &component("probe"),
        );
        let up = h.install(&v2).unwrap();
        assert_eq!(
            (up.action, up.replaced.as_deref()),
            (InstallAction::Upgrade, Some("1.0.0"))
        );
        assert!(h.call().extra.is_null(), "the new code runs");
        let row = h.store.package("audit").unwrap().unwrap();
        assert_eq!(row.previous_version.as_deref(), Some("1.0.0"));

        // Rollback puts 1.0.0 back and keeps 1.1.0 as the previous version.
        let back = h.installer.rollback("audit").unwrap();
        assert_eq!(
            (back.version.as_str(), back.replaced.as_deref()),
            ("1.0.0", Some("1.1.0"))
        );
        assert_eq!(h.call().extra["audited_by"], "wasm-audit");
        assert_eq!(
            h.store
                .package("audit")
                .unwrap()
                .unwrap()
                .previous_version
                .as_deref(),
            Some("1.1.0")
        );

        // Uninstall removes the row, the records, the files and the stored bytes.
        h.installer.uninstall("audit", false).unwrap();
        assert!(h.store.package("audit").unwrap().is_none());
        assert!(h.engine.plugin("audit").is_none());
        assert!(h.call().extra.is_null());
        assert!(!h.home.join("packages/audit").exists());
        assert!(h.store.package_archive(&done.sha256).unwrap().is_none());
        assert!(matches!(
            h.installer.uninstall("audit", false),
            Err(InstallError::NotInstalled(_))
        ));
    }
}

/// Installs `file` expecting a refusal; checks nothing was written.
fn refused(h: &HostEnv, file: &std::path::Path) -> InstallError {
    let records = h.records();
    let files = h.files();
    let err = h.install(file).unwrap_err();
    assert!(
        h.store.packages().unwrap().is_empty(),
        "{err}: a row was written"
    );
    assert_eq!(h.records(), records, "{err}: records changed");
    assert_eq!(h.files(), files, "{err}: files were left behind");
    err
}

#[test]
fn refusals_are_specific_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot_with(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
        |c| c.policy.protected_names = vec!["session".into()],
    );
    let audit = component("audit");

    // Not a component: the header says component, the rest is garbage.
    let mut fake = b"\0asm\x0d\0\x01\0".to_vec();
    fake.extend_from_slice(&[0xff; 64]);
    // `pack` refuses it, and so does the install of a package another tool wrote.
    let e = plugboard_testkit::pack(&manifest("fake", "1.0.0", ""), &fake).unwrap_err();
    assert!(e.contains("not a WebAssembly component"), "{e}");
    let e = refused(
        &h,
        &crate::raw_package(tmp.path(), &manifest("fake", "1.0.0", ""), &fake),
    );
    assert!(
        matches!(
            &e,
            InstallError::Package(plugboard_package::PackageError::NotAComponent { .. })
        ),
        "{e}"
    );

    // A component of a contract version this host does not implement.
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("future", "1.0.0", ""),
            &component("future"),
        ),
    );
    assert!(e.to_string().contains("plugboard:plugin@0.9.0"), "{e}");

    // An unmet package dependency, named with its requirement.
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("needy", "1.0.0", "\n[dependencies]\nvalidator = \"^1.2\"\n"),
            &audit,
        ),
    );
    assert_eq!(
        e.to_string(),
        "package `needy` needs validator ^1.2 (not installed)"
    );

    // A protected name (as the plugin record's name).
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("sessions", "1.0.0", "plugin = \"session\"\n"),
            &audit,
        ),
    );
    assert!(e.to_string().contains("session"), "{e}");

    // An event the host does not declare.
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("audit", "1.0.0", "").replace("on_user_after_save_failure", "on_nothing"),
            &audit,
        ),
    );
    assert!(matches!(e, InstallError::UnknownEvent { .. }), "{e}");

    // A plugin name the host's own plugin has.
    h.engine
        .register::<plugboard_core::reference::OnUserAfterSaveFailure, _>(
            plugboard_core::Registration::new("native"),
            plugboard_core::from_fn(
                |s: plugboard_core::reference::OnUserAfterSaveFailure,
                 _: &plugboard_core::Context<'_>| {
                    plugboard_core::Reply::Continue(s)
                },
            ),
        )
        .unwrap();
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("thief", "1.0.0", "plugin = \"native\"\n"),
            &audit,
        ),
    );
    assert_eq!(
        e.to_string(),
        "package `thief` wants the plugin name `native`, which the host already uses"
    );

    // A wrong sha256 pin.
    let file = package(tmp.path(), &manifest("audit", "1.0.0", ""), &audit);
    let records = h.records();
    let e = h
        .installer
        .install(
            file.to_str().unwrap(),
            &InstallOptions {
                sha256: Some("00".repeat(32)),
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(
        matches!(e, InstallError::Package(PackageError::ShaMismatch { .. })),
        "{e}"
    );
    assert_eq!(h.records(), records);

    // A package whose new version is unhealthy: refused before the switch; nothing
    // installed.
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &manifest("sick", "1.0.0", ""),
            &component("unhealthy"),
        ),
    );
    assert_eq!(
        e.to_string(),
        "package `sick` 1.0.0 failed its checks (cannot reach its database); nothing was installed"
    );

    // After all that, a good install works.
    h.install(&file).unwrap();
}

#[test]
fn signed_packages_are_required_once_keys_are_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let key = plugboard_package::generate_key().unwrap();
    let other = plugboard_package::generate_key().unwrap();
    let h = HostEnv::boot_with(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
        |c| c.trusted_keys = vec![key.verifying_key()],
    );
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("plugboard.toml"),
        manifest("audit", "1.0.0", ""),
    )
    .unwrap();
    std::fs::write(src.path().join("plugin.wasm"), component("audit")).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let unsigned = write(
        "unsigned.pbpkg",
        plugboard_package::pack(src.path(), None).unwrap().0,
    );
    let e = refused(&h, &unsigned);
    assert!(
        matches!(e, InstallError::Package(PackageError::Unsigned)),
        "{e}"
    );
    let wrong = write(
        "wrong.pbpkg",
        plugboard_package::pack(src.path(), Some(&other)).unwrap().0,
    );
    let e = refused(&h, &wrong);
    assert!(
        matches!(e, InstallError::Package(PackageError::UnknownKey { .. })),
        "{e}"
    );
    let good = write(
        "good.pbpkg",
        plugboard_package::pack(src.path(), Some(&key)).unwrap().0,
    );
    let done = h.install(&good).unwrap();
    assert_eq!(
        done.signer,
        Some(plugboard_package::key_id(&key.verifying_key()))
    );
}

#[test]
fn plugins_hear_on_change_dependency_before_the_switch() {
    use plugboard_core::reference::{DependencyChange, OnChangeDependency};
    use std::sync::{Arc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
    );
    let heard: Arc<Mutex<Vec<(String, DependencyChange, bool)>>> = Arc::default();
    let (log, engine) = (heard.clone(), h.engine.clone());
    h.engine
        .register::<OnChangeDependency, _>(
            plugboard_core::Registration::new("listener"),
            plugboard_core::from_fn(
                move |s: OnChangeDependency, _: &plugboard_core::Context<'_>| {
                    // Whether the package's version being replaced is still the one running.
                    let running = engine
                        .plugin("audit")
                        .and_then(|p| {
                            p.record.extra.iter().find_map(|m| {
                                m.get("version").and_then(|v| v.as_str()).map(str::to_owned)
                            })
                        })
                        .is_some_and(|v| v == "1.0.0");
                    log.lock().unwrap().push((s.app.clone(), s.status, running));
                    plugboard_core::Reply::Continue(s)
                },
            ),
        )
        .unwrap();
    h.engine.start("listener").unwrap();
    h.install(&package(
        tmp.path(),
        &manifest("audit", "1.0.0", ""),
        &component("audit"),
    ))
    .unwrap();
    h.install(&package(
        tmp.path(),
        &manifest("audit", "1.1.0", ""),
        &component("audit"),
    ))
    .unwrap();
    let heard = heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 2, "{heard:?}");
    assert_eq!(
        (heard[0].0.as_str(), heard[0].1),
        ("audit", DependencyChange::Add)
    );
    // Called for the upgrade while 1.0.0 still ran.
    assert_eq!(
        (heard[1].0.as_str(), heard[1].1, heard[1].2),
        ("audit", DependencyChange::ForceUpdate, true)
    );
}

#[test]
fn uninstall_evicts_compiled_code_and_outdated_reads_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
    );
    let done = h
        .install(&package(
            tmp.path(),
            &manifest("audit", "1.0.0", ""),
            &component("audit"),
        ))
        .unwrap();
    let cached = || std::fs::read_dir(h.home.join("cache")).unwrap().count();
    assert!(cached() > 0, "compiled at install time");

    let index = tmp.path().join("index.json");
    std::fs::write(
        &index,
        serde_json::json!({ "packages": {
            "audit": [
                { "version": "0.9.0", "sha256": "aa", "url": "https://example.org/a-0.9.0.pbpkg" },
                { "version": "1.2.0", "sha256": "bb", "url": "https://example.org/a-1.2.0.pbpkg" },
                { "version": "1.1.0", "sha256": "cc", "url": "https://example.org/a-1.1.0.pbpkg" }
            ],
            "unrelated": [ { "version": "9.0.0", "sha256": "dd", "url": "https://example.org/u.pbpkg" } ]
        }})
        .to_string(),
    )
    .unwrap();
    let out = h.installer.outdated(Some(index.to_str().unwrap())).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].name.as_str(), out[0].installed.as_str()),
        ("audit", "1.0.0")
    );
    assert_eq!(out[0].latest.version.to_string(), "1.2.0");
    assert_eq!(out[0].latest.sha256, "bb");
    std::fs::write(
        &index,
        "{\"packages\": {\"audit\": [{\"version\": \"x\"}]}}",
    )
    .unwrap();
    let e = h
        .installer
        .outdated(Some(index.to_str().unwrap()))
        .unwrap_err();
    assert!(matches!(e, InstallError::Index { .. }), "{e}");

    h.installer.uninstall("audit", false).unwrap();
    assert_eq!(
        cached(),
        0,
        "the compiled artifact of {} is gone",
        done.sha256
    );
}

#[test]
fn a_plugin_may_call_only_the_imports_its_manifest_asks_for() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
    );
    // The audit plugin reads the clock; this manifest does not ask for it.
    let no_clock = manifest("audit", "1.0.0", "").replace("[capabilities]\nclock = true\n", "");
    assert!(!no_clock.contains("clock"));
    h.install(&package(tmp.path(), &no_clock, &component("audit")))
        .unwrap();
    let e = h
        .engine
        .call::<plugboard_core::reference::OnUserAfterSaveFailure>(crate::failure())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("called `now-ms` without the `clock` capability"),
        "{e}"
    );
}

/// The safety net's manifest: contract 0.4, its hook a wrapper on `event`.
fn wrapper_manifest(contract: &str, event: &str) -> String {
    plugboard_testkit::manifest("safety-net", "1.0.0", event, "role = \"wrapper\"\n")
        .replace("contract = \"0.2\"", &format!("contract = \"{contract}\""))
        .replace("clock = true", "clock = true\nsettings = true")
        + &format!("\n[limits]\ndeadline_ms = {}\n", crate::DEADLINE_MS)
}

#[test]
fn a_hook_with_the_wrapper_role_runs_around_the_chain_and_after_a_restart() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        {
            let h = HostEnv::boot(&url, tmp.path());
            let audit = package(
                tmp.path(),
                &manifest("audit", "1.0.0", ""),
                &component("audit"),
            );
            h.install(&audit).unwrap();
            let net = package(
                tmp.path(),
                &wrapper_manifest("0.4", "on_user_after_save_failure"),
                &component("safety_net"),
            );
            assert_eq!(h.install(&net).unwrap().plugins, ["safety-net"]);
            let info = h.engine.plugin("safety-net").unwrap();
            assert!(info.wrapper, "{backend:?}");
            assert_eq!(info.record.status, Status::Started);
            assert_eq!(
                h.engine.wrappers("on_user_after_save_failure").unwrap(),
                ["safety-net"]
            );
            // `after` saw the audit's reply and added to it.
            let out = h.call();
            assert_eq!(out.extra["audited_by"], "wasm-audit", "{backend:?}");
            assert_eq!(out.extra["attempts"], 1, "{backend:?}");
        }
        // Booted again from the database: still a wrapper, still around the chain.
        let h = HostEnv::boot(&url, tmp.path());
        assert!(h.engine.plugin("safety-net").unwrap().wrapper);
        assert_eq!(h.call().extra["attempts"], 1, "{backend:?}");
    }
}

#[test]
fn a_wrapper_hook_that_cannot_be_one_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let h = HostEnv::boot(
        &fresh_url(plugboard_testkit::Backend::Sqlite, tmp.path()),
        tmp.path(),
    );
    // A contract without the `wrapper` interface: the manifest says so, with its line.
    let e = refused(
        &h,
        &crate::raw_package(
            tmp.path(),
            &wrapper_manifest("0.3", "on_user_after_save_failure"),
            &component("safety_net"),
        ),
    );
    assert!(
        e.to_string()
            .contains("hooks[0].role: a wrapper needs contract 0.4.0 or later"),
        "{e}"
    );
    // A component built against 0.3 (the ip-ban example's) has no `wrapper` export.
    let old = plugboard_package::verify(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/packages/ip-ban-1.0.0.pbpkg"
        ))
        .unwrap(),
        &plugboard_package::VerifyOptions::default(),
    )
    .unwrap();
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &wrapper_manifest("0.4", "on_user_after_save_failure")
                .replace("settings = true", "settings = true\nkv = true"),
            &old.component,
        ),
    );
    assert!(
        matches!(e, InstallError::Component { .. })
            && e.to_string()
                .contains("does not export `plugboard:plugin/wrapper`"),
        "{e}"
    );
    // A collecting event has no chain to wrap.
    let e = refused(
        &h,
        &package(
            tmp.path(),
            &wrapper_manifest("0.4", "on_content_search"),
            &component("safety_net"),
        ),
    );
    assert!(matches!(e, InstallError::WrapperOnCollecting { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "package `safety-net` makes `safety-net` a wrapper on `on_content_search`, which collects: wrappers run around waterfall chains only"
    );
}
