//! What an operator allows: the most a package may ask for, and which names it may take.

use semver::Version;

use std::collections::BTreeSet;

use crate::grants::Capability;
use crate::manifest::{Manifest, PackageLimits, contract_versions};
use crate::{PackageError, VerifyOptions};

/// Limits on the archive itself, applied while reading it (see [`verify`](crate::verify)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Largest package file, in bytes (default 32 MiB).
    pub max_compressed: u64,
    /// Most entries (default 16).
    pub max_entries: usize,
    /// Most bytes all entries may unpack to, counted as read (default 64 MiB).
    pub max_unpacked: u64,
    /// Largest `plugboard.toml`, in bytes (default 64 KiB).
    pub max_manifest: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_compressed: 32 << 20,
            max_entries: 16,
            max_unpacked: 64 << 20,
            max_manifest: 64 << 10,
        }
    }
}

/// An operator's install policy: what packages may ask for.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallPolicy {
    /// The most each limit may be set to; `None` allows any value.
    pub max_limits: PackageLimits,
    /// The kinds of capability a package may ask for at all (an operator still grants
    /// each package its own).
    pub allowed_capabilities: BTreeSet<Capability>,
    /// Names no package may take, as a package or as a plugin record (e.g. the host's
    /// own native plugins).
    pub protected_names: Vec<String>,
    /// Limits on the archive.
    pub archive: ArchiveLimits,
    /// The host's version, checked against `package.host`.
    pub host_version: Version,
    /// The contract versions the host serves, newest first; `package.contract` must match
    /// one of them.
    pub contract_versions: Vec<Version>,
}

impl Default for InstallPolicy {
    /// 128 MiB of memory, 1 s per call, any fuel, 1 MiB replies; every capability; no
    /// protected names; default archive limits; this crate's version as the host's.
    fn default() -> Self {
        InstallPolicy {
            max_limits: PackageLimits {
                memory_mib: Some(128),
                deadline_ms: Some(1000),
                fuel: None,
                max_reply_kib: Some(1024),
            },
            allowed_capabilities: Capability::ALL.into_iter().collect(),
            protected_names: Vec::new(),
            archive: ArchiveLimits::default(),
            host_version: host_version(),
            contract_versions: contract_versions(),
        }
    }
}

/// This crate's version, which is the Plugboard host version (the workspace shares one).
pub fn host_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0))
}

impl InstallPolicy {
    /// Verification options with this policy's archive limits.
    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            limits: self.archive,
            ..VerifyOptions::default()
        }
    }
}

/// One thing a package asks for that the operator's policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    /// A limit above the operator's maximum.
    #[error(
        "limits.{field}: requested {requested} {unit}, the operator allows at most {allowed} {unit}"
    )]
    LimitTooHigh {
        /// The field under `[limits]`.
        field: &'static str,
        /// What the package asks for.
        requested: u64,
        /// The operator's maximum.
        allowed: u64,
        /// The unit, for the message.
        unit: &'static str,
    },
    /// A capability the operator does not grant.
    #[error("capabilities.{capability}: the operator does not allow this capability")]
    CapabilityNotAllowed {
        /// The capability.
        capability: &'static str,
    },
    /// A protected name.
    #[error("{field}: `{name}` is a protected name")]
    ProtectedName {
        /// The field that uses it (`package.name`, `hooks[0].plugin`).
        field: String,
        /// The name.
        name: String,
    },
    /// `package.host` excludes this host.
    #[error("package.host: the package requires host {required}, this host is {host}")]
    HostVersion {
        /// The package's requirement.
        required: String,
        /// The host's version.
        host: String,
    },
    /// `package.contract` excludes the host's contract.
    #[error(
        "package.contract: the package requires contract {required}, this host serves plugboard:plugin {contract}"
    )]
    ContractVersion {
        /// The package's requirement.
        required: String,
        /// The host's contract version.
        contract: String,
    },
}

impl Manifest {
    /// Everything this manifest asks for that `policy` does not allow, in manifest order.
    pub fn violations(&self, policy: &InstallPolicy) -> Vec<PolicyViolation> {
        let mut out = Vec::new();
        if let Some(req) = &self.package.host
            && !req.matches(&policy.host_version)
        {
            out.push(PolicyViolation::HostVersion {
                required: req.to_string(),
                host: policy.host_version.to_string(),
            });
        }
        if !policy
            .contract_versions
            .iter()
            .any(|v| self.package.contract.matches(v))
        {
            out.push(PolicyViolation::ContractVersion {
                required: self.package.contract.to_string(),
                contract: policy
                    .contract_versions
                    .iter()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let protected = |n: &str| policy.protected_names.iter().any(|p| p == n);
        if protected(&self.package.name) {
            out.push(PolicyViolation::ProtectedName {
                field: "package.name".into(),
                name: self.package.name.clone(),
            });
        }
        for (i, h) in self.hooks.iter().enumerate() {
            if h.plugin != self.package.name && protected(&h.plugin) {
                out.push(PolicyViolation::ProtectedName {
                    field: format!("hooks[{i}].plugin"),
                    name: h.plugin.clone(),
                });
            }
        }
        for ((field, requested, unit), (_, allowed, _)) in self
            .limits
            .fields()
            .into_iter()
            .zip(policy.max_limits.fields())
        {
            if let (Some(requested), Some(allowed)) = (requested, allowed)
                && requested > allowed
            {
                out.push(PolicyViolation::LimitTooHigh {
                    field,
                    requested,
                    allowed,
                    unit,
                });
            }
        }
        for capability in self.capabilities.kinds() {
            if !policy.allowed_capabilities.contains(&capability) {
                out.push(PolicyViolation::CapabilityNotAllowed {
                    capability: capability.name(),
                });
            }
        }
        out
    }

    /// Checks the manifest against an operator's policy; the first violation is the
    /// error ([`Manifest::violations`] lists them all).
    pub fn check_against(&self, policy: &InstallPolicy) -> Result<(), PackageError> {
        match self.violations(policy).into_iter().next() {
            Some(v) => Err(PackageError::Policy(v)),
            None => Ok(()),
        }
    }
}
