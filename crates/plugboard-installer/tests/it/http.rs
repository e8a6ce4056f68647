//! The webhook example through the installer: it installs only once its URL's origin is
//! granted, posts each failed save to a real receiver on loopback from every host on the
//! database, and a revocation stops it in every host; its requests are counted.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugboard_engine::CallOptions;
use plugboard_installer::{Grant, InstallError};
use plugboard_package::Capabilities;
use plugboard_testkit::{BOTH, contains_bytes as contains, fresh_url};
use serde_json::{Value, json};

use crate::{DEADLINE_MS, HostEnv, component, failure};

/// A receiver on loopback that keeps every JSON body posted to it (with the request's
/// `Authorization` header, when it has one, as the body's `authorization`).
fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if let Some((headers, body)) = plugboard_testkit::read_request(&mut reader)
                && let Ok(mut v) = serde_json::from_slice::<Value>(&body)
            {
                if let Some((_, a)) = headers.into_iter().find(|(n, _)| n == "authorization") {
                    v["authorization"] = Value::String(a);
                }
                keep.lock().unwrap().push(v);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

fn webhook_manifest() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/webhook/plugboard.toml");
    // Its own deadline (1 s) also bounds instantiating it at install: the tests' generous
    // one instead, on a loaded machine.
    std::fs::read_to_string(path).unwrap().replace(
        "deadline_ms = 1000",
        &format!("deadline_ms = {DEADLINE_MS}"),
    )
}

fn webhook_package(dir: &Path) -> std::path::PathBuf {
    let schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/webhook/settings.schema.json"),
    )
    .unwrap();
    let bytes = plugboard_testkit::pack_with_schema(
        &webhook_manifest(),
        &component("webhook"),
        Some(&schema),
    )
    .unwrap();
    let file = dir.join("webhook-1.0.0.pbpkg");
    std::fs::write(&file, bytes).unwrap();
    file
}

/// Fires a failed save; the webhook's failure, if any.
fn save_fails(env: &HostEnv) -> Option<String> {
    let state = serde_json::to_value(failure()).unwrap();
    env.engine
        .trace_json("on_user_after_save_failure", state, &CallOptions::default())
        .result
        .err()
        .map(|e| e.to_string())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn the_webhook_posts_to_its_granted_origin_from_every_host_until_revoked() {
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        let (port, got) = receiver();
        let origin = format!("http://127.0.0.1:{port}");
        let a = HostEnv::boot(&url, &tmp.path().join("a"));
        let b = HostEnv::boot(&url, &tmp.path().join("b"));
        let _watch = b.store.watch(&b.engine);
        let _follow = b.installer.follow(Duration::from_millis(250));
        let file = webhook_package(tmp.path());

        // `all` cannot grant `*`: the operator names the origin.
        let e = a.install_granting(&file, Grant::Asked).unwrap_err();
        assert!(
            matches!(&e, InstallError::NotGranted { .. })
                && e.to_string().contains("origins you choose")
                && e.to_string().contains("http=ORIGIN"),
            "{e}"
        );
        a.install_granting(&file, Grant::Written(format!("settings,log,http={origin}")))
            .unwrap();
        plugboard_installer::settings::set(
            &a.store,
            a.installer.secrets(),
            "package.webhook",
            json!({ "url": format!("{origin}/hooks/saves") }),
        )
        .unwrap();
        a.installer.refresh_settings().unwrap();
        assert_eq!(save_fails(&a), None, "{backend:?}");
        let first = got.lock().unwrap()[0].clone();
        assert_eq!(first["code"], "validation_failed");
        assert_eq!(first["event"], "on_user_after_save_failure");

        // The second host posts too, once it has loaded the package and its settings.
        wait_for("host B loads the webhook with its settings", || {
            b.installer
                .packages()
                .unwrap()
                .iter()
                .any(|p| p.name == "webhook" && p.loaded)
                && save_fails(&b).is_none()
        });
        assert!(got.lock().unwrap().len() >= 2);

        // Revoked: denied in both hosts, nothing more arrives.
        let held = plugboard_installer::package_grants(&a.store, "webhook").unwrap();
        a.installer
            .change_grants(
                "webhook",
                &Capabilities::default(),
                &Capabilities::parse_grant("http", held.granted()).unwrap(),
            )
            .unwrap();
        let g = plugboard_installer::package_grants(&a.store, "webhook").unwrap();
        assert_eq!(g.granted, "log,settings", "{backend:?}");
        let f = save_fails(&a);
        assert!(
            f.as_deref()
                .is_some_and(|f| f.contains("HttpRequestDenied")),
            "{backend:?}: {f:?}"
        );
        let took = wait_for("host B is denied", || {
            save_fails(&b).is_some_and(|f| f.contains("HttpRequestDenied"))
        });
        println!("{backend:?}: the http revocation reached the other host in {took:?}");
        let arrived = got.lock().unwrap().len();
        assert!(save_fails(&a).is_some() && save_fails(&b).is_some());
        assert_eq!(
            got.lock().unwrap().len(),
            arrived,
            "nothing arrives once revoked"
        );

        let counts: Vec<_> = a.installer.http_counts();
        let (_, c) = counts.iter().find(|(n, _)| n == "webhook").unwrap();
        assert_eq!(c.requests, 1, "{c:?}");
        assert!(c.denied >= 2, "{c:?}");
        assert!(c.bytes_sent > 0, "{c:?}");
    }
}

/// Every byte the test wrote under `dir` (the SQLite database with its journal, the
/// packages, the caches) and, on PostgreSQL, a dump of the whole database.
fn everything_stored(url: &str, dir: &Path) -> Vec<u8> {
    let mut out = plugboard_testkit::bytes_under(dir);
    if url.starts_with("postgres") {
        let dump = std::process::Command::new("pg_dump")
            .args(["--data-only", "--dbname", url])
            .output()
            .unwrap();
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        assert!(
            String::from_utf8_lossy(&dump.stdout).contains("package.webhook"),
            "the dump holds the settings"
        );
        out.extend(dump.stdout);
    }
    out
}

#[test]
fn a_secret_setting_is_sealed_at_rest_reaches_only_the_plugin_and_needs_the_hosts_key() {
    const SECRET: &str = "s3cr3t-Bearer-7f1c9a";
    const ROTATED: &str = "r0tated-Bearer-22b4e0";
    for backend in BOTH {
        let tmp = tempfile::tempdir().unwrap();
        let url = fresh_url(backend, tmp.path());
        let (port, got) = receiver();
        let origin = format!("http://127.0.0.1:{port}");
        let a = HostEnv::boot(&url, &tmp.path().join("a"));
        a.install_granting(
            &webhook_package(tmp.path()),
            Grant::Written(format!("settings,log,http={origin}")),
        )
        .unwrap();
        let set = |value: Value| {
            plugboard_installer::settings::set(&a.store, a.installer.secrets(), "webhook", value)
                .map(|_| a.installer.refresh_settings().unwrap())
        };
        let last_authorization = || {
            assert_eq!(save_fails(&a), None, "{backend:?}");
            got.lock().unwrap().last().unwrap()["authorization"].clone()
        };
        let hook = format!("{origin}/hook");
        set(json!({ "url": hook, "token": SECRET })).unwrap();

        // Stored sealed; shown without it; the plugin has it.
        let stored = a.store.settings().read("package.webhook").unwrap().unwrap();
        assert!(plugboard_store::is_sealed(&stored["token"]), "{stored}");
        assert!(!stored.to_string().contains(SECRET));
        let (shown, secrets) = plugboard_store::redact_secrets(&stored);
        assert_eq!(shown, json!({ "url": hook }));
        assert_eq!(secrets, ["token"]);
        assert_eq!(last_authorization(), format!("Bearer {SECRET}"));

        // Left out: kept. Invalid: refused without quoting it, nothing changed.
        set(json!({ "url": format!("{hook}/2") })).unwrap();
        assert_eq!(last_authorization(), format!("Bearer {SECRET}"));
        let before = a.store.settings().read("package.webhook").unwrap();
        let e = set(json!({ "url": hook, "token": "tiny7ch" })).unwrap_err();
        assert!(
            matches!(&e, InstallError::InvalidSetting { .. })
                && e.to_string().contains("/token")
                && !e.to_string().contains("tiny7ch"),
            "{e}"
        );
        assert_eq!(a.store.settings().read("package.webhook").unwrap(), before);
        // `null` removes it; set again, rotated.
        set(json!({ "url": hook, "token": null })).unwrap();
        assert_eq!(last_authorization(), Value::Null);
        set(json!({ "url": hook, "token": ROTATED })).unwrap();
        assert_eq!(last_authorization(), format!("Bearer {ROTATED}"));

        // A host with another key cannot open it: its plugin posts without it. A host
        // given the same key (a copy of the file) opens it.
        let b = HostEnv::boot(&url, &tmp.path().join("b"));
        assert_eq!(save_fails(&b), None, "{backend:?}");
        assert_eq!(
            got.lock().unwrap().last().unwrap()["authorization"],
            Value::Null
        );
        std::fs::create_dir_all(tmp.path().join("c")).unwrap();
        std::fs::copy(
            tmp.path().join("a/secrets.key"),
            tmp.path().join("c/secrets.key"),
        )
        .unwrap();
        let c = HostEnv::boot(&url, &tmp.path().join("c"));
        assert_eq!(save_fails(&c), None, "{backend:?}");
        assert_eq!(
            got.lock().unwrap().last().unwrap()["authorization"],
            format!("Bearer {ROTATED}")
        );
        assert_ne!(
            a.installer.secrets().key_id().unwrap(),
            b.installer.secrets().key_id().unwrap()
        );

        // Nowhere at rest: not in the database (settings, activity, anything), its
        // journal, or any file the hosts wrote.
        for host in [&a, &b, &c] {
            host.installer.flush_activity(Duration::from_secs(30));
        }
        let all = everything_stored(&url, tmp.path());
        for secret in [SECRET, ROTATED, "tiny7ch"] {
            assert!(
                !contains(&all, secret),
                "{backend:?}: `{secret}` is stored somewhere"
            );
        }
        assert!(contains(&all, "$sealed"), "the search reads the settings");
    }
}
