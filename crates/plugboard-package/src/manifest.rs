//! `plugboard.toml`: what a package is, which events it hooks, what it asks for.
//!
//! Parsing is strict and in two steps: the TOML is read into a raw form that refuses
//! unknown fields and wrong types (the parser's message names the line and the field),
//! then every value is checked and the typed [`Manifest`] built; a semantic error names
//! the field's path (`hooks[1].priority`) and its line.

use std::collections::{BTreeMap, BTreeSet};

use plugboard_core::{DependType, Priority};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::PackageError;
pub use crate::grants::Capabilities;

/// [`plugboard_core::CONTRACT_VERSION`], as a semver version to match requirements against.
pub fn contract_version() -> Version {
    // A literal in this workspace, checked by a test: it always parses.
    Version::parse(plugboard_core::CONTRACT_VERSION).unwrap_or(Version::new(0, 0, 0))
}

/// [`plugboard_core::CONTRACT_VERSIONS`]: every version a host serves, newest first.
pub fn contract_versions() -> Vec<Version> {
    plugboard_core::CONTRACT_VERSIONS
        .iter()
        .filter_map(|v| Version::parse(v).ok())
        .collect()
}

/// The only name a package's readme may have inside the archive.
pub const README: &str = "README.md";
/// The only name a package's settings schema may have inside the archive.
pub const SETTINGS_SCHEMA: &str = "settings.schema.json";

/// A parsed and checked `plugboard.toml`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    /// What the package is.
    pub package: PackageInfo,
    /// The plugin records the package registers, one per hook (at least one).
    pub hooks: Vec<Hook>,
    /// Other packages this one needs, with semver requirements.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, VersionReq>,
    /// The limits the package asks for.
    #[serde(skip_serializing_if = "PackageLimits::is_empty")]
    pub limits: PackageLimits,
    /// The host imports the package asks for.
    #[serde(skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
}

/// The `[package]` table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackageInfo {
    /// The package's name: `^[a-z][a-z0-9_-]{1,49}$`.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// One line for humans.
    pub description: String,
    /// Who wrote it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Its licence (an SPDX expression, not checked further).
    pub license: String,
    /// The host versions it works with, if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<VersionReq>,
    /// The contract versions it implements (a requirement on `plugboard:plugin@x.y.z`).
    pub contract: VersionReq,
    /// `README.md`, if the package names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readme: Option<String>,
    /// `settings.schema.json`, if the package names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings_schema: Option<String>,
}

/// One `[[hooks]]` entry: a plugin record on one event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hook {
    /// The event whose chain the plugin joins.
    pub event: String,
    /// Lower runs first.
    pub priority: Priority,
    /// The plugin record's name (the package's name unless the manifest says otherwise).
    pub plugin: String,
    /// Hard or soft.
    pub depend_type: DependType,
    /// Plugins this one depends on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// A step of the chain (the default), or a wrapper around the rest of it.
    #[serde(skip_serializing_if = "Role::is_step")]
    pub role: Role,
}

/// What a hook's plugin is on its event's chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A step: takes the state, replies continue or halt (the guest's `call`).
    #[default]
    Step,
    /// A wrapper: runs around the rest of the chain (the guest's `wrapper` interface,
    /// contract 0.4 and later).
    Wrapper,
}

impl Role {
    fn is_step(&self) -> bool {
        *self == Role::Step
    }
}

/// The first contract version with the `wrapper` interface.
const WRAPPER_CONTRACT: Version = Version::new(0, 4, 0);

/// The `[limits]` a package asks for; `None` takes the host's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageLimits {
    /// Linear memory, in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Time per call, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Fuel per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Largest reply, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_reply_kib: Option<u64>,
}

impl PackageLimits {
    fn is_empty(&self) -> bool {
        *self == PackageLimits::default()
    }

    /// The limits by field name, with their unit, for messages and listings.
    pub fn fields(&self) -> [(&'static str, Option<u64>, &'static str); 4] {
        [
            ("memory_mib", self.memory_mib, "MiB"),
            ("deadline_ms", self.deadline_ms, "ms"),
            ("fuel", self.fuel, "fuel units"),
            ("max_reply_kib", self.max_reply_kib, "KiB"),
        ]
    }
}

// ---- the raw form, as written ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    package: RawPackage,
    #[serde(default)]
    hooks: Vec<RawHook>,
    #[serde(default)]
    dependencies: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    limits: PackageLimits,
    #[serde(default)]
    capabilities: Capabilities,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackage {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    authors: Vec<String>,
    license: Spanned<String>,
    host: Option<Spanned<String>>,
    contract: Spanned<String>,
    readme: Option<Spanned<String>>,
    settings_schema: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    event: Spanned<String>,
    priority: Spanned<i64>,
    plugin: Option<Spanned<String>>,
    #[serde(default)]
    depend_type: DependType,
    #[serde(default)]
    depends: Vec<Spanned<String>>,
    #[serde(default)]
    role: Option<Spanned<Role>>,
}

/// Whether `name` may name a package: `^[a-z][a-z0-9_-]{1,49}$`.
pub fn is_valid_package_name(name: &str) -> bool {
    let b = name.as_bytes();
    (2..=50).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Why `name` may not name an event or a plugin record (the engine's rules).
pub use plugboard_core::invalid_name as invalid_record_name;

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of<T>(&self, s: &Spanned<T>) -> Option<usize> {
        let start = s.span().start;
        self.0
            .get(..start)
            .map(|before| before.bytes().filter(|&b| b == b'\n').count() + 1)
    }
}

impl Manifest {
    /// Parses and checks a manifest.
    ///
    /// Unknown fields and wrong types give [`PackageError::ManifestSyntax`] (the message
    /// names the line and field); values the format does not allow give
    /// [`PackageError::ManifestInvalid`] with the field's path.
    pub fn parse(text: &str) -> Result<Manifest, PackageError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| PackageError::ManifestSyntax {
            message: e.to_string().trim_end().to_owned(),
        })?;
        let lines = Lines(text);
        let invalid = |field: &str, at: Option<usize>, why: String| {
            Err(PackageError::invalid(field, at, why))
        };

        let p = raw.package;
        let name = p.name.get_ref().clone();
        if !is_valid_package_name(&name) {
            return invalid(
                "package.name",
                lines.of(&p.name),
                format!(
                    "`{name}` is not a valid package name (2 to 50 of a-z, 0-9, `_`, `-`, starting with a letter)"
                ),
            );
        }
        let version = match Version::parse(p.version.get_ref()) {
            Ok(v) => v,
            Err(e) => {
                return invalid(
                    "package.version",
                    lines.of(&p.version),
                    format!("`{}` is not a semver version ({e})", p.version.get_ref()),
                );
            }
        };
        if p.license.get_ref().trim().is_empty() {
            return invalid(
                "package.license",
                lines.of(&p.license),
                "must not be empty".into(),
            );
        }
        let req = |field: &str, s: &Spanned<String>| -> Result<VersionReq, PackageError> {
            VersionReq::parse(s.get_ref()).map_err(|e| {
                PackageError::invalid(
                    field,
                    lines.of(s),
                    format!("`{}` is not a semver requirement ({e})", s.get_ref()),
                )
            })
        };
        let host = p
            .host
            .as_ref()
            .map(|h| req("package.host", h))
            .transpose()?;
        let contract = req("package.contract", &p.contract)?;
        let fixed = |field: &str,
                     s: &Option<Spanned<String>>,
                     only: &str|
         -> Result<Option<String>, PackageError> {
            match s {
                Some(s) if s.get_ref() != only => Err(PackageError::invalid(
                    field,
                    lines.of(s),
                    format!("`{}`: the file must be called `{only}`", s.get_ref()),
                )),
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        let readme = fixed("package.readme", &p.readme, README)?;
        let settings_schema = fixed(
            "package.settings_schema",
            &p.settings_schema,
            SETTINGS_SCHEMA,
        )?;

        if raw.hooks.is_empty() {
            return invalid(
                "hooks",
                None,
                "a package needs at least one [[hooks]] entry".into(),
            );
        }
        let mut hooks = Vec::with_capacity(raw.hooks.len());
        let mut plugins = BTreeSet::new();
        for (i, h) in raw.hooks.iter().enumerate() {
            let at = |f: &str| format!("hooks[{i}].{f}");
            if let Some(why) = invalid_record_name(h.event.get_ref()) {
                return invalid(
                    &at("event"),
                    lines.of(&h.event),
                    format!("`{}` is not a valid event name: {why}", h.event.get_ref()),
                );
            }
            let pr = *h.priority.get_ref();
            let priority = match u64::try_from(pr).ok().and_then(|v| Priority::new(v).ok()) {
                Some(p) => p,
                None => {
                    return invalid(
                        &at("priority"),
                        lines.of(&h.priority),
                        format!("{pr} is out of range: it must be between 0 and 100"),
                    );
                }
            };
            let plugin = match &h.plugin {
                Some(s) => {
                    if let Some(why) = invalid_record_name(s.get_ref()) {
                        return invalid(
                            &at("plugin"),
                            lines.of(s),
                            format!("`{}` is not a valid plugin name: {why}", s.get_ref()),
                        );
                    }
                    s.get_ref().clone()
                }
                None => name.clone(),
            };
            if !plugins.insert(plugin.clone()) {
                return invalid(
                    &at("plugin"),
                    h.plugin
                        .as_ref()
                        .and_then(|s| lines.of(s))
                        .or(lines.of(&h.event)),
                    format!(
                        "plugin `{plugin}` is already registered by an earlier hook; give each hook its own `plugin` name"
                    ),
                );
            }
            let mut depends = Vec::with_capacity(h.depends.len());
            for (j, d) in h.depends.iter().enumerate() {
                let field = format!("hooks[{i}].depends[{j}]");
                if let Some(why) = invalid_record_name(d.get_ref()) {
                    return invalid(
                        &field,
                        lines.of(d),
                        format!("`{}` is not a valid plugin name: {why}", d.get_ref()),
                    );
                }
                if *d.get_ref() == plugin {
                    return invalid(
                        &field,
                        lines.of(d),
                        format!("plugin `{plugin}` cannot depend on itself"),
                    );
                }
                depends.push(d.get_ref().clone());
            }
            let role = h.role.as_ref().map_or(Role::Step, |r| *r.get_ref());
            if role == Role::Wrapper
                && !contract_versions()
                    .iter()
                    .any(|v| *v >= WRAPPER_CONTRACT && contract.matches(v))
            {
                return invalid(
                    &at("role"),
                    h.role.as_ref().and_then(|r| lines.of(r)),
                    format!(
                        "a wrapper needs contract {WRAPPER_CONTRACT} or later (its `wrapper` interface); package.contract is `{contract}`"
                    ),
                );
            }
            hooks.push(Hook {
                event: h.event.get_ref().clone(),
                priority,
                plugin,
                depend_type: h.depend_type,
                depends,
                role,
            });
        }

        let mut dependencies = BTreeMap::new();
        for (k, v) in &raw.dependencies {
            let dep = k.get_ref();
            let field = format!("dependencies.{dep}");
            if !is_valid_package_name(dep) {
                return invalid(
                    &field,
                    lines.of(k),
                    format!("`{dep}` is not a valid package name"),
                );
            }
            if *dep == name {
                return invalid(
                    &field,
                    lines.of(k),
                    "a package cannot depend on itself".into(),
                );
            }
            dependencies.insert(dep.clone(), req(&field, v)?);
        }

        for (field, value, _) in raw.limits.fields() {
            if value == Some(0) {
                return invalid(
                    &format!("limits.{field}"),
                    None,
                    "must be at least 1".into(),
                );
            }
        }

        for (i, e) in raw.capabilities.emit.iter().enumerate() {
            if let Some(why) = invalid_record_name(e) {
                return invalid(
                    &format!("capabilities.emit[{i}]"),
                    None,
                    format!("`{e}` is not a valid event name: {why}"),
                );
            }
        }

        // A schema describes settings the plugin reads through `settings()`, which is
        // denied without the capability: every call would fail until the plugin is
        // stopped, so the omission is named now.
        if settings_schema.is_some() && !raw.capabilities.settings {
            return invalid(
                "package.settings_schema",
                p.settings_schema.as_ref().and_then(|s| lines.of(s)),
                "the package has settings but does not ask to read them: add `settings = true` under [capabilities]".into(),
            );
        }

        Ok(Manifest {
            package: PackageInfo {
                name,
                version,
                description: p.description,
                authors: p.authors,
                license: p.license.into_inner(),
                host,
                contract,
                readme,
                settings_schema,
            },
            hooks,
            dependencies,
            limits: raw.limits,
            capabilities: raw.capabilities,
        })
    }

    /// The manifest as TOML; [`Manifest::parse`] reads it back to an equal manifest.
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool, array or table with string keys: the
        // serialiser cannot fail on it.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// The plugin record names this package registers, in hook order.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.hooks.iter().map(|h| h.plugin.as_str())
    }
}
