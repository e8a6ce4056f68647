//! What the operator allows, from the `installer` setting (so that every host sharing a
//! database applies the same rules) or set in code.

use std::path::PathBuf;
use std::time::Duration;

use plugboard_package::fetch::FetchPolicy;
use plugboard_package::{InstallPolicy, VerifyingKey};
use plugboard_store::Store;
use serde::Deserialize;

use crate::InstallError;

/// The name of the setting the operator's rules are read from.
pub const SETTING: &str = "installer";

/// How an installer works and what it allows.
#[derive(Clone, Debug)]
pub struct InstallerConfig {
    /// Where verified package files are kept (`$PLUGBOARD_HOME/packages`).
    pub dir: PathBuf,
    /// Limits, capabilities, protected names, archive limits.
    pub policy: InstallPolicy,
    /// Which hosts packages may be downloaded from, and how.
    pub fetch: FetchPolicy,
    /// Keys trusted to sign packages; when any is set, unsigned packages are refused.
    pub trusted_keys: Vec<VerifyingKey>,
    /// The package index (a JSON file's path or URL) that `outdated` reads.
    pub index: Option<String>,
}

impl InstallerConfig {
    /// Defaults (no remote host allowed, no keys) with packages kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        InstallerConfig {
            dir: dir.into(),
            policy: InstallPolicy::default(),
            fetch: FetchPolicy::default(),
            trusted_keys: Vec::new(),
            index: None,
        }
    }

    /// Defaults overridden by the `installer` setting, if the operator set one:
    ///
    /// ```json
    /// { "allowed_hosts": ["packages.example.org"], "trusted_hosts": [], "allow_http": false,
    ///   "trusted_keys": ["<hex public key>"], "protected_names": ["audit"],
    ///   "max_memory_mib": 128, "max_deadline_ms": 1000, "max_download_mib": 32,
    ///   "index": "https://packages.example.org/index.json" }
    /// ```
    pub fn from_settings(store: &Store, dir: impl Into<PathBuf>) -> Result<Self, InstallError> {
        let mut config = InstallerConfig::new(dir);
        let Some(raw) = store.settings().get(SETTING)? else {
            return Ok(config);
        };
        let s: Setting = serde_json::from_value(raw).map_err(|e| InstallError::Damaged {
            package: format!("(setting `{SETTING}`)"),
            why: e.to_string(),
        })?;
        config.fetch.allowed_hosts = s.allowed_hosts;
        config.fetch.trusted_hosts = s.trusted_hosts;
        config.fetch.allow_http = s.allow_http;
        if let Some(mib) = s.max_download_mib {
            config.fetch.max_bytes = mib << 20;
        }
        if let Some(secs) = s.download_timeout_s {
            config.fetch.timeout = Duration::from_secs(secs);
        }
        for hex in s.trusted_keys {
            config.trusted_keys.push(parse_key(&hex)?);
        }
        config.policy.protected_names = s.protected_names;
        if let Some(v) = s.max_memory_mib {
            config.policy.max_limits.memory_mib = Some(v);
        }
        if let Some(v) = s.max_deadline_ms {
            config.policy.max_limits.deadline_ms = Some(v);
        }
        config.index = s.index;
        Ok(config)
    }
}

fn parse_key(text: &str) -> Result<VerifyingKey, InstallError> {
    let bad = |why: String| InstallError::Damaged {
        package: format!("(setting `{SETTING}`)"),
        why: format!("trusted key {text:?}: {why}"),
    };
    let bytes = hex::decode(text).map_err(|e| bad(e.to_string()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad("an Ed25519 public key is 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    trusted_hosts: Vec<String>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    protected_names: Vec<String>,
    max_memory_mib: Option<u64>,
    max_deadline_ms: Option<u64>,
    max_download_mib: Option<u64>,
    download_timeout_s: Option<u64>,
    index: Option<String>,
}
