//! What operators grant packages. A package's manifest *asks* for capabilities; an
//! operator *grants* them (at install, or later); the package runs with what it asked for
//! and was granted, nothing else. Grants are stored on the package's row, so that every
//! host sharing the database applies a change (a revocation included) on its next sync.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plugboard_package::{Capabilities, Manifest};
use plugboard_store::{ActivityKind, ActivityLog, ActivityStatus, NewActivity, PackageRow, Store};
use serde::Serialize;
use serde_json::json;

use crate::InstallError;

/// What an install grants the package, beyond what it holds already.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Grant {
    /// Nothing more: a package asking for a capability it does not hold is refused with
    /// [`InstallError::NotGranted`], which lists what it asks for.
    #[default]
    Held,
    /// Everything its manifest asks for (the operator saw the list and agreed).
    Asked,
    /// These.
    These(Capabilities),
    /// As an operator wrote it (`all`, or `kv,http=api.example.com`; see
    /// [`Capabilities::parse_grant`]), read against what the package asks for.
    Written(String),
}

impl Grant {
    /// Checks a written grant before anything is fetched or read (an item that names no
    /// capability, a bad origin); what it means is settled against the package's manifest.
    pub fn written(text: &str) -> Result<Grant, plugboard_package::GrantError> {
        Capabilities::parse_grant(text, &Capabilities::default())?;
        Ok(Grant::Written(text.to_owned()))
    }

    /// What it gives a package asking for `asked`.
    pub(crate) fn resolve(&self, asked: &Capabilities) -> Result<Capabilities, InstallError> {
        Ok(match self {
            Grant::Held => Capabilities::none(),
            Grant::Asked => asked.clone(),
            Grant::These(c) => c.clone(),
            Grant::Written(text) => Capabilities::parse_grant(text, asked)?,
        })
    }
}

/// A package's capabilities: what it asks for and what it was granted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackageGrants {
    /// The package.
    pub package: String,
    /// What its installed version's manifest asks for, as a grant is written.
    pub asked: String,
    /// What an operator granted it, as a grant is written.
    pub granted: String,
    /// What it asks for and was not granted (its calls to these fail).
    pub missing: String,
    /// What it asks for, one line each, in words.
    pub described: Vec<String>,
    #[serde(skip)]
    pub(crate) asked_caps: Capabilities,
    #[serde(skip)]
    pub(crate) granted_caps: Capabilities,
}

impl PackageGrants {
    fn new(package: String, asked: Capabilities, granted: Capabilities) -> PackageGrants {
        PackageGrants {
            package,
            asked: asked.to_grant(),
            granted: granted.to_grant(),
            missing: asked.missing(&granted).to_grant(),
            described: asked.describe(),
            asked_caps: asked,
            granted_caps: granted,
        }
    }

    /// What it asks for.
    pub fn asked(&self) -> &Capabilities {
        &self.asked_caps
    }

    /// What it was granted.
    pub fn granted(&self) -> &Capabilities {
        &self.granted_caps
    }

    /// What it runs with: what it asked for, where granted.
    pub fn effective(&self) -> Capabilities {
        self.asked_caps.within(&self.granted_caps)
    }
}

/// What a stored row grants: its grants column, or (for a package installed before grants
/// were stored) what its manifest asks for, which the install then gave it.
pub(crate) fn granted_of(
    row: &PackageRow,
    asked: &Capabilities,
) -> Result<Capabilities, InstallError> {
    match &row.grants {
        None => Ok(asked.clone()),
        Some(text) => serde_json::from_str(text).map_err(|e| InstallError::Damaged {
            package: row.name.clone(),
            why: format!("its stored grants cannot be read: {e}"),
        }),
    }
}

/// A row's grants, with what its manifest asks for.
pub(crate) fn of_row(row: &PackageRow) -> Result<PackageGrants, InstallError> {
    let m = Manifest::parse(&row.manifest).map_err(|e| crate::damaged(row, e))?;
    let granted = granted_of(row, &m.capabilities)?;
    Ok(PackageGrants::new(
        row.name.clone(),
        m.capabilities,
        granted,
    ))
}

/// The grants as stored (JSON), for a row.
pub(crate) fn to_column(granted: &Capabilities) -> String {
    // Bools, strings and lists of strings: serialising cannot fail.
    serde_json::to_string(granted).unwrap_or_else(|_| "{}".to_owned())
}

/// Every installed package's grants, from the store (loads nothing).
pub fn stored_grants(store: &Store) -> Result<Vec<PackageGrants>, InstallError> {
    store.packages()?.iter().map(of_row).collect()
}

/// One installed package's grants.
pub fn package_grants(store: &Store, package: &str) -> Result<PackageGrants, InstallError> {
    let row = store
        .package(package)?
        .ok_or_else(|| InstallError::NotInstalled(package.to_owned()))?;
    of_row(&row)
}

/// Grants `add` to an installed package and revokes `remove` from it, in the database;
/// records each in `log`. Every host sharing the database applies it on its next sync (a
/// host's installer follows within a second); [`crate::Installer::change_grants`] also
/// applies it at once in its own host.
pub fn change_grants(
    store: &Store,
    log: Option<&ActivityLog>,
    package: &str,
    add: &Capabilities,
    remove: &Capabilities,
) -> Result<PackageGrants, InstallError> {
    // A concurrent change moves the revision: read again and retry.
    for _ in 0..5 {
        let row = store
            .package(package)?
            .ok_or_else(|| InstallError::NotInstalled(package.to_owned()))?;
        let before = of_row(&row)?;
        let granted = before.granted_caps.union(add).without(remove);
        match store.set_package_grants(package, &to_column(&granted), row.revision) {
            Ok(()) => {
                let after = PackageGrants::new(package.to_owned(), before.asked_caps, granted);
                if let Some(log) = log {
                    record_changes(
                        log,
                        package,
                        &before.granted_caps,
                        &after.granted_caps,
                        &after.missing,
                    );
                }
                return Ok(after);
            }
            Err(plugboard_store::StoreError::PackageConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(InstallError::Busy(package.to_owned()))
}

/// Records what changed between two grants: a `grant` entry for what was added, a
/// `revoke` entry for what was taken away (`missing`: what the package asks for and is now
/// without).
pub(crate) fn record_changes(
    log: &ActivityLog,
    package: &str,
    before: &Capabilities,
    after: &Capabilities,
    missing: &str,
) {
    for (action, what) in [
        ("grant", after.missing(before)),
        ("revoke", before.missing(after)),
    ] {
        if !what.is_empty() {
            log.record(NewActivity::new(
                ActivityKind::Package,
                action,
                ActivityStatus::Info,
                Some(package),
                json!({ "capabilities": what.to_grant(), "granted": after.to_grant(), "missing": missing }),
            ));
        }
    }
}

/// What the wasm host grants for these capabilities.
pub(crate) fn wasm_grants(c: &Capabilities) -> plugboard_wasm::Grants {
    plugboard_wasm::Grants {
        log: c.log,
        settings: c.settings,
        clock: c.clock,
        random: c.random,
    }
}

/// Records denied capability uses in the activity log: the first of each package and
/// capability, then at most one a minute with how many there were since (a plugin calling
/// in a loop must not flood the log).
pub(crate) struct DeniedLog {
    /// By package and capability: when the last entry was recorded, and the uses since.
    last: Mutex<HashMap<DeniedKey, (Instant, u64)>>,
}

type DeniedKey = (String, &'static str);

/// How often the same denied use is recorded.
const DENIED_EVERY: Duration = Duration::from_secs(60);

impl DeniedLog {
    pub(crate) fn new() -> DeniedLog {
        DeniedLog {
            last: Mutex::default(),
        }
    }

    /// Counts a denied use; returns how many to report now (including this one), if now.
    pub(crate) fn admit(&self, package: &str, capability: &'static str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get_mut(&(package.to_owned(), capability)) {
            Some((at, count)) if now.duration_since(*at) < DENIED_EVERY => {
                *count += 1;
                None
            }
            Some((at, count)) => {
                let n = *count + 1;
                *at = now;
                *count = 0;
                Some(n)
            }
            None => {
                last.insert((package.to_owned(), capability), (now, 0));
                Some(1)
            }
        }
    }
}
