//! `plugboard test`: an author calls a package's plugins once in the real WebAssembly host,
//! from a package file or a plugin directory, with a state, settings and kv data of their
//! choosing, with no server and no database of theirs; a failing call exits non-zero and
//! says why.

use std::path::Path;

use crate::{plugboard_in, stdout};

const FAILED_LOGIN: &str = r#"{"conn": {"method": "POST", "path": "/login"}, "ip": "10.0.0.7", "endpoint": "html", "error": {"code": "bad_password", "message": "no"}}"#;

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../examples/packages/{name}-1.0.0.pbpkg"))
        .display()
        .to_string()
}

fn test(home: &Path, args: &[&str]) -> std::process::Output {
    plugboard_in(home).arg("test").args(args).output().unwrap()
}

#[test]
fn an_author_runs_a_package_with_a_state_settings_and_kv_and_sees_the_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let state = tmp.path().join("failed-login.json");
    std::fs::write(&state, FAILED_LOGIN).unwrap();
    let state = state.to_str().unwrap();

    // The counter (the first event the package hooks) adds one to what kv held, and at
    // the threshold from its settings logs the ban.
    let out = test(
        &home,
        &[
            &example("ip-ban"),
            "--state",
            state,
            "--kv",
            "fail:10.0.0.7=2",
            "--settings",
            r#"{"threshold": 3}"#,
            "--json",
        ],
    );
    let answer: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["event"], "on_user_login_failure");
    assert_eq!(answer["trace"][0]["plugin"], "ip-ban-counter");
    assert_eq!(answer["trace"][0]["outcome"], "continued");
    assert_eq!(answer["kv"]["fail:10.0.0.7"], "3", "{answer}");
    let logged = String::from_utf8_lossy(&out.stderr);
    assert!(logged.contains("10.0.0.7 is banned"), "{logged}");

    // Past the threshold, the login is halted, with its notice.
    std::fs::write(tmp.path().join("login.json"), r#"{"ip": "10.0.0.7"}"#).unwrap();
    let out = test(
        &home,
        &[
            &example("ip-ban"),
            "--event",
            "on_user_before_login",
            "--state",
            tmp.path().join("login.json").to_str().unwrap(),
            "--settings",
            r#"{"threshold": 3}"#,
            "--kv",
            "fail:10.0.0.7=3",
        ],
    );
    let shown = stdout(&out);
    assert!(
        shown.contains("halted by ip-ban")
            && shown.contains("Too many failed logins from 10.0.0.7")
            && shown.contains("fail:10.0.0.7 = 3"),
        "{shown}"
    );

    // Nothing of the user's was set up or written: no database in the home (only the
    // compile cache, shared with later runs).
    assert!(!home.join("plugboard.db").exists());
}

#[test]
fn a_plugin_directory_is_packed_and_run_and_a_failing_call_exits_non_zero_saying_why() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let state = tmp.path().join("failure.json");
    std::fs::write(
        &state,
        r#"{"error": {"code": "validation_failed", "message": "email taken"}, "ip": "127.0.0.1", "endpoint": "html", "status": "added", "conn": {"method": "POST", "path": "/users"}, "modifier_user": "self"}"#,
    )
    .unwrap();
    let state = state.to_str().unwrap();
    // A plugin's directory, as an author has it: the manifest and the built component.
    let dir = tmp.path().join("webhook");
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/webhook");
    for f in ["plugboard.toml", "settings.schema.json"] {
        std::fs::copy(plugin.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(
        plugboard_testkit::component_path("webhook"),
        dir.join("plugin.wasm"),
    )
    .unwrap();
    // Posting to a port nobody listens on, which its grant names.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let run = |settings: &str| {
        test(
            &home,
            &[
                dir.to_str().unwrap(),
                "--state",
                state,
                "--grant",
                &format!("settings,log,http={origin}"),
                "--settings",
                settings,
            ],
        )
    };
    let out = run(&format!(r#"{{"url": "{origin}/hook"}}"#));
    assert!(!out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("webhook")
            && shown.contains("failed")
            && shown.contains("ConnectionRefused"),
        "{shown}"
    );
    assert!(
        shown.contains("http: 1 requests, 0 denied, 1 failed"),
        "{shown}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: the call failed"));

    // Settings its schema refuses: a clear error naming the field; nothing runs.
    let out = run(r#"{"url": "ftp://example.com"}"#);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("--settings") && why.contains("/url"), "{why}");
    assert!(out.stdout.is_empty());

    // A state that is not JSON, and an event the package does not hook.
    std::fs::write(tmp.path().join("bad.json"), "{not json").unwrap();
    let out = test(
        &home,
        &[
            dir.to_str().unwrap(),
            "--state",
            tmp.path().join("bad.json").to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json is not JSON"));
    let out = test(
        &home,
        &[
            dir.to_str().unwrap(),
            "--state",
            state,
            "--event",
            "on_content_prepare",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("do not hook `on_content_prepare` (they hook `on_user_after_save_failure`)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
