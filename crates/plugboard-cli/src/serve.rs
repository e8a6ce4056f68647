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
/// binary so that the first run needs nothing else.
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
];

/// Remembers that the examples were offered once, so that an operator who uninstalls them
/// does not see them come back at the next start.
const EXAMPLES_SETTING: &str = "serve.examples";

/// Runs the server until Ctrl-C or SIGTERM.
pub(crate) fn serve(
    database: Option<String>,
    addr: SocketAddr,
    out: &mut impl Write,
) -> Result<()> {
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
    engine.finish_boot()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("plugboard-serve")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let config = ServerConfig::new(store, engine, home).installer(installer).options(ServerOptions {
            addr,
            demo: true,
            ..ServerOptions::default()
        });
        let server = Server::bind(config).await?;
        let base = format!("http://{}", server.local_addr());
        writeln!(out, "listening on {base}")?;
        if let Some(token) = server.first_token() {
            writeln!(
                out,
                "admin token (shown once; only its hash is kept): {token}\n  `plugboard token rotate` makes a new one"
            )?;
        }
        writeln!(out, "dashboard: {base}/   demo host: {base}/demo   API: {base}/api/openapi.json")?;
        out.flush()?;
        server.run_until_signal().await?;
        anyhow::Ok(())
    })
}

/// Installs the example packages on the first start (once per database).
fn install_examples(store: &Store, installer: &Installer, out: &mut impl Write) -> Result<()> {
    if store.settings().get(EXAMPLES_SETTING)?.is_some() {
        return Ok(());
    }
    let installed: Vec<String> = installer
        .packages()
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut offered = Vec::new();
    for (file, bytes) in EXAMPLES {
        let done = installer.install_bytes(
            bytes.to_vec(),
            "registry",
            &format!("plugboard examples: {file}"),
            // The examples are the project's own: what they ask for is granted, and shown.
            &InstallOptions {
                grant: Grant::Asked,
                ..InstallOptions::default()
            },
        );
        match done {
            Ok(d) => {
                let granted = plugboard_installer::package_grants(store, &d.name)
                    .map(|g| g.granted)
                    .unwrap_or_default();
                writeln!(
                    out,
                    "installed example package {} {} (granted: {})",
                    d.name,
                    d.version,
                    if granted.is_empty() {
                        "nothing"
                    } else {
                        &granted
                    }
                )?
            }
            Err(e) if installed.iter().any(|n| file.starts_with(n.as_str())) => {
                tracing::debug!(file, error = %e, "example already installed");
            }
            Err(e) => writeln!(
                out,
                "warning: example package {file} was not installed: {e}"
            )?,
        }
        offered.push(*file);
    }
    store
        .settings()
        .set(EXAMPLES_SETTING, serde_json::json!({ "offered": offered }))?;
    Ok(())
}
