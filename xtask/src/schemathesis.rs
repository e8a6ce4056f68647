//! `cargo xtask schemathesis [--seconds N] [-- ST-ARGS…]`: property-based tests of the admin
//! API against a live server, with [schemathesis](https://schemathesis.readthedocs.io).
//!
//! It builds the CLI, starts `plugboard serve` on a free loopback port (`--addr
//! 127.0.0.1:0`) in a fresh `PLUGBOARD_HOME` (so a fresh SQLite database, and the
//! example packages installed on the first start), waits for `/health`, checks that packages
//! are installed, then runs `st run` on `/api/openapi.json` with the admin token and every
//! check and every phase (examples, coverage, fuzzing, stateful with the links schemathesis
//! infers), for `--seconds` (default 120) under a hard timeout. The reports (`report.json`,
//! `junit.xml`), schemathesis' output and the server's log go to `target/schemathesis/`.
//! The server is stopped in every case; any failure found makes the task fail.
//!
//! Schemathesis is installed with pip, pinned, in a virtual environment of its own
//! (`target/tools/schemathesis`), beside componentize-py's. The rest of its configuration
//! is in `xtask/schemathesis.toml`: no NUL in generated strings (the server refuses one in
//! any path or query), the event stream read for a second per test case, and a call's
//! state that its event's own schema may refuse.
//!
//! No operation is left out: the API has no logout or token rotation (those are `POST
//! /logout`, outside the document, and `plugboard token rotate`), so the run's token stays
//! valid; the operations that uninstall packages or unregister plugins do run (on what the
//! stateful phase finds), which leaves less data for later test cases but no wrong ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The schemathesis release the run is pinned to.
const VERSION: &str = "4.32.5";

/// Default time budget of schemathesis itself (`--max-time`), in seconds.
const DEFAULT_SECONDS: u64 = 120;

/// Test cases per operation and pass (`--max-examples`); the fuzzing and stateful phases
/// repeat until the time budget is spent.
const MAX_EXAMPLES: &str = "50";

/// Per-request timeout (`--request-timeout`), in seconds: a slower answer is a failure.
const REQUEST_TIMEOUT: &str = "20";

/// Beyond the time budget, how long schemathesis may take before it is killed (loading the
/// document, the last requests, shrinking, the reports).
const GRACE: Duration = Duration::from_secs(120);

/// How long `serve` may take to listen (a debug build compiles the example packages).
const START_DEADLINE: Duration = Duration::from_secs(300);

/// `cargo xtask schemathesis [--seconds N] [-- ST-ARGS…]`.
pub(crate) fn schemathesis(root: &Path, args: &[String]) -> Result<()> {
    let (seconds, extra) = parse_args(args)?;
    let started = Instant::now();
    let st = install(root)?;
    println!(
        "xtask: schemathesis {VERSION} ready after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let bin = build_cli(root)?;
    let out = root.join("target/schemathesis");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;

    let starting = Instant::now();
    let mut server = Serve::start(&bin, &out)?;
    let packages = installed_packages(&server)?;
    println!(
        "xtask: serve answered /health after {:.0} s, on {}, with {} package(s) installed: {}",
        starting.elapsed().as_secs_f64(),
        server.addr,
        packages.len(),
        packages.join(", ")
    );

    let ran = Instant::now();
    let exit = run_st(root, &st, &server, &out, seconds, &extra);
    let st_time = ran.elapsed();
    let alive = server.alive();
    drop(server);

    let exit = exit?;
    let found = summarize(&out.join("report.json"))?;
    println!(
        "xtask: schemathesis ran {:.0} s; the whole task {:.0} s; reports in {}, the server's log in {}",
        st_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        out.display(),
        out.join("serve.log").display()
    );
    alive.context("the server did not survive the run")?;
    if !exit.success() || found > 0 {
        bail!(
            "schemathesis found {found} unique failure(s) or error(s) against the live API ({exit}); see above and {}",
            out.join("output.txt").display()
        );
    }
    Ok(())
}

fn parse_args(args: &[String]) -> Result<(u64, Vec<String>)> {
    const USAGE: &str = "usage: cargo xtask schemathesis [--seconds N] [-- ST-RUN-ARGS…]";
    let mut seconds = DEFAULT_SECONDS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let value = match arg.as_str() {
            "--" => return Ok((seconds, it.cloned().collect())),
            "--seconds" => it.next().context(USAGE)?.as_str(),
            other => match other.strip_prefix("--seconds=") {
                Some(v) => v,
                None => bail!("unknown argument `{other}`\n{USAGE}"),
            },
        };
        seconds = value
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("--seconds takes a positive number, not `{value}`"))?;
    }
    Ok((seconds, Vec::new()))
}

/// Runs `cmd`, failing with `what` when it does not succeed.
fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// schemathesis' `st`, pinned, in `target/tools/schemathesis` (installed when missing or
/// of another version).
fn install(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/tools/schemathesis");
    let st = venv.join("bin/st");
    let version = Command::new(&st)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if version.ends_with(&format!("version {VERSION}")) {
        return Ok(st);
    }
    println!(
        "xtask: installing schemathesis=={VERSION} into {}",
        venv.display()
    );
    let mut make = Command::new("python3");
    make.args(["-m", "venv"]).arg(&venv);
    run(
        make,
        "python3 -m venv (schemathesis needs Python 3 with venv: apt-get install python3-venv)",
    )?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "-q", "--disable-pip-version-check"])
        .arg(format!("schemathesis=={VERSION}"));
    run(pip, "pip install schemathesis")?;
    Ok(st)
}

/// `cargo build -p plugboard-cli --locked`; the binary.
fn build_cli(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root)
        .args(["build", "-p", "plugboard-cli", "--locked"]);
    run(build, "cargo build -p plugboard-cli")?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    Ok(target.join("debug/plugboard"))
}

/// A running `plugboard serve` in a fresh home. It runs under a small shell watchdog
/// that stops it (SIGTERM) as soon as its stdin closes: when this guard is dropped, and
/// also when xtask itself dies (Ctrl-C, a CI timeout), so the server never outlives the
/// task.
struct Serve {
    /// The watchdog (`sh`), parent of the server.
    watchdog: Child,
    /// Its stdin: closing it stops the server.
    stdin: Option<ChildStdin>,
    /// The server's own pid, for a last-resort SIGKILL.
    pid: Option<u32>,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// The admin token, printed by the first start.
    token: String,
    /// Its `PLUGBOARD_HOME`, `target/schemathesis/home`.
    home: PathBuf,
}

/// What the server's stdout tells.
enum Told {
    Pid(u32),
    Addr(String),
    Token(String),
}

/// The watchdog: starts `$0 "$@"` (the server) in the background and waits for it (so it
/// exits with the server, and with its status); meanwhile a subshell waits for the
/// watchdog's stdin to close and then stops the server. It ignores Ctrl-C, to live until
/// then (the server stops on Ctrl-C anyway: it installs its own handler).
const WATCHDOG: &str = r#"trap '' INT
exec 3<&0
"$0" "$@" 3<&- &
pid=$!
echo "serve pid $pid"
(read -r _ <&3; kill "$pid") >/dev/null 2>&1 &
wait "$pid""#;

impl Serve {
    fn start(bin: &Path, out: &Path) -> Result<Serve> {
        // Fresh (`out` is), and removed when the server stops.
        let home = out.join("home");
        std::fs::create_dir_all(&home)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out.join("serve.log"))?;
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG])
            .arg(bin)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("PLUGBOARD_HOME", &home)
            .env_remove("PLUGBOARD_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let stdin = watchdog.stdin.take();
        let stdout = watchdog.stdout.take();
        let mut serve = Serve {
            watchdog,
            stdin,
            pid: None,
            addr: String::new(),
            token: String::new(),
            home,
        };
        let (tx, rx) = mpsc::channel();
        let stdout = stdout.context("serve's stdout")?;
        std::thread::spawn(move || read_stdout(stdout, log, &tx));

        let deadline = Instant::now() + START_DEADLINE;
        while serve.addr.is_empty() || serve.token.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Told::Pid(pid)) => serve.pid = Some(pid),
                Ok(Told::Addr(addr)) => serve.addr = addr,
                Ok(Told::Token(token)) => serve.token = token,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "serve did not print its address and token within {} s; see {}",
                    START_DEADLINE.as_secs(),
                    out.join("serve.log").display()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "serve exited before it listened; see {}",
                    out.join("serve.log").display()
                ),
            }
        }
        // Listening is not serving yet: poll /health until it answers 200.
        loop {
            if let Some(status) = serve.watchdog.try_wait()? {
                bail!(
                    "serve exited ({status}); see {}",
                    out.join("serve.log").display()
                );
            }
            match get(&serve.addr, "/health", None) {
                Ok((200, _)) => return Ok(serve),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok((status, body)) => bail!("GET /health answered {status}: {body}"),
                Err(e) => return Err(e.context("GET /health")),
            }
        }
    }

    /// Whether the server still runs and answers `GET /health` with 200.
    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.watchdog.try_wait()? {
            bail!("serve exited ({status})");
        }
        match get(&self.addr, "/health", None)? {
            (200, _) => Ok(()),
            (status, body) => bail!("GET /health answered {status}: {body}"),
        }
    }
}

/// Passes on what the server's stdout tells, and logs the rest (never the token).
fn read_stdout(stdout: impl Read, mut log: std::fs::File, tx: &mpsc::Sender<Told>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let told = if let Some(pid) = line.strip_prefix("serve pid ") {
            pid.trim().parse().ok().map(Told::Pid)
        } else if let Some(addr) = line.strip_prefix("listening on ") {
            Some(Told::Addr(
                addr.trim().trim_start_matches("http://").to_owned(),
            ))
        } else if let Some((_, token)) = line.split_once("only its hash is kept): ") {
            let _ = writeln!(log, "admin token (not logged)");
            let _ = tx.send(Told::Token(token.trim().to_owned()));
            continue;
        } else {
            None
        };
        if let Some(told) = told {
            let _ = tx.send(told);
        }
        let _ = writeln!(log, "{line}");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Closing the watchdog's stdin stops the server; the watchdog waits for it.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.watchdog.try_wait() {
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(Some(_)) => break,
                Ok(None) | Err(_) => {
                    eprintln!("xtask: serve did not stop within 20 s: killing it");
                    if let Some(pid) = self.pid {
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `GET path` over loopback (HTTP/1.0: the body is not chunked): status and body.
fn get(addr: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut bytes = Vec::new();
    conn.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no HTTP status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok((status, body.to_owned()))
}

/// The names of the installed packages (`GET /api/packages`); at least one, so that the
/// packages and plugins operations have data.
fn installed_packages(server: &Serve) -> Result<Vec<String>> {
    let (status, body) = get(&server.addr, "/api/packages", Some(&server.token))?;
    if status != 200 {
        bail!("GET /api/packages answered {status}: {body}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&body).context("GET /api/packages: not JSON")?;
    // A list, or an object holding one (a page).
    let list = v
        .as_array()
        .or_else(|| v.as_object()?.values().find_map(|v| v.as_array()))
        .with_context(|| format!("GET /api/packages: no list in {body}"))?;
    let names: Vec<String> = list
        .iter()
        .map(|p| p["name"].as_str().unwrap_or("?").to_owned())
        .collect();
    if names.is_empty() {
        bail!(
            "serve installed no example package (see target/schemathesis/serve.log): \
             the packages and plugins operations would have no data"
        );
    }
    Ok(names)
}

/// Runs `st run` against the server, its output shown and kept in `output.txt`, killed if
/// it overruns its budget by more than `GRACE`.
fn run_st(
    root: &Path,
    st: &Path,
    server: &Serve,
    out: &Path,
    seconds: u64,
    extra: &[String],
) -> Result<std::process::ExitStatus> {
    let schema = format!("http://{}/api/openapi.json", server.addr);
    let mut args: Vec<String> = vec![
        "--config-file".into(),
        root.join("xtask/schemathesis.toml").display().to_string(),
        "run".into(),
        schema,
        "--header".into(),
        format!("Authorization: Bearer {}", server.token),
        "--checks".into(),
        "all".into(),
        "--max-examples".into(),
        MAX_EXAMPLES.into(),
        "--max-time".into(),
        seconds.to_string(),
        "--request-timeout".into(),
        REQUEST_TIMEOUT.into(),
        "--report".into(),
        "junit,json".into(),
        "--report-dir".into(),
        out.display().to_string(),
        "--report-json-path".into(),
        out.join("report.json").display().to_string(),
        "--report-junit-path".into(),
        out.join("junit.xml").display().to_string(),
        "--no-color".into(),
    ];
    args.extend(extra.iter().cloned());
    let shown: Vec<&str> = args
        .iter()
        .map(|a| {
            if a.starts_with("Authorization: ") {
                "'Authorization: Bearer <token>'"
            } else {
                a.as_str()
            }
        })
        .collect();
    println!("xtask: {} {}", st.display(), shown.join(" "));

    // In `out`, so that its example database (`.schemathesis/`) stays there.
    let mut child = Command::new(st)
        .current_dir(out)
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", st.display()))?;
    let stdout = child.stdout.take().context("schemathesis' stdout")?;
    let mut copy = std::fs::File::create(out.join("output.txt"))?;
    let tee = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = std::io::stdout().write_all(&line);
            let _ = copy.write_all(&line);
            line.clear();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(seconds) + GRACE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = tee.join();
            bail!(
                "schemathesis did not finish within {} s (budget {seconds} s): killed",
                (Duration::from_secs(seconds) + GRACE).as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = tee.join();
    Ok(status)
}

/// Prints a short summary of the JSON report; the number of unique failures and errors.
fn summarize(report: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(report)
        .with_context(|| format!("reading schemathesis' report {}", report.display()))?;
    let r: serde_json::Value = serde_json::from_str(&text)?;
    let cases = &r["test_cases"];
    let errors = r["errors"].as_array().map_or(0, Vec::len);
    println!(
        "xtask: schemathesis {}: {} of {} operations tested, {} test cases, {} unique failures, {} errors (stop: {})",
        r["schemathesis_version"].as_str().unwrap_or("?"),
        r["operations"]["tested"],
        r["operations"]["selected"],
        cases["generated"],
        cases["unique_failures"],
        errors,
        r["stop_reason"].as_str().unwrap_or("?"),
    );
    let failures = r["failures"].as_array().map_or(0, Vec::len);
    let unique = cases["unique_failures"].as_u64().unwrap_or(0);
    let found = usize::try_from(unique)
        .unwrap_or(usize::MAX)
        .max(failures)
        .saturating_add(errors);
    for f in r["failures"].as_array().into_iter().flatten() {
        let ops: Vec<&str> = f["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.as_str())
            .collect();
        println!(
            "  {} {} ({}): {}",
            f["code"].as_str().unwrap_or("?"),
            f["title"].as_str().unwrap_or("?"),
            f["count"],
            ops.join(", ")
        );
    }
    for e in r["errors"].as_array().into_iter().flatten() {
        println!("  error: {e}");
    }
    Ok(found)
}
