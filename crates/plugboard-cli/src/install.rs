//! `install`, `uninstall`, `rollback`, `packages` and `outdated`: the installer's commands.
//! Every check, the switch and the boot replay live in `plugboard-installer`; this module
//! opens one, runs one operation, and prints what it did.
//!
//! The CLI is not a host: its engine never calls `finish_boot`, so records whose code lives
//! in other processes count as present (dependencies on them are met) and are never run.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use anyhow::{Result, anyhow};
use plugboard::Engine;
use plugboard_installer::{
    Capabilities, Grant, InstallAction, InstallError, InstallOptions, Installed, Installer,
    InstallerConfig, PackageGrants, PackageStatus, SyncReport, packages_dir,
};
use plugboard_store::{LogConfig, Store};
use plugboard_wasm::{HostConfig, WasmHost};

use crate::progress::Download;

/// How long a command waits for its activity entries to be written before it exits.
const FLUSH: Duration = Duration::from_secs(10);

/// An installer over the store's records, with its activity log attached.
pub(crate) fn installer(store: &Store, engine: &Engine) -> Result<Installer> {
    let home = plugboard_store::home();
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(home.join("cache")),
        ..HostConfig::default()
    })
    .map_err(|e| anyhow!("starting the WebAssembly host: {e}"))?;
    let config = InstallerConfig::from_settings(store, packages_dir(&home)).map_err(message)?;
    let log = store.activity_log(Some(engine), LogConfig::default());
    let installer =
        Installer::new(store.clone(), engine.clone(), host, config).with_activity_log(log);
    Ok(match crate::progress::stages().observer() {
        Some(observer) => installer.with_progress(observer),
        None => installer,
    })
}

/// Opens the store and an installer; when `boot`, loads what is installed and cleans up
/// after interrupted operations (the report's failures go to stderr unless `quiet`).
fn session(database: Option<String>, boot: bool, quiet: bool) -> Result<Installer> {
    let store = crate::open(database)?;
    let engine = store.engine(Engine::builder())?;
    let installer = installer(&store, &engine)?;
    let report = if boot {
        installer.boot().map_err(message)?
    } else {
        SyncReport::default()
    };
    if !quiet {
        for (name, why) in &report.failed {
            eprintln!("warning: package `{name}` failed to load: {why}");
        }
    }
    Ok(installer)
}

/// The installer's own wording (which quotes its sources already), and what to type
/// about it: the library names options and settings, the CLI its flags and commands.
fn message(e: InstallError) -> anyhow::Error {
    match advice(&e) {
        Some(advice) => anyhow!("{e}\n  hint: {advice}"),
        None => anyhow!("{e}"),
    }
}

/// The command-line advice for an installer error, if there is one.
fn advice(e: &InstallError) -> Option<String> {
    use plugboard_package::fetch::FetchError;
    Some(match e {
        InstallError::NotNewer { .. } => "add --force to install it anyway".to_owned(),
        InstallError::NotInstalled(_) => {
            "`plugboard packages` lists the installed packages".to_owned()
        }
        InstallError::HasDependents { .. } => {
            "add --cascade to uninstall it anyway (their plugins are held)".to_owned()
        }
        InstallError::Fetch(FetchError::HostNotAllowed { host }) => format!(
            "`plugboard settings get installer` shows the list; add `{host}` to its `allowed_hosts` with `plugboard settings set installer '{{…}}'`"
        ),
        InstallError::Fetch(FetchError::PinRequired { .. }) => {
            "pass the package file's digest with --sha256 HEX".to_owned()
        }
        _ => return None,
    })
}

/// Flushes the activity log, then returns an operation's result in the installer's
/// wording.
fn finish<T>(installer: &Installer, result: Result<T, InstallError>) -> Result<T> {
    crate::progress::stages().clear();
    installer.flush_activity(FLUSH);
    result.map_err(message)
}

/// `plugboard install SOURCE [--sha256 HEX] [--force] [--grant CAPABILITIES]`.
pub(crate) fn install(
    database: Option<String>,
    out: &mut impl Write,
    source: &str,
    sha256: Option<String>,
    force: bool,
    grant: Option<String>,
) -> Result<()> {
    let ask = grant.is_none() && std::io::stdin().is_terminal();
    let mut opts = InstallOptions {
        sha256,
        force,
        grant: match &grant {
            Some(g) => Grant::written(g)?,
            None => Grant::Held,
        },
    };
    let installer = session(database, true, false)?;
    let mut progress = Download::new();
    let mut result =
        installer.install(source, &opts, &mut |got, total| progress.update(got, total));
    progress.end();
    crate::progress::stages().clear();
    if ask && let Err(InstallError::NotGranted { package, missing }) = &result {
        // Consent on a terminal: what it asks for, in words, then yes or no.
        let mut err = std::io::stderr();
        writeln!(err, "package `{package}` asks to:")?;
        for line in missing.describe() {
            writeln!(err, "  {line}")?;
        }
        write!(err, "Grant these and install it? [y/N] ")?;
        err.flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            installer.flush_activity(FLUSH);
            return Err(anyhow!("not installed: the capabilities were not granted"));
        }
        opts.grant = Grant::These(missing.clone());
        let mut progress = Download::new();
        result = installer.install(source, &opts, &mut |got, total| progress.update(got, total));
        progress.end();
    }
    let done = finish(&installer, result)?;
    print_installed(out, &done)?;
    if let Some(g) = installer
        .grants()
        .map_err(message)?
        .into_iter()
        .find(|g| g.package == done.name)
        && !g.granted.is_empty()
    {
        writeln!(out, "granted: {}", g.granted)?;
    }
    Ok(())
}

/// `plugboard grants [PACKAGE] [--json]`.
pub(crate) fn grants(
    database: Option<String>,
    out: &mut impl Write,
    package: Option<&str>,
    json: bool,
) -> Result<()> {
    let store = crate::open_existing(database)?;
    let all: Vec<PackageGrants> = match package {
        Some(p) => vec![plugboard_installer::package_grants(&store, p).map_err(message)?],
        None => plugboard_installer::stored_grants(&store).map_err(message)?,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    if all.is_empty() {
        writeln!(out, "no packages installed")?;
    }
    for g in all {
        writeln!(out, "{}", g.package)?;
        let show = |c: &str| {
            if c.is_empty() {
                "nothing".to_owned()
            } else {
                c.to_owned()
            }
        };
        writeln!(out, "  asks for  {}", show(&g.asked))?;
        writeln!(out, "  granted   {}", show(&g.granted))?;
        if !g.missing.is_empty() {
            writeln!(out, "  missing   {} (its calls to these fail)", g.missing)?;
        }
    }
    Ok(())
}

/// `plugboard grant|revoke PACKAGE CAPABILITIES`: writes the change (every host applies
/// it on its next sync) and records it.
pub(crate) fn change_grants(
    database: Option<String>,
    out: &mut impl Write,
    package: &str,
    capabilities: &str,
    grant: bool,
) -> Result<()> {
    let store = crate::open_existing(database)?;
    let now = plugboard_installer::package_grants(&store, package).map_err(message)?;
    let base = if grant {
        now.asked().clone()
    } else {
        now.asked().union(now.granted())
    };
    let change = Capabilities::parse_grant(capabilities, &base)?;
    let none = Capabilities::none();
    let (add, remove) = if grant {
        (&change, &none)
    } else {
        (&none, &change)
    };
    let log = store.activity_log(None, LogConfig::default());
    let after = plugboard_installer::change_grants(&store, Some(&log), package, add, remove)
        .map_err(message)?;
    log.flush(FLUSH);
    let show = |c: &str| {
        if c.is_empty() {
            "nothing".to_owned()
        } else {
            c.to_owned()
        }
    };
    writeln!(out, "{package}: granted {}", show(&after.granted))?;
    if !after.missing.is_empty() {
        writeln!(
            out,
            "  not granted: {} (its calls to these fail)",
            after.missing
        )?;
    }
    Ok(())
}

/// `plugboard rollback NAME`.
pub(crate) fn rollback(database: Option<String>, out: &mut impl Write, name: &str) -> Result<()> {
    let installer = session(database, true, false)?;
    let result = installer.rollback(name);
    let done = finish(&installer, result)?;
    print_installed(out, &done)
}

/// `plugboard uninstall NAME [--cascade] [--keep-data]`.
pub(crate) fn uninstall(
    database: Option<String>,
    out: &mut impl Write,
    name: &str,
    cascade: bool,
    keep_data: bool,
) -> Result<()> {
    let installer = session(database, true, false)?;
    let opts = plugboard_installer::UninstallOptions { cascade, keep_data };
    let result = installer.uninstall_with(name, opts);
    let done = finish(&installer, result)?;
    if keep_data {
        writeln!(out, "uninstalled {name} (its key-value data kept)")?;
    } else {
        writeln!(out, "uninstalled {name}")?;
    }
    for (plugin, why) in &done.overridden {
        writeln!(
            out,
            "warning: {plugin}'s unregister callback failed ({why}); removed anyway"
        )?;
    }
    if !done.held.is_empty() {
        writeln!(out, "held (a dependency is gone): {}", done.held.join(", "))?;
    }
    Ok(())
}

/// `plugboard packages [--json]`: reads the store only (nothing is loaded or written);
/// a package's status is the last load error any host recorded.
pub(crate) fn packages(database: Option<String>, out: &mut impl Write, json: bool) -> Result<()> {
    let store = crate::open_existing(database)?;
    let list = plugboard_installer::stored_packages(&store).map_err(message)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    if list.is_empty() {
        writeln!(out, "no packages installed")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:16} {:10} {:10} {:24} STATUS",
        "NAME", "VERSION", "PREVIOUS", "PLUGINS"
    )?;
    for p in &list {
        writeln!(
            out,
            "{:16} {:10} {:10} {:24} {}",
            p.name,
            p.version,
            p.previous.as_deref().unwrap_or("-"),
            p.plugins.join(", "),
            status(p)
        )?;
    }
    Ok(())
}

/// `loaded` (on this host), `failed: why` (as last recorded by any host), or
/// `installed`.
pub(crate) fn status(p: &PackageStatus) -> String {
    match (&p.error, p.loaded) {
        (_, true) => "loaded".into(),
        (Some(why), false) => format!("failed: {why}"),
        (None, false) => "installed".into(),
    }
}

/// `plugboard outdated [--index PATH|URL] [--json]`.
pub(crate) fn outdated(
    database: Option<String>,
    out: &mut impl Write,
    index: Option<&str>,
    json: bool,
) -> Result<()> {
    let store = crate::open_existing(database)?;
    let engine = crate::records_engine(&store)?;
    let installer = installer(&store, &engine)?;
    let result = installer.outdated(index);
    let list = finish(&installer, result)?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else if list.is_empty() {
        writeln!(out, "every installed package is up to date")?;
    } else {
        writeln!(out, "{:16} {:10} {:10} URL", "NAME", "INSTALLED", "LATEST")?;
        for o in &list {
            writeln!(
                out,
                "{:16} {:10} {:10} {}",
                o.name, o.installed, o.latest.version, o.latest.url
            )?;
        }
    }
    Ok(())
}

fn print_installed(out: &mut impl Write, done: &Installed) -> Result<()> {
    let what = match (done.action, &done.replaced) {
        (InstallAction::Upgrade, Some(old)) => {
            format!("upgraded {} {old} → {}", done.name, done.version)
        }
        (InstallAction::Rollback, Some(old)) => {
            format!("rolled back {} {old} → {}", done.name, done.version)
        }
        (InstallAction::Reinstall, _) => format!("reinstalled {} {}", done.name, done.version),
        _ => format!("installed {} {}", done.name, done.version),
    };
    write!(
        out,
        "{what} (sha256 {}): plugins {}",
        done.sha256,
        done.plugins.join(", ")
    )?;
    if let Some(key) = &done.signer {
        write!(out, "; signed by key {key}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// What `watch` prints when its view of the installed packages changes: one line per
/// package that was loaded or failed to load in a new version or state, or went. A
/// package not tried yet (this host has not applied it) is not news.
pub(crate) fn package_changes(
    shown: &mut BTreeMap<String, (String, String)>,
    now: &[PackageStatus],
) -> Vec<String> {
    let mut lines = Vec::new();
    for p in now.iter().filter(|p| p.loaded || p.error.is_some()) {
        let state = (p.version.clone(), status(p));
        if shown.get(&p.name) != Some(&state) {
            lines.push(format!("package {} {} {}", p.name, state.0, state.1));
            shown.insert(p.name.clone(), state);
        }
    }
    let gone: Vec<String> = shown
        .keys()
        .filter(|n| !now.iter().any(|p| &p.name == *n))
        .cloned()
        .collect();
    for name in gone {
        shown.remove(&name);
        lines.push(format!("package {name} removed"));
    }
    lines
}
