//! What the operator allows, from the `installer` setting (so that every host sharing a
//! database applies the same rules) or set in code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use plugboard_package::fetch::FetchPolicy;
use plugboard_package::{InstallPolicy, VerifyingKey};
use plugboard_store::{KvQuota, Store};
use serde::Deserialize;
use serde_json::Value;

use crate::InstallError;

/// The name of the setting the operator's rules are read from.
pub const SETTING: &str = "installer";

/// The longest call deadline an operator may give a package (`deadline_ms` in the
/// `installer` setting): a call holds its caller for that long, and a chain longer still.
pub const MAX_DEADLINE_OVERRIDE: Duration = Duration::from_secs(60);

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
    /// How much key-value data each package with the `kv` capability may hold.
    pub kv_quota: KvQuota,
    /// Call deadlines the operator set per package, in place of the one its manifest asks
    /// for (`[limits] deadline_ms`, or the default 100 ms): applied to its next call in
    /// every host, with no reinstall. Up to [`MAX_DEADLINE_OVERRIDE`], whatever
    /// `max_deadline_ms` (the most a manifest may ask for) says.
    pub deadlines: BTreeMap<String, Duration>,
    /// Whether these rules follow the `installer` setting: when it changes (in any
    /// process sharing the database), the installer rebuilds them from it. True when made
    /// by [`InstallerConfig::from_settings`]; rules set in code stay as set.
    pub follow_setting: bool,
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
            kv_quota: KvQuota::DEFAULT,
            deadlines: BTreeMap::new(),
            follow_setting: false,
        }
    }

    /// Defaults overridden by the `installer` setting, if the operator set one:
    ///
    /// ```json
    /// { "allowed_hosts": ["packages.example.org"], "trusted_hosts": [], "allow_http": false,
    ///   "trusted_keys": ["<hex public key>"], "protected_names": ["audit"],
    ///   "max_memory_mib": 128, "max_deadline_ms": 1000, "max_download_mib": 32,
    ///   "index": "https://packages.example.org/index.json",
    ///   "kv_max_keys": 10000, "kv_max_bytes": 16777216,
    ///   "deadline_ms": { "webhook": 5000 } }
    /// ```
    pub fn from_settings(store: &Store, dir: impl Into<PathBuf>) -> Result<Self, InstallError> {
        let raw = store.settings().get(SETTING)?;
        InstallerConfig::from_value(dir, raw.as_ref())
    }

    /// Defaults overridden by a value of the `installer` setting (none: the defaults).
    pub fn from_value(dir: impl Into<PathBuf>, raw: Option<&Value>) -> Result<Self, InstallError> {
        let mut config = InstallerConfig::new(dir);
        config.follow_setting = true;
        let Some(raw) = raw else {
            return Ok(config);
        };
        let s = Setting::check(raw)?;
        config.fetch.allowed_hosts = s.allowed_hosts;
        config.fetch.trusted_hosts = s.trusted_hosts;
        config.fetch.allow_http = s.allow_http;
        if let Some(mib) = s.max_download_mib {
            config.fetch.max_bytes = mib << 20;
        }
        if let Some(secs) = s.download_timeout_s {
            config.fetch.timeout = Duration::from_secs(secs);
        }
        config.trusted_keys = s.keys;
        config.policy.protected_names = s.protected_names;
        if let Some(v) = s.max_memory_mib {
            config.policy.max_limits.memory_mib = Some(v);
        }
        if let Some(v) = s.max_deadline_ms {
            config.policy.max_limits.deadline_ms = Some(v);
        }
        config.index = s.index;
        if let Some(v) = s.kv_max_keys {
            config.kv_quota.max_keys = v;
        }
        if let Some(v) = s.kv_max_bytes {
            config.kv_quota.max_bytes = v;
        }
        config.deadlines = s
            .deadline_ms
            .into_iter()
            .map(|(package, ms)| (package, Duration::from_millis(ms)))
            .collect();
        Ok(config)
    }
}

fn parse_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text).map_err(|e| format!("{text:?} is not hex: {e}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{text:?}: an Ed25519 public key is 32 bytes (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{text:?}: {e}"))
}

impl Setting {
    /// Parses the `installer` setting; a refusal names each offending field.
    pub(crate) fn check(raw: &Value) -> Result<Setting, InstallError> {
        let refuse = |violations: Vec<String>| InstallError::InvalidSetting {
            setting: SETTING.into(),
            violations,
        };
        let Some(fields) = raw.as_object() else {
            return Err(refuse(vec!["must be a JSON object".into()]));
        };
        // Field by field, so that each problem names its field (serde's message for the
        // whole object does not).
        let mut violations = Vec::new();
        for (key, value) in fields {
            let mut one = serde_json::Map::new();
            one.insert(key.clone(), value.clone());
            if let Err(e) = serde_json::from_value::<Setting>(Value::Object(one)) {
                let why = e.to_string();
                if why.starts_with("unknown field") {
                    violations.push(why);
                } else {
                    violations.push(format!("{key}: {why}"));
                }
            }
        }
        if !violations.is_empty() {
            return Err(refuse(violations));
        }
        let mut s: Setting =
            serde_json::from_value(raw.clone()).map_err(|e| refuse(vec![e.to_string()]))?;
        for (i, hex) in s.trusted_keys.iter().enumerate() {
            match parse_key(hex) {
                Ok(k) => s.keys.push(k),
                Err(why) => violations.push(format!("trusted_keys[{i}]: {why}")),
            }
        }
        for (field, hosts) in [
            ("allowed_hosts", &s.allowed_hosts),
            ("trusted_hosts", &s.trusted_hosts),
        ] {
            for (i, h) in hosts.iter().enumerate() {
                if h.is_empty() || h.contains(['/', ' ', '@']) {
                    violations.push(format!(
                        "{field}[{i}]: {h:?} is not a host name (write `packages.example.org` or `host:port`)"
                    ));
                }
            }
        }
        let most = MAX_DEADLINE_OVERRIDE.as_millis();
        for (package, ms) in &s.deadline_ms {
            if *ms == 0 || u128::from(*ms) > most {
                violations.push(format!(
                    "deadline_ms.{package}: {ms} ms is not a deadline (1 to {most} ms)"
                ));
            }
        }
        if let Some(index) = &s.index
            && index.trim().is_empty()
        {
            violations.push("index: must be a path or an http(s) URL".into());
        }
        if violations.is_empty() {
            Ok(s)
        } else {
            Err(refuse(violations))
        }
    }
}

/// The `installer` setting as stored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Setting {
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
    kv_max_keys: Option<u64>,
    kv_max_bytes: Option<u64>,
    #[serde(default)]
    deadline_ms: BTreeMap<String, u64>,
    /// `trusted_keys`, parsed.
    #[serde(skip)]
    keys: Vec<VerifyingKey>,
}
