//! Every "ok" means done, in every process sharing the database: an operator's settings,
//! installer rules, stops and uninstalls, issued from the CLI or the API, take effect in a
//! running `plugboard serve` (another process) within a second; bad values are refused
//! when set, naming the field, and change nothing; read-only commands write nothing.

use std::path::{Path, PathBuf};

use crate::{PATIENCE, PROMPTLY, http, run, serve, stdout, wait_for};

/// The guard plugin (halts `on_user_after_save_failure` when the error's code is on the
/// list its settings give) as a package with a settings schema, packed by the CLI.
fn guard_package(home: &Path, dir: &Path) -> PathBuf {
    guard_package_with(home, dir, "", "")
}

/// The same with `limits` added to its `[limits]`; `tag` keeps its files apart.
fn guard_package_with(home: &Path, dir: &Path, tag: &str, limits: &str) -> PathBuf {
    let built = plugboard_testkit::component_path("guard");
    let src = dir.join(format!("guard-src{tag}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("plugboard.toml"),
        format!(
            r#"[package]
name = "code-guard"
version = "1.0.0"
description = "Halts failed saves whose error code is blocked."
authors = ["Tests"]
license = "MIT"
contract = "0.2"
settings_schema = "settings.schema.json"

[capabilities]
settings = true

[limits]
{}
{limits}

[[hooks]]
event = "on_user_after_save_failure"
plugin = "code-guard"
priority = 5
"#,
            crate::DEADLINE
        ),
    )
    .unwrap();
    std::fs::write(
        src.join("settings.schema.json"),
        r#"{"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 10}"#,
    )
    .unwrap();
    std::fs::copy(built, src.join("plugin.wasm")).unwrap();
    let file = dir.join(format!("code-guard-1.0.0{tag}.pbpkg"));
    stdout(&run(
        home,
        &[
            "pack",
            src.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    file
}

/// A call's body: a failed save with this error code (the typed reference state, as JSON).
fn failure(code: &str) -> String {
    use plugboard::reference::{
        Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSaveFailure, SaveStatus,
    };
    let state = OnUserAfterSaveFailure {
        error: ErrorPayload::new(code, "save failed"),
        ip: Ip::LOCALHOST,
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/users"),
        modifier_user: ModifierUser::SelfUser,
        extra: serde_json::Value::Null,
    };
    serde_json::json!({ "state": state }).to_string()
}

fn halted_by(server: &crate::Serve, code: &str) -> Option<String> {
    let (status, body) = http(
        server,
        "POST",
        "/api/events/on_user_after_save_failure/call",
        Some(&failure(code)),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["halted_by"].as_str().map(str::to_owned)
}

#[test]
fn a_plugins_settings_set_from_the_cli_reach_a_running_server_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    let package = guard_package(&home, tmp.path());
    stdout(&run(
        &home,
        &["install", "--grant", "all", package.to_str().unwrap()],
    ));
    wait_for(PATIENCE, "the server loads the package", || {
        chain(&server, "on_user_after_save_failure").contains(&"code-guard".to_owned())
    });
    // The guard's default block list is `["blocked"]`.
    assert_eq!(halted_by(&server, "E1"), None);
    assert_eq!(halted_by(&server, "blocked").as_deref(), Some("code-guard"));

    // Set by the plugin's name: stored as the package's settings, checked by its schema.
    let out = stdout(&run(&home, &["settings", "set", "code-guard", r#"["E1"]"#]));
    assert!(
        out.contains("package.code-guard") && out.contains("read by code-guard"),
        "{out}"
    );
    let took = wait_for(PROMPTLY, "the new block list applies", || {
        halted_by(&server, "E1").as_deref() == Some("code-guard")
    });
    eprintln!("plugin settings applied by the server after {took:?}");
    assert_eq!(halted_by(&server, "blocked"), None);

    // A value the schema refuses names where it is wrong and changes nothing.
    let bad = run(&home, &["settings", "set", "code-guard", r#"["E2", ""]"#]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("setting `package.code-guard`") && err.contains("/1"),
        "{err}"
    );
    let now = stdout(&run(&home, &["settings", "get", "package.code-guard"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&now).unwrap(),
        serde_json::json!(["E1"])
    );
    // Through the API too: refused with the field, and the plugin keeps its settings.
    let (status, body) = http(
        &server,
        "PUT",
        "/api/settings/code-guard",
        Some(r#"{"not": "a list"}"#),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_setting"), "{body}");
    let (status, body) = http(
        &server,
        "PUT",
        "/api/settings/code-guard",
        Some(r#"["E3"]"#),
    );
    assert_eq!(status, 200, "{body}");
    // Applied at once in the server that took it.
    assert_eq!(halted_by(&server, "E3").as_deref(), Some("code-guard"));
    assert_eq!(halted_by(&server, "E1"), None);
}

#[test]
fn installer_rules_are_checked_when_set_and_apply_to_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    // A bad key is refused now, naming the field; nothing is stored.
    let bad = run(
        &home,
        &[
            "settings",
            "set",
            "installer",
            r#"{"trusted_keys": ["zz"], "max_memory_mib": "lots"}"#,
        ],
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("max_memory_mib:"), "{err}");
    let unknown = run(
        &home,
        &["settings", "set", "installer", r#"{"allowed_host": []}"#],
    );
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("unknown field `allowed_host`"), "{err}");
    let bad_key = run(
        &home,
        &[
            "settings",
            "set",
            "installer",
            r#"{"trusted_keys": ["zz"]}"#,
        ],
    );
    let err = String::from_utf8_lossy(&bad_key.stderr);
    assert!(err.contains("trusted_keys[0]"), "{err}");
    assert!(
        !run(&home, &["settings", "get", "installer"])
            .status
            .success()
    );

    // Trusting a key makes the running server refuse unsigned uploads within a second;
    // removing it makes them acceptable again, with no restart. Whether the server applies
    // the rules yet is asked with a package it refuses either way, since it asks for more
    // memory than allowed, so that asking changes nothing: once keys are trusted, it is
    // refused first for its missing signature. (Asking with the real package would install
    // it if asked too early, and a busy machine decides what is too early.)
    let keys = tmp.path().join("signer");
    stdout(&run(&home, &["keygen", "--out", keys.to_str().unwrap()]));
    let public = std::fs::read_to_string(tmp.path().join("signer.pub")).unwrap();
    let public = public
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned();
    let rules = format!(r#"{{"trusted_keys": ["{public}"]}}"#);
    let package = guard_package(&home, tmp.path());
    let bytes = std::fs::read(&package).unwrap();
    let upload = |server: &crate::Serve| -> u16 {
        crate::http_bytes(server, "POST", "/api/packages?grant=all", &bytes).0
    };
    let greedy = guard_package_with(&home, tmp.path(), "-greedy", "memory_mib = 1024");
    let greedy = std::fs::read(&greedy).unwrap();
    let keys_applied = |server: &crate::Serve| -> bool {
        let (status, body) = crate::http_bytes(server, "POST", "/api/packages?grant=all", &greedy);
        assert_eq!(status, 422, "{body}");
        body.contains("not signed")
    };
    assert!(!keys_applied(&server));
    stdout(&run(&home, &["settings", "set", "installer", &rules]));
    let took = wait_for(PROMPTLY, "the server applies the trusted keys", || {
        keys_applied(&server)
    });
    eprintln!("trusted keys applied by the server after {took:?}");
    assert_eq!(upload(&server), 422, "unsigned uploads are refused");
    stdout(&run(&home, &["settings", "delete", "installer"]));
    let took = wait_for(PROMPTLY, "the server drops the trusted keys", || {
        !keys_applied(&server)
    });
    eprintln!("the rules' removal applied by the server after {took:?}");
    assert_eq!(upload(&server), 200, "unsigned uploads are accepted again");
}

/// A package of the hostile component, which passes states through on ordinary events and
/// refuses to be stopped, deleted or unregistered.
fn stubborn_package(dir: &Path) -> PathBuf {
    let manifest = format!(
        r#"[package]
name = "stubborn"
version = "1.0.0"
description = "Refuses to be taken out."
authors = ["Tests"]
license = "MIT"
contract = "0.2"

[limits]
{}

[[hooks]]
event = "on_content_prepare"
plugin = "stubborn"
priority = 50
"#,
        crate::DEADLINE
    );
    let component = plugboard_testkit::component("hostile");
    let bytes = plugboard_testkit::pack(&manifest, &component).unwrap();
    let file = dir.join("stubborn-1.0.0.pbpkg");
    std::fs::write(&file, bytes).unwrap();
    file
}

fn chain(server: &crate::Serve, event: &str) -> Vec<String> {
    let (status, body) = http(server, "GET", &format!("/api/events/{event}"), None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .or_else(|| p["name"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A running `plugboard serve` with the stubborn package installed (by the CLI, another
/// process) and loaded; the temp dir holding its home, the home, and the server.
fn serve_with_stubborn() -> (tempfile::TempDir, PathBuf, crate::Serve) {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    let package = stubborn_package(tmp.path());
    stdout(&run(
        &home,
        &["install", "--grant", "all", package.to_str().unwrap()],
    ));
    wait_for(PATIENCE, "the server loads stubborn", || {
        chain(&server, "on_content_prepare").contains(&"stubborn".to_owned())
    });
    (tmp, home, server)
}

#[test]
fn a_plugin_cannot_veto_its_stop_or_its_uninstall() {
    let (_tmp, home, server) = serve_with_stubborn();

    // Through the API: the stop goes ahead, and the refusal is reported.
    let (status, body) = http(&server, "POST", "/api/plugins/stubborn/stop", None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["overridden"][0]["plugin"], "stubborn", "{body}");
    assert_eq!(
        v["overridden"][0]["callback_error"],
        "hostile refuses to stop"
    );
    assert!(!chain(&server, "on_content_prepare").contains(&"stubborn".to_owned()));
    let (_, body) = http(&server, "POST", "/api/plugins/stubborn/enable", None);
    assert!(body.contains("restarted"), "{body}");

    // Through the CLI: the whole uninstall happens, whatever the plugin says.
    let out = stdout(&run(&home, &["uninstall", "stubborn"]));
    assert!(out.contains("uninstalled stubborn"), "{out}");
    assert!(
        out.contains("warning: stubborn's unregister callback failed (hostile refuses to unregister); removed anyway"),
        "{out}"
    );
    let took = wait_for(PROMPTLY, "the server drops stubborn", || {
        !chain(&server, "on_content_prepare").contains(&"stubborn".to_owned())
            && http(&server, "GET", "/api/plugins/stubborn", None).0 == 404
    });
    eprintln!("uninstall applied by the server after {took:?}");
    let (_, packages) = http(&server, "GET", "/api/packages", None);
    assert!(!packages.contains("\"stubborn\""), "{packages}");
    assert!(
        !home.join("packages/stubborn").exists(),
        "its files are gone"
    );
    let listed = stdout(&run(&home, &["plugins"]));
    assert!(!listed.contains("stubborn"), "{listed}");
}

#[test]
fn read_only_commands_create_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let missing = tmp.path().join("no-such-dir/x.db");
    let url = format!("sqlite://{}", missing.display());
    for args in [
        vec!["plugins"],
        vec!["activity"],
        vec!["packages"],
        vec!["outdated"],
        vec!["settings", "list"],
        vec!["settings", "get", "installer"],
        vec!["stop", "anything"],
    ] {
        let mut all = vec!["--database", url.as_str()];
        all.extend_from_slice(&args);
        let out = run(&home, &all);
        assert!(!out.status.success(), "{args:?} succeeded on no database");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no Plugboard database at"), "{args:?}: {err}");
        assert!(
            !tmp.path().join("no-such-dir").exists(),
            "{args:?} created it"
        );
    }

    // On a real database, listing packages loads nothing and records nothing.
    let db = format!("sqlite://{}", tmp.path().join("db.sqlite").display());
    let package = stubborn_package(tmp.path());
    stdout(&run(
        &home,
        &[
            "--database",
            &db,
            "install",
            "--grant",
            "all",
            package.to_str().unwrap(),
        ],
    ));
    let count = |home: &Path| -> usize {
        let out = stdout(&run(
            home,
            &["--database", &db, "activity", "--json", "--limit", "1000"],
        ));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let before = count(&home);
    let listed = stdout(&run(&home, &["--database", &db, "packages"]));
    assert!(
        listed.contains("stubborn") && listed.contains("installed"),
        "{listed}"
    );
    assert_eq!(count(&home), before, "`packages` wrote activity entries");
}

#[test]
fn a_delete_from_the_cli_unloads_the_code_in_a_running_server() {
    let (_tmp, home, server) = serve_with_stubborn();
    let out = stdout(&run(&home, &["delete", "stubborn"]));
    assert!(
        out.contains("stubborn: code unloaded (record kept)"),
        "{out}"
    );
    let took = wait_for(PROMPTLY, "the server unloads stubborn", || {
        !chain(&server, "on_content_prepare").contains(&"stubborn".to_owned())
    });
    eprintln!("delete applied by the server after {took:?}");
    let (status, body) = http(&server, "GET", "/api/plugins/stubborn", None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["loaded"], false, "{body}");
    assert_eq!(v["status"], "started", "the record and its status are kept");
    // `start` brings it back, from any process.
    stdout(&run(&home, &["start", "stubborn"]));
    let took = wait_for(PROMPTLY, "stubborn is back", || {
        chain(&server, "on_content_prepare").contains(&"stubborn".to_owned())
    });
    eprintln!("start applied by the server after {took:?}");
}

#[test]
fn an_error_says_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(tmp.path(), &["serve", "--addr", &addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("in use").count(), 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn an_upload_refused_at_verification_is_in_the_activity_log() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    let (status, body) =
        crate::http_bytes(&server, "POST", "/api/packages", b"not a package at all");
    assert_eq!(status, 422, "{body}");
    wait_for(PATIENCE, "the refusal is recorded", || {
        let out = stdout(&run(
            &home,
            &[
                "activity", "--kind", "package", "--status", "error", "--json",
            ],
        ));
        out.contains("\"verification\"") && out.contains("(upload)")
    });
}
