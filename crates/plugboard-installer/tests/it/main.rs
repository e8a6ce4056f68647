//! Installer tests with real packages (built from `plugins/` and packed), a real store on
//! both backends, real wasmtime.
#![allow(clippy::unwrap_used, missing_docs)]

mod emit;
mod grants;
mod hosts;
mod http;
mod install;
mod kv;
mod lifecycle;

use std::path::{Path, PathBuf};

use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnUserAfterSaveFailure, SaveStatus,
};
use plugboard_engine::Engine;
use plugboard_installer::{InstallOptions, Installed, Installer, InstallerConfig};
use plugboard_store::Store;
use plugboard_wasm::{HostConfig, WasmHost};

pub use plugboard_testkit::component;

/// The per-call deadline the test packages ask for, and the most the test hosts allow.
/// The default (100 ms, which also covers instantiating the plugin and its health check
/// at install time) is wall-clock time: on a loaded machine a plugin that does nothing
/// wrong can overrun it and fail a test that is not about the deadline.
pub const DEADLINE_MS: u64 = 60_000;

/// A manifest with one hook on `on_user_after_save_failure`, plus `more` TOML, asking for
/// the generous [`DEADLINE_MS`].
pub fn manifest(name: &str, version: &str, more: &str) -> String {
    plugboard_testkit::manifest(name, version, "on_user_after_save_failure", more)
        + &format!("\n[limits]\ndeadline_ms = {DEADLINE_MS}\n")
}

/// Writes a package from a manifest and component bytes into `dir` without any of
/// `pack`'s checks, as another tool (or an attacker) could; returns the file.
pub fn raw_package(dir: &Path, manifest: &str, component: &[u8]) -> PathBuf {
    let bytes = plugboard_package::write_archive([
        ("plugboard.toml", manifest.as_bytes()),
        ("plugin.wasm", component),
    ])
    .unwrap();
    let out = dir.join(format!(
        "raw-{}.pbpkg",
        &plugboard_package::sha256_hex(&bytes)[..12]
    ));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// Packs a package from a manifest and component bytes into `dir`; returns the file.
pub fn package(dir: &Path, manifest: &str, component: &[u8]) -> PathBuf {
    let bytes = plugboard_testkit::pack(manifest, component).unwrap();
    let out = dir.join(format!(
        "{}.pbpkg",
        &plugboard_package::sha256_hex(&bytes)[..12]
    ));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// One host: a store, an engine over it, a wasm host and an installer with its own
/// packages directory.
pub struct HostEnv {
    pub store: Store,
    pub engine: Engine,
    pub installer: Installer,
    pub home: PathBuf,
}

impl HostEnv {
    /// A host on `url` keeping its files under `home`, booted.
    pub fn boot(url: &str, home: &Path) -> HostEnv {
        Self::boot_with(url, home, |_| {})
    }

    pub fn boot_with(url: &str, home: &Path, tweak: impl FnOnce(&mut InstallerConfig)) -> HostEnv {
        let store = Store::open(url).unwrap();
        let engine = store.engine(Engine::builder()).unwrap();
        let host = WasmHost::new(HostConfig {
            cache_dir: Some(home.join("cache")),
            ..HostConfig::default()
        })
        .unwrap();
        let mut config = InstallerConfig::new(home.join("packages"));
        config.policy.max_limits.deadline_ms = Some(DEADLINE_MS);
        tweak(&mut config);
        let installer = Installer::new(store.clone(), engine.clone(), host, config);
        installer.boot().unwrap();
        engine.finish_boot().unwrap();
        HostEnv {
            store,
            engine,
            installer,
            home: home.to_owned(),
        }
    }

    /// Installs, granting what the package asks for.
    pub fn install(&self, file: &Path) -> Result<Installed, plugboard_installer::InstallError> {
        self.install_granting(file, plugboard_installer::Grant::Asked)
    }

    /// Installs, granting `grant`.
    pub fn install_granting(
        &self,
        file: &Path,
        grant: plugboard_installer::Grant,
    ) -> Result<Installed, plugboard_installer::InstallError> {
        self.installer.install(
            file.to_str().unwrap(),
            &InstallOptions {
                grant,
                ..InstallOptions::default()
            },
            &mut |_, _| {},
        )
    }

    /// Files under the packages directory (staging included), for "nothing written" checks.
    pub fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, base, out);
                    } else {
                        out.push(p.strip_prefix(base).unwrap().display().to_string());
                    }
                }
            }
        }
        let mut out = Vec::new();
        let base = self.home.join("packages");
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// Plugin record names.
    pub fn records(&self) -> Vec<String> {
        self.engine
            .plugins()
            .into_iter()
            .map(|p| p.record.name)
            .collect()
    }

    pub fn call(&self) -> OnUserAfterSaveFailure {
        self.engine
            .call::<OnUserAfterSaveFailure>(failure())
            .unwrap()
    }
}

pub fn failure() -> OnUserAfterSaveFailure {
    OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email taken"),
        ip: Ip::LOCALHOST,
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/users"),
        modifier_user: ModifierUser::SelfUser,
        extra: serde_json::Value::Null,
    }
}
