//! Why an installer operation was refused or failed. Every refusal happens before anything
//! is written; the variants name the package and what to do.

use plugboard_engine::EngineError;
use plugboard_package::PackageError;
use plugboard_package::fetch::FetchError;
use plugboard_store::StoreError;
use plugboard_wasm::WasmError;

/// An installer error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The package file was refused (archive, manifest, signature, sha256, policy).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The download was refused or failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The component was refused by the WebAssembly host (not a component, another
    /// contract version, cannot be linked, refused to start).
    #[error("package `{package}`: {error}")]
    Component {
        /// The package.
        package: String,
        /// Why (in the message: not repeated as a source).
        error: WasmError,
    },
    /// Package dependencies are missing or of the wrong version.
    #[error("package `{package}` needs {}", .unmet.join("; "))]
    Dependencies {
        /// The package.
        package: String,
        /// Each unmet dependency, e.g. `validator ^1.0 (not installed)`.
        unmet: Vec<String>,
    },
    /// A hook makes its plugin a wrapper on a collecting event (wrappers run around
    /// waterfall chains only).
    #[error(
        "package `{package}` makes `{plugin}` a wrapper on `{event}`, which collects: wrappers run around waterfall chains only"
    )]
    WrapperOnCollecting {
        /// The package.
        package: String,
        /// The hook's plugin.
        plugin: String,
        /// The event.
        event: String,
    },
    /// A hook names an event this host does not declare.
    #[error("package `{package}` hooks `{event}`, which this host does not declare")]
    UnknownEvent {
        /// The package.
        package: String,
        /// The event.
        event: String,
    },
    /// A plugin name is taken by the host's own plugin or another package's.
    #[error("package `{package}` wants the plugin name `{plugin}`, which {owner} already uses")]
    NameTaken {
        /// The package.
        package: String,
        /// The plugin name.
        plugin: String,
        /// Who has it (`the host`, `package \`x\``).
        owner: String,
    },
    /// The same or an older version is installed.
    #[error(
        "package `{package}` {installed} is installed; {offered} is not newer (a forced install replaces it anyway)"
    )]
    NotNewer {
        /// The package.
        package: String,
        /// The installed version.
        installed: String,
        /// The offered version.
        offered: String,
    },
    /// The new version failed its `initial` or health check; the previous state stands
    /// (`restored`: an installed version stays or was put back).
    #[error(
        "package `{package}` {version} failed its checks ({why}); {}",
        if *.restored { "the previous version stays" } else { "nothing was installed" }
    )]
    Unhealthy {
        /// The package.
        package: String,
        /// The version that failed.
        version: String,
        /// Why.
        why: String,
        /// Whether an older version was put back.
        restored: bool,
    },
    /// No such package.
    #[error("no package named `{0}` is installed")]
    NotInstalled(String),
    /// The package asks for capabilities an operator has not granted it (nothing was
    /// installed).
    #[error(
        "package `{package}` asks for capabilities it is not granted: {}; grant them to install it (`--grant all`, or `--grant {}`)",
        .missing.summary(),
        .missing.to_grant().replace("http=*", "http=ORIGIN")
    )]
    NotGranted {
        /// The package.
        package: String,
        /// What it asks for beyond its grants.
        missing: plugboard_package::Capabilities,
    },
    /// A grant as written could not be read.
    #[error(transparent)]
    Grant(#[from] plugboard_package::GrantError),
    /// Other processes kept changing the package while this one tried.
    #[error("package `{0}` kept changing in other processes; try again")]
    Busy(String),
    /// Other packages depend on it.
    #[error(
        "packages {} depend on `{package}`; uninstall them first, or uninstall with cascade (their plugins are held, not removed)",
        .dependents.join(", ")
    )]
    HasDependents {
        /// The package.
        package: String,
        /// The packages that depend on it.
        dependents: Vec<String>,
    },
    /// Nothing to roll back to.
    #[error("package `{0}` has no previous version to roll back to")]
    NoPrevious(String),
    /// A stored package could not be read back.
    #[error("package `{package}` is damaged: {why}")]
    Damaged {
        /// The package.
        package: String,
        /// Why.
        why: String,
    },
    /// A secret setting could not be sealed or opened (nothing was stored).
    #[error("setting `{setting}`, secret field `{field}`: {source}")]
    Secret {
        /// The setting (`package.<name>`).
        setting: String,
        /// The field.
        field: String,
        /// Why.
        source: crate::secrets::SecretError,
    },
    /// A setting's value was refused when it was set (nothing was stored).
    #[error("setting `{setting}`: {}", .violations.join("; "))]
    InvalidSetting {
        /// The setting (`installer`, `package.<name>`).
        setting: String,
        /// Each problem, naming its field (`trusted_keys[0]: …`, `/threshold: …`).
        violations: Vec<String>,
    },
    /// The package index could not be read.
    #[error("package index {source_name}: {why}")]
    Index {
        /// Its path or URL.
        source_name: String,
        /// Why.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file operation failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error (in the message: not repeated as a source).
        error: std::io::Error,
    },
}

impl InstallError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
        let what = what.into();
        move |error| InstallError::Io { what, error }
    }
}
