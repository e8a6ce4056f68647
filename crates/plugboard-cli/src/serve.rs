//! `plugboard serve`: the main job. A host with the reference events, the sample native
//! plugins and the example WebAssembly packages, the demo host, the admin API and the
//! dashboard, on an embedded SQLite file unless told otherwise.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};
use plugboard::Engine;
use plugboard_installer::{Grant, InstallOptions, Installer};
use plugboard_server::{Server, ServerConfig, ServerOptions};
use plugboard_store::Store;

/// The example packages, built by `cargo xtask package-examples` and shipped inside the
/// binary so that the first run needs nothing else. The first three are contract 0.2.0
/// builds, kept as released; `webhook` and `ip-ban` are 0.3.0 builds (its capabilities),
/// also as released.
const EXAMPLES: &[(&str, &[u8])] = &[
    (
        "wasm-audit-1.0.0.pbpkg",
        include_bytes!("../../../examples/packages/wasm-audit-1.0.0.pbpkg"),
    ),
    (
        "title-validator-1.0.0.pbpkg",
        include_bytes!("../../../examples/packages/title-validator-1.0.0.pbpkg"),
    ),
    (
        "audit-follower-1.0.0.pbpkg",
        include_bytes!("../../../examples/packages/audit-follower-1.0.0.pbpkg"),
    ),
    (
        "ip-ban-1.0.0.pbpkg",
        include_bytes!("../../../examples/packages/ip-ban-1.0.0.pbpkg"),
    ),
    (
        "site-search-1.0.0.pbpkg",
        include_bytes!("../../../examples/packages/site-search-1.0.0.pbpkg"),
    ),
    (
        WEBHOOK,
        include_bytes!("../../../examples/packages/webhook-1.0.0.pbpkg"),
    ),
];

/// The webhook example: installed once the server has its address, since the origin it is
/// granted and posts to is the demo receiver's on this server.
const WEBHOOK: &str = "webhook-1.0.0.pbpkg";

/// The setting that lists the examples offered (each is installed once per database: one
/// an operator uninstalled stays uninstalled; listing a file there skips it).
const EXAMPLES_SETTING: &str = "serve.examples";

pub(crate) fn serve(
    database: Option<String>,
    addr: SocketAddr,
    out: &mut impl Write,
) -> Result<()> {
    let started = std::time::Instant::now();
    let home = plugboard_store::home();
    let store = crate::open(database)?;
    let engine = store.engine(Engine::builder())?;
    crate::register_samples_racing(&store, &engine)?;
    let installer = crate::install::installer(&store, &engine)?;
    let report = installer
        .boot()
        .map_err(|e| anyhow!("loading the installed packages: {e}"))?;
    for (name, why) in &report.failed {
        writeln!(out, "warning: package `{name}` failed to load: {why}")?;
    }
    install_examples(&store, &installer, out)?;
    crate::progress::stages().clear();
    engine.finish_boot()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("plugboard-serve")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let engine_view = engine.clone();
        let config = ServerConfig::new(store.clone(), engine, home)
            .installer(installer.clone())
            .options(ServerOptions {
                addr,
                demo: true,
                ..ServerOptions::default()
            });
        let server = Server::bind(config).await?;
        let base = format!("http://{}", server.local_addr());
        let origin = loopback_origin(server.local_addr());
        // The demo's webhook is a convenience: failing to set it up is said, not fatal.
        let (s, i) = (store.clone(), installer.clone());
        let done = tokio::task::spawn_blocking(move || demo_webhook(&s, &i, &origin));
        // From here on the server is up: what is printed is for the operator, and a
        // standard output nobody reads any more (`serve | head -1`, a supervisor that
        // stopped reading) must not stop it.
        let lines = match done.await {
            Ok(Ok(lines)) => lines,
            Ok(Err(e)) => vec![format!("warning: the webhook example: {e:#}")],
            Err(e) => vec![format!("warning: the webhook example: {e}")],
        };
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let summary =
            tokio::task::spawn_blocking(move || summary(&engine_view, &installer, &store, started))
                .await
                .unwrap_or_else(|e| format!("ready ({e})"));
        let _ = writeln!(out, "{summary}");
        // What the operator came for, last and set apart: the address, the token, links.
        let bold = |text: &str| {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                format!("\x1b[1m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", bold(&format!("listening on {base}")));
        if let Some(token) = server.first_token() {
            let _ = writeln!(
                out,
                "{}\n  `plugboard token rotate` makes a new one",
                bold(&format!(
                    "admin token (shown once; only its hash is kept): {token}"
                ))
            );
        }
        let _ = writeln!(
            out,
            "dashboard: {base}/   demo host: {base}/demo   API: {base}/api/openapi.json"
        );
        let _ = out.flush();
        server.run_until_signal().await?;
        anyhow::Ok(())
    })
}

/// One line on what the host is running, and how long it took to get there.
fn summary(
    engine: &Engine,
    installer: &Installer,
    store: &Store,
    started: std::time::Instant,
) -> String {
    let events = engine.events();
    let plugins = engine.plugins();
    let with_plugins = events
        .iter()
        .filter(|e| {
            plugins
                .iter()
                .any(|p| p.in_chain && p.record.event == e.name)
        })
        .count();
    let mut by_status: std::collections::BTreeMap<String, usize> = Default::default();
    for p in &plugins {
        *by_status.entry(p.record.status.to_string()).or_default() += 1;
    }
    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let (loaded, packages) = installer
        .packages()
        .map(|ps| (ps.iter().filter(|p| p.loaded).count(), ps.len()))
        .unwrap_or_default();
    format!(
        "ready in {:.1} s on {}: {} events ({} with plugins running), {} plugins ({}), {loaded} of {packages} packages loaded",
        started.elapsed().as_secs_f64(),
        store.url(),
        events.len(),
        with_plugins,
        plugins.len(),
        statuses.join(", "),
    )
}

/// The example files offered so far.
fn offered(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .settings()
        .get(EXAMPLES_SETTING)?
        .and_then(|v| serde_json::from_value(v["offered"].clone()).ok())
        .unwrap_or_default())
}

fn mark_offered(store: &Store, file: &str) -> Result<()> {
    let mut list = offered(store)?;
    if !list.iter().any(|f| f == file) {
        list.push(file.to_owned());
    }
    store
        .settings()
        .set(EXAMPLES_SETTING, serde_json::json!({ "offered": list }))?;
    Ok(())
}

/// Installs one example with `grant`; what to print.
fn install_example(
    store: &Store,
    installer: &Installer,
    file: &str,
    bytes: &[u8],
    grant: Grant,
) -> Result<String> {
    let installed = installer
        .packages()
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .any(|p| file.starts_with(&format!("{}-", p.name)));
    let installed_now = installer.install_bytes(
        bytes.to_vec(),
        "registry",
        &format!("plugboard examples: {file}"),
        &InstallOptions {
            grant,
            ..InstallOptions::default()
        },
    );
    crate::progress::stages().clear();
    let line = match installed_now {
        Ok(d) => {
            let granted = plugboard_installer::package_grants(store, &d.name)
                .map(|g| g.granted)
                .unwrap_or_default();
            format!(
                "installed example package {} {} (granted: {})",
                d.name,
                d.version,
                if granted.is_empty() {
                    "nothing"
                } else {
                    &granted
                }
            )
        }
        Err(e) if installed => {
            tracing::debug!(file, error = %e, "example already installed");
            String::new()
        }
        Err(e) => format!("warning: example package {file} was not installed: {e}"),
    };
    mark_offered(store, file)?;
    Ok(line)
}

/// Installs the example packages not offered yet (each once per database), but the webhook
/// (see [`demo_webhook`]).
fn install_examples(store: &Store, installer: &Installer, out: &mut impl Write) -> Result<()> {
    let offered = offered(store)?;
    for (file, bytes) in EXAMPLES {
        if *file == WEBHOOK || offered.iter().any(|f| f == file) {
            continue;
        }
        // The examples are the project's own: what they ask for is granted, and shown.
        let line = install_example(store, installer, file, bytes, Grant::Asked)?;
        if !line.is_empty() {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

/// The origin a loopback client reaches this server at.
fn loopback_origin(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Whether `url` is a demo receiver's on this machine (one this function set up earlier,
/// maybe on another port), not an address an operator chose.
fn is_demo_receiver(url: &str) -> bool {
    url.ends_with("/demo/hooks")
        && (url.starts_with("http://127.0.0.1:") || url.starts_with("http://[::1]:"))
}

/// The webhook example, pointed at this server's demo receiver (`/demo/hooks`): installed
/// on the first start with that origin granted; on later starts on another address, its
/// URL and grant follow, unless an operator pointed it elsewhere. What to print.
fn demo_webhook(store: &Store, installer: &Installer, origin: &str) -> Result<Vec<String>> {
    const SETTING: &str = "package.webhook";
    let url = format!("{origin}/demo/hooks");
    let mut lines = Vec::new();
    if !offered(store)?.iter().any(|f| f == WEBHOOK) {
        // Stored before the install, so that its first call has them.
        if store.settings().get(SETTING)?.is_none() {
            store
                .settings()
                .set(SETTING, serde_json::json!({ "url": url }))?;
        }
        let bytes = EXAMPLES
            .iter()
            .find(|(f, _)| *f == WEBHOOK)
            .map(|(_, b)| *b)
            .context("the webhook example")?;
        let grant = Grant::Written(format!("log,settings,http={origin}"));
        let line = install_example(store, installer, WEBHOOK, bytes, grant)?;
        if !line.is_empty() {
            lines.push(format!("{line}: posts failed sign-ups to {url}"));
        }
        return Ok(lines);
    }
    let Some(mut settings) = store.settings().get(SETTING)? else {
        return Ok(lines);
    };
    let old = settings["url"].as_str().unwrap_or_default().to_owned();
    let installed = installer
        .packages()
        .map_err(|e| anyhow!("{e}"))?
        .iter()
        .any(|p| p.name == "webhook");
    if !installed || old == url || !is_demo_receiver(&old) {
        return Ok(lines);
    }
    // Only the URL changes (a sealed token stays as it is).
    settings["url"] = serde_json::Value::String(url.clone());
    store.settings().set(SETTING, settings)?;
    let held = plugboard_installer::package_grants(store, "webhook").map_err(|e| anyhow!("{e}"))?;
    let old_origin = old.trim_end_matches("/demo/hooks");
    let parse = |text: &str| {
        plugboard_installer::Capabilities::parse_grant(text, held.granted())
            .map_err(|e| anyhow!("{e}"))
    };
    let remove = if held.granted().to_grant().contains(old_origin) {
        parse(&format!("http={old_origin}"))?
    } else {
        plugboard_installer::Capabilities::default()
    };
    installer
        .change_grants("webhook", &parse(&format!("http={origin}"))?, &remove)
        .map_err(|e| anyhow!("{e}"))?;
    installer.refresh_settings().map_err(|e| anyhow!("{e}"))?;
    lines.push(format!(
        "the webhook example now posts to {url} (granted {origin}, revoked {old_origin})"
    ));
    Ok(lines)
}
