//! # plugboard-package
//!
//! The Plugboard plugin package format: one `.pbpkg` file, a gzip-compressed tar holding
//! exactly `plugboard.toml` (the [`Manifest`]), `plugin.wasm` (a WebAssembly component
//! implementing `wit/plugin.wit`), and optionally `README.md`, `settings.schema.json`
//! and `plugboard.sig` (an Ed25519 signature).
//!
//! This crate reads, checks, builds, signs and downloads packages. It installs nothing
//! and writes nothing to disk while verifying: [`verify`] works on bytes in memory under
//! limits (entry count, unpacked size counted as read, manifest size), refuses anything
//! that is not one of those regular files (links, devices, `..`, absolute paths,
//! duplicates, unknown names) and returns the checked contents. Whether the component
//! satisfies the contract is for `plugboard-wasm` to say when it loads it; here only its
//! header is checked. [`Manifest::check_against`] applies an operator's
//! [`InstallPolicy`]; [`fetch::fetch`] downloads under a [`fetch::FetchPolicy`].
//!
//! It knows no wasmtime, no database and no async runtime.
//!
//! ```
//! use plugboard_package::{VerifyOptions, generate_key, key_id, pack, verify};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("plugboard.toml"), r#"
//! [package]
//! name = "audit"
//! version = "1.2.0"
//! license = "MIT"
//! contract = "0.2"
//!
//! [[hooks]]
//! event = "on_user_after_save_failure"
//! priority = 100
//! "#)?;
//! // A component header is enough here; plugboard-wasm checks the rest.
//! std::fs::write(dir.path().join("plugin.wasm"), b"\0asm\x0d\0\x01\0")?;
//!
//! let key = generate_key()?;
//! let (bytes, sha256) = pack(dir.path(), Some(&key))?;
//!
//! let opts = VerifyOptions {
//!     sha256: Some(sha256),
//!     trusted_keys: vec![key.verifying_key()],
//!     ..VerifyOptions::default()
//! };
//! let package = verify(&bytes, &opts)?;
//! assert_eq!(package.manifest.hooks[0].plugin, "audit");
//! assert_eq!(package.signer, Some(key_id(&key.verifying_key())));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
mod error;
pub mod fetch;
mod grants;
mod imports;
mod manifest;
mod policy;
mod schema;
mod sign;

pub use archive::{
    COMPONENT_FILE, ENTRY_NAMES, MANIFEST_FILE, VerifiedPackage, VerifyOptions,
    check_component_header, normalise_pin, pack, read_package_file, sha256_hex, verify,
    write_archive,
};
pub use error::PackageError;
pub use grants::{Capability, GrantError, HttpTarget, Scheme};
pub use imports::{check_imports, component_imports};
pub use manifest::{
    Capabilities, Hook, Manifest, PackageInfo, PackageLimits, README, Role, SETTINGS_SCHEMA,
    contract_version, contract_versions, invalid_record_name, is_valid_package_name,
};
pub use policy::{ArchiveLimits, InstallPolicy, PolicyViolation, host_version};
pub use schema::{SettingsSchema, SettingsViolation};
pub use sign::{
    SIGNATURE_FILE, SignatureStatus, SigningKey, VerifyingKey, generate_key, key_id,
    read_public_key, read_signing_key, write_public_key, write_signing_key,
};

/// Re-exported so that callers name the same versions.
pub use semver;
