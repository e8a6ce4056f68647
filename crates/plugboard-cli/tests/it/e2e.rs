//! `plugboard serve` end to end: the real binary on loopback, its dashboard driven in
//! headless Chromium by `e2e/dashboard.mjs` (playwright-core). Screenshots are kept in
//! `target/e2e-screenshots/`. Outside CI the test is skipped, with a message, when Chromium
//! or `e2e/node_modules` is missing; in CI (`CI=true`, where `.ci/run` installs both) it
//! must run.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{run, serve};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if !root().join("e2e/node_modules/playwright-core").exists() {
        return Some("e2e/node_modules is missing (npm ci --prefix e2e)".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    None
}

/// A package the dashboard uploads: the hostile component (which passes any state through
/// unchanged on ordinary events) hooking `on_content_prepare`.
fn passthrough_package(dir: &Path) -> PathBuf {
    let built = plugboard_testkit::build_plugins(&root()).unwrap();
    let manifest = format!(
        r#"[package]
name = "passthrough"
version = "1.0.0"
description = "Passes content through unchanged."
authors = ["Tests"]
license = "MIT"
contract = "0.2"
settings_schema = "settings.schema.json"

[limits]
{}

[capabilities]
log = true
settings = true

[[hooks]]
event = "on_content_prepare"
priority = 50
"#,
        crate::DEADLINE
    );
    let schema = r#"{"type": "object", "properties": {
        "level": {"type": "integer", "minimum": 1, "description": "How much to pass."},
        "mode": {"enum": ["fast", "careful"]},
        "verbose": {"type": "boolean"},
        "api_key": {"type": "string", "minLength": 8, "writeOnly": true}
    }}"#;
    let component = std::fs::read(built.join("plugin_hostile.wasm")).unwrap();
    let bytes = plugboard_testkit::pack_with_schema(&manifest, &component, Some(schema)).unwrap();
    let file = dir.join("passthrough-1.0.0.pbpkg");
    std::fs::write(&file, bytes).unwrap();
    file
}

#[test]
fn the_dashboard_in_headless_chromium() {
    if let Some(why) = missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the end-to-end test must run in CI: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let package = passthrough_package(tmp.path());
    let server = serve(&home);
    // Data a package keeps with `kv`, as its plugin would write it (the Data page shows it,
    // and erases one entry).
    {
        let store = plugboard_store::Store::open(&format!(
            "sqlite://{}",
            home.join("plugboard.db").display()
        ))
        .unwrap();
        let kv = store.kv("passthrough").unwrap();
        for (key, value) in [("fail:203.0.113.9", "3"), ("fail:198.51.100.4", "1")] {
            kv.set(
                key,
                value.as_bytes(),
                None,
                plugboard_store::KvQuota::DEFAULT,
            )
            .unwrap();
        }
    }
    let shots = root().join("target/e2e-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut node = Command::new("node")
        .arg(root().join("e2e/dashboard.mjs"))
        .args([&server.base, &server.token])
        .arg(&shots)
        .arg(&package)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = node.stdin.take().unwrap();
    let mut transcript = Vec::new();
    // Read the script's lines on a thread, so that a stuck browser fails the test after a
    // while instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = node.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Only a guard against a stuck browser: generous, since headless Chromium on a busy
    // machine is slow (the script's own waits allow 3 minutes a step).
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line.unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                panic!("the dashboard script took over 20 minutes: {transcript:?}");
            }
        };
        eprintln!("e2e: {line}");
        transcript.push(line.clone());
        // The script asks for changes made from the CLI against the same database.
        if let Some(what) = line.strip_prefix("WAIT cli-") {
            let (verb, plugin) = what.split_once(' ').unwrap();
            let out = run(&home, &[verb, plugin]);
            assert!(out.status.success(), "plugboard {verb} {plugin}: {out:?}");
            writeln!(stdin, "go").unwrap();
        }
    }
    let status = node.wait().unwrap();
    assert!(
        status.success() && transcript.last().map(String::as_str) == Some("OK"),
        "the dashboard script failed: {transcript:?}"
    );
    for shot in [
        "01-login",
        "04-in-chain",
        "05-stopped-live",
        "08-activity",
        "08b-activity-filtered",
        "08c-activity-plugin",
        "09-trace",
    ] {
        assert!(shots.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
    // The secret typed into the settings form is stored sealed: no file of the host's
    // (the database and its journal included) holds it.
    drop(server);
    assert!(
        !plugboard_testkit::contains_bytes(&plugboard_testkit::bytes_under(&home), E2E_SECRET),
        "the secret is in a file of the host's"
    );
}

/// The secret `e2e/dashboard.mjs` types into the settings form.
const E2E_SECRET: &str = "e2e-secret-value-42";
