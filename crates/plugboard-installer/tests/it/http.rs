//! The webhook example through the installer: it installs only once its URL's origin is
//! granted, posts each failed save to a real receiver on loopback from every host on the
//! database, and a revocation stops it in every host; its requests are counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugboard_engine::CallOptions;
use plugboard_installer::{Grant, InstallError};
use plugboard_package::Capabilities;
use plugboard_testkit::{BOTH, fresh_url};
use serde_json::{Value, json};

use crate::{DEADLINE_MS, HostEnv, component, failure};

/// A receiver on loopback that keeps every JSON body posted to it.
fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
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
    std::fs::read_to_string(path).unwrap() + &format!("\n[limits]\ndeadline_ms = {DEADLINE_MS}\n")
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
