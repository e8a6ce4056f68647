//! `install`, `upgrade`, `rollback`, `uninstall`, `packages` and `outdated` with real
//! packages built from the example components: refusals change nothing, downloads go over
//! real HTTP on loopback, a SIGKILL mid-install leaves the old state or the new one, and a
//! running `watch` host applies what another process installs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use plugboard_testkit::{BOTH, fresh_url};
use serde_json::Value;

use crate::operator::{Host, with_db};
use crate::{plugboard_in, run, stdout};

use plugboard_testkit::component_path as component;

/// The manifest of package `name` `version`: one hook on `on_user_after_save_failure`
/// whose plugin is `wasm_<name>`; `extra` is appended.
fn manifest(name: &str, version: &str, extra: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "{version}"
description = "Audits failed saves"
license = "MIT"
contract = "0.2"
{extra}
[[hooks]]
event = "on_user_after_save_failure"
plugin = "wasm_{name}"
priority = 50

[limits]
memory_mib = 64
{deadline}

[capabilities]
log = true
clock = true
"#,
        deadline = crate::DEADLINE
    )
}

/// Packs `plugboard.toml` (`manifest`) + `plugin.wasm` (`wasm`) (+ `README.md`) into
/// `root/<file>.pbpkg`; returns the file and its sha256.
fn pack_with(
    root: &Path,
    file: &str,
    manifest: &str,
    wasm: &[u8],
    readme: Option<&str>,
) -> (PathBuf, String) {
    let dir = root.join(format!("src-{file}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugboard.toml"), manifest).unwrap();
    std::fs::write(dir.join("plugin.wasm"), wasm).unwrap();
    if let Some(r) = readme {
        std::fs::write(dir.join("README.md"), r).unwrap();
    }
    let out = root.join(format!("{file}.pbpkg"));
    let printed = stdout(&run(
        root,
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let sha = printed
        .lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap()
        .to_owned();
    (out, sha)
}

/// A package of the example component `component`.
fn pack(root: &Path, name: &str, version: &str, component_name: &str) -> PathBuf {
    let wasm = std::fs::read(component(component_name)).unwrap();
    pack_with(
        root,
        &format!("{name}-{version}-{component_name}"),
        &manifest(name, version, ""),
        &wasm,
        None,
    )
    .0
}

fn failure(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).unwrap()
}

fn packages(home: &Path) -> Vec<Value> {
    json(&run(home, &["packages", "--json"]))
        .as_array()
        .unwrap()
        .clone()
}

fn records(home: &Path) -> Vec<Value> {
    json(&run(home, &["plugins", "--json"]))
        .as_array()
        .unwrap()
        .clone()
}

fn record_status(home: &Path, plugin: &str) -> Option<String> {
    records(home)
        .iter()
        .find(|r| r["name"] == plugin)
        .map(|r| r["status"].as_str().unwrap().to_owned())
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else if e.file_name() == ".lock" {
                // The installer's directory lock: always there, never data.
            } else {
                found.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn install_reinstall_upgrade_rollback_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let v1 = pack(home, "audit", "1.0.0", "audit");
    let v11 = pack(home, "audit", "1.1.0", "audit");

    let out = stdout(&run(
        home,
        &["install", "--grant", "all", v1.to_str().unwrap()],
    ));
    assert!(out.starts_with("installed audit 1.0.0 (sha256 "), "{out}");
    assert!(
        out.ends_with("): plugins wasm_audit\ngranted: log,clock\n"),
        "{out}"
    );
    let listed = packages(home);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "audit");
    assert_eq!(listed[0]["version"], "1.0.0");
    assert!(listed[0]["error"].is_null(), "{listed:?}");
    assert_eq!(listed[0]["plugins"], serde_json::json!(["wasm_audit"]));
    let table = stdout(&run(home, &["packages"]));
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "VERSION", "PREVIOUS", "PLUGINS", "STATUS"]),
        "{table}"
    );
    assert!(
        lines.next().unwrap().split_whitespace().eq([
            "audit",
            "1.0.0",
            "-",
            "wasm_audit",
            "installed"
        ]),
        "{table}"
    );
    assert_eq!(
        record_status(home, "wasm_audit").as_deref(),
        Some("started")
    );

    // The same version again is refused; --force reinstalls it.
    let err = failure(&run(
        home,
        &["install", "--grant", "all", v1.to_str().unwrap()],
    ));
    assert_eq!(
        err,
        "error: package `audit` 1.0.0 is installed; 1.0.0 is not newer (a forced install replaces it anyway)\n  hint: add --force to install it anyway\n"
    );
    let out = stdout(&run(
        home,
        &["install", "--grant", "all", v1.to_str().unwrap(), "--force"],
    ));
    assert!(out.starts_with("reinstalled audit 1.0.0 (sha256 "), "{out}");

    // A newer version upgrades.
    let out = stdout(&run(
        home,
        &["install", "--grant", "all", v11.to_str().unwrap()],
    ));
    assert!(
        out.starts_with("upgraded audit 1.0.0 → 1.1.0 (sha256 "),
        "{out}"
    );
    let listed = packages(home);
    assert_eq!(listed[0]["version"], "1.1.0");
    assert_eq!(listed[0]["previous"], "1.0.0");
    assert_eq!(
        record_status(home, "wasm_audit").as_deref(),
        Some("started")
    );

    // Rollback puts 1.0.0 back and keeps 1.1.0 as the previous version.
    let out = stdout(&run(home, &["rollback", "audit"]));
    assert!(
        out.starts_with("rolled back audit 1.1.0 → 1.0.0 (sha256 "),
        "{out}"
    );
    let listed = packages(home);
    assert_eq!(listed[0]["version"], "1.0.0");
    assert_eq!(listed[0]["previous"], "1.1.0");
    assert!(listed[0]["error"].is_null(), "{listed:?}");

    // `outdated` reads an index.
    let index = home.join("index.json");
    std::fs::write(
        &index,
        serde_json::json!({ "packages": { "audit": [
            { "version": "1.0.0", "sha256": "0".repeat(64), "url": "https://example.invalid/a-1.0.0.pbpkg" },
            { "version": "1.1.0", "sha256": "1".repeat(64), "url": "https://example.invalid/a-1.1.0.pbpkg" }
        ] } })
        .to_string(),
    )
    .unwrap();
    let out = stdout(&run(
        home,
        &["outdated", "--index", index.to_str().unwrap()],
    ));
    assert!(
        out.lines().nth(1).unwrap().split_whitespace().eq([
            "audit",
            "1.0.0",
            "1.1.0",
            "https://example.invalid/a-1.1.0.pbpkg"
        ]),
        "{out}"
    );
    let err = failure(&run(home, &["outdated"]));
    assert!(err.contains("no package index is configured"), "{err}");

    // Uninstall: the row, the record and the files go.
    assert!(home.join("packages/audit").is_dir());
    let out = stdout(&run(home, &["uninstall", "audit"]));
    assert_eq!(out, "uninstalled audit\n");
    assert!(packages(home).is_empty());
    assert_eq!(record_status(home, "wasm_audit"), None);
    assert!(!home.join("packages/audit").exists());
    assert_eq!(stdout(&run(home, &["packages"])), "no packages installed\n");
    let err = failure(&run(home, &["uninstall", "audit"]));
    assert!(
        err.contains("no package named `audit` is installed"),
        "{err}"
    );

    // The activity log saw the package operations.
    let log = json(&run(home, &["activity", "--kind", "package", "--json"]));
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in ["install", "reinstall", "upgrade", "rollback", "uninstall"] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
}

/// Asserts that a refused install left nothing: no row, no new record, no file under
/// `packages/` other than `keep` (an empty `.staging` may remain).
fn assert_unchanged(home: &Path, records_before: usize, rows: &[(&str, &str)], keep: &[&str]) {
    let listed = packages(home);
    let now: Vec<(String, String)> = listed
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = rows
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(now, want);
    assert_eq!(records(home).len(), records_before);
    let files = files_under(&home.join("packages"));
    let left: Vec<&String> = files
        .iter()
        .filter(|f| !keep.iter().any(|k| f.starts_with(k)))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn refusals_name_the_reason_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let audit = std::fs::read(component("audit")).unwrap();

    // Not a component: the header is right, the rest is garbage.
    let mut junk = b"\0asm\x0d\0\x01\0".to_vec();
    junk.extend_from_slice(&[0xAB; 300]);
    // `pack` refuses it; a package another tool wrote is refused at install.
    let src = home.join("src-junk");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plugboard.toml"), manifest("junk", "1.0.0", "")).unwrap();
    std::fs::write(src.join("plugin.wasm"), &junk).unwrap();
    let err = failure(&run(home, &["pack", src.to_str().unwrap()]));
    assert!(
        err.contains("plugin.wasm is not a WebAssembly component: it cannot be read"),
        "{err}"
    );
    let file = home.join("junk-1.0.0.pbpkg");
    let manifest_text = manifest("junk", "1.0.0", "");
    std::fs::write(
        &file,
        plugboard_package::write_archive([
            ("plugboard.toml", manifest_text.as_bytes()),
            ("plugin.wasm", junk.as_slice()),
        ])
        .unwrap(),
    )
    .unwrap();
    let err = failure(&run(
        home,
        &["install", "--grant", "all", file.to_str().unwrap()],
    ));
    assert!(
        err.starts_with("error: plugin.wasm is not a WebAssembly component:"),
        "{err}"
    );
    assert_unchanged(home, 0, &[], &[]);

    // A component of a contract version this host does not know.
    let future = std::fs::read(component("future")).unwrap();
    let (file, _) = pack_with(
        home,
        "future",
        &manifest("future", "1.0.0", ""),
        &future,
        None,
    );
    let err = failure(&run(
        home,
        &["install", "--grant", "all", file.to_str().unwrap()],
    ));
    assert!(
        err.contains(
            "the component implements plugboard:plugin@0.9.0, but this host serves 0.2.x, 0.3.x and 0.4.x"
        ),
        "{err}"
    );
    assert_unchanged(home, 0, &[], &[]);

    // An unmet package dependency.
    let (file, _) = pack_with(
        home,
        "needs",
        &manifest("needs", "1.0.0", "\n[dependencies]\nvalidator = \"^1\"\n"),
        &audit,
        None,
    );
    let err = failure(&run(
        home,
        &["install", "--grant", "all", file.to_str().unwrap()],
    ));
    assert_eq!(
        err,
        "error: package `needs` needs validator ^1 (not installed)\n"
    );
    assert_unchanged(home, 0, &[], &[]);

    // A protected name, from the operator's `installer` setting.
    let v1 = pack(home, "audit", "1.0.0", "audit");
    stdout(&run(
        home,
        &[
            "settings",
            "set",
            "installer",
            r#"{"protected_names": ["audit"]}"#,
        ],
    ));
    let err = failure(&run(
        home,
        &["install", "--grant", "all", v1.to_str().unwrap()],
    ));
    assert!(
        err.contains("package.name: `audit` is a protected name"),
        "{err}"
    );
    assert_unchanged(home, 0, &[], &[]);
    stdout(&run(home, &["settings", "delete", "installer"]));

    // An upgrade whose health check fails: the running version stays.
    stdout(&run(
        home,
        &["install", "--grant", "all", v1.to_str().unwrap()],
    ));
    let before = records(home).len();
    let sick = pack(home, "audit", "1.1.0", "unhealthy");
    let err = failure(&run(
        home,
        &["install", "--grant", "all", sick.to_str().unwrap()],
    ));
    assert_eq!(
        err,
        "error: package `audit` 1.1.0 failed its checks (cannot reach its database); the previous version stays\n"
    );
    assert_unchanged(home, before, &[("audit", "1.0.0")], &["audit/1.0.0-"]);
    let listed = packages(home);
    assert!(listed[0]["error"].is_null(), "{listed:?}");
    assert_eq!(listed[0]["previous"], Value::Null);
    assert_eq!(
        record_status(home, "wasm_audit").as_deref(),
        Some("started")
    );

    // Rollback with nothing to roll back to.
    let err = failure(&run(home, &["rollback", "audit"]));
    assert!(
        err.contains("package `audit` has no previous version to roll back to"),
        "{err}"
    );
}

/// Serves `body` over HTTP/1.1 on loopback to every request (at most `max` of them).
fn serve(body: Vec<u8>, max: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            // Only a guard against a client that never sends its request: generous, so
            // that a busy machine's slow client is not cut off.
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

/// Runs the CLI on a pseudo-terminal (script(1), util-linux) and returns what it drew.
fn on_terminal(home: &Path, args: &[&str]) -> String {
    let command = std::iter::once(env!("CARGO_BIN_EXE_plugboard"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("PLUGBOARD_DATABASE_URL")
        .env("PLUGBOARD_HOME", home)
        .output()
        .expect("script(1) from util-linux runs the CLI on a terminal");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn install_from_a_url_over_http_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let wasm = std::fs::read(component("audit")).unwrap();
    let (file, sha) = pack_with(home, "audit", &manifest("audit", "1.0.0", ""), &wasm, None);
    let body = std::fs::read(&file).unwrap();
    let port = serve(body.clone(), 10);
    let url = format!("http://127.0.0.1:{port}/audit-1.0.0.pbpkg");

    // By default plain HTTP is refused, and no host is allowed.
    let err = failure(&run(
        home,
        &["install", "--grant", "all", &url, "--sha256", &sha],
    ));
    assert!(err.contains("only https:// URLs are allowed"), "{err}");
    stdout(&run(
        home,
        &["settings", "set", "installer", r#"{"allow_http": true}"#],
    ));
    let err = failure(&run(
        home,
        &["install", "--grant", "all", &url, "--sha256", &sha],
    ));
    assert!(
        err.contains(&format!(
            "host `127.0.0.1:{port}` is not on the list of allowed package hosts (`allowed_hosts` in the `installer` setting)\n  hint: `plugboard settings get installer` shows the list; add `127.0.0.1:{port}` to its `allowed_hosts`"
        )),
        "{err}"
    );
    stdout(&run(
        home,
        &[
            "settings",
            "set",
            "installer",
            &format!(r#"{{"allowed_hosts": ["127.0.0.1:{port}"], "allow_http": true}}"#),
        ],
    ));

    // An allowed host that is not trusted needs a pin.
    let err = failure(&run(home, &["install", "--grant", "all", &url]));
    assert!(
        err.contains(&format!(
            "a sha256 pin is required to download from `127.0.0.1:{port}` (it is not on `trusted_hosts` in the `installer` setting)\n  hint: pass the package file's digest with --sha256 HEX"
        )),
        "{err}"
    );
    assert!(packages(home).is_empty());

    // Another port on the same address is refused before any connection is made.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let other_url = format!(
        "http://127.0.0.1:{}/audit-1.0.0.pbpkg",
        other.local_addr().unwrap().port()
    );
    let err = failure(&run(
        home,
        &["install", "--grant", "all", &other_url, "--sha256", &sha],
    ));
    assert!(
        err.contains("is not on the list of allowed package hosts"),
        "{err}"
    );
    assert_eq!(
        other.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the refused host was contacted"
    );

    // With the pin: downloaded (one progress line, stderr is not a terminal), verified,
    // installed.
    let out = run(home, &["install", "--grant", "all", &url, "--sha256", &sha]);
    let printed = stdout(&out);
    assert_eq!(
        printed,
        format!("installed audit 1.0.0 (sha256 {sha}): plugins wasm_audit\ngranted: log,clock\n")
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!("downloaded {0} of {0} bytes\n", body.len()),
        "{err}"
    );
    let listed = packages(home);
    assert_eq!(listed[0]["source"], url.as_str());
    assert!(listed[0]["error"].is_null(), "{listed:?}");
    assert_eq!(
        record_status(home, "wasm_audit").as_deref(),
        Some("started")
    );

    // On a terminal (script(1) gives it one) progress is drawn instead, on stderr: the
    // download's bytes and rate, then each stage of the install, cleared before the
    // result is printed.
    let drawn = on_terminal(
        home,
        &[
            "install", "--grant", "all", &url, "--sha256", &sha, "--force",
        ],
    );
    for stage in [
        "downloaded ",
        "B/s)",
        "compiling audit",
        "starting and checking the health of audit",
        "switching to audit",
        "reinstalled audit 1.0.0",
    ] {
        assert!(drawn.contains(stage), "{stage} not drawn: {drawn:?}");
    }
    // The plain line is for logs, not for a terminal.
    assert!(
        !drawn.contains(&format!("downloaded {0} of {0} bytes", body.len())),
        "{drawn:?}"
    );

    // A wrong pin is refused.
    let err = failure(&run(
        home,
        &[
            "install",
            "--grant",
            "all",
            &url,
            "--sha256",
            &"0".repeat(64),
            "--force",
        ],
    ));
    assert!(err.contains("sha256 mismatch"), "{err}");
}

/// A xorshift generator: the delays of the kill test, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_sigkill_mid_install_leaves_the_old_state_or_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // A large README makes the package big enough (hashing, staging, the database copy)
    // that the writes take a while.
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    eprintln!("kill delays seed: {}", rng.0);
    let mut filler = String::with_capacity(6 << 20);
    let mut noise = Rng(0x9E37_79B9_7F4A_7C15);
    while filler.len() < 6 << 20 {
        filler.push_str(&format!("{:016x}\n", noise.below(u64::MAX)));
    }
    let wasm = std::fs::read(component("audit")).unwrap();
    let (file, _) = pack_with(
        home,
        "big",
        &manifest("audit", "1.0.0", "readme = \"README.md\"\n"),
        &wasm,
        Some(&filler),
    );
    let file = file.to_str().unwrap();
    let placed = home.join("packages/audit");
    let (mut installed, mut absent) = (0, 0);
    for round in 0..12 {
        let mut child = plugboard_in(home)
            .args(["install", "--grant", "all", file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Even rounds: 0-300 ms after the start (verifying, compiling). Odd rounds: 0-300
        // ms after the package's directory appears, i.e. around the writes (staging, the
        // rename, the commit, registering), wherever they fall on this machine.
        if round % 2 == 1 {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !placed.exists()
                && child.try_wait().unwrap().is_none()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(301)));
        child.kill().ok(); // SIGKILL (a no-op if it already exited)
        child.wait().unwrap();

        // The next command that boots an installer finishes or undoes what the kill
        // interrupted (a committed row whose hooks were not registered yet gets them).
        // `rollback` boots, then refuses: there is never a previous version here.
        let out = run(home, &["rollback", "audit"]);
        assert!(!out.status.success(), "round {round}");
        let listed = packages(home);
        let record = record_status(home, "wasm_audit");
        match listed.as_slice() {
            [] => {
                assert_eq!(record, None, "round {round}: a record without its package");
                absent += 1;
            }
            [p] => {
                assert_eq!(p["name"], "audit", "round {round}");
                assert!(p["error"].is_null(), "round {round}: {p}");
                assert!(
                    record.is_some(),
                    "round {round}: a package without its record"
                );
                installed += 1;
            }
            more => panic!("round {round}: {more:?}"),
        }
        // Staging leftovers and files no row references went at that boot; start the
        // next round from nothing (`uninstall` refuses when nothing is installed).
        let out = run(home, &["uninstall", "audit"]);
        assert_eq!(out.status.success(), !listed.is_empty(), "round {round}");
        let staging = files_under(&home.join("packages/.staging"));
        assert!(staging.is_empty(), "round {round}: {staging:?}");
        let left = files_under(&home.join("packages"));
        assert!(left.is_empty(), "round {round}: {left:?}");
    }
    eprintln!("{installed} rounds ended installed, {absent} not installed");
    let out = stdout(&run(home, &["install", "--grant", "all", file]));
    assert!(out.starts_with("installed audit 1.0.0"), "{out}");
    assert_eq!(
        record_status(home, "wasm_audit").as_deref(),
        Some("started")
    );
}

#[test]
fn a_running_host_applies_what_another_process_installs() {
    let tmp = tempfile::tempdir().unwrap();
    for backend in BOTH {
        let home = tmp.path().join(format!("{backend:?}"));
        std::fs::create_dir_all(&home).unwrap();
        let url = fresh_url(backend, &home);
        let pkg = pack(&home, "audit", "1.0.0", "audit");
        let host = Host::start(&home, &url);
        let t0 = Instant::now();
        let out = stdout(&with_db(
            &home,
            &url,
            &["install", "--grant", "all", pkg.to_str().unwrap()],
        ));
        assert!(out.starts_with("installed audit 1.0.0"), "{out}");
        host.expect("package audit 1.0.0 loaded", crate::PATIENCE);
        eprintln!("{backend:?}: applied by the host in {:?}", t0.elapsed());
        // Another process sees it installed and loading.
        let listed = json(&with_db(&home, &url, &["packages", "--json"]));
        assert!(listed[0]["error"].is_null(), "{backend:?}");

        stdout(&with_db(&home, &url, &["uninstall", "audit"]));
        host.expect("package audit removed", crate::PATIENCE);
        let records = json(&with_db(&home, &url, &["plugins", "--json"]));
        assert!(
            !records
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "wasm_audit"),
            "{backend:?}: {records}"
        );
    }
}
