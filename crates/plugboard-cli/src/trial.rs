//! `plugboard test`: one call of a package's plugins in the real WebAssembly host, before
//! it is installed anywhere. The package goes through the installer as it would on a
//! server (verification, grants, settings checked against its schema, the compile cache of
//! `$PLUGBOARD_HOME`), into a throwaway SQLite database in a temporary directory, so the
//! author sets nothing up and the real host's rules, limits and capabilities apply.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use plugboard::{CallOptions, Engine, EventInfo, StepOutcome};
use plugboard_installer::{Grant, InstallOptions, Installer, InstallerConfig};
use plugboard_package::Manifest;
use plugboard_store::{KvQuota, Store};
use plugboard_wasm::{HostConfig, WasmHost};
use serde_json::{Value, json};

/// What `plugboard test` was asked.
#[derive(clap::Args)]
pub(crate) struct Trial {
    /// A .pbpkg file, or a directory holding plugboard.toml and plugin.wasm.
    package: PathBuf,
    /// The event to call [default: the first one the package hooks].
    #[arg(long)]
    event: Option<String>,
    /// The state, a JSON file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    state: PathBuf,
    /// The package's settings, as JSON (checked against its schema).
    #[arg(long, value_name = "JSON")]
    settings: Option<String>,
    /// An entry its kv data starts with. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    kv: Vec<String>,
    /// Capabilities to grant, e.g. `log,http=http://127.0.0.1:8080` [default: all it asks
    /// for].
    #[arg(long)]
    grant: Option<String>,
    /// Print JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

/// Runs the trial; `Ok(false)` when the call failed (its failure is printed).
pub(crate) fn run(out: &mut impl Write, t: &Trial) -> Result<bool> {
    let state = read_state(&t.state)?;
    let kv =
        t.kv.iter()
            .map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow!("--kv {e:?}: write KEY=VALUE"))
            })
            .collect::<Result<Vec<_>>>()?;
    let settings = t
        .settings
        .as_deref()
        .map(|s| serde_json::from_str::<Value>(s).context("--settings is not JSON"))
        .transpose()?;
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let (bytes, manifest) = package_bytes(&t.package)?;
    let name = manifest.package.name.clone();
    let event = match &t.event {
        Some(e) => e.clone(),
        None => manifest
            .hooks
            .first()
            .map(|h| h.event.clone())
            .ok_or_else(|| anyhow!("the package hooks no event: pass --event"))?,
    };
    if !manifest.hooks.iter().any(|h| h.event == event) {
        bail!(
            "the package's plugins do not hook `{event}` (they hook {})",
            hooked(&manifest)
        );
    }

    let store = Store::open(&format!(
        "sqlite://{}",
        tmp.path().join("db.sqlite").display()
    ))?;
    let engine = store.engine(Engine::builder())?;
    // A host's own events are not in this catalogue: they are called with free JSON.
    let mut dynamic = Vec::new();
    for hook in &manifest.hooks {
        if engine.event(&hook.event).is_none() && !dynamic.contains(&hook.event) {
            engine
                .declare_dynamic(EventInfo::dynamic(
                    hook.event.clone(),
                    "test",
                    format!("hooked by {name}"),
                ))
                .map_err(|e| anyhow!("{e}"))?;
            dynamic.push(hook.event.clone());
        }
    }
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(plugboard_store::home().join("cache")),
        ..HostConfig::default()
    })
    .map_err(|e| anyhow!("starting the WebAssembly host: {e}"))?;
    let installer = Installer::new(
        store.clone(),
        engine.clone(),
        host,
        InstallerConfig::new(tmp.path().join("packages")),
    );
    installer.boot().map_err(|e| anyhow!("{e}"))?;
    engine.finish_boot()?;
    let grant = match &t.grant {
        Some(g) => Grant::written(g).map_err(|e| anyhow!("--grant: {e}"))?,
        None => Grant::Asked,
    };
    installer
        .install_bytes(
            bytes,
            "path",
            &t.package.display().to_string(),
            &InstallOptions {
                grant,
                ..InstallOptions::default()
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    if let Some(value) = settings {
        plugboard_installer::settings::set(&store, installer.secrets(), &name, value)
            .map_err(|e| anyhow!("--settings: {e}"))?;
        installer.refresh_settings().map_err(|e| anyhow!("{e}"))?;
    }
    let scope = store.kv(&name)?;
    for (key, value) in &kv {
        scope
            .set(key, value.as_bytes(), None, KvQuota::DEFAULT)
            .with_context(|| format!("--kv {key}"))?;
    }

    let trace = engine.trace_json(&event, state, &CallOptions::default());
    let http = installer
        .http_counts()
        .into_iter()
        .find(|(p, _)| *p == name)
        .map(|(_, c)| c)
        .unwrap_or_default();
    let data: Vec<(String, String)> = scope
        .list("", None, 1000)?
        .into_iter()
        .map(|e| {
            let value = scope.get(&e.key)?.unwrap_or_default();
            Ok((e.key, String::from_utf8_lossy(&value).into_owned()))
        })
        .collect::<Result<_>>()?;
    let ok = trace.result.is_ok();
    if t.json {
        let (result, error) = match &trace.result {
            Ok(v) => (v.clone(), Value::Null),
            Err(e) => (Value::Null, Value::String(e.to_string())),
        };
        let answer = json!({
            "package": name,
            "event": event,
            "result": result,
            "error": error,
            "halted_by": trace.halted_by,
            "trace": trace.steps.iter().map(|step| {
                let mut v = json!({
                    "plugin": step.plugin,
                    "elapsed_us": step.elapsed.as_secs_f64() * 1e6,
                });
                match &step.outcome {
                    StepOutcome::Continued => v["outcome"] = json!("continued"),
                    StepOutcome::Halted => v["outcome"] = json!("halted"),
                    StepOutcome::Wrapped => v["outcome"] = json!("wrapped"),
                    StepOutcome::Failed { failure } => {
                        v["outcome"] = json!("failed");
                        v["failure"] = json!({
                            "kind": failure.kind.as_str(),
                            "message": failure.message,
                        });
                    }
                }
                v
            }).collect::<Vec<_>>(),
            "http": {
                "requests": http.requests, "denied": http.denied, "failures": http.failures,
                "bytes_sent": http.bytes_sent, "bytes_received": http.bytes_received,
            },
            "kv": data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
        return Ok(ok);
    }
    let free = if dynamic.contains(&event) {
        " (not in this catalogue: called with free JSON)"
    } else {
        ""
    };
    writeln!(
        out,
        "{name} {} on `{event}`{free}",
        manifest.package.version
    )?;
    for step in &trace.steps {
        let micros = step.elapsed.as_secs_f64() * 1e6;
        match &step.outcome {
            StepOutcome::Continued => {
                writeln!(out, "  {:24} continued {micros:>10.0} µs", step.plugin)?;
            }
            StepOutcome::Halted => {
                writeln!(out, "  {:24} halted    {micros:>10.0} µs", step.plugin)?
            }
            StepOutcome::Wrapped => {
                writeln!(out, "  {:24} wrapped   {micros:>10.0} µs", step.plugin)?
            }
            StepOutcome::Failed { failure } => writeln!(
                out,
                "  {:24} failed    {micros:>10.0} µs  {}: {}",
                step.plugin,
                failure.kind.as_str(),
                failure.message
            )?,
        }
    }
    match &trace.result {
        Ok(v) => {
            match &trace.halted_by {
                Some(p) => writeln!(out, "halted by {p}; the state:")?,
                None => writeln!(out, "the state:")?,
            }
            writeln!(out, "{}", serde_json::to_string_pretty(v)?)?;
        }
        Err(e) => writeln!(out, "the call failed: {e}")?,
    }
    if http.requests + http.denied > 0 {
        writeln!(
            out,
            "http: {} requests, {} denied, {} failed, {} bytes sent, {} received",
            http.requests, http.denied, http.failures, http.bytes_sent, http.bytes_received
        )?;
    }
    if !data.is_empty() {
        writeln!(out, "kv after the call:")?;
        for (k, v) in &data {
            writeln!(out, "  {k} = {v}")?;
        }
    }
    Ok(ok)
}

/// The state, as JSON.
fn read_state(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the state from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The package to install, packing a directory first, and its manifest (read to settle
/// the event before the installer's own verification).
fn package_bytes(package: &Path) -> Result<(Vec<u8>, Manifest)> {
    let bytes = if package.is_dir() {
        plugboard_package::pack(package, None)
            .map(|(bytes, _)| bytes)
            .with_context(|| format!("packing {}", package.display()))?
    } else {
        std::fs::read(package).with_context(|| format!("reading {}", package.display()))?
    };
    let verified = plugboard_package::verify(&bytes, &plugboard_package::VerifyOptions::default())
        .with_context(|| format!("checking {}", package.display()))?;
    Ok((bytes, verified.manifest))
}

/// The events a manifest hooks, for a message.
fn hooked(m: &Manifest) -> String {
    let mut events: Vec<String> = m.hooks.iter().map(|h| format!("`{}`", h.event)).collect();
    events.dedup();
    events.join(", ")
}
