//! The `plugboard` command: a thin CLI over the `plugboard` and `plugboard-store` libraries.
//!
//! Every command that touches plugins works on a database (`--database URL`, or
//! `$PLUGBOARD_DATABASE_URL`, or a SQLite file in `$PLUGBOARD_HOME`, default `./.plugboard/`),
//! so that an operator can stop a plugin of a running host from a shell. `pack`, `inspect`
//! and `keygen` work on plugin package files and touch no database; `install`,
//! `uninstall`, `rollback`, `packages` and `outdated` manage installed packages (kept in
//! `$PLUGBOARD_HOME/packages`, compiled code cached in `$PLUGBOARD_HOME/cache`).

mod author;
mod demo;
mod dev;
mod install;
mod package;
mod progress;
mod serve;
mod trial;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use plugboard::{Engine, EngineError, LifecycleEvent, Target};
use plugboard_store::{ActivityQuery, ActivityStatus, LogConfig, Store};
use std::collections::BTreeMap;

/// Runtime plugins and event hooks for Rust applications.
#[derive(Parser)]
#[command(name = "plugboard", version, about)]
struct Cli {
    /// Database URL: sqlite://PATH or postgres://…  [default: $PLUGBOARD_DATABASE_URL, or
    /// a SQLite file in $PLUGBOARD_HOME (./.plugboard/)]
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    /// The format of the logs written to stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the event catalogue, or show one event's state schema.
    Events {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        show: Option<EventsCommand>,
    },
    /// Run a demo host: register sample plugins, call events, change statuses, print each
    /// step. Its plugin records stay in the database.
    Demo,
    /// A database at a glance: events with plugins, plugins by status, packages (and any
    /// that failed to load), failures in the last hour, the last activity. Reads only.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the plugin records.
    Plugins {
        /// Only this event's plugins.
        #[arg(long)]
        event: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start plugins (`registered` or `held` ones).
    Start(Which),
    /// Stop plugins; their dependents are held. Only `enable` undoes it.
    Stop(Which),
    /// Restart plugins.
    Restart(Which),
    /// Take plugins out of `stopped`.
    Enable(Which),
    /// Unload plugins' code in every host sharing the database, keeping their records
    /// (and statuses); dependents are held. Registering the code again (a host's restart,
    /// a reinstall) brings a plugin back.
    Delete(Which),
    /// Remove plugins' records; dependents are held, never removed.
    Unregister(Which),
    /// The main job: a host with the sample plugins and the example packages, the demo
    /// host, the admin API and the dashboard. Prints the admin token on the first start.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:4000")]
        addr: std::net::SocketAddr,
    },
    /// Manage the admin token of `plugboard serve`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read the activity log, newest first.
    Activity {
        /// At most this many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this status (error, info, warning, report, throw, exit).
        #[arg(long)]
        status: Option<plugboard_store::ActivityStatus>,
        /// Only this subject (a plugin's or package's name).
        #[arg(long)]
        subject: Option<String>,
        /// Only this kind (plugin, package, setting, event, activity).
        #[arg(long)]
        kind: Option<plugboard_store::ActivityKind>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read and change settings.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
    /// Run a host with the sample plugins and the installed packages that follows changes
    /// made by other processes (records and packages), prints its `on_content_prepare`
    /// chain whenever it changes and a line whenever a package is loaded, fails or goes.
    /// Stops on end of input.
    Watch,
    /// Build a plugin package (.pbpkg) from a directory holding plugboard.toml and
    /// plugin.wasm (and optionally README.md, settings.schema.json); print its sha256.
    Pack {
        /// The package's directory.
        dir: PathBuf,
        /// Where to write it [default: NAME-VERSION.pbpkg].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Sign it with this secret key (from `plugboard keygen`).
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Check a package without installing it: archive, manifest, component header,
    /// signature and the default install policy; print what it holds.
    Inspect {
        /// The .pbpkg file.
        file: PathBuf,
        /// Print JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// The sha256 the package must have.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// A public key trusted to sign packages; when given, the package must be signed
        /// by one of them. Repeatable.
        #[arg(long = "trusted-key", value_name = "FILE")]
        trusted_keys: Vec<PathBuf>,
    },
    /// Call a package's plugins once in the real WebAssembly host, before installing it
    /// anywhere: no server, and a throwaway database (the compile cache is $PLUGBOARD_HOME's).
    /// Prints each step, the state, its HTTP requests and its kv data; exits non-zero when
    /// the call fails.
    Test(trial::Trial),
    /// Create a plugin project (Rust, JavaScript or Python) that builds, tests and packs as it comes:
    /// sources, manifest, a sample state, a README.
    New(author::New),
    /// Build the plugin project in DIR with its language's toolchain (cargo for Rust,
    /// componentize-js for JavaScript, componentize-py for Python) into plugin.wasm, and pack it: NAME-VERSION.pbpkg.
    Build {
        /// The project's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Build the plugin project in DIR and install it into a running `plugboard serve`,
    /// then rebuild and reinstall on every change of its sources, printing each install
    /// and the plugin's failures and status changes as the server reports them.
    Dev(dev::Dev),
    /// Generate an Ed25519 key pair for signing packages: PREFIX.key (secret, mode 0600)
    /// and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Install or upgrade a plugin package (.pbpkg) from a path or an http(s) URL, under
    /// the rules of the `installer` setting. Running hosts that follow the database
    /// (`watch`) load it too.
    Install {
        /// The package file, or its URL.
        #[arg(value_name = "PATH|URL")]
        source: String,
        /// The sha256 the package file must have (required for downloads from hosts that
        /// are not trusted).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Install even if the same or a newer version is installed.
        #[arg(long)]
        force: bool,
        /// Grant the package these capabilities: `all` (what it asks for), or e.g.
        /// `kv,log,http=api.example.com`. Without it, on a terminal you are shown what it
        /// asks for and asked to confirm; elsewhere a package asking for more than it
        /// holds is refused.
        #[arg(long, value_name = "CAPABILITIES")]
        grant: Option<String>,
    },
    /// What installed packages ask for and were granted.
    Grants {
        /// Only this package.
        package: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Grant capabilities to an installed package (`all`: what it asks for; or e.g.
    /// `kv,http=api.example.com`).
    Grant {
        /// The package.
        package: String,
        /// The capabilities.
        capabilities: String,
    },
    /// Revoke capabilities from an installed package (`all`: every one). Its next call in
    /// every host sharing the database runs without them, within a second.
    Revoke {
        /// The package.
        package: String,
        /// The capabilities.
        capabilities: String,
    },
    /// Uninstall a package: its plugin records, files, compiled code and key-value data go.
    Uninstall {
        /// The package.
        name: String,
        /// Uninstall even if other packages depend on it (their plugins are held).
        #[arg(long)]
        cascade: bool,
        /// Keep the package's key-value data, for a later install of the same name.
        #[arg(long)]
        keep_data: bool,
    },
    /// A package's key-value data (the `kv` capability): list, read or erase it.
    Kv {
        /// The package.
        package: String,
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Put a package's previous version back (the current one becomes the previous).
    Rollback {
        /// The package.
        name: String,
    },
    /// List the installed packages and whether they load.
    Packages {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List installed packages that have a newer version in the package index.
    Outdated {
        /// The index (a JSON file's path or URL) [default: the `index` of the `installer`
        /// setting].
        #[arg(long, value_name = "PATH|URL")]
        index: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Which {
    /// The plugin.
    name: Option<String>,
    /// Every plugin of this event.
    #[arg(long)]
    event: Option<String>,
    /// Every plugin.
    #[arg(long)]
    all: bool,
}

impl Which {
    fn target(&self) -> Target<'_> {
        match (&self.name, &self.event) {
            (Some(n), _) => Target::Plugin(n),
            (None, Some(e)) => Target::Event(e),
            (None, None) => Target::All,
        }
    }
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Print the JSON Schema of an event's state.
    Show {
        /// The event's name, e.g. `on_user_after_save_failure`.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Replace the admin token of the database's servers: running servers revoke the old
    /// token, its sessions and their event streams within a second.
    Rotate,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// Print a setting's configs.
    Get {
        /// The setting: `installer`, a package or one of its plugins (the package's
        /// plugin settings, `package.NAME`), or a setting of the host's own.
        name: String,
    },
    /// Create or replace a setting, checked before it is stored: `installer` field by
    /// field, a package's plugin settings against its settings.schema.json. Running hosts
    /// sharing the database apply it within a second.
    Set {
        /// The setting: `installer`, a package or one of its plugins (the package's
        /// plugin settings, `package.NAME`), or a setting of the host's own (5 to 200
        /// characters).
        name: String,
        /// Its configs, as JSON; `-` reads them from standard input (keeps a secret off
        /// the command line). A package's secret fields (write-only in its schema) are
        /// sealed before they are stored and never printed again; one left out keeps its
        /// stored value, `null` removes it.
        configs: String,
    },
    /// Delete a setting.
    Delete {
        /// The setting (as for `get`).
        name: String,
    },
    /// List the settings.
    List,
}

/// `plugboard kv PACKAGE …`.
#[derive(Subcommand)]
enum KvCommand {
    /// List the keys (with their sizes and expiry), optionally those starting with a prefix.
    List {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a key's value (as text when it is UTF-8, else as hex).
    Get {
        /// The key.
        key: String,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Delete every key of the package.
    Clear,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Lifecycle changes are traced at `info`; `RUST_LOG=plugboard=info` shows them. The
    // server logs its requests and changes at `info` by default.
    let default = if matches!(cli.command, Command::Serve { .. }) {
        "info,sqlx=warn,cranelift_codegen=warn,wasmtime=warn,wasmtime_cranelift=warn"
    } else if matches!(cli.command, Command::Test(_)) {
        // What the plugin logs is part of what a test shows.
        "warn,plugboard::wasm::guest=trace,plugboard_engine=error,plugboard::lifecycle=error,sqlx=error"
    } else {
        // A command prints what it changed and its error itself.
        "warn,plugboard_engine=error,plugboard::lifecycle=error,sqlx=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`plugboard events | head`) is the reader's choice, not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", terminal_safe(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn open(url: Option<String>) -> Result<Store> {
    let url = url.unwrap_or_else(plugboard_store::default_url);
    Store::open(&url).with_context(|| format!("opening {}", redact(&url)))
}

/// Opens a database that exists, creating nothing: for commands that read, or change
/// records that must already be there.
fn open_existing(url: Option<String>) -> Result<Store> {
    let url = url.unwrap_or_else(plugboard_store::default_url);
    Store::open_existing(&url).map_err(|e| match e {
        plugboard_store::StoreError::NoDatabase(at) => anyhow!(
            "no Plugboard database at {at} (check --database or PLUGBOARD_HOME; only commands \
             that write, such as `serve`, `install` or `settings set`, create one)"
        ),
        e => anyhow::Error::new(e).context(format!("opening {}", redact(&url))),
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// An engine over the stored records, for commands that manage records without running
/// plugins.
fn records_engine(store: &Store) -> Result<Engine> {
    Ok(store.engine(Engine::builder().records_only(true))?)
}

/// Operator-facing wording for the errors an operator can fix.
fn explain(e: EngineError) -> anyhow::Error {
    match e {
        EngineError::Stopped(name) => {
            anyhow!("plugin `{name}` is stopped; use `plugboard enable {name}`")
        }
        EngineError::UnknownPlugin(name) => {
            anyhow!("no plugin named `{name}`; `plugboard plugins` lists them")
        }
        other => anyhow!(other),
    }
}

/// Standard output with terminal control characters escaped (as `\u001b`, which JSON
/// output also reads back): text from packages (descriptions, names in errors) must not
/// drive the operator's terminal. Newlines and tabs pass.
struct TerminalSafe<W>(W);

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut start = 0;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            // C0 controls and DEL, and C1 controls (U+0080..U+009F, `C2 80`..`C2 9F`).
            let control = match b {
                b'\n' | b'\t' => None,
                0..=0x1f | 0x7f => Some((b, 1)),
                0xc2 => buf
                    .get(i + 1)
                    .filter(|n| (0x80..=0x9f).contains(*n))
                    .map(|n| (*n, 2)),
                _ => None,
            };
            if let Some((code, len)) = control {
                self.0.write_all(&buf[start..i])?;
                write!(self.0, "\\u{code:04x}")?;
                i += len;
                start = i;
            } else {
                i += 1;
            }
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `text` with terminal control characters escaped, for standard error.
fn terminal_safe(text: &str) -> String {
    let mut out = TerminalSafe(Vec::new());
    let _ = out.write_all(text.as_bytes());
    String::from_utf8_lossy(&out.0).into_owned()
}

fn run(cli: Cli) -> Result<()> {
    let mut out = TerminalSafe(std::io::stdout().lock());
    match cli.command {
        Command::Events {
            show: Some(EventsCommand::Show { name }),
            ..
        } => {
            let info = catalogue(cli.database)?
                .into_iter()
                .find(|e| e.name == name)
                .with_context(|| {
                    format!("no event named `{name}`; `plugboard events` lists them")
                })?;
            match &info.output {
                // A collecting event has two schemas: what every plugin is given, and
                // what each one answers.
                Some(output) => writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "mode": "collect",
                        "input": info.schema,
                        "output": output,
                    }))?
                )?,
                None => writeln!(out, "{}", serde_json::to_string_pretty(&info.schema)?)?,
            }
        }
        Command::Events { json, show: None } => events(&mut out, catalogue(cli.database)?, json)?,
        Command::Demo => {
            let store = open(cli.database)?;
            let engine = store.engine(Engine::builder())?;
            let log = store.activity_log(Some(&engine), LogConfig::default());
            demo::run(&engine, &mut out)?;
            log.flush(Duration::from_secs(10));
        }
        Command::Plugins { event, json } => {
            let store = open_existing(cli.database)?;
            let engine = records_engine(&store)?;
            let plugins: Vec<_> = engine
                .plugins()
                .into_iter()
                .filter(|p| event.as_ref().is_none_or(|e| &p.record.event == e))
                .collect();
            if json {
                let records: Vec<_> = plugins.iter().map(|p| &p.record).collect();
                writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
            } else if plugins.is_empty() {
                writeln!(out, "no plugins registered in {}", store.url())?;
            } else {
                // The records say nothing of code; an installed package's manifest says
                // which of its hooks are wrappers. Only a mark: a packages table that
                // cannot be read leaves the listing of records as it is.
                let wrappers: std::collections::BTreeSet<String> = store
                    .packages()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|row| plugboard_package::Manifest::parse(&row.manifest).ok())
                    .flat_map(|m| m.hooks)
                    .filter(|h| h.role == plugboard_package::Role::Wrapper)
                    .map(|h| h.plugin)
                    .collect();
                writeln!(
                    out,
                    "{:16} {:28} {:>4}  {:10} DEPENDS",
                    "NAME", "EVENT", "PRIO", "STATUS"
                )?;
                for p in &plugins {
                    let r = &p.record;
                    let depends = if r.depends.is_empty() {
                        "-".to_owned()
                    } else {
                        format!("{} ({})", r.depends.join(", "), r.depend_type)
                    };
                    let role = if wrappers.contains(&r.name) {
                        "  (wrapper: runs around the chain)"
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "{:16} {:28} {:>4}  {:10} {depends}{role}",
                        r.name,
                        r.event,
                        r.priority.get(),
                        r.status.as_str()
                    )?;
                }
            }
        }
        Command::Start(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.start(t))?,
        Command::Stop(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.stop(t))?,
        Command::Restart(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.restart(t))?,
        Command::Enable(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.enable(t))?,
        Command::Delete(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.delete(t))?,
        Command::Unregister(w) => lifecycle(cli.database, &mut out, &w, |e, t| e.unregister(t))?,
        Command::Activity {
            limit,
            status,
            subject,
            kind,
            json,
        } => {
            let store = open_existing(cli.database)?;
            let entries = store.activities(&ActivityQuery {
                status,
                subject,
                kind,
                limit: Some(limit),
                ..Default::default()
            })?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else {
                for a in &entries {
                    let when = a
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    let e = &a.entry;
                    writeln!(
                        out,
                        "{:>6} {when} {:7} {:8} {:8} {:16} {}",
                        a.id,
                        e.status,
                        e.kind,
                        e.action,
                        e.subject.as_deref().unwrap_or("-"),
                        e.extra
                    )?;
                }
            }
        }
        Command::Status { json } => status(cli.database, json, &mut out)?,
        Command::Settings { command } => settings_command(cli.database, &mut out, command)?,
        Command::Watch => watch(cli.database, &mut out)?,
        Command::Serve { addr } => serve::serve(cli.database, addr, &mut out)?,
        Command::Token {
            command: TokenCommand::Rotate,
        } => {
            let store = open(cli.database)?;
            let token = plugboard_server::rotate_token(&store)?;
            writeln!(
                out,
                "new admin token (shown once; only its hash is kept): {token}"
            )?;
            writeln!(
                out,
                "running servers on this database revoke the old token, its sessions and their event streams within a second"
            )?;
        }
        Command::Pack {
            dir,
            out: file,
            sign_key,
        } => package::pack(&mut out, &dir, file, sign_key.as_deref())?,
        Command::Inspect {
            file,
            json,
            sha256,
            trusted_keys,
        } => package::inspect(&mut out, &file, json, sha256, &trusted_keys)?,
        Command::Keygen { out: prefix } => package::keygen(&mut out, &prefix)?,
        Command::New(n) => author::new(&mut out, &n)?,
        Command::Build { dir } => {
            author::build(&mut out, &dir)?;
        }
        Command::Dev(d) => {
            // Its threads print too: it must not run under this thread's lock of stdout.
            drop(out);
            return dev::dev(&d);
        }
        Command::Test(trial) => {
            if !trial::run(&mut out, &trial)? {
                return Err(anyhow!("the call failed"));
            }
        }
        Command::Install {
            source,
            sha256,
            force,
            grant,
        } => install::install(cli.database, &mut out, &source, sha256, force, grant)?,
        Command::Grants { package, json } => {
            install::grants(cli.database, &mut out, package.as_deref(), json)?
        }
        Command::Grant {
            package,
            capabilities,
        } => install::change_grants(cli.database, &mut out, &package, &capabilities, true)?,
        Command::Revoke {
            package,
            capabilities,
        } => install::change_grants(cli.database, &mut out, &package, &capabilities, false)?,
        Command::Uninstall {
            name,
            cascade,
            keep_data,
        } => install::uninstall(cli.database, &mut out, &name, cascade, keep_data)?,
        Command::Kv { package, command } => kv_command(cli.database, &mut out, &package, command)?,
        Command::Rollback { name } => install::rollback(cli.database, &mut out, &name)?,
        Command::Packages { json } => install::packages(cli.database, &mut out, json)?,
        Command::Outdated { index, json } => {
            install::outdated(cli.database, &mut out, index.as_deref(), json)?
        }
    }
    Ok(())
}

/// `plugboard settings …`: through the installer's rules, so that a value is checked when
/// it is set and a plugin's or package's name means its package's plugin settings.
fn settings_command(
    database: Option<String>,
    out: &mut impl Write,
    command: SettingsCommand,
) -> Result<()> {
    use plugboard_installer::settings::{self, SettingTarget};
    // Secret fields are listed, never printed (on standard error, so `get` prints JSON).
    let note_secrets = |name: &str, secrets: &[String]| {
        if !secrets.is_empty() {
            eprintln!(
                "{name}: secret fields set (write-only, not shown): {}",
                secrets.join(", ")
            );
        }
    };
    let what = |r: &settings::ResolvedSetting| match &r.target {
        SettingTarget::Package { package, plugins } => format!(
            "{} (the settings of package `{package}`, read by {})",
            r.name,
            plugins.join(", ")
        ),
        _ => r.name.clone(),
    };
    match command {
        SettingsCommand::Get { name } => {
            let store = open_existing(database)?;
            let (resolved, value) = settings::get(&store, &name)?;
            let v = value.with_context(|| {
                format!(
                    "no setting named `{}`; `plugboard settings list` lists them",
                    resolved.name
                )
            })?;
            let (shown, secrets) = plugboard_store::redact_secrets(&v);
            writeln!(out, "{}", serde_json::to_string_pretty(&shown)?)?;
            note_secrets(&resolved.name, &secrets);
        }
        SettingsCommand::Set { name, configs } => {
            let configs = if configs == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the configs from standard input")?
            } else {
                configs
            };
            let v: serde_json::Value = serde_json::from_str(&configs)
                .with_context(|| format!("the configs of `{name}` are not valid JSON"))?;
            let store = open(database)?;
            let secrets = plugboard_installer::secrets::Secrets::new(
                plugboard_installer::secrets::key_file(&plugboard_store::home()),
            );
            let resolved = settings::set(&store, &secrets, &name, v)?;
            writeln!(out, "set {}", what(&resolved))?;
        }
        SettingsCommand::Delete { name } => {
            let store = open_existing(database)?;
            let (resolved, existed) = settings::delete(&store, &name)?;
            if !existed {
                return Err(anyhow!("no setting named `{}`", resolved.name));
            }
            writeln!(out, "deleted {}", what(&resolved))?;
        }
        SettingsCommand::List => {
            let store = open_existing(database)?;
            for (name, v, _) in store.settings().list()? {
                let (shown, secrets) = plugboard_store::redact_secrets(&v);
                if secrets.is_empty() {
                    writeln!(out, "{name:20} {shown}")?;
                } else {
                    writeln!(out, "{name:20} {shown} (secret: {})", secrets.join(", "))?;
                }
            }
        }
    }
    Ok(())
}

fn kv_command(
    database: Option<String>,
    out: &mut impl Write,
    package: &str,
    command: KvCommand,
) -> Result<()> {
    let store = open_existing(database)?;
    let kv = store.kv(package)?;
    match command {
        KvCommand::List { prefix, json } => {
            let mut entries = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = kv.list(&prefix, after.as_deref(), plugboard_store::MAX_LIST)?;
                let done = page.len() < plugboard_store::MAX_LIST;
                after = page.last().map(|e| e.key.clone());
                entries.extend(page);
                if done {
                    break;
                }
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
                return Ok(());
            }
            let usage = kv.usage()?;
            writeln!(out, "{package}: {} keys, {} bytes", usage.keys, usage.bytes)?;
            for e in entries {
                let expiry = e
                    .expires_at_ms
                    .and_then(|ms| {
                        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                            .ok()
                    })
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .map(|t| format!("  expires {t}"))
                    .unwrap_or_default();
                writeln!(out, "{:40} {:>8} B{expiry}", e.key, e.size)?;
            }
        }
        KvCommand::Get { key } => {
            let v = kv
                .get(&key)?
                .with_context(|| format!("`{package}` has no key `{key}`"))?;
            match String::from_utf8(v) {
                Ok(text) => writeln!(out, "{text}")?,
                Err(e) => {
                    let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                    writeln!(out, "{hex}")?
                }
            }
        }
        KvCommand::Delete { key } => {
            if !kv.delete(&key)? {
                return Err(anyhow!("`{package}` has no key `{key}`"));
            }
            writeln!(out, "deleted {key} of {package}")?;
        }
        KvCommand::Clear => {
            let n = kv.clear()?;
            writeln!(out, "cleared {package}: {n} keys deleted")?;
        }
    }
    Ok(())
}

/// The reference events, and the events the hosts on the database declared (an
/// embedder's own), by name. Without a database, the reference events alone.
fn catalogue(database: Option<String>) -> Result<Vec<plugboard::EventInfo>> {
    let mut events = Engine::new().events();
    let url = database.unwrap_or_else(plugboard_store::default_url);
    match Store::open_existing(&url) {
        Ok(store) => match store.stored_events() {
            Ok(stored) => {
                for e in stored {
                    match events.iter_mut().find(|r| r.name == e.name) {
                        Some(known) => *known = e,
                        None => events.push(e),
                    }
                }
            }
            // The reference events are still worth listing.
            Err(e) => eprintln!("warning: the hosts' own events are not listed: {e}"),
        },
        // Only reading: no database is no host events, not an error.
        Err(plugboard_store::StoreError::NoDatabase(_)) => {}
        Err(e) => return Err(e).with_context(|| format!("opening {}", redact(&url))),
    }
    events.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(events)
}

fn events(out: &mut impl Write, events: Vec<plugboard::EventInfo>, json: bool) -> Result<()> {
    if json {
        let list: Vec<_> = events
            .iter()
            .map(|e| {
                let mut v = serde_json::json!({ "name": e.name, "section": e.section, "doc": e.doc, "mode": e.mode, "fields": e.fields() });
                if let Some(output) = &e.output {
                    v["output"] = output.clone();
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    let width = events.iter().map(|e| e.name.len()).max().unwrap_or(0);
    writeln!(
        out,
        "{:width$}  {:9}  {:9}  FIELDS",
        "EVENT", "SECTION", "MODE"
    )?;
    for e in &events {
        let fields = e.fields();
        let mut fields = if fields == ["data", "extra"] {
            "(generic payload: data, extra)".to_owned()
        } else {
            fields.join(", ")
        };
        // A collecting event answers with contributions: say what one holds.
        if let Some(output) = &e.output {
            let of = plugboard::EventInfo::dynamic("", "", "")
                .with_schema(output.clone())
                .fields();
            let title = output
                .get("title")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("a value");
            if of.is_empty() {
                fields.push_str(&format!(" -> {title}"));
            } else {
                fields.push_str(&format!(" -> {title} ({})", of.join(", ")));
            }
        }
        let mode = match e.mode {
            plugboard::Mode::Collect => "collect",
            plugboard::Mode::Waterfall => "waterfall",
        };
        writeln!(
            out,
            "{:width$}  {:9}  {mode:9}  {fields}",
            e.name, e.section
        )?;
    }
    Ok(())
}

/// Applies one lifecycle operation to stored records and prints every status it changed.
/// The change is durable when this prints.
fn lifecycle(
    database: Option<String>,
    out: &mut impl Write,
    which: &Which,
    op: impl Fn(&Engine, Target<'_>) -> Result<plugboard::Report, EngineError>,
) -> Result<()> {
    let store = open_existing(database)?;
    let engine = records_engine(&store)?;
    let log = store.activity_log(Some(&engine), LogConfig::default());
    let mut changes = engine.subscribe();
    let result = store.retry_on_conflict(&engine, || op(&engine, which.target()));
    let mut any = false;
    while let Ok(ev) = changes.try_recv() {
        if let LifecycleEvent::StatusChanged { .. }
        | LifecycleEvent::Unregistered { .. }
        | LifecycleEvent::Deleted { .. }
        | LifecycleEvent::Undeleted { .. } = ev
        {
            any = true;
            print_change(out, &ev)?;
        }
    }
    log.flush(Duration::from_secs(10));
    let report = result.map_err(explain)?;
    for (name, why) in &report.skipped {
        writeln!(out, "skipped {name}: {}", explain_ref(why))?;
    }
    for (name, why) in &report.overridden {
        writeln!(
            out,
            "warning: {name}'s callback failed ({why}); done anyway"
        )?;
    }
    if !any {
        writeln!(out, "nothing to change")?;
    }
    Ok(())
}

fn explain_ref(e: &EngineError) -> String {
    match e {
        EngineError::Stopped(name) => {
            format!("plugin `{name}` is stopped; use `plugboard enable {name}`")
        }
        other => other.to_string(),
    }
}

fn print_change(out: &mut impl Write, ev: &LifecycleEvent) -> Result<()> {
    match ev {
        LifecycleEvent::StatusChanged {
            plugin,
            from,
            to,
            cause,
            ..
        } => {
            let why = match cause {
                plugboard::Cause::Operator { op } => format!("{op}"),
                plugboard::Cause::DependencyDown { dependency } => {
                    format!("dependency `{dependency}` is not active")
                }
                plugboard::Cause::DependenciesUp => "dependencies active again".into(),
                plugboard::Cause::FailureThreshold { failures } => {
                    format!("{failures} failures in a row")
                }
                plugboard::Cause::External => "changed by another process".into(),
            };
            writeln!(out, "{plugin}: {from} -> {to} ({why})")?;
        }
        LifecycleEvent::Unregistered { plugin, .. } => writeln!(out, "{plugin}: unregistered")?,
        LifecycleEvent::Deleted { plugin, .. } => {
            writeln!(out, "{plugin}: code unloaded (record kept)")?
        }
        LifecycleEvent::Undeleted { plugin, .. } => writeln!(out, "{plugin}: code loaded again")?,
        _ => {}
    }
    Ok(())
}

/// Registers the sample plugins. Another host booting at the same moment may insert the
/// same records first: then take its records and register again.
fn register_samples_racing(store: &Store, engine: &Engine) -> Result<()> {
    let mut attempt = 0;
    while let Err(e) = demo::register_samples(engine) {
        attempt += 1;
        if attempt == 5 {
            return Err(e);
        }
        tracing::info!(error = %e, "registration raced another host; reloading and retrying");
        store.sync(engine)?;
    }
    Ok(())
}

/// A host that follows other processes' changes and prints its chain when it changes,
/// and its packages when they change.
fn watch(database: Option<String>, out: &mut impl Write) -> Result<()> {
    let store = open(database)?;
    let engine = store.engine(Engine::builder())?;
    // The installer owns the activity log (it records this host's lifecycle events too).
    let installer = install::installer(&store, &engine)?;
    register_samples_racing(&store, &engine)?;
    // The installed packages join before `finish_boot`, so that their records count as
    // having code.
    let packages = installer.boot().map_err(|e| anyhow!("{e}"))?;
    for (name, why) in &packages.failed {
        eprintln!("warning: package `{name}` failed to load: {why}");
    }
    let boot = engine.finish_boot()?;
    if let Err(e) = store.publish_events(&engine) {
        tracing::warn!(error = %e, "could not record this host's event catalogue");
    }
    let _watch = store.watch(&engine);
    let _follow = installer.follow(Duration::from_millis(250));
    let mut changes = engine.subscribe();
    writeln!(out, "ready; started at boot: {:?}", boot.started)?;
    writeln!(
        out,
        "on_content_prepare runs: {:?}",
        demo::prepare_article(&engine)?
    )?;
    let mut shown = std::collections::BTreeMap::new();
    let mut polled = std::time::Instant::now();
    match installer.packages() {
        Ok(now) => {
            for line in install::package_changes(&mut shown, &now) {
                writeln!(out, "{line}")?;
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list packages"),
    }
    out.flush()?;
    // Stop when the parent closes our input.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = done_tx.send(());
    });
    loop {
        if done_rx.try_recv().is_ok() {
            installer.flush_activity(Duration::from_secs(10));
            return Ok(());
        }
        if polled.elapsed() >= Duration::from_millis(250) {
            polled = std::time::Instant::now();
            match installer.packages() {
                Ok(now) => {
                    for line in install::package_changes(&mut shown, &now) {
                        writeln!(out, "{line}")?;
                    }
                    out.flush()?;
                }
                Err(e) => tracing::warn!(error = %e, "could not list packages"),
            }
        }
        match changes.try_recv() {
            Ok(ev @ LifecycleEvent::StatusChanged { .. }) => print_change(out, &ev)?,
            Ok(LifecycleEvent::ChainRebuilt { event, .. }) if event == "on_content_prepare" => {
                writeln!(
                    out,
                    "on_content_prepare runs: {:?}",
                    demo::prepare_article(&engine)?
                )?;
            }
            Ok(_) => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        out.flush()?;
    }
}

/// `plugboard status`.
fn status(database: Option<String>, json: bool, out: &mut impl Write) -> Result<()> {
    let store = open_existing(database)?;
    let records = store.records()?;
    let packages = store.packages()?;
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::HOUR;
    // Plugin failures and failed operations in the last hour (a page of at most 1000).
    let failures = store.activities(&ActivityQuery {
        status: Some(ActivityStatus::Error),
        since: Some(hour_ago),
        limit: Some(1000),
        ..Default::default()
    })?;
    let last = store
        .activities(&ActivityQuery {
            limit: Some(1),
            ..Default::default()
        })?
        .into_iter()
        .next();
    let live: Vec<_> = records.iter().filter(|r| !r.unloaded).collect();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut events: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &live {
        *by_status.entry(r.record.status.to_string()).or_default() += 1;
        *events.entry(r.record.event.as_str()).or_default() += 1;
    }
    let deleted = records.len() - live.len();
    let broken: Vec<(&str, &str)> = packages
        .iter()
        .filter_map(|p| p.load_error.as_deref().map(|e| (p.name.as_str(), e)))
        .collect();
    let mut failing: BTreeMap<String, usize> = BTreeMap::new();
    for f in &failures {
        *failing
            .entry(f.entry.subject.clone().unwrap_or_else(|| "-".into()))
            .or_default() += 1;
    }
    if json {
        let v = serde_json::json!({
            "database": store.url(),
            "schema_version": store.schema_version()?,
            "events_with_plugins": events,
            "plugins": { "total": live.len(), "by_status": by_status, "deleted": deleted },
            "packages": packages.iter().map(|p| serde_json::json!({
                "name": p.name, "version": p.version, "load_error": p.load_error,
            })).collect::<Vec<_>>(),
            "failures_last_hour": { "total": failures.len(), "by_subject": failing },
            "last_activity": last,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "database   {} (schema v{})",
        store.url(),
        store.schema_version()?
    )?;
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "plugins    {} ({}){}",
        live.len(),
        if by_status.is_empty() {
            "none".to_owned()
        } else {
            list(&by_status)
        },
        if deleted > 0 {
            format!("; {deleted} deleted")
        } else {
            String::new()
        }
    )?;
    writeln!(
        out,
        "events     {} with plugins: {}",
        events.len(),
        events
            .iter()
            .map(|(e, n)| format!("{e} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        out,
        "packages   {}{}",
        packages.len(),
        if packages.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                packages
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )?;
    for (name, why) in &broken {
        writeln!(out, "           {name} failed to load: {why}")?;
    }
    writeln!(
        out,
        "failures   {} in the last hour{}",
        failures.len(),
        if failing.is_empty() {
            String::new()
        } else {
            format!(": {}", list(&failing))
        }
    )?;
    match last {
        Some(a) => {
            let when = a
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            writeln!(
                out,
                "last       {when} {} {} {}",
                a.entry.kind,
                a.entry.action,
                a.entry.subject.as_deref().unwrap_or("-")
            )?;
        }
        None => writeln!(out, "last       no activity recorded")?,
    }
    Ok(())
}
