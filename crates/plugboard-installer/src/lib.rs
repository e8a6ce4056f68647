//! # plugboard-installer
//!
//! Installs prebuilt, verified WebAssembly plugin packages (`.pbpkg`, see
//! `plugboard-package`) into a running Plugboard host, without rebuilding it. This is the
//! "Installer" of Mishka Installer, grown up: installs are verified before anything is
//! written, atomic, replayed at boot, and applied by every host sharing a database.
//!
//! ```no_run
//! use plugboard_installer::{Grant, Installer, InstallerConfig, InstallOptions};
//!
//! let store = plugboard_store::Store::open("sqlite://.plugboard/plugboard.db")?;
//! let engine = store.engine(plugboard_engine::Engine::builder())?;
//! let host = plugboard_wasm::WasmHost::new(Default::default())?;
//! let installer = Installer::new(store.clone(), engine.clone(), host,
//!     InstallerConfig::from_settings(&store, ".plugboard/packages")?);
//! installer.boot()?;                 // every installed package, loaded and registered
//! engine.finish_boot()?;
//! // The operator saw what the package asks for (`plugboard inspect`) and grants it.
//! let opts = InstallOptions { grant: Grant::Asked, ..Default::default() };
//! let done = installer.install("audit-1.0.0.pbpkg", &opts, &mut |_, _| {})?;
//! println!("{} {} installed: {:?}", done.name, done.version, done.plugins);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What an install does, in order; every refusal comes before the first write:
//! 1. read the file, or download it (allowed hosts only; a sha256 pin unless the host is
//!    trusted; size and time limits; resumed on a broken connection);
//! 2. verify the archive (paths, entry kinds, bomb limits), the manifest (strictly), the
//!    sha256 pin, the signature (required when trusted keys are configured) and the
//!    operator's policy (limits, capabilities, protected names, host and contract versions);
//!    the plugin then runs under the limits it asked for; the capabilities it asks for under
//!    `[capabilities]` must be granted ([`InstallOptions::grant`], or held from an earlier
//!    version), else [`InstallError::NotGranted`] lists them; it may use only those
//!    (another fails, naming the capability), and [`Installer::change_grants`] changes
//!    them live in every host;
//! 3. check the hooked events exist, the plugin names are free, and the package
//!    dependencies are installed in matching versions; refuse a downgrade unless forced;
//! 4. compile the component (into the artifact cache) and validate it against the contract;
//!    run `initial` and the health check of every hook on the new code;
//! 5. call `on_change_dependency` (`add` or `force_update`);
//! 6. stage the file, move it into place, and commit the `packages` row with the package
//!    bytes in one transaction: the moment of the switch;
//! 7. register the hooks (re-registering swaps code atomically: calls in flight finish on
//!    the old version, new calls use the new one) and start new plugins.
//!
//! A crash at any point leaves the old state or the new one: [`Installer::boot`] removes
//! staging leftovers and files no row references, unregisters records whose package row
//! never committed, and loads every installed package (a package that fails to load is
//! isolated and reported; the others load).

mod config;
mod emit;
mod error;
mod grants;
mod http;
mod index;
mod kv;
pub mod secrets;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use plugboard_core::{DependType, PluginRecord, Status};
use plugboard_engine::{Callbacks, Engine, EngineError, Op, PersistError, Registration};
use plugboard_package::fetch::fetch;
use plugboard_package::semver::Version;
use plugboard_package::{Manifest, Role, VerifiedPackage, VerifyOptions, sha256_hex, verify};
use plugboard_store::{ActivityKind, ActivityLog, ActivityStatus, NewActivity, PackageRow, Store};
use plugboard_wasm::{Limits, WasmHost, WasmPlugin};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

pub use config::{InstallerConfig, MAX_DEADLINE_OVERRIDE, SETTING};
pub use emit::{EmitCounts, MAX_EMIT_DEPTH};
pub use error::InstallError;
pub use grants::{Grant, PackageGrants, change_grants, package_grants, stored_grants};
pub use index::{Index, IndexEntry, Outdated};
/// What packages ask for and operators grant (re-exported for the installer's callers).
pub use plugboard_package::{Capabilities, Capability};
/// A package's outbound HTTP counts ([`Installer::http_counts`]).
pub use plugboard_wasm::HttpCounts;

/// How to install.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    /// The sha256 the package file must have (required for downloads from hosts that are
    /// not trusted).
    pub sha256: Option<String>,
    /// Install even if the same or a newer version is installed.
    pub force: bool,
    /// What the package is granted beyond what it holds (by default nothing: a package
    /// asking for more is refused, [`InstallError::NotGranted`]).
    pub grant: Grant,
}

/// What an install, upgrade or rollback did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Installed {
    /// The package.
    pub name: String,
    /// The version now installed.
    pub version: String,
    /// The version it replaced, if any.
    pub replaced: Option<String>,
    /// SHA-256 of the package file.
    pub sha256: String,
    /// The plugin records it owns.
    pub plugins: Vec<String>,
    /// What it was.
    pub action: InstallAction,
    /// The key id that signed it, if a trusted key did.
    pub signer: Option<String>,
}

/// What an uninstall did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Uninstalled {
    /// Plugins of dependent packages now held (with `cascade`).
    pub held: Vec<String>,
    /// Plugins whose `unregister` callback failed: they were removed anyway (the operator
    /// wins); what each said.
    pub overridden: Vec<(String, String)>,
}

/// An installed package as this host sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize)]
pub struct PackageStatus {
    /// The package.
    pub name: String,
    /// Its installed version.
    pub version: String,
    /// The version kept for rollback.
    pub previous: Option<String>,
    /// Its description.
    pub description: String,
    /// SHA-256 of its package file.
    pub sha256: String,
    /// Where it came from.
    pub source: String,
    /// Its package dependencies.
    pub dependencies: BTreeMap<String, String>,
    /// Its plugin records.
    pub plugins: Vec<String>,
    /// Whether this host has it loaded.
    pub loaded: bool,
    /// Why it failed to load (on this host, or as last recorded by any host).
    pub error: Option<String>,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: OffsetDateTime,
}

/// What an install turned out to be.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallAction {
    /// The package was not installed.
    Install,
    /// A newer version replaced the installed one.
    Upgrade,
    /// The same (or an older) version again, forced.
    Reinstall,
    /// The previous version was put back.
    Rollback,
}

impl InstallAction {
    /// Every action.
    pub const ALL: [InstallAction; 4] = [
        InstallAction::Install,
        InstallAction::Upgrade,
        InstallAction::Reinstall,
        InstallAction::Rollback,
    ];

    /// Its name, as serialized and recorded in the activity log.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallAction::Install => "install",
            InstallAction::Upgrade => "upgrade",
            InstallAction::Reinstall => "reinstall",
            InstallAction::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for InstallAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What [`Installer::boot`] or [`Installer::sync`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Packages loaded (name, version).
    pub loaded: Vec<(String, String)>,
    /// Packages that failed to load, with why; isolated, the others load.
    pub failed: Vec<(String, String)>,
    /// Packages removed because their row is gone (another host uninstalled them).
    pub removed: Vec<String>,
    /// Records of packages that never committed, unregistered.
    pub orphans: Vec<String>,
    /// Leftover files and staging areas removed.
    pub cleaned: usize,
    /// Packages not loaded because other processes were changing their plugin records at
    /// the same moment; [`Installer::sync`] tries them again.
    pub deferred: Vec<String>,
}

/// How [`Installer::uninstall_with`] uninstalls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UninstallOptions {
    /// Uninstall even when other packages depend on it (their plugins are then held).
    pub cascade: bool,
    /// Keep the package's key-value data (removed by default).
    pub keep_data: bool,
}

/// What this host has loaded of a package.
#[derive(Clone)]
struct Loaded {
    sha256: String,
    component: String,
    plugins: Vec<String>,
    /// The loaded code, which its plugins share (and so their settings).
    plugin: Arc<WasmPlugin>,
    /// The capabilities it runs with.
    effective: Capabilities,
}

/// Installs, upgrades, rolls back and uninstalls packages on one engine. Cheap to clone.
#[derive(Clone)]
pub struct Installer {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Engine,
    host: WasmHost,
    config: std::sync::RwLock<InstallerConfig>,
    /// Where packages are kept (`config.dir`, which never changes).
    dir: PathBuf,
    /// The settings last applied (by name), so that a refresh changes only what changed.
    applied: Mutex<BTreeMap<String, Option<Value>>>,
    log: Mutex<Option<ActivityLog>>,
    /// One operation at a time in this process (other processes are kept out by the
    /// rows' revisions).
    op: Mutex<BTreeMap<String, Loaded>>,
    /// Packages that failed to load here, by sha256 (not retried until they change).
    failed: Mutex<BTreeMap<String, (String, String)>>,
    /// `config.kv_quota`, shared with every package's key-value service.
    kv_quota: Arc<std::sync::RwLock<plugboard_store::KvQuota>>,
    /// Denied capability uses, recorded at a bounded rate.
    denied: grants::DeniedLog,
    /// Every package's emits.
    emits: Arc<emit::EmitStats>,
    /// The key that seals and opens secret settings.
    secrets: secrets::Secrets,
    /// The store's change generation this host has fully applied (`follow`); -1 before.
    synced: std::sync::atomic::AtomicI64,
    /// Told where long operations are (`with_progress`).
    progress: std::sync::RwLock<Option<ProgressFn>>,
}

/// A progress observer: see [`Installer::with_progress`].
pub type ProgressFn = Arc<dyn Fn(Progress<'_>) + Send + Sync>;

/// Where a long installer operation is, for a progress display. Downloads report their
/// bytes through [`Installer::install`]'s own callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// Booting or syncing: `done` of `total` packages are loaded; `package` is next.
    Loading {
        /// The package being loaded.
        package: &'a str,
        /// Packages loaded (or failed) so far.
        done: usize,
        /// Packages to load in all.
        total: usize,
    },
    /// Loading ended (all `total` tried).
    Loaded {
        /// Packages tried.
        total: usize,
    },
    /// An install compiles the package's component (or finds it in the compile cache).
    Compiling {
        /// The package.
        package: &'a str,
    },
    /// An install runs `initial` and the health check on the new code.
    Checking {
        /// The package.
        package: &'a str,
    },
    /// An install places the file and commits the switch.
    Switching {
        /// The package.
        package: &'a str,
    },
}

/// The installed packages as stored, without loading anything (for tools that only read):
/// `loaded` is false and `error` is the last load error any host recorded.
pub fn stored_packages(store: &Store) -> Result<Vec<PackageStatus>, InstallError> {
    package_statuses(store, |_| (false, None))
}

/// The stored packages, with `here(row)`: whether this host has it loaded, and its error.
fn package_statuses(
    store: &Store,
    here: impl Fn(&PackageRow) -> (bool, Option<String>),
) -> Result<Vec<PackageStatus>, InstallError> {
    store
        .packages()?
        .into_iter()
        .map(|row| {
            let m = Manifest::parse(&row.manifest).ok();
            let (loaded, error) = here(&row);
            Ok(PackageStatus {
                description: m
                    .as_ref()
                    .map(|m| m.package.description.clone())
                    .unwrap_or_default(),
                plugins: m
                    .as_ref()
                    .map(|m| m.plugin_names().map(str::to_owned).collect())
                    .unwrap_or_default(),
                loaded,
                error: error.or(row.load_error.clone()),
                name: row.name,
                version: row.version,
                previous: row.previous_version,
                sha256: row.sha256,
                source: row.source,
                dependencies: row.dependencies,
                updated_at: row.updated_at,
            })
        })
        .collect()
}

/// The key plugin records carry in `extra` to name the package that owns them.
/// The package owning a record, if a package does ([`PluginRecord::package`]).
pub fn owner(record: &PluginRecord) -> Option<&str> {
    record.package()
}

impl Installer {
    /// An installer for `engine`, storing in `store`, running components on `host`.
    pub fn new(store: Store, engine: Engine, host: WasmHost, config: InstallerConfig) -> Self {
        let installer = Installer {
            inner: Arc::new(Inner {
                store,
                engine,
                host,
                // `<home>/secrets.key` when packages are in `<home>/packages`.
                secrets: secrets::Secrets::new(config.dir.with_file_name("secrets.key")),
                dir: config.dir.clone(),
                kv_quota: Arc::new(std::sync::RwLock::new(config.kv_quota)),
                config: std::sync::RwLock::new(config),
                applied: Mutex::new(BTreeMap::new()),
                log: Mutex::new(None),
                op: Mutex::new(BTreeMap::new()),
                failed: Mutex::new(BTreeMap::new()),
                denied: grants::DeniedLog::new(),
                emits: Arc::default(),
                synced: std::sync::atomic::AtomicI64::new(-1),
                progress: std::sync::RwLock::new(None),
            }),
        };
        // Weak: the host (which keeps the hook) belongs to the installer.
        let me = Arc::downgrade(&installer.inner);
        installer
            .inner
            .host
            .on_denied(Arc::new(move |package: &str, capability: &'static str| {
                let Some(inner) = me.upgrade() else { return };
                if let Some(count) = inner.denied.admit(package, capability) {
                    tracing::warn!(
                        package,
                        capability,
                        count,
                        "a plugin used a capability it is not granted"
                    );
                    if let Ok(log) = inner.log.lock()
                        && let Some(log) = log.as_ref()
                    {
                        log.record(NewActivity::new(
                            ActivityKind::Package,
                            "denied",
                            ActivityStatus::Warning,
                            Some(package),
                            json!({ "capability": capability, "count": count }),
                        ));
                    }
                }
            }));
        installer
    }

    /// The key that seals and opens this host's secret settings: `$PLUGBOARD_SECRETS_KEY`,
    /// else `secrets.key` beside the packages directory ([`secrets`]).
    pub fn secrets(&self) -> &secrets::Secrets {
        &self.inner.secrets
    }

    /// Replaces the key of the secret settings (a host that keeps it elsewhere).
    pub fn with_secrets(self, secrets: secrets::Secrets) -> Self {
        // Only before the installer is shared: `with_*` builders run on a fresh one.
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.secrets = secrets;
                Installer {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => {
                tracing::warn!("with_secrets on a shared installer: the key stays as it was");
                Installer { inner }
            }
        }
    }

    /// `package`'s settings as its plugins read them: stored, with their secret fields
    /// opened (a field this host cannot open is left out, and said in the log, never the
    /// value).
    fn plugin_settings(&self, package: &str, stored: Option<&Value>) -> Option<Value> {
        let name = settings::package_setting(package);
        let (value, failed) = self.inner.secrets.open_all(&name, stored?);
        for (field, e) in failed {
            tracing::error!(package, field, error = %e, "a secret setting cannot be opened here; the plugin gets its settings without it");
        }
        Some(value)
    }

    /// Tells `progress` where long operations are (boot, sync, the stages of an install):
    /// a command-line tool draws a progress bar from it.
    pub fn with_progress(self, progress: ProgressFn) -> Self {
        if let Ok(mut p) = self.inner.progress.write() {
            *p = Some(progress);
        }
        self
    }

    fn progress(&self, p: Progress<'_>) {
        if let Ok(guard) = self.inner.progress.read()
            && let Some(f) = guard.as_ref()
        {
            f(p);
        }
    }

    /// Records what the installer does in this activity log.
    pub fn with_activity_log(self, log: ActivityLog) -> Self {
        if let Ok(mut l) = self.inner.log.lock() {
            *l = Some(log);
        }
        self
    }

    /// The wasm host that runs this installer's packages (for its counters, such as
    /// [`WasmHost::log_lines_dropped`]).
    pub fn host(&self) -> &WasmHost {
        &self.inner.host
    }

    /// Waits until what the installer recorded in its activity log is written (see
    /// `ActivityLog::flush`): a short-lived process calls it before exiting. `true` when
    /// done within `timeout`, or when there is no log.
    pub fn flush_activity(&self, timeout: Duration) -> bool {
        match self.inner.log.lock() {
            Ok(log) => log.as_ref().is_none_or(|l| l.flush(timeout)),
            Err(_) => false,
        }
    }

    /// The configuration in force (a copy: with [`InstallerConfig::follow_setting`] it
    /// follows the `installer` setting, see [`Installer::refresh_settings`]).
    pub fn config(&self) -> InstallerConfig {
        self.inner
            .config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies the settings stored now: the `installer` setting (when the configuration
    /// follows it), with the call deadlines it gives packages, and every loaded package's
    /// plugin settings, which its plugins read on their next call. Reads the database, not
    /// a cache; [`Installer::sync`] (and so [`Installer::follow`]) runs it on every change,
    /// wherever it was made. A stored value that no longer parses is reported and the
    /// rules in force stay.
    pub fn refresh_settings(&self) -> Result<(), InstallError> {
        let stored: BTreeMap<String, Value> = self
            .inner
            .store
            .settings()
            .list()?
            .into_iter()
            .map(|(name, value, _)| (name, value))
            .collect();
        let mut applied = self
            .inner
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let follows = self.config().follow_setting;
        let rules = stored.get(SETTING);
        if follows && applied.get(SETTING) != Some(&rules.cloned()) {
            match InstallerConfig::from_value(self.inner.dir.clone(), rules) {
                Ok(config) => {
                    *self
                        .inner
                        .kv_quota
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = config.kv_quota;
                    *self
                        .inner
                        .config
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
                    tracing::info!("installer rules applied from the `{SETTING}` setting");
                    applied.insert(SETTING.to_owned(), rules.cloned());
                }
                Err(e) => {
                    tracing::error!(error = %e, "the stored `{SETTING}` setting is invalid; the rules in force stay");
                }
            }
        }
        let loaded = self
            .inner
            .op
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let deadlines = self.config().deadlines;
        for (package, l) in &loaded {
            let before = l.plugin.deadline();
            l.plugin.set_deadline(deadlines.get(package).copied());
            if l.plugin.deadline() != before {
                tracing::info!(
                    package,
                    deadline_ms = l.plugin.deadline().as_millis(),
                    "call deadline applied"
                );
            }
            let name = settings::package_setting(package);
            let value = stored.get(&name).cloned();
            // Compared as stored: sealed fields are opened only when they changed.
            if applied.get(&name) != Some(&value) {
                let plain = self.plugin_settings(package, value.as_ref());
                l.plugin.set_settings(plain.as_ref().map(Value::to_string));
                tracing::info!(package, "plugin settings applied");
            }
            applied.insert(name, value);
        }
        Ok(())
    }

    /// Hands a freshly loaded package's plugin its stored settings, before its `initial`.
    fn give_settings(&self, package: &str, plugin: &WasmPlugin) -> Result<(), InstallError> {
        let value = self
            .inner
            .store
            .settings()
            .read(&settings::package_setting(package))?;
        let plain = self.plugin_settings(package, value.as_ref());
        plugin.set_settings(plain.as_ref().map(Value::to_string));
        Ok(())
    }

    /// One operation at a time: in this process (the mutex) and among processes sharing
    /// the packages directory (an exclusive lock on `<dir>/.lock`), so that one's boot
    /// never cleans up another's install in progress.
    fn lock(&self) -> OpGuard<'_> {
        // A panic while holding it left the map as it was before that operation's write.
        let map = self
            .inner
            .op
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = &self.inner.dir;
        let file = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join(".lock"))
            })
            .and_then(|f| f.lock().map(|()| f));
        let file = match file {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the packages directory; going on unlocked");
                None
            }
        };
        OpGuard { map, _file: file }
    }

    fn record(&self, action: &str, status: ActivityStatus, subject: &str, extra: Value) {
        if let Ok(log) = self.inner.log.lock()
            && let Some(log) = log.as_ref()
        {
            log.record(NewActivity::new(
                ActivityKind::Package,
                action,
                status,
                Some(subject),
                extra,
            ));
        }
    }

    fn verify_options(&self, pin: Option<String>) -> VerifyOptions {
        let mut opts = self.config().policy.verify_options();
        opts.sha256 = pin;
        opts.trusted_keys = self.config().trusted_keys;
        opts
    }

    /// Installs (or upgrades to) the package at `source`: a file path, or an `http(s)://`
    /// URL downloaded under the configured policy with `progress(received, total)`.
    pub fn install(
        &self,
        source: &str,
        opts: &InstallOptions,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Installed, InstallError> {
        let remote = source.contains("://");
        let bytes = if remote {
            fetch(
                source,
                &self.config().fetch,
                opts.sha256.as_deref(),
                progress,
            )?
        } else {
            let limit = self.config().policy.archive.max_compressed;
            plugboard_package::read_package_file(Path::new(source), limit)?
        };
        let kind = if remote { "url" } else { "path" };
        self.install_bytes(bytes, kind, source, opts)
    }

    /// Installs (or upgrades to) a package given as bytes (an upload); `source_kind` is
    /// `path`, `url`, `upload` or `registry`.
    pub fn install_bytes(
        &self,
        bytes: Vec<u8>,
        source_kind: &str,
        source: &str,
        opts: &InstallOptions,
    ) -> Result<Installed, InstallError> {
        let verified = match verify(&bytes, &self.verify_options(opts.sha256.clone())) {
            Ok(v) => v,
            Err(e) => {
                // Refused before its name could be trusted: recorded under its source.
                let e = InstallError::from(e);
                self.record(
                    "install",
                    ActivityStatus::Error,
                    &format!("({source_kind}) {source}"),
                    json!({ "error": e.to_string(), "source": source, "stage": "verification" }),
                );
                return Err(e);
            }
        };
        let name = verified.manifest.package.name.clone();
        let mut loaded = self.lock();
        let (action, result) =
            self.install_verified(&mut loaded, verified, bytes, source_kind, source, opts);
        self.report(action, &name, &result);
        result
    }

    /// An install of verified bytes: upgrade, reinstall or refusal as the installed
    /// version says; returns the action it was and its result.
    fn install_verified(
        &self,
        loaded: &mut BTreeMap<String, Loaded>,
        verified: VerifiedPackage,
        bytes: Vec<u8>,
        source_kind: &str,
        source: &str,
        opts: &InstallOptions,
    ) -> (InstallAction, Result<Installed, InstallError>) {
        let name = verified.manifest.package.name.clone();
        let existing = match self.inner.store.package(&name) {
            Ok(e) => e,
            Err(e) => return (InstallAction::Install, Err(e.into())),
        };
        let action = match &existing {
            None => InstallAction::Install,
            Some(row) => {
                let installed = match Version::parse(&row.version) {
                    Ok(v) => v,
                    Err(e) => return (InstallAction::Install, Err(damaged(row, e))),
                };
                let offered = &verified.manifest.package.version;
                if *offered > installed {
                    InstallAction::Upgrade
                } else if opts.force {
                    InstallAction::Reinstall
                } else {
                    return (
                        InstallAction::Install,
                        Err(InstallError::NotNewer {
                            package: name,
                            installed: row.version.clone(),
                            offered: offered.to_string(),
                        }),
                    );
                }
            }
        };
        let result = self.apply(
            loaded,
            verified,
            bytes,
            source_kind,
            source,
            action,
            existing,
            &opts.grant,
        );
        (action, result)
    }

    fn report(&self, action: InstallAction, name: &str, result: &Result<Installed, InstallError>) {
        let action = action.as_str();
        match result {
            Ok(done) => self.record(
                action,
                ActivityStatus::Info,
                name,
                json!({ "version": done.version, "replaced": done.replaced, "sha256": done.sha256, "plugins": done.plugins }),
            ),
            Err(e) => self.record(action, ActivityStatus::Error, name, json!({ "error": e.to_string() })),
        }
    }

    /// Puts the previous version back (and keeps the current one as the new previous).
    pub fn rollback(&self, name: &str) -> Result<Installed, InstallError> {
        let mut loaded = self.lock();
        let row = self
            .inner
            .store
            .package(name)?
            .ok_or_else(|| InstallError::NotInstalled(name.to_owned()))?;
        let (Some(_), Some(prev_sha)) = (&row.previous_version, &row.previous_sha256) else {
            return Err(InstallError::NoPrevious(name.to_owned()));
        };
        let bytes = self.archive(name, prev_sha)?;
        let verified = verify(
            &bytes,
            &VerifyOptions {
                skip_import_check: true,
                ..self.verify_options(Some(prev_sha.clone()))
            },
        )?;
        let result = self.apply(
            &mut loaded,
            verified,
            bytes,
            &row.source_kind.clone(),
            &row.source.clone(),
            InstallAction::Rollback,
            Some(row),
            &Grant::Held,
        );
        self.report(InstallAction::Rollback, name, &result);
        result
    }

    /// The package file with this sha256: from the local copy, else from the database.
    fn archive(&self, name: &str, sha256: &str) -> Result<Vec<u8>, InstallError> {
        if let Ok(entries) = std::fs::read_dir(self.package_dir(name)) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .ends_with(&format!("-{}.pbpkg", &sha256[..16.min(sha256.len())]))
                    && let Ok(bytes) = std::fs::read(e.path())
                    && sha256_hex(&bytes) == sha256
                {
                    return Ok(bytes);
                }
            }
        }
        self.inner
            .store
            .package_archive(sha256)?
            .ok_or_else(|| InstallError::Damaged {
                package: name.to_owned(),
                why: format!("its package file {sha256} is neither on disk nor in the database"),
            })
    }

    /// Every check, then the switch. `existing` is the row being replaced.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        loaded: &mut BTreeMap<String, Loaded>,
        verified: VerifiedPackage,
        bytes: Vec<u8>,
        source_kind: &str,
        source: &str,
        action: InstallAction,
        existing: Option<PackageRow>,
        grant: &Grant,
    ) -> Result<Installed, InstallError> {
        let engine = &self.inner.engine;
        let m = &verified.manifest;
        let name = m.package.name.clone();
        let version = m.package.version.to_string();
        m.check_against(&self.config().policy)?;
        // Consent: what it asks for must be granted (held already, or given now).
        let held = match &existing {
            Some(row) => grants::of_row(row)?.granted().clone(),
            None => Capabilities::none(),
        };
        let given = held.union(&grant.resolve(&m.capabilities)?);
        let missing = m.capabilities.missing(&given);
        if !missing.is_empty() {
            return Err(InstallError::NotGranted {
                package: name,
                missing,
            });
        }
        // An upgrade asking for less drops the rest.
        let effective = m.capabilities.within(&given);
        for hook in &m.hooks {
            let Some(event) = engine.event(&hook.event) else {
                return Err(InstallError::UnknownEvent {
                    package: name,
                    event: hook.event.clone(),
                });
            };
            if hook.role == Role::Wrapper && event.mode == plugboard_core::Mode::Collect {
                return Err(InstallError::WrapperOnCollecting {
                    package: name,
                    plugin: hook.plugin.clone(),
                    event: hook.event.clone(),
                });
            }
            if let Some(info) = engine.plugin(&hook.plugin) {
                match owner(&info.record) {
                    Some(o) if o == name => {}
                    Some(o) => {
                        return Err(InstallError::NameTaken {
                            package: name,
                            plugin: hook.plugin.clone(),
                            owner: format!("package `{o}`"),
                        });
                    }
                    None => {
                        return Err(InstallError::NameTaken {
                            package: name,
                            plugin: hook.plugin.clone(),
                            owner: "the host".into(),
                        });
                    }
                }
            }
        }
        for event in &m.capabilities.emit {
            if engine.event(event).is_none() {
                return Err(InstallError::UnknownEvent {
                    package: name,
                    event: event.clone(),
                });
            }
        }
        let rows = self.inner.store.packages()?;
        let dep_plugins = self.check_dependencies(m, &rows)?;
        self.progress(Progress::Compiling { package: &name });
        let plugin = self.load_component(&verified, &effective)?;
        self.progress(Progress::Checking { package: &name });
        // The new code must start and be healthy before anything switches.
        for hook in &m.hooks {
            let record = preview(m, hook, &dep_plugins);
            if let Err(why) = plugin.lifecycle(Op::Register, &record) {
                return Err(self.unhealthy(&name, &version, why.0, &existing));
            }
        }
        if let Err(why) = plugin.health_check() {
            return Err(self.unhealthy(&name, &version, why.0, &existing));
        }
        // Plugins holding state may prepare for the switch.
        let status = if existing.is_some() {
            "force_update"
        } else {
            "add"
        };
        if let Err(e) = engine.call_json(
            "on_change_dependency",
            json!({ "app": name, "status": status }),
            &Default::default(),
        ) {
            tracing::warn!(package = %name, error = %e, "on_change_dependency failed; installing anyway");
        }
        self.progress(Progress::Switching { package: &name });
        let file = self.place(&name, &version, &verified.sha256, &bytes)?;
        let now = OffsetDateTime::now_utc();
        let (previous_version, previous_sha256) = match (&existing, action) {
            (Some(row), InstallAction::Reinstall) => {
                (row.previous_version.clone(), row.previous_sha256.clone())
            }
            (Some(row), _) => (Some(row.version.clone()), Some(row.sha256.clone())),
            (None, _) => (None, None),
        };
        let row = PackageRow {
            name: name.clone(),
            version: version.clone(),
            source_kind: source_kind.to_owned(),
            source: source.to_owned(),
            sha256: verified.sha256.clone(),
            dependencies: m
                .dependencies
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            manifest: verified.manifest_text.clone(),
            previous_version,
            previous_sha256,
            revision: existing.as_ref().map_or(1, |r| r.revision + 1),
            load_error: None,
            grants: Some(grants::to_column(&effective)),
            installed_at: existing.as_ref().map_or(now, |r| r.installed_at),
            updated_at: now,
        };
        let expected = existing.as_ref().map_or(0, |r| r.revision);
        if let Err(e) = self.inner.store.put_package(&row, Some(bytes), expected) {
            // Not committed: the file just placed is not referenced by any row.
            if existing.as_ref().is_none_or(|r| r.sha256 != row.sha256) {
                let _ = std::fs::remove_file(&file);
            }
            return Err(e.into());
        }
        // Committed: from here the new version is the installed one; register its code.
        let old = loaded.get(&name).cloned();
        let mut registered = self.register(m, &plugin, &dep_plugins, old.as_ref());
        if let Err(EngineError::Persist(PersistError::Conflict { .. })) = &registered {
            // A host following the database registered them first: reload and retry.
            if let Err(e) = self.inner.store.sync(engine) {
                tracing::warn!(error = %e, "could not reload the plugin records");
            }
            registered = self.register(m, &plugin, &dep_plugins, old.as_ref());
        }
        let plugins = match registered {
            Ok(p) => p,
            Err(e) => {
                // The code refused on registration after all: put the old row back.
                let restored = match &existing {
                    Some(prev) => {
                        let mut back = prev.clone();
                        back.revision = row.revision + 1;
                        self.inner
                            .store
                            .put_package(&back, None, row.revision)
                            .is_ok()
                            && self.load_row(loaded, &back, &rows).is_ok()
                    }
                    None => {
                        // Data kept from an earlier uninstall stays.
                        let _ = self.inner.store.remove_package(&name, row.revision, true);
                        for p in m.plugin_names() {
                            let _ = engine.unregister(p);
                        }
                        false
                    }
                };
                return Err(InstallError::Unhealthy {
                    package: name,
                    version,
                    why: e.to_string(),
                    restored,
                });
            }
        };
        if let Some(old) = &old
            && old.component != plugin.sha256()
        {
            // The old version's compiled code stays cached only while it is the
            // previous version (for a quick rollback).
            if row.previous_sha256.as_deref() != Some(old.sha256.as_str()) {
                self.inner.host.evict(&old.component);
            }
        }
        loaded.insert(
            name.clone(),
            Loaded {
                sha256: row.sha256.clone(),
                component: plugin.sha256().to_owned(),
                plugins: plugins.clone(),
                plugin: plugin.clone(),
                effective: effective.clone(),
            },
        );
        self.record_grants(&name, &held_before(&existing), &effective);
        if let Ok(mut f) = self.inner.failed.lock() {
            f.remove(&name);
        }
        self.clean_package_dir(&row);
        Ok(Installed {
            name,
            version,
            replaced: existing.map(|r| r.version),
            sha256: row.sha256,
            plugins,
            action,
            signer: verified.signer,
        })
    }

    fn unhealthy(
        &self,
        name: &str,
        version: &str,
        why: String,
        existing: &Option<PackageRow>,
    ) -> InstallError {
        InstallError::Unhealthy {
            package: name.to_owned(),
            version: version.to_owned(),
            why,
            restored: existing.is_some(),
        }
    }

    /// Checks the package dependencies; returns the plugin names of the packages it depends
    /// on (its plugins hard-depend on them, so that they are held while one is missing).
    fn check_dependencies(
        &self,
        m: &Manifest,
        rows: &[PackageRow],
    ) -> Result<Vec<String>, InstallError> {
        let mut unmet = Vec::new();
        let mut plugins = Vec::new();
        for (dep, req) in &m.dependencies {
            match rows.iter().find(|r| &r.name == dep) {
                None => unmet.push(format!("{dep} {req} (not installed)")),
                Some(row) => match Version::parse(&row.version) {
                    Ok(v) if req.matches(&v) => {
                        let dm = Manifest::parse(&row.manifest).map_err(|e| damaged(row, e))?;
                        plugins.extend(dm.plugin_names().map(str::to_owned));
                    }
                    _ => unmet.push(format!("{dep} {req} ({} installed)", row.version)),
                },
            }
        }
        if unmet.is_empty() {
            Ok(plugins)
        } else {
            Err(InstallError::Dependencies {
                package: m.package.name.clone(),
                unmet,
            })
        }
    }

    fn load_component(
        &self,
        v: &VerifiedPackage,
        effective: &Capabilities,
    ) -> Result<Arc<WasmPlugin>, InstallError> {
        let m = &v.manifest;
        let mut limits = Limits::default();
        if let Some(mib) = m.limits.memory_mib {
            limits.memory = usize::try_from(mib << 20).unwrap_or(usize::MAX);
        }
        if let Some(ms) = m.limits.deadline_ms {
            limits.deadline = Duration::from_millis(ms);
        }
        limits.fuel = m.limits.fuel;
        if let Some(kib) = m.limits.max_reply_kib {
            limits.max_reply = usize::try_from(kib << 10).unwrap_or(usize::MAX);
        }
        // Only what the manifest asks for and an operator granted.
        limits.grants = grants::wasm_grants(effective);
        // `kv` is granted by handing the plugin its service, below.
        let plugin = self
            .inner
            .host
            .load(&m.package.name, &v.component, limits)
            .map(Arc::new)
            .map_err(|error| InstallError::Component {
                package: m.package.name.clone(),
                error,
            })?;
        if m.hooks.iter().any(|h| h.role == Role::Wrapper) {
            // Only to refuse now a component that cannot be one; `register` makes the code.
            plugin
                .clone()
                .wrapper_code()
                .map_err(|error| InstallError::Component {
                    package: m.package.name.clone(),
                    error,
                })?;
        }
        // An operator's deadline for the package replaces the one its manifest asks for.
        plugin.set_deadline(self.config().deadlines.get(&m.package.name).copied());
        self.give_settings(&m.package.name, &plugin)?;
        self.give_services(&m.package.name, &plugin, effective);
        Ok(plugin)
    }

    /// Hands a plugin the services of the capabilities it runs with, and takes back the
    /// others (a revocation).
    fn give_services(&self, package: &str, plugin: &WasmPlugin, effective: &Capabilities) {
        plugin.set_grants(grants::wasm_grants(effective));
        plugin.set_emitter((!effective.emit.is_empty()).then(|| {
            Arc::new(emit::PackageEmitter {
                engine: self.inner.engine.downgrade(),
                package: package.to_owned(),
                events: effective.emit.clone(),
                stats: self.inner.emits.clone(),
            }) as Arc<dyn plugboard_wasm::Emitter>
        }));
        plugin.set_http((!effective.http.is_empty()).then(|| {
            plugboard_wasm::HttpAccess::new(Arc::new(http::GrantedOrigins(effective.http.clone())))
        }));
        plugin.set_kv(effective.kv.then(|| {
            Arc::new(kv::PackageKv {
                store: self.inner.store.clone(),
                package: package.to_owned(),
                quota: self.inner.kv_quota.clone(),
            }) as Arc<dyn plugboard_wasm::KeyValue>
        }));
    }

    /// Records in the activity log what an install granted or dropped.
    fn record_grants(&self, package: &str, before: &Capabilities, after: &Capabilities) {
        if let Ok(log) = self.inner.log.lock()
            && let Some(log) = log.as_ref()
        {
            // An install leaves nothing it asks for ungranted.
            grants::record_changes(log, package, before, after, "");
        }
    }

    /// Applies the stored grants of every loaded package: what another host (or a CLI)
    /// granted or revoked takes effect on the plugin's next call.
    fn refresh_grants(&self, loaded: &mut BTreeMap<String, Loaded>, rows: &[PackageRow]) {
        for row in rows {
            let Some(l) = loaded.get_mut(&row.name) else {
                continue;
            };
            if l.sha256 != row.sha256 {
                continue;
            }
            match grants::of_row(row) {
                Ok(g) => {
                    let effective = g.effective();
                    if effective != l.effective {
                        self.give_services(&row.name, &l.plugin, &effective);
                        tracing::info!(package = %row.name, granted = %effective.to_grant(), "package grants applied");
                        l.effective = effective;
                    }
                }
                Err(e) => {
                    tracing::warn!(package = %row.name, error = %e, "cannot read the package's grants")
                }
            }
        }
    }

    /// Each package loaded here, with its outbound HTTP since it was loaded (for metrics).
    pub fn http_counts(&self) -> Vec<(String, plugboard_wasm::HttpCounts)> {
        self.lock()
            .iter()
            .map(|(name, l)| (name.clone(), l.plugin.http_counts()))
            .collect()
    }

    /// Events fired by packages (the `emit` capability) since this installer started.
    pub fn emit_counts(&self) -> EmitCounts {
        self.inner.emits.counts()
    }

    /// Every installed package's grants.
    pub fn grants(&self) -> Result<Vec<PackageGrants>, InstallError> {
        stored_grants(&self.inner.store)
    }

    /// Grants `add` to an installed package and revokes `remove`; in effect in this host
    /// at once (the plugin's next call), in the others sharing the database on their next
    /// sync. Recorded in the activity log.
    pub fn change_grants(
        &self,
        package: &str,
        add: &Capabilities,
        remove: &Capabilities,
    ) -> Result<PackageGrants, InstallError> {
        let out = {
            let log = self
                .inner
                .log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            change_grants(&self.inner.store, log.as_ref(), package, add, remove)?
        };
        let rows = self.inner.store.packages()?;
        self.refresh_grants(&mut self.lock(), &rows);
        Ok(out)
    }

    /// Registers every hook's plugin on the engine (a re-registration swaps the code),
    /// starts new ones, and unregisters the old version's plugins the new one dropped.
    fn register(
        &self,
        m: &Manifest,
        plugin: &Arc<WasmPlugin>,
        dep_plugins: &[String],
        old: Option<&Loaded>,
    ) -> Result<Vec<String>, EngineError> {
        let engine = &self.inner.engine;
        let mut names = Vec::new();
        for hook in &m.hooks {
            let fresh = engine.plugin(&hook.plugin).is_none();
            let code = match hook.role {
                Role::Step => plugin.clone().code(),
                // `load_component` already refused a component without the export.
                Role::Wrapper => {
                    plugin
                        .clone()
                        .wrapper_code()
                        .map_err(|e| EngineError::Refused {
                            plugin: hook.plugin.clone(),
                            op: Op::Register,
                            reason: plugboard_core::Reason(e.to_string()),
                        })?
                }
            };
            engine.register_code(&hook.event, registration(m, hook, dep_plugins), code)?;
            if fresh {
                match engine.start(hook.plugin.as_str()) {
                    Ok(_) | Err(EngineError::Stopped(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            names.push(hook.plugin.clone());
        }
        if let Some(old) = old {
            for gone in old.plugins.iter().filter(|p| !names.contains(p)) {
                match engine.unregister(gone.as_str()) {
                    Ok(_) | Err(EngineError::UnknownPlugin(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(names)
    }

    fn package_dir(&self, name: &str) -> PathBuf {
        self.inner.dir.join(name)
    }

    fn file_name(version: &str, sha256: &str) -> String {
        format!("{version}-{}.pbpkg", &sha256[..16.min(sha256.len())])
    }

    /// Writes the package file into place: staged, synced, renamed (atomic).
    fn place(
        &self,
        name: &str,
        version: &str,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, InstallError> {
        use std::io::Write;
        let dir = self.package_dir(name);
        let staging = self.inner.dir.join(".staging");
        std::fs::create_dir_all(&dir)
            .map_err(InstallError::io(format!("creating {}", dir.display())))?;
        std::fs::create_dir_all(&staging)
            .map_err(InstallError::io(format!("creating {}", staging.display())))?;
        let target = dir.join(Self::file_name(version, sha256));
        if target.exists() && std::fs::read(&target).is_ok_and(|b| sha256_hex(&b) == sha256) {
            return Ok(target);
        }
        let tmp = staging.join(format!("{name}-{}-{}", std::process::id(), unique()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &target)?;
            // The rename itself must survive a crash.
            std::fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            InstallError::Io {
                what: format!("writing {}", target.display()),
                error: e,
            }
        })?;
        Ok(target)
    }

    /// Deletes the package's files other than its current and previous versions.
    fn clean_package_dir(&self, row: &PackageRow) -> usize {
        let keep: BTreeSet<String> = [
            Some(Self::file_name(&row.version, &row.sha256)),
            row.previous_version
                .as_ref()
                .zip(row.previous_sha256.as_ref())
                .map(|(v, s)| Self::file_name(v, s)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let Ok(entries) = std::fs::read_dir(self.package_dir(&row.name)) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| !keep.contains(&*e.file_name().to_string_lossy()))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Loads an installed package's stored version and registers its hooks (boot, other
    /// hosts' changes, restoring after a failed switch).
    fn load_row(
        &self,
        loaded: &mut BTreeMap<String, Loaded>,
        row: &PackageRow,
        rows: &[PackageRow],
    ) -> Result<(), InstallError> {
        let file = self
            .package_dir(&row.name)
            .join(Self::file_name(&row.version, &row.sha256));
        let bytes = match std::fs::read(&file) {
            Ok(b) if sha256_hex(&b) == row.sha256 => b,
            _ => {
                // Not here yet (installed through another host) or damaged: the verified
                // bytes are in the database; keep a local copy for the next boot.
                let b = self
                    .inner
                    .store
                    .package_archive(&row.sha256)?
                    .ok_or_else(|| InstallError::Damaged {
                        package: row.name.clone(),
                        why: format!("package file {} is missing from the database", row.sha256),
                    })?;
                self.place(&row.name, &row.version, &row.sha256, &b)?;
                b
            }
        };
        // The same verification as the installing host's.
        // Installed before: loaded as it was accepted then.
        let verified = verify(
            &bytes,
            &VerifyOptions {
                skip_import_check: true,
                ..self.verify_options(Some(row.sha256.clone()))
            },
        )?;
        verified.manifest.check_against(&self.config().policy)?;
        let dep_plugins = self.check_dependencies(&verified.manifest, rows)?;
        let effective = grants::of_row(row)?.effective();
        let plugin = self.load_component(&verified, &effective)?;
        let old = loaded.get(&row.name).cloned();
        let plugins = self.register(&verified.manifest, &plugin, &dep_plugins, old.as_ref())?;
        loaded.insert(
            row.name.clone(),
            Loaded {
                sha256: row.sha256.clone(),
                component: plugin.sha256().to_owned(),
                plugins,
                plugin: plugin.clone(),
                effective,
            },
        );
        if row.load_error.is_some() {
            let _ = self.inner.store.set_package_error(&row.name, None);
        }
        Ok(())
    }

    /// At start: cleans up after any interrupted operation, then loads every installed
    /// package and registers its hooks. Call after the host registered its own plugins and
    /// before `Engine::finish_boot`.
    pub fn boot(&self) -> Result<SyncReport, InstallError> {
        let mut loaded = self.lock();
        let mut report = SyncReport::default();
        let staging = self.inner.dir.join(".staging");
        if let Ok(entries) = std::fs::read_dir(&staging) {
            report.cleaned += entries
                .flatten()
                .filter(|e| std::fs::remove_file(e.path()).is_ok())
                .count();
        }
        let rows = self.inner.store.packages()?;
        // Directories of packages no row knows: an install that never committed, or an
        // uninstall that committed before its files went.
        if let Ok(entries) = std::fs::read_dir(&self.inner.dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir()
                    && n != ".staging"
                    && !rows.iter().any(|r| r.name == n)
                    && std::fs::remove_dir_all(e.path()).is_ok()
                {
                    report.cleaned += 1;
                }
            }
        }
        for row in &rows {
            report.cleaned += self.clean_package_dir(row);
        }
        // Records owned by packages that are not installed.
        for info in self.inner.engine.plugins() {
            if let Some(o) = owner(&info.record)
                && !rows.iter().any(|r| r.name == o)
            {
                match self.inner.engine.unregister(info.record.name.as_str()) {
                    Ok(_) => report.orphans.push(info.record.name.clone()),
                    Err(e) => {
                        tracing::warn!(plugin = %info.record.name, error = %e, "could not remove an orphan record")
                    }
                }
            }
        }
        self.load_rows(&mut loaded, &rows, &mut report);
        drop(loaded);
        self.refresh_settings()?;
        Ok(report)
    }

    /// Loads rows in dependency order (a package's dependencies first), isolating failures.
    fn load_rows(
        &self,
        loaded: &mut BTreeMap<String, Loaded>,
        rows: &[PackageRow],
        report: &mut SyncReport,
    ) {
        let mut pending: Vec<&PackageRow> = rows
            .iter()
            .filter(|r| loaded.get(&r.name).is_none_or(|l| l.sha256 != r.sha256))
            .collect();
        let total = pending.len();
        while !pending.is_empty() {
            // Dependencies first; a cycle or a missing dependency fails below with why.
            let ready = pending
                .iter()
                .position(|r| {
                    r.dependencies
                        .keys()
                        .all(|d| !pending.iter().any(|p| &p.name == d))
                })
                .unwrap_or(0);
            let row = pending.remove(ready);
            self.progress(Progress::Loading {
                package: &row.name,
                done: total - pending.len() - 1,
                total,
            });
            let already_failed = self
                .inner
                .failed
                .lock()
                .ok()
                .and_then(|f| f.get(&row.name).cloned())
                .is_some_and(|(sha, _)| sha == row.sha256);
            if already_failed {
                continue;
            }
            let mut result = self.load_row(loaded, row, rows);
            if result.as_ref().is_err_and(is_conflict) {
                // Another process changed the records since this engine read them (the
                // installing host registered the plugins first): reload them and retry.
                if let Err(e) = self.inner.store.sync(&self.inner.engine) {
                    tracing::warn!(error = %e, "could not reload the plugin records");
                }
                result = self.load_row(loaded, row, rows);
            }
            match result {
                Err(e) if is_conflict(&e) => {
                    // Still racing: not the package's fault; the next sync tries again.
                    tracing::info!(package = %row.name, error = %e, "records changed meanwhile; deferred");
                    report.deferred.push(row.name.clone());
                }
                Ok(()) => {
                    report.loaded.push((row.name.clone(), row.version.clone()));
                    self.record(
                        "load",
                        ActivityStatus::Info,
                        &row.name,
                        json!({ "version": row.version }),
                    );
                }
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(package = %row.name, error = %why, "package failed to load; isolated");
                    if let Ok(mut f) = self.inner.failed.lock() {
                        f.insert(row.name.clone(), (row.sha256.clone(), why.clone()));
                    }
                    let _ = self.inner.store.set_package_error(&row.name, Some(&why));
                    self.record(
                        "load",
                        ActivityStatus::Error,
                        &row.name,
                        json!({ "version": row.version, "error": why }),
                    );
                    report.failed.push((row.name.clone(), why));
                }
            }
        }
        if total > 0 {
            self.progress(Progress::Loaded { total });
        }
    }

    /// Applies what other hosts sharing the database installed, upgraded, rolled back or
    /// uninstalled since this one last looked.
    pub fn sync(&self) -> Result<SyncReport, InstallError> {
        let mut loaded = self.lock();
        let mut report = SyncReport::default();
        let rows = self.inner.store.packages()?;
        let gone: Vec<String> = loaded
            .keys()
            .filter(|n| !rows.iter().any(|r| &r.name == *n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(l) = loaded.remove(&name) {
                for p in &l.plugins {
                    // The uninstalling host removed the records; ours may not have
                    // followed yet.
                    match self.inner.engine.unregister(p.as_str()) {
                        Ok(_) | Err(EngineError::UnknownPlugin(_)) => {}
                        // Already removed in the database; this host's record watcher
                        // drops its copy.
                        Err(EngineError::Persist(plugboard_engine::PersistError::Conflict {
                            ..
                        })) => {}
                        Err(e) => tracing::warn!(plugin = %p, error = %e, "could not unregister"),
                    }
                }
                self.inner.host.evict(&l.component);
                let _ = std::fs::remove_dir_all(self.package_dir(&name));
                report.removed.push(name);
            }
        }
        self.load_rows(&mut loaded, &rows, &mut report);
        self.refresh_grants(&mut loaded, &rows);
        drop(loaded);
        self.refresh_settings()?;
        Ok(report)
    }

    /// Follows other hosts: checks the store every `interval` and applies their package
    /// changes with [`Installer::sync`]. Stops when the returned handle is dropped.
    pub fn follow(&self, interval: Duration) -> Follow {
        let stop = Arc::new(AtomicBool::new(false));
        let me = self.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("plugboard-installer-follow".into())
            .spawn(move || {
                let mut seen = None;
                let mut changes = me.inner.store.changes_seen();
                while !flag.load(Ordering::Relaxed) {
                    let generation = me.inner.store.generation().ok();
                    if generation.is_some() && generation != seen {
                        match me.sync() {
                            // Retried at the next tick, even if nothing else changes.
                            Ok(r) if !r.deferred.is_empty() => {
                                tracing::info!(?r, "applied some of other hosts' package changes");
                            }
                            Ok(r) => {
                                if r != SyncReport::default() {
                                    tracing::info!(?r, "applied other hosts' package changes");
                                }
                                seen = generation;
                                if let Some(g) = generation {
                                    me.inner.synced.store(g, Ordering::Relaxed);
                                }
                            }
                            // Retried at the next tick (e.g. a record conflict while this
                            // host's watcher catches up).
                            Err(InstallError::Store(e)) if e.is_unavailable() => {
                                // The store logs an outage once.
                                tracing::debug!(error = %e, "package sync failed; retrying")
                            }
                            Err(e) => tracing::warn!(error = %e, "package sync failed; retrying"),
                        }
                    }
                    // Woken by the store's watcher (a notification), else polled.
                    changes = me.inner.store.wait_change(changes, interval);
                }
            })
            .ok();
        Follow { stop, thread }
    }

    /// The store's change generation (see `Store::generation`) this host has applied in
    /// full (records, packages, grants, settings) while following; `None` before the
    /// first round of [`Installer::follow`]. Hosts sharing a database agree on it once
    /// they have converged.
    pub fn synced_generation(&self) -> Option<i64> {
        let g = self.inner.synced.load(Ordering::Relaxed);
        (g >= 0).then_some(g)
    }

    /// Uninstalls a package: removes its row, its plugin records, its files and its
    /// compiled code. Refused while other packages depend on it, unless `cascade` (their
    /// plugins, which hard-depend on its plugins, are then held, never removed).
    pub fn uninstall(&self, name: &str, cascade: bool) -> Result<Uninstalled, InstallError> {
        self.uninstall_with(
            name,
            UninstallOptions {
                cascade,
                keep_data: false,
            },
        )
    }

    /// [`Installer::uninstall`], with its options: `keep_data` keeps the package's
    /// key-value data for a later install of the same name.
    pub fn uninstall_with(
        &self,
        name: &str,
        opts: UninstallOptions,
    ) -> Result<Uninstalled, InstallError> {
        let mut loaded = self.lock();
        let result = self.uninstall_locked(&mut loaded, name, opts);
        match &result {
            Ok(done) => self.record(
                "uninstall",
                ActivityStatus::Info,
                name,
                json!({ "held": done.held, "overridden": done.overridden, "data_kept": opts.keep_data }),
            ),
            Err(e) => self.record(
                "uninstall",
                ActivityStatus::Error,
                name,
                json!({ "error": e.to_string() }),
            ),
        }
        result
    }

    fn uninstall_locked(
        &self,
        loaded: &mut BTreeMap<String, Loaded>,
        name: &str,
        opts: UninstallOptions,
    ) -> Result<Uninstalled, InstallError> {
        let cascade = opts.cascade;
        let row = self
            .inner
            .store
            .package(name)?
            .ok_or_else(|| InstallError::NotInstalled(name.to_owned()))?;
        let dependents: Vec<String> = self
            .inner
            .store
            .packages()?
            .into_iter()
            .filter(|r| r.dependencies.contains_key(name))
            .map(|r| r.name)
            .collect();
        if !dependents.is_empty() && !cascade {
            return Err(InstallError::HasDependents {
                package: name.to_owned(),
                dependents,
            });
        }
        if !self
            .inner
            .store
            .remove_package(name, row.revision, opts.keep_data)?
        {
            return Err(plugboard_store::StoreError::PackageConflict {
                package: name.to_owned(),
            }
            .into());
        }
        // Removed: from here boot would finish the job if this process died.
        let owned: Vec<String> = self
            .inner
            .engine
            .plugins()
            .into_iter()
            .filter(|p| owner(&p.record) == Some(name))
            .map(|p| p.record.name)
            .collect();
        let mut overridden = Vec::new();
        'plugins: for p in &owned {
            // A plugin's refusal cannot stop it (the engine overrides it and reports it).
            // Other hosts saw the package go as soon as its row did, and remove its
            // records too: whoever is first wins, the others (this one included) find
            // the record changed or gone, reload and are done.
            let mut attempts = 0;
            loop {
                match self.inner.engine.unregister(p.as_str()) {
                    Ok(report) => overridden.extend(report.overridden),
                    Err(EngineError::UnknownPlugin(_)) => {}
                    Err(EngineError::Persist(PersistError::Conflict { .. })) if attempts < 5 => {
                        attempts += 1;
                        self.inner.store.sync(&self.inner.engine)?;
                        // Installed again meanwhile (elsewhere): the records are the new
                        // install's now, not this uninstall's to remove.
                        if self.inner.store.package(name)?.is_some() {
                            break 'plugins;
                        }
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                break;
            }
        }
        if let Some(l) = loaded.remove(name) {
            self.inner.host.evict(&l.component);
        }
        let _ = std::fs::remove_dir_all(self.package_dir(name));
        let held: Vec<String> = self
            .inner
            .engine
            .plugins()
            .into_iter()
            .filter(|p| p.record.status == Status::Held)
            .filter(|p| owner(&p.record).is_some_and(|o| dependents.iter().any(|d| d == o)))
            .map(|p| p.record.name)
            .collect();
        Ok(Uninstalled { held, overridden })
    }

    /// The installed packages, with this host's view of them.
    pub fn packages(&self) -> Result<Vec<PackageStatus>, InstallError> {
        let loaded = self.lock().clone();
        let failed = self
            .inner
            .failed
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        package_statuses(&self.inner.store, |row| {
            let here = loaded
                .get(&row.name)
                .is_some_and(|l| l.sha256 == row.sha256);
            let error = failed
                .get(&row.name)
                .filter(|(sha, _)| *sha == row.sha256)
                .map(|(_, why)| why.clone());
            (here, error)
        })
    }

    /// Newer versions in the package index (`index`, or the configured one).
    pub fn outdated(&self, index: Option<&str>) -> Result<Vec<Outdated>, InstallError> {
        let source = index
            .map(str::to_owned)
            .or_else(|| self.config().index)
            .ok_or_else(|| InstallError::Index {
                source_name: "(none)".into(),
                why: "no package index is configured (the `index` key of the `installer` setting)"
                    .into(),
            })?;
        let index = Index::read(&source, &self.config().fetch)?;
        let rows = self.inner.store.packages()?;
        Ok(index.outdated(&rows))
    }
}

/// The installer's lock: the loaded packages, and the directory lock (released when the
/// file closes).
struct OpGuard<'a> {
    map: MutexGuard<'a, BTreeMap<String, Loaded>>,
    _file: Option<std::fs::File>,
}

impl std::ops::Deref for OpGuard<'_> {
    type Target = BTreeMap<String, Loaded>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for OpGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// The handle of [`Installer::follow`]; dropping it stops following.
pub struct Follow {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the records were changed by another process since this engine read them (a
/// race, not a fault of the package).
fn is_conflict(e: &InstallError) -> bool {
    matches!(
        e,
        InstallError::Engine(EngineError::Persist(PersistError::Conflict { .. }))
    )
}

/// What a row being replaced held.
fn held_before(existing: &Option<PackageRow>) -> Capabilities {
    existing
        .as_ref()
        .and_then(|r| grants::of_row(r).ok())
        .map(|g| g.effective())
        .unwrap_or_default()
}

pub(crate) fn damaged(row: &PackageRow, e: impl std::fmt::Display) -> InstallError {
    InstallError::Damaged {
        package: row.name.clone(),
        why: e.to_string(),
    }
}

/// A per-process counter for staging file names.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How a hook is registered: its own dependencies plus (hard) the plugins of the packages
/// the package depends on, and the owner mark.
fn registration(
    m: &Manifest,
    hook: &plugboard_package::Hook,
    dep_plugins: &[String],
) -> Registration {
    let mut reg = Registration::new(hook.plugin.clone());
    reg.priority = hook.priority;
    reg.depend_type = hook.depend_type;
    reg.depends = hook.depends.clone();
    if !dep_plugins.is_empty() {
        reg.depend_type = DependType::Hard;
        for p in dep_plugins {
            if !reg.depends.contains(p) {
                reg.depends.push(p.clone());
            }
        }
    }
    let mut mark = serde_json::Map::new();
    mark.insert(plugboard_core::PACKAGE_KEY.into(), json!(m.package.name));
    mark.insert("version".into(), json!(m.package.version.to_string()));
    reg.extra = vec![mark];
    reg
}

/// The record a hook will have, for running `initial` before the switch.
fn preview(m: &Manifest, hook: &plugboard_package::Hook, dep_plugins: &[String]) -> PluginRecord {
    let reg = registration(m, hook, dep_plugins);
    let now = OffsetDateTime::now_utc();
    PluginRecord {
        name: reg.name,
        event: hook.event.clone(),
        priority: reg.priority,
        status: Status::Registered,
        depend_type: reg.depend_type,
        depends: reg.depends,
        extra: reg.extra,
        inserted_at: now,
        updated_at: now,
    }
}

/// Where a data directory keeps packages: `<home>/packages`.
pub fn packages_dir(home: &Path) -> PathBuf {
    home.join("packages")
}
