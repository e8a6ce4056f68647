//! Tests of the `plugboard` binary, run as a user runs it.
#![allow(clippy::unwrap_used, missing_docs)]

mod authoring;
mod catalogue;
mod control;
mod docs;
mod e2e;
mod examples;
mod grants;
mod install;
mod kv;
mod limits;
mod operator;
mod outage;
mod package;
mod python;
mod secrets;
mod trial;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for something it does not time (a server starting, a package
/// compiled and loaded) before failing: only a guard against a hang.
pub const PATIENCE: Duration = Duration::from_secs(300);

/// How long a change made by one process may take to reach a running host before a test
/// fails. The design says "within a second" (hosts look at the database every 250 ms), and
/// the tests print how long it took; but on a loaded machine scheduling alone can take
/// longer, so what they assert is "by itself, promptly": a host that never applies a
/// change, or only on a restart or after a long interval, still fails.
pub const PROMPTLY: Duration = Duration::from_secs(30);

/// The `[limits]` line of the test packages' manifests: a call's deadline (which also
/// covers instantiating the plugin and its health check at install time) is wall-clock
/// time, and the default 100 ms can be overrun on a loaded machine by a plugin that does
/// nothing wrong. 1000 ms is the most the default install policy allows.
pub const DEADLINE: &str = "deadline_ms = 1000";

/// The cargo target directory of the repository's guest plugins: Rust plugin projects
/// made by the tests build there, sharing the plugins' compiled dependencies.
pub fn plugins_target() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins")
}

/// The binary, with its data directory in `home` and no inherited database.
pub fn plugboard_in(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plugboard"));
    c.env_remove("RUST_LOG")
        .env_remove("PLUGBOARD_DATABASE_URL")
        .env("PLUGBOARD_HOME", home);
    c
}

pub fn run(home: &Path, args: &[&str]) -> Output {
    plugboard_in(home).args(args).output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `plugboard serve` on a free port; its address and first token.
pub struct Serve {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token printed at the first start.
    pub token: String,
}

impl Serve {
    /// A server another part of the test started, for requests from another thread.
    pub fn remote(base: String, token: String) -> Serve {
        Serve {
            child: None,
            base,
            token,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn serve(home: &Path) -> Serve {
    serve_with(home, plugboard_in(home).stderr(Stdio::null()), None)
}

/// `plugboard serve` on the database at `url` (one of several hosts sharing it), with its
/// debug log in `home/serve.log` and `env` set; `token` is the admin token when another
/// host made it already.
pub fn serve_on(home: &Path, url: &str, token: Option<&str>, env: &[(&str, &str)]) -> Serve {
    let log = std::fs::File::create(home.join("serve.log")).unwrap();
    let mut command = plugboard_in(home);
    command
        .env("PLUGBOARD_DATABASE_URL", url)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stderr(log);
    serve_with(home, &mut command, token.map(str::to_owned))
}

/// `plugboard serve` with everything it logs (`RUST_LOG=debug`) written to `log`.
pub fn serve_logging(home: &Path, log: &Path) -> Serve {
    let file = std::fs::File::create(log).unwrap();
    serve_with(
        home,
        plugboard_in(home).env("RUST_LOG", "debug").stderr(file),
        None,
    )
}

/// Marks bundled example packages (`ip-ban`, `webhook`) as offered already, so that
/// `serve` leaves them to the test, which installs its own build under the same name.
pub fn skip_examples(home: &Path, packages: &[&str]) {
    let files: Vec<String> = packages
        .iter()
        .map(|p| format!("{p}-1.0.0.pbpkg"))
        .collect();
    stdout(&run(
        home,
        &[
            "settings",
            "set",
            "serve.examples",
            &serde_json::json!({ "offered": files }).to_string(),
        ],
    ));
}

/// Started again on a database that has a token: a new one is made (`token rotate`), as
/// an operator who lost it would, unless the caller knows it (`known`).
fn serve_with(home: &Path, command: &mut Command, known: Option<String>) -> Serve {
    let mut child = command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut token, mut ready) = (None, None, false);
    let started = Instant::now();
    // Up to the `dashboard:` line, printed once the examples are installed (the webhook
    // after the server has its address).
    while base.is_none() || !ready {
        assert!(started.elapsed() < PATIENCE, "serve did not start");
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(b) = line.strip_prefix("listening on ") {
            base = Some(b.trim().to_owned());
        }
        if let Some((_, t)) = line.split_once("admin token (shown once; only its hash is kept): ") {
            token = Some(t.trim().to_owned());
        }
        ready |= line.starts_with("dashboard: ");
    }
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = token.or(known);
    let restarted = token.is_none();
    let token = token.unwrap_or_else(|| {
        let out = stdout(&run(home, &["token", "rotate"]));
        out.split_once("kept): ")
            .and_then(|(_, t)| t.lines().next())
            .unwrap()
            .trim()
            .to_owned()
    });
    let server = Serve {
        child: Some(child),
        base: base.unwrap(),
        token,
    };
    if restarted {
        wait_for(PROMPTLY, "the server takes the rotated token", || {
            http(&server, "GET", "/api/events", None).0 == 200
        });
    }
    server
}

/// One HTTP/1.1 request over loopback with the admin token and a JSON body: the status
/// and the body.
pub fn http(server: &Serve, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    request(
        server,
        method,
        path,
        "application/json",
        body.unwrap_or("").as_bytes(),
    )
}

/// The same with raw bytes (`application/octet-stream`), e.g. a package upload.
pub fn http_bytes(server: &Serve, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    request(server, method, path, "application/octet-stream", body)
}

fn request(server: &Serve, method: &str, path: &str, kind: &str, body: &[u8]) -> (u16, String) {
    let addr = server.base.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    // Only a guard against a hang: a package upload verifies, compiles and checks the
    // component before it answers, which on a busy machine takes minutes.
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.token,
        body.len()
    )
    .unwrap();
    conn.write_all(body).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked bodies (axum's JSON is sized, but be safe): keep only the chunks' data.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, body)
}

/// An example plugin of `plugins/NAME` packed by the CLI (`plugboard pack`) into `dir`:
/// its committed manifest as `manifest` rewrites it, its settings schema if it has one,
/// and the component built from its sources (`component`, e.g. `ip_ban`).
pub fn pack_example(
    home: &Path,
    dir: &Path,
    name: &str,
    component: &str,
    manifest: impl FnOnce(String) -> String,
) -> std::path::PathBuf {
    pack_example_with(
        home,
        dir,
        name,
        &plugboard_testkit::component_path(component),
        manifest,
    )
}

/// [`pack_example`] with a component built some other way (a Python plugin's, say).
pub fn pack_example_with(
    home: &Path,
    dir: &Path,
    name: &str,
    component: &Path,
    manifest: impl FnOnce(String) -> String,
) -> std::path::PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name);
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&src).unwrap();
    let text = std::fs::read_to_string(example.join("plugboard.toml")).unwrap();
    std::fs::write(src.join("plugboard.toml"), manifest(text)).unwrap();
    let schema = example.join("settings.schema.json");
    if schema.exists() {
        std::fs::copy(&schema, src.join("settings.schema.json")).unwrap();
    }
    std::fs::copy(component, src.join("plugin.wasm")).unwrap();
    let file = dir.join(format!("{name}-1.0.0.pbpkg"));
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

/// Fires a failed save (`on_user_after_save_failure`) on the server through the API; the
/// call's answer.
pub fn failed_save(server: &Serve) -> serde_json::Value {
    let body = r#"{"state": {"error": {"code": "validation_failed", "message": "the sign-up form has errors", "fields": {}, "details": null}, "ip": "203.0.113.9", "endpoint": "html", "status": "added", "conn": {"method": "POST", "path": "/demo/signup", "headers": {}, "peer": null}, "modifier_user": "self", "extra": null}}"#;
    let (status, out) = http(
        server,
        "POST",
        "/api/events/on_user_after_save_failure/call",
        Some(body),
    );
    assert_eq!(status, 200, "{out}");
    serde_json::from_str(&out).unwrap()
}

/// Waits until the server runs `plugin` (loaded and in its event's chain): a package
/// installed by another process is in the database before the server has loaded it.
pub fn wait_in_chain(server: &Serve, plugin: &str) {
    wait_for(PATIENCE, &format!("the server runs `{plugin}`"), || {
        let (_, body) = http(server, "GET", "/api/plugins", None);
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == plugin && p["in_chain"] == true)
            })
    });
}

/// What the server's demo receiver page (`/demo/hooks`) lists.
pub fn arrivals(server: &Serve) -> String {
    let (status, page) = http(server, "GET", "/demo/hooks", None);
    assert_eq!(status, 200);
    page
}

/// Fires a failed save on the server; `plugin`'s step of the call's trace.
pub fn failed_save_step(server: &Serve, plugin: &str) -> serde_json::Value {
    let answer = failed_save(server);
    answer["trace"]
        .as_array()
        .and_then(|t| t.iter().find(|s| s["plugin"] == plugin))
        .cloned()
        .unwrap_or_else(|| panic!("no {plugin} step: {answer}"))
}

/// Polls `f` until it holds, failing after `within`; how long it took.
pub fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}
