//! Settings as an operator sets them (CLI, API, dashboard): validated when they are set,
//! stored, and applied by every running host that shares the database.
//!
//! - `installer`: the operator's install rules ([`crate::InstallerConfig`]); each field is
//!   checked, and a refusal names it.
//! - `package.<name>`: the settings of a package's plugins, validated against the
//!   package's `settings.schema.json`. A package's name or one of its plugins' names may
//!   be given instead: both mean the package's settings. The plugins read them through
//!   their `settings` import on their next call ([`crate::Installer::refresh_settings`]
//!   runs on every change a host follows): a plugin learns of a change by reading its
//!   settings again, which costs no more than keeping them.
//!
//!   The fields the schema marks secret (`"writeOnly": true` or `"secret": true`) are
//!   sealed before they are stored ([`crate::secrets`]) and never shown again: a value
//!   that leaves one out keeps the stored one, and `null` removes it.
//! - any other name is the host's own setting, stored as given.

use plugboard_package::{Manifest, SettingsSchema, VerifyOptions, verify};
use plugboard_store::Store;
use serde_json::{Map, Value};

use crate::InstallError;
use crate::config::{SETTING, Setting};
use crate::secrets::{Secrets, is_sealed};

/// The prefix of the settings that hold a package's plugin settings.
pub const PACKAGE_PREFIX: &str = "package.";

/// The setting that holds `package`'s plugin settings.
pub fn package_setting(package: &str) -> String {
    format!("{PACKAGE_PREFIX}{package}")
}

/// What a setting's name designates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingTarget {
    /// The installer's rules.
    Installer,
    /// A package's plugin settings.
    Package {
        /// The package.
        package: String,
        /// Its plugins (they all read these settings).
        plugins: Vec<String>,
    },
    /// A setting of the host's own.
    Other,
}

/// A name resolved to the setting it is stored as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSetting {
    /// The name the value is stored under.
    pub name: String,
    /// What it configures.
    pub target: SettingTarget,
}

/// Resolves an operator's name: `installer`, `package.<name>`, a package's name, or the
/// name of one of a package's plugins; anything else is the host's own setting.
pub fn resolve(store: &Store, name: &str) -> Result<ResolvedSetting, InstallError> {
    if name == SETTING {
        return Ok(ResolvedSetting {
            name: name.to_owned(),
            target: SettingTarget::Installer,
        });
    }
    let wanted = name.strip_prefix(PACKAGE_PREFIX);
    for row in store.packages()? {
        let Ok(m) = Manifest::parse(&row.manifest) else {
            continue;
        };
        let plugins: Vec<String> = m.plugin_names().map(str::to_owned).collect();
        let hit = match wanted {
            Some(p) => p == row.name,
            None => row.name == name || plugins.iter().any(|p| p == name),
        };
        if hit {
            return Ok(ResolvedSetting {
                name: package_setting(&row.name),
                target: SettingTarget::Package {
                    package: row.name,
                    plugins,
                },
            });
        }
    }
    if let Some(package) = wanted {
        return Err(InstallError::NotInstalled(package.to_owned()));
    }
    Ok(ResolvedSetting {
        name: name.to_owned(),
        target: SettingTarget::Other,
    })
}

/// The settings schema of an installed package, if it ships one.
pub fn package_schema(
    store: &Store,
    package: &str,
) -> Result<Option<SettingsSchema>, InstallError> {
    let row = store
        .package(package)?
        .ok_or_else(|| InstallError::NotInstalled(package.to_owned()))?;
    let bytes = store
        .package_archive(&row.sha256)?
        .ok_or_else(|| InstallError::Damaged {
            package: package.to_owned(),
            why: "its stored archive is missing".into(),
        })?;
    // The bytes were verified (pin, signature, policy) when they were installed; here
    // only their contents are read.
    let v = verify(
        &bytes,
        &VerifyOptions {
            skip_import_check: true,
            ..VerifyOptions::default()
        },
    )?;
    Ok(v.settings_schema
        .as_ref()
        .map(SettingsSchema::compile)
        .transpose()?)
}

/// Checks `value` for the setting `resolved` designates and returns what to store: for a
/// package's settings, the value with its secret fields sealed (a secret field left out
/// keeps its stored value, `null` removes it). Stores nothing.
pub fn check(
    store: &Store,
    secrets: &Secrets,
    resolved: &ResolvedSetting,
    value: Value,
) -> Result<Value, InstallError> {
    match &resolved.target {
        SettingTarget::Installer => Setting::check(&value).map(|_| value),
        SettingTarget::Package { package, .. } => {
            let Some(schema) = package_schema(store, package)? else {
                // Without a schema any JSON is accepted: the plugin decides.
                return Ok(value);
            };
            let fields = schema.secret_fields();
            let stored = if fields.is_empty() {
                None
            } else {
                store.settings().read(&resolved.name)?
            };
            let mut kept = Map::new();
            let mut plain = value;
            if let Value::Object(map) = &mut plain {
                for f in &fields {
                    match map.get(f) {
                        Some(Value::Null) => {
                            map.remove(f);
                        }
                        Some(_) => {}
                        None => {
                            let Some(old) = stored.as_ref().and_then(|s| s.get(f)) else {
                                continue;
                            };
                            // Opened to be validated with the rest (a required secret is
                            // still there); stored again as it was.
                            let opened = if is_sealed(old) {
                                kept.insert(f.clone(), old.clone());
                                secrets.open(&resolved.name, f, old).map_err(|source| {
                                    InstallError::Secret {
                                        setting: resolved.name.clone(),
                                        field: f.clone(),
                                        source,
                                    }
                                })?
                            } else {
                                // Stored before the field was secret: sealed now.
                                old.clone()
                            };
                            map.insert(f.clone(), opened);
                        }
                    }
                }
            }
            if let Err(errors) = schema.validate(&plain) {
                let hidden = secret_texts(&plain, &fields);
                return Err(InstallError::InvalidSetting {
                    setting: resolved.name.clone(),
                    violations: errors
                        .iter()
                        .map(|e| hide(e.to_string(), &hidden))
                        .collect(),
                });
            }
            if let Value::Object(map) = &mut plain {
                for f in &fields {
                    let Some(v) = map.get_mut(f) else { continue };
                    *v = match kept.remove(f) {
                        Some(sealed) => sealed,
                        None => secrets.seal(&resolved.name, f, v).map_err(|source| {
                            InstallError::Secret {
                                setting: resolved.name.clone(),
                                field: f.clone(),
                                source,
                            }
                        })?,
                    };
                }
            }
            Ok(plain)
        }
        SettingTarget::Other => Ok(value),
    }
}

/// The texts under which the secret fields' values could appear in a message: the value as
/// JSON, and a string's text as it is and as escaped in JSON.
fn secret_texts(value: &Value, fields: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for f in fields {
        let Some(v) = value.get(f) else { continue };
        out.push(v.to_string());
        if let Value::String(s) = v {
            out.push(s.clone());
            let quoted = v.to_string();
            out.push(quoted[1..quoted.len() - 1].to_owned());
        }
    }
    out.retain(|t| !t.is_empty());
    // Longest first, so a text inside another is not replaced first.
    out.sort_by_key(|t| std::cmp::Reverse(t.len()));
    out
}

/// `message` with every secret text replaced: a violation of the schema may quote the value.
fn hide(mut message: String, secrets: &[String]) -> String {
    for s in secrets {
        if message.contains(s.as_str()) {
            message = message.replace(s.as_str(), "\u{2022}\u{2022}\u{2022}");
        }
    }
    message
}

/// Validates and stores a setting; returns what it was stored as. Running hosts apply it
/// on their next look at the database (within a second for `serve` and `watch`).
pub fn set(
    store: &Store,
    secrets: &Secrets,
    name: &str,
    value: Value,
) -> Result<ResolvedSetting, InstallError> {
    let resolved = resolve(store, name)?;
    let value = check(store, secrets, &resolved, value)?;
    store.settings().set(&resolved.name, value)?;
    Ok(resolved)
}

/// A setting's value as stored, under the name it is stored as: its secret fields are
/// sealed; show it through [`plugboard_store::redact_secrets`].
pub fn get(store: &Store, name: &str) -> Result<(ResolvedSetting, Option<Value>), InstallError> {
    let resolved = resolve(store, name)?;
    let value = store.settings().get(&resolved.name)?;
    Ok((resolved, value))
}

/// Deletes a setting; returns what it was stored as and whether it existed.
pub fn delete(store: &Store, name: &str) -> Result<(ResolvedSetting, bool), InstallError> {
    let resolved = resolve(store, name)?;
    let existed = store.settings().delete(&resolved.name)?;
    Ok((resolved, existed))
}
