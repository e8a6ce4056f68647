//! The package index: a JSON file (at a path or URL) listing each package's versions with
//! their sha256 and where to download them, so that `outdated` can say what is newer.
//!
//! ```json
//! { "packages": { "audit": [ { "version": "1.1.0", "sha256": "…", "url": "https://…/audit-1.1.0.pbpkg" } ] } }
//! ```

use std::collections::BTreeMap;

use plugboard_package::fetch::{FetchPolicy, fetch};
use plugboard_package::semver::Version;
use plugboard_store::PackageRow;
use serde::{Deserialize, Serialize};

use crate::InstallError;

/// One version of a package in the index.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The version.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub version: Version,
    /// SHA-256 of its package file (the pin an install from the index uses).
    pub sha256: String,
    /// Where to download it.
    pub url: String,
}

/// A package index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Package name → its versions.
    pub packages: BTreeMap<String, Vec<IndexEntry>>,
}

/// An installed package with a newer version in the index.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outdated {
    /// The package.
    pub name: String,
    /// The installed version.
    pub installed: String,
    /// The newest version in the index.
    pub latest: IndexEntry,
}

/// The largest index read.
const MAX_INDEX: u64 = 4 << 20;

impl Index {
    /// Reads an index from a path or an `http(s)://` URL. A URL's host must be allowed by
    /// `policy`; no pin is asked for (the index carries the pins of what it lists).
    pub fn read(source: &str, policy: &FetchPolicy) -> Result<Index, InstallError> {
        let err = |why: String| InstallError::Index {
            source_name: source.to_owned(),
            why,
        };
        let bytes = if source.contains("://") {
            let mut p = policy.clone();
            p.trusted_hosts = p.allowed_hosts.clone();
            p.max_bytes = p.max_bytes.min(MAX_INDEX);
            fetch(source, &p, None, &mut |_, _| {}).map_err(|e| err(e.to_string()))?
        } else {
            let len = std::fs::metadata(source)
                .map_err(|e| err(e.to_string()))?
                .len();
            if len > MAX_INDEX {
                return Err(err(format!("{len} bytes; the limit is {MAX_INDEX}")));
            }
            std::fs::read(source).map_err(|e| err(e.to_string()))?
        };
        serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
    }

    /// The installed packages that have a newer version here.
    pub fn outdated(&self, installed: &[PackageRow]) -> Vec<Outdated> {
        installed
            .iter()
            .filter_map(|row| {
                let current = Version::parse(&row.version).ok()?;
                let latest = self
                    .packages
                    .get(&row.name)?
                    .iter()
                    .max_by(|a, b| a.version.cmp(&b.version))?;
                (latest.version > current).then(|| Outdated {
                    name: row.name.clone(),
                    installed: row.version.clone(),
                    latest: latest.clone(),
                })
            })
            .collect()
    }
}
