//! Test support for Plugboard's own test suites: a real, throwaway PostgreSQL cluster
//! (`initdb` + `pg_ctl` in a temp dir, on a free port, as a non-root user because
//! PostgreSQL refuses to run as root) and the database URLs for both backends.

/// The authors' guide's Rust blocks (`docs/*.md`), compiled as doc tests so that the
/// guide stays true; its other blocks are checked by `plugboard-cli`'s `docs` test.
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../../../docs/writing.md")]
    pub struct Writing;
    #[doc = include_str!("../../../docs/capabilities.md")]
    pub struct Capabilities;
    #[doc = include_str!("../../../docs/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../../../docs/rust.md")]
    pub struct Rust;
}

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A PostgreSQL cluster that lives as long as the test process.
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    user: Option<String>,
    /// The server's options, given again on a restart.
    opts: String,
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgCluster {
    /// Runs a PostgreSQL tool, as `nobody` when this process is root.
    fn tool(&self, args: &[&str]) -> Result<String, String> {
        run(self.user.as_deref(), args)
    }

    fn start() -> Result<PgCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("plugboard-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let user = is_root().then(|| "nobody".to_owned());
        if user.is_some() {
            // The cluster's files must belong to the user that runs it.
            let status = Command::new("chown")
                .args(["-R", "nobody", &dir.path().display().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err("chown failed".into());
            }
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .map_err(|e| e.to_string())?;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let data = dir.path().join("data");
        let data_s = data.display().to_string();
        let socket = dir.path().display().to_string();
        let opts = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200"
        );
        let cluster = PgCluster {
            dir,
            port,
            user,
            opts,
        };
        cluster.tool(&[
            "initdb",
            "-D",
            &data_s,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ])?;
        cluster.pg_ctl(&["start"])?;
        cluster.reap_on_exit();
        Ok(cluster)
    }

    /// `pg_ctl … ARGS`, waiting (up to a minute) for it to finish.
    fn pg_ctl(&self, args: &[&str]) -> Result<String, String> {
        let data = self.data().display().to_string();
        let log = format!("{data}.log");
        let mut all = vec![
            "pg_ctl", "-D", &data, "-o", &self.opts, "-l", &log, "-w", "-t", "60",
        ];
        all.extend_from_slice(args);
        self.tool(&all)
    }

    /// A cluster of the caller's own, stopped when dropped: for tests that restart, stop
    /// or pause the server, which the shared one must never see.
    pub fn private() -> Result<PgCluster, String> {
        PgCluster::start()
    }

    /// `pg_ctl restart -m MODE` (`fast`, `immediate`): every connection is cut; returns
    /// once the server takes connections again.
    pub fn restart(&self, mode: &str) -> Result<(), String> {
        self.pg_ctl(&["-m", mode, "restart"]).map(drop)
    }

    /// `pg_ctl stop -m MODE`.
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        self.pg_ctl(&["-m", mode, "stop"]).map(drop)
    }

    /// `pg_ctl start`, after [`PgCluster::stop`].
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl(&["start"]).map(drop)
    }

    /// The postmaster and its children (the backends and workers), by pid.
    fn processes(&self) -> Result<Vec<u32>, String> {
        let pidfile = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        let postmaster: u32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no pid")?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces, so split after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster)
                && let Ok(pid) = entry.file_name().to_string_lossy().parse()
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn signal(&self, signal: &str) -> Result<(), String> {
        let pids: Vec<String> = self.processes()?.iter().map(u32::to_string).collect();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} failed"))
        }
    }

    /// Stalls the whole server (SIGSTOP to the postmaster and every backend): connections
    /// stay open and nothing answers, as with a hung or partitioned database.
    pub fn pause(&self) -> Result<(), String> {
        self.signal("STOP")
    }

    /// Ends [`PgCluster::pause`] (SIGCONT).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("CONT")
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL as the superuser in database `db`; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", db, "-XAtqc", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The shared cluster lives in a `static`, whose destructor never runs: a watchdog
    /// stops the server and removes its files once this process has exited.
    fn reap_on_exit(&self) {
        let dir = self.dir.path().display().to_string();
        let stop = match &self.user {
            Some(u) => format!("runuser -u {u} -- pg_ctl -D {dir}/data -m immediate stop"),
            None => format!("pg_ctl -D {dir}/data -m immediate stop"),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }

    /// The shared cluster, started on first use.
    pub fn shared() -> Result<&'static PgCluster, String> {
        CLUSTER
            .get_or_init(PgCluster::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh, empty database in the cluster, as a URL.
    pub fn database(&self) -> Result<String, String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.tool(&["pg_ctl", "-D", &data, "-m", "immediate", "stop"]);
    }
}

fn run(user: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd
        .current_dir("/")
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the guest plugins workspace (`plugins/`, target `wasm32-wasip2`, release) into
/// `target/plugins` under the repository `root`; returns the directory of the components.
/// `cargo xtask build-plugins` and the wasm host's tests both build through this.
pub fn build_plugins(root: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/plugins"))
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err("building the plugins failed (is the target installed? `rustup target add wasm32-wasip2`)".into());
    }
    Ok(root.join("target/plugins/wasm32-wasip2/release"))
}

/// Every byte of every file under `dir`, one after another: what a test searches for a
/// value that must not be stored anywhere (a database, its journal, caches, keys).
pub fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
    }
    out
}

/// A request's header lines, as [`read_request`] gives them.
pub type Headers = Vec<(String, String)>;

/// One HTTP/1 request read off a test server's connection: its header lines (names in
/// lower case, values trimmed) and its body (`content-length` bytes). `None` when the
/// connection ends first. Enough for the loopback receivers the tests post to.
pub fn read_request(reader: &mut impl std::io::BufRead) -> Option<(Headers, Vec<u8>)> {
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The path of a built guest component (`plugin_<name>.wasm`: `audit`, `probe`, …). The
/// first call in a test process builds the plugins workspace (incrementally), as
/// `cargo xtask build-plugins` does; a failed build fails the test.
pub fn component_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        build_plugins(&root).unwrap_or_else(|e| panic!("{e}"))
    });
    dir.join(format!("plugin_{name}.wasm"))
}

/// The bytes of a built guest component; see [`component_path`].
pub fn component(name: &str) -> Vec<u8> {
    let path = component_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Python plugin (`plugins/<dir>/app.py`) built with componentize-py against the
/// contract's `world` into `target/plugins/<dir>.wasm`. componentize-py's output differs
/// from build to build (and so would miss the compile cache): it builds only when a file
/// of the plugin's directory or of `wit/` is newer than the component. `None`, with a
/// message, when componentize-py is not installed outside CI; in CI (`CI=true`, where
/// `.ci/run` installs it) its absence, like a failed build, fails the test.
pub fn python_component(dir: &str, world: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let source = root.join("plugins").join(dir);
    let out = root.join(format!("target/plugins/{dir}.wasm"));
    let newest = |d: &Path| {
        let mut stack = vec![d.to_path_buf()];
        let mut newest = std::time::SystemTime::UNIX_EPOCH;
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    // Python's own byte-code caches are written by the build itself.
                    if !p.ends_with("__pycache__") {
                        stack.push(p);
                    }
                } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    newest = newest.max(m);
                }
            }
        }
        newest
    };
    let built_at = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
    if built_at.is_some_and(|b| b >= newest(&source) && b >= newest(&root.join("wit"))) {
        return Some(out);
    }
    // Written beside and renamed into place: a test reading it never sees half of it.
    let partial = out.with_extension(format!("wasm.{}", std::process::id()));
    let _ = std::fs::create_dir_all(root.join("target/plugins"));
    let built = Command::new("componentize-py")
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", world, "componentize", "app", "-p"])
        .arg(&source)
        .arg("-o")
        .arg(&partial)
        .status();
    match built {
        Ok(s) if s.success() => {
            std::fs::rename(&partial, &out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            Some(out)
        }
        Ok(s) => panic!("componentize-py failed to build plugins/{dir}: {s}"),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("componentize-py is required in CI: {e}")
        }
        Err(e) => {
            eprintln!(
                "skipped: componentize-py is not installed ({e}); `cargo xtask test` installs it"
            );
            None
        }
    }
}

/// Builds one guest plugin (`plugin-audit`, …) with a named cargo profile of the plugins
/// workspace (e.g. `unoptimized`); returns the component's path.
pub fn build_plugin_profile(root: &Path, package: &str, profile: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--target",
            "wasm32-wasip2",
            "--profile",
            profile,
            "-p",
            package,
            "--manifest-path",
        ])
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/plugins"))
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {package} with profile {profile} failed"));
    }
    Ok(root
        .join("target/plugins/wasm32-wasip2")
        .join(profile)
        .join(format!("{}.wasm", package.replace('-', "_"))))
}

/// Appends a custom section (`name`, `payload`) to a WebAssembly component or module: a
/// valid binary with other bytes (and so another hash), e.g. a bundled asset.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// A package manifest for tests: one hook on `event` at priority 50, the clock capability
/// (the audit plugin reads the time), and `more` TOML after the hook's keys.
pub fn manifest(name: &str, version: &str, event: &str, more: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "{version}"
description = "test package {name}"
authors = ["Tests"]
license = "MIT"
contract = "0.2"

[capabilities]
clock = true

[[hooks]]
event = "{event}"
priority = 50
{more}"#
    )
}

/// Packs a package file from a manifest and a component, as `plugboard pack` does.
pub fn pack(manifest: &str, component: &[u8]) -> Result<Vec<u8>, String> {
    pack_with_schema(manifest, component, None)
}

/// The same, with a `settings.schema.json` (the manifest must name it).
pub fn pack_with_schema(
    manifest: &str,
    component: &[u8],
    schema: Option<&str>,
) -> Result<Vec<u8>, String> {
    let src = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(src.path().join("plugboard.toml"), manifest).map_err(|e| e.to_string())?;
    std::fs::write(src.path().join("plugin.wasm"), component).map_err(|e| e.to_string())?;
    if let Some(schema) = schema {
        std::fs::write(src.path().join("settings.schema.json"), schema)
            .map_err(|e| e.to_string())?;
    }
    plugboard_package::pack(src.path(), None)
        .map(|(bytes, _)| bytes)
        .map_err(|e| e.to_string())
}

/// A backend to run a test against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A database in the shared PostgreSQL cluster.
    Postgres,
}

/// Both backends, for tests that must pass on each.
pub const BOTH: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// A fresh database URL on `backend`; a SQLite file lives under `dir`.
pub fn fresh_url(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!(
            "sqlite://{}",
            dir.join(format!(
                "db{}.sqlite",
                NEXT_DB.fetch_add(1, Ordering::SeqCst)
            ))
            .display()
        ),
        Backend::Postgres => PgCluster::shared()
            .and_then(PgCluster::database)
            .unwrap_or_else(|e| panic!("PostgreSQL test cluster: {e}")),
    }
}
