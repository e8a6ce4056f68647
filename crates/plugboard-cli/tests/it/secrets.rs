//! A secret setting as an operator handles it: set through the API and from standard input
//! with the CLI, used by the webhook (its bearer token reaches a real receiver), and never
//! in an API answer, CLI output, activity entry, log line or file of the host's.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use plugboard_testkit::contains_bytes as contains;

use crate::{PATIENCE, PROMPTLY, http, plugboard_in, run, serve_logging, stdout, wait_for};

const SECRET: &str = "api-secret-Q7x2Lm9v";
const ROTATED: &str = "rotated-secret-Z4k8Pw1n";
const INVALID: &str = "tiny7ch";

/// A receiver on loopback keeping each request's `Authorization` header ("" when none).
fn receiver() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let Some((headers, _)) = plugboard_testkit::read_request(&mut reader) else {
                continue;
            };
            let authorization = headers
                .into_iter()
                .find(|(n, _)| n == "authorization")
                .map(|(_, v)| v)
                .unwrap_or_default();
            keep.lock().unwrap().push(authorization);
            let _ = stream.write_all(
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, got)
}

/// The webhook example packed with its settings schema. Its own deadline (1 s) is raised:
/// a post to a receiver on a loaded machine (the tests run side by side on two cores) can
/// take longer, and a plugin that times out repeatedly is stopped. The test's installer
/// rules allow it.
fn webhook_package(home: &Path, dir: &Path) -> PathBuf {
    crate::pack_example(home, dir, "webhook", "webhook", |m| {
        m.replace("deadline_ms = 1000", "deadline_ms = 20000")
    })
}

/// Fires a failed save on the server.
fn fire(server: &crate::Serve) {
    crate::failed_save(server);
}

#[test]
fn a_secret_setting_reaches_the_plugin_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let log = tmp.path().join("serve.log");
    // Its own build of the webhook, not the bundled one, under a policy that allows its
    // longer deadline.
    crate::skip_examples(&home, &["webhook"]);
    stdout(&run(
        &home,
        &[
            "settings",
            "set",
            "installer",
            r#"{"max_deadline_ms": 20000}"#,
        ],
    ));
    let server = serve_logging(&home, &log);
    let (port, got) = receiver();
    let origin = format!("http://127.0.0.1:{port}");
    let package = webhook_package(&home, tmp.path());
    stdout(&run(
        &home,
        &[
            "install",
            package.to_str().unwrap(),
            "--grant",
            &format!("settings,log,http={origin}"),
        ],
    ));
    wait_for(PATIENCE, "the server loads the webhook", || {
        let (_, body) = http(
            &server,
            "GET",
            "/api/events/on_user_after_save_failure",
            None,
        );
        body.contains("\"webhook\"")
    });

    // Set through the API: the answer names the secret field, never its value.
    let hook = format!("{origin}/hook");
    let (status, answer) = http(
        &server,
        "PUT",
        "/api/settings/webhook",
        Some(&format!(r#"{{"url": "{hook}", "token": "{SECRET}"}}"#)),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""secrets":["token"]"#) && !answer.contains(SECRET),
        "{answer}"
    );
    let bearer = |token: &str| format!("Bearer {token}");
    wait_for(PROMPTLY, "the webhook posts with the secret", || {
        fire(&server);
        got.lock().unwrap().last() == Some(&bearer(SECRET))
    });

    // Refused without being quoted; nothing changes.
    let (status, answer) = http(
        &server,
        "PUT",
        "/api/settings/webhook",
        Some(&format!(r#"{{"url": "{hook}", "token": "{INVALID}"}}"#)),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("/token") && !answer.contains(INVALID),
        "{answer}"
    );

    // Rotated from the CLI, read from standard input (not the command line); the running
    // server's plugin uses the new one.
    let mut child = plugboard_in(&home)
        .args(["settings", "set", "webhook", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        r#"{{"url": "{hook}", "token": "{ROTATED}"}}"#
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        PROMPTLY,
        "the server's plugin uses the rotated secret",
        || {
            fire(&server);
            got.lock().unwrap().last() == Some(&bearer(ROTATED))
        },
    );

    // Read back every way an operator can: named, never shown.
    let get = run(&home, &["settings", "get", "webhook"]);
    let shown = stdout(&get);
    assert!(shown.contains(&hook) && !shown.contains(ROTATED), "{shown}");
    assert!(
        String::from_utf8_lossy(&get.stderr)
            .contains("secret fields set (write-only, not shown): token")
    );
    let mut answers = vec![shown, stdout(&run(&home, &["settings", "list"]))];
    for path in [
        "/api/settings",
        "/api/settings/webhook",
        "/api/settings/package.webhook",
        "/api/packages/webhook/settings",
        "/api/activity?limit=1000",
        "/api/plugins",
        "/api/events/on_user_after_save_failure",
        "/metrics",
    ] {
        let (status, body) = http(&server, "GET", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        answers.push(body);
    }
    let (_, form) = http(&server, "GET", "/api/packages/webhook/settings", None);
    let form: serde_json::Value = serde_json::from_str(&form).unwrap();
    assert_eq!(form["secret_fields"], serde_json::json!(["token"]));
    assert_eq!(form["secrets"], serde_json::json!(["token"]));
    assert_eq!(form["configs"], serde_json::json!({ "url": hook }));
    for a in &answers {
        for secret in [SECRET, ROTATED, INVALID] {
            assert!(!a.contains(secret), "`{secret}` shown: {a}");
        }
    }

    // Nowhere at rest or in the log: every file of the host's (the database and its
    // journal, the packages, the key file) and everything the server logged at debug.
    drop(server);
    let mut all = std::fs::read(&log).unwrap();
    assert!(contains(&all, "plugin settings applied"), "the log is read");
    all.extend(plugboard_testkit::bytes_under(&home));
    for secret in [SECRET, ROTATED, INVALID] {
        assert!(!contains(&all, secret), "`{secret}` is stored or logged");
    }
    assert!(contains(&all, "$sealed"), "the database was read");
}
