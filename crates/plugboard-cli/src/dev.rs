//! `plugboard dev`: the author's loop against a running `plugboard serve`. It builds the
//! project and installs it through the admin API, then watches the sources: every change
//! is rebuilt and reinstalled (the same version, forced), and the server's live stream is
//! followed so that the plugin's failures and status changes are printed as they happen.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// What `plugboard dev` was asked.
#[derive(clap::Args)]
pub(crate) struct Dev {
    /// The plugin project (as made by `plugboard new`).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The running `plugboard serve`, e.g. `http://127.0.0.1:8080`.
    #[arg(long, value_name = "URL")]
    server: String,
    /// Its admin token.
    #[arg(long, env = "PLUGBOARD_TOKEN", hide_env_values = true)]
    token: String,
    /// What each install grants: `all` (what the manifest asks for), or e.g. `log,kv`.
    #[arg(long, default_value = "all")]
    grant: String,
}

/// Files whose change is not a change of the sources: build outputs and caches.
fn ignored(name: &str) -> bool {
    matches!(
        name,
        "target" | "node_modules" | "__pycache__" | ".git" | "plugin.wasm"
    ) || name.ends_with(".pbpkg")
        || name.starts_with('.')
}

/// Each source file's modification time and length: a change of either is a change.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if ignored(&entry.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                files.insert(entry.path(), (modified, meta.len()));
            }
        }
    }
    files
}

/// The admin API of the server.
struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str, token: &str) -> Self {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The body of a successful answer; an error answer's message otherwise.
    fn answer(mut response: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = body["message"]
                .as_str()
                .map_or(body.to_string(), str::to_owned);
            bail!("{status}: {message}");
        }
        Ok(body)
    }

    fn session(&self) -> Result<Value> {
        let response = self
            .agent
            .get(format!("{}/api/session", self.base))
            .header("authorization", self.bearer())
            .call()
            .with_context(|| format!("reaching {}", self.base))?;
        Self::answer(response).context("the server refused the token")
    }

    /// Installs the package, replacing the same version: a rebuild is a new package.
    fn install(&self, package: &[u8], grant: &str) -> Result<Value> {
        let response = self
            .agent
            .post(format!("{}/api/packages", self.base))
            .query("force", "true")
            .query("grant", grant)
            .header("authorization", self.bearer())
            .header("content-type", "application/octet-stream")
            .send(package)
            .with_context(|| format!("reaching {}", self.base))?;
        Self::answer(response)
    }
}

/// Runs until interrupted.
pub(crate) fn dev(d: &Dev) -> Result<()> {
    let api = Arc::new(Api::new(&d.server, &d.token));
    api.session()?;
    let plugins: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    {
        let (api, plugins) = (api.clone(), plugins.clone());
        std::thread::spawn(move || follow(&api, &plugins));
    }
    let mut changed_at = Instant::now();
    loop {
        let before = snapshot(&d.dir);
        let started = SystemTime::now();
        match build_and_install(d, &api, &plugins) {
            Ok(line) => say(&format!(
                "{line} ({:.1} s after the change)",
                changed_at.elapsed().as_secs_f64()
            )),
            Err(e) => say(&format!("not installed: {e:#}")),
        }
        // The build writes into the project (cargo's Cargo.lock): what it wrote is no
        // change, but an edit saved while it ran is one, and builds again at once.
        let after = snapshot(&d.dir);
        let edited_meanwhile = after.iter().any(|(path, (modified, _))| {
            *modified >= started
                && before.get(path) != after.get(path)
                && !path.ends_with("Cargo.lock")
        });
        let mut seen = if edited_meanwhile { before } else { after };
        say("watching for changes");
        // Waits for a change, then for the sources to settle (an editor's save is often
        // several writes).
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = snapshot(&d.dir);
            if now != seen {
                changed_at = Instant::now();
                seen = now;
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let again = snapshot(&d.dir);
                    if again == seen {
                        break;
                    }
                    seen = again;
                }
                break;
            }
        }
        say("changed: rebuilding");
    }
}

fn build_and_install(d: &Dev, api: &Api, plugins: &Mutex<BTreeSet<String>>) -> Result<String> {
    let built = crate::author::build(&mut std::io::sink(), &d.dir)?;
    let manifest = built.manifest;
    if let Ok(mut p) = plugins.lock() {
        *p = manifest.hooks.iter().map(|h| h.plugin.clone()).collect();
    }
    let installed = api.install(&built.package, &d.grant)?;
    Ok(format!(
        "installed {} {} (sha256 {})",
        manifest.package.name,
        manifest.package.version,
        installed["sha256"]
            .as_str()
            .map_or("?", |s| s.get(..12).unwrap_or(s))
    ))
}

/// One line of output, timestamped; a plugin's words (its failures) are escaped, so that
/// they cannot drive the terminal.
fn say(line: &str) {
    let line = crate::terminal_safe(line);
    let now = time::OffsetDateTime::now_utc();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "[{:02}:{:02}:{:02}] {line}",
        now.hour(),
        now.minute(),
        now.second()
    );
    let _ = out.flush();
}

/// Follows the server's live stream, printing what happens to the project's plugins;
/// reconnects when the server goes away (a restart).
fn follow(api: &Api, plugins: &Mutex<BTreeSet<String>>) {
    let mut announced = false;
    loop {
        match stream(api, plugins, &mut announced) {
            Ok(()) => say("the server closed its stream: reconnecting"),
            Err(e) => {
                if announced {
                    say(&format!("lost the server's stream ({e:#}): reconnecting"));
                }
                announced = false;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn stream(api: &Api, plugins: &Mutex<BTreeSet<String>>, announced: &mut bool) -> Result<()> {
    let response = api
        .agent
        .get(format!("{}/api/stream", api.base))
        // HTTP/1.0: the endless body comes unchunked, ended by the server's close, and
        // each event is read as it is written.
        .version(ureq::http::Version::HTTP_10)
        .header("authorization", api.bearer())
        .call()?;
    if !response.status().is_success() {
        bail!("{}", response.status());
    }
    *announced = true;
    let mut kind = String::new();
    for line in BufReader::new(response.into_body().into_reader()).lines() {
        let line = line?;
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:") {
            if kind != "change" {
                continue;
            }
            let Ok(change) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let ours = |p: &Value| {
                p.as_str()
                    .is_some_and(|p| plugins.lock().is_ok_and(|set| set.contains(p)))
            };
            if let Some(line) = describe(&change, ours) {
                say(&line);
            }
        }
    }
    Ok(())
}

/// A line for a change of one of the project's plugins.
fn describe(change: &Value, ours: impl Fn(&Value) -> bool) -> Option<String> {
    let plugin = &change["plugin"];
    match change["type"].as_str()? {
        "plugin_failed" if ours(plugin) => Some(format!(
            "{} failed on {} ({} in a row): {}",
            plugin.as_str()?,
            change["event"].as_str().unwrap_or("?"),
            change["consecutive"],
            failure(&change["failure"]),
        )),
        "status_changed" if ours(plugin) => Some(format!(
            "{} is {} (was {}; {})",
            plugin.as_str()?,
            change["to"].as_str().unwrap_or("?"),
            change["from"].as_str().unwrap_or("?"),
            cause(&change["cause"]),
        )),
        "callback_overridden" | "operation_failed" if ours(plugin) => {
            Some(format!("{}: {change}", plugin.as_str()?))
        }
        _ => None,
    }
}

/// A failure as the engine reports it: `{kind, message}`.
fn failure(f: &Value) -> String {
    format!(
        "{}: {}",
        f["kind"].as_str().unwrap_or("failure"),
        f["message"].as_str().unwrap_or_default()
    )
}

/// A status change's cause, `{by, …}`, as `by` and its fields.
fn cause(c: &Value) -> String {
    let Some(fields) = c.as_object() else {
        return c.to_string();
    };
    let mut text = fields
        .get("by")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .replace('_', " ");
    for (k, v) in fields.iter().filter(|(k, _)| *k != "by") {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        text.push_str(&format!(" {k} {v}"));
    }
    text
}
