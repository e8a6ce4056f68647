//! Consent and grants: a package asking for capabilities installs only once they are
//! granted; a refusal installs nothing; grants are revocable live in every host sharing
//! the database; upgrades asking for more need the grant, asking for less drop the rest;
//! every grant, revocation and denied use is in the activity log.

use std::time::{Duration, Instant};

use plugboard_installer::{Grant, InstallError};
use plugboard_package::Capabilities;
use plugboard_store::{ActivityKind, ActivityQuery, LogConfig};
use plugboard_testkit::{BOTH, fresh_url};

use crate::kv::{fail_login, ip_ban_manifest};
use crate::{HostEnv, component, package};

/// How long a revocation may take to reach another host before the test fails. The goal
/// (1 s) is what the test prints; the assertion is generous because a loaded machine can
/// stall any thread for seconds.
const PROMPTLY: Duration = Duration::from_secs(30);

fn grant(text: &str) -> Capabilities {
    Capabilities::parse_grant(text, &Capabilities::default()).unwrap()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < PROMPTLY,
            "not within {PROMPTLY:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// The activity entries about `package`: (action, details).
fn activity(env: &HostEnv, package: &str) -> Vec<(String, serde_json::Value)> {
    env.store
        .activities(&ActivityQuery {
            kind: Some(ActivityKind::Package),
            subject: Some(package.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|a| (a.entry.action, a.entry.extra))
        .collect()
}

#[test]
fn a_package_installs_only_with_what_it_asks_for_granted_and_a_refusal_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = HostEnv::boot(&url, &tmp.path().join("a"));
    let file = package(tmp.path(), &ip_ban_manifest(), &component("ip_ban"));
    let files = env.files();

    for given in [Grant::Held, Grant::These(grant("kv,http=api.example.com"))] {
        let e = env.install_granting(&file, given.clone()).unwrap_err();
        let InstallError::NotGranted { package, missing } = &e else {
            panic!("{e}");
        };
        assert_eq!(package, "ip-ban");
        let expected = if given == Grant::Held {
            "log,settings,kv"
        } else {
            "log,settings"
        };
        assert_eq!(missing.to_grant(), expected);
        let message = e.to_string();
        assert!(
            message.contains("read the settings an operator gives it")
                && message.contains(&format!("--grant {expected}")),
            "{message}"
        );
        // Nothing written: no row, no file, no record.
        assert!(env.store.packages().unwrap().is_empty());
        assert_eq!(env.files(), files);
        assert!(env.records().is_empty());
    }

    // Granted exactly what it asks for (and an origin it does not ask for, which is not
    // kept): installed, and the grants say so.
    env.install_granting(
        &file,
        Grant::These(grant("kv,log,settings,http=api.example.com")),
    )
    .unwrap();
    let g = plugboard_installer::package_grants(&env.store, "ip-ban").unwrap();
    assert_eq!(g.asked, "log,settings,kv");
    assert_eq!(g.granted, "log,settings,kv");
    assert_eq!(g.missing, "");
    assert_eq!(fail_login(&env, "10.1.1.1"), None);
}

#[test]
fn a_revocation_reaches_every_host_within_a_second_and_grants_and_denials_are_logged() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        let a = HostEnv::boot(&url, &tmp.path().join("a"));
        let b = HostEnv::boot(&url, &tmp.path().join("b"));
        let log_a = a.store.activity_log(Some(&a.engine), LogConfig::default());
        let log_b = b.store.activity_log(Some(&b.engine), LogConfig::default());
        let installer_a = a.installer.clone().with_activity_log(log_a);
        let installer_b = b.installer.clone().with_activity_log(log_b);
        let _watch = b.store.watch(&b.engine);
        // As `plugboard serve` follows.
        let _follow = b.installer.follow(Duration::from_millis(250));

        a.install(&package(
            tmp.path(),
            &ip_ban_manifest(),
            &component("ip_ban"),
        ))
        .unwrap();
        wait_for("host B loads ip-ban", || {
            b.installer
                .packages()
                .unwrap()
                .iter()
                .any(|p| p.name == "ip-ban" && p.loaded)
        });
        assert_eq!(fail_login(&b, "10.0.0.1"), None);

        // Revoked from host A: host B's next call is denied, within a second.
        let after = installer_a
            .change_grants("ip-ban", &Capabilities::default(), &grant("kv"))
            .unwrap();
        assert_eq!(after.granted, "log,settings");
        assert_eq!(after.missing, "kv");
        assert!(
            fail_login(&a, "10.0.0.1").is_some_and(|f| f.contains("not granted the `kv`")),
            "{backend:?}: at once in the revoking host"
        );
        let took = wait_for("host B denies kv", || {
            fail_login(&b, "10.0.0.2").is_some_and(|f| f.contains("not granted the `kv`"))
        });
        println!("{backend:?}: the revocation reached the other host in {took:?} (goal: 1 s)");

        // Granted again (from the store, as the CLI does): host B's calls work again.
        plugboard_installer::change_grants(
            &b.store,
            None,
            "ip-ban",
            &grant("kv"),
            &Capabilities::default(),
        )
        .unwrap();
        let took = wait_for("host B grants kv again", || {
            fail_login(&b, "10.0.0.3").is_none()
        });
        println!("{backend:?}: the grant reached the other host in {took:?}");

        assert!(installer_a.flush_activity(Duration::from_secs(30)));
        assert!(installer_b.flush_activity(Duration::from_secs(30)));
        let entries = activity(&a, "ip-ban");
        let find = |action: &str| {
            entries
                .iter()
                .find(|(a, _)| a == action)
                .unwrap_or_else(|| panic!("{backend:?}: no `{action}` entry in {entries:?}"))
                .1
                .clone()
        };
        assert_eq!(find("grant")["capabilities"], "log,settings,kv");
        assert_eq!(find("revoke")["capabilities"], "kv");
        let denied = find("denied");
        assert_eq!(denied["capability"], "kv");
        assert!(denied["count"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn an_upgrade_asking_for_more_needs_the_grant_and_one_asking_for_less_drops_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = HostEnv::boot(&url, &tmp.path().join("a"));
    let v = |version: &str, caps: &str| {
        let m = ip_ban_manifest()
            .replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
            .replace(
                "kv = true\nsettings = true\nlog = true\n",
                &caps
                    .split(',')
                    .map(|c| format!("{c} = true\n"))
                    .collect::<String>(),
            );
        package(tmp.path(), &m, &component("ip_ban"))
    };
    env.install(&v("1.0.0", "kv,settings,log")).unwrap();

    // 1.1.0 asks for the clock too: refused without it, and 1.0.0 stays, working.
    let e = env
        .install_granting(&v("1.1.0", "kv,settings,log,clock"), Grant::Held)
        .unwrap_err();
    assert!(
        matches!(&e, InstallError::NotGranted { missing, .. } if missing.to_grant() == "clock"),
        "{e}"
    );
    assert_eq!(
        env.store.package("ip-ban").unwrap().unwrap().version,
        "1.0.0"
    );
    assert_eq!(fail_login(&env, "10.0.0.1"), None);
    env.install_granting(
        &v("1.1.0", "kv,settings,log,clock"),
        Grant::These(grant("clock")),
    )
    .unwrap();
    let g = plugboard_installer::package_grants(&env.store, "ip-ban").unwrap();
    assert_eq!(g.granted, "log,settings,clock,kv");

    // 1.2.0 no longer asks for log: the grant is dropped, and 1.3.0 asking for it again
    // needs it granted again.
    env.install_granting(&v("1.2.0", "kv,settings,clock"), Grant::Held)
        .unwrap();
    let g = plugboard_installer::package_grants(&env.store, "ip-ban").unwrap();
    assert_eq!(g.granted, "settings,clock,kv");
    let e = env
        .install_granting(&v("1.3.0", "kv,settings,log,clock"), Grant::Held)
        .unwrap_err();
    assert!(matches!(e, InstallError::NotGranted { .. }), "{e}");
}
