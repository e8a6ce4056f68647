//! Ed25519 signatures over a package's contents, and key files.
//!
//! `plugboard.sig` is TOML: `key_id = "<16 hex digits>"`, `signature = "<128 hex digits>"`.
//! The signed message is `plugboard-package-v1\n` followed, for every other entry sorted
//! by name, by `name\n` and the 32-byte sha256 of its contents. A key's id is the hex of
//! the first 8 bytes of the sha256 of its 32-byte public key.

use std::path::Path;

use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::PackageError;

/// The archive name of the signature file.
pub const SIGNATURE_FILE: &str = "plugboard.sig";

const DOMAIN: &[u8] = b"plugboard-package-v1\n";

/// A key's id: hex of the first 8 bytes of sha256 of the public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// A new signing key from the operating system's randomness.
pub fn generate_key() -> Result<SigningKey, PackageError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| PackageError::Key {
        path: Default::default(),
        why: format!("no randomness from the operating system: {e}"),
    })?;
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    Ok(key)
}

fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), PackageError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path).map_err(|e| PackageError::io(path, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| PackageError::io(path, e))
}

/// Writes a signing key as 64 hex digits to a new file readable only by its owner
/// (mode 0600). Refuses to overwrite an existing file.
pub fn write_signing_key(path: &Path, key: &SigningKey) -> Result<(), PackageError> {
    write_new(path, &format!("{}\n", hex::encode(key.to_bytes())), true)
}

/// Writes a public key as 64 hex digits to a new file. Refuses to overwrite.
pub fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), PackageError> {
    write_new(path, &format!("{}\n", hex::encode(key.as_bytes())), false)
}

fn read_key_bytes(path: &Path) -> Result<[u8; 32], PackageError> {
    let text = std::fs::read_to_string(path).map_err(|e| PackageError::io(path, e))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|e| PackageError::Key {
        path: path.into(),
        why: format!("not a key file (64 hex digits expected): {e}"),
    })?;
    Ok(bytes)
}

/// Reads a signing key written by [`write_signing_key`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey, PackageError> {
    let mut bytes = read_key_bytes(path)?;
    let key = SigningKey::from_bytes(&bytes);
    bytes.fill(0);
    Ok(key)
}

/// Reads a public key written by [`write_public_key`].
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, PackageError> {
    let bytes = read_key_bytes(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| PackageError::Key {
        path: path.into(),
        why: format!("not an Ed25519 public key: {e}"),
    })
}

/// The contents of `plugboard.sig`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigFile {
    key_id: String,
    signature: String,
}

/// The message a package signature covers: the entries other than the signature,
/// sorted by name.
pub(crate) fn signed_message<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<u8> {
    let mut entries: Vec<_> = entries
        .into_iter()
        .filter(|(name, _)| *name != SIGNATURE_FILE)
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut msg = DOMAIN.to_vec();
    for (name, contents) in entries {
        msg.extend_from_slice(name.as_bytes());
        msg.push(b'\n');
        msg.extend_from_slice(&Sha256::digest(contents));
    }
    msg
}

/// The `plugboard.sig` file for a message.
pub(crate) fn signature_file(key: &SigningKey, message: &[u8]) -> String {
    let sig = key.sign(message);
    let file = SigFile {
        key_id: key_id(&key.verifying_key()),
        signature: hex::encode(sig.to_bytes()),
    };
    toml::to_string(&file).unwrap_or_default()
}

/// What a package's signature says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No `plugboard.sig`.
    Unsigned,
    /// Signed by this trusted key, and the signature matches.
    Verified {
        /// The signer's key id.
        key_id: String,
    },
    /// Signed by a key that was not given to check it (no trusted keys configured).
    Unverified {
        /// The key id the signature names.
        key_id: String,
    },
}

/// Checks `plugboard.sig` (if any) against the trusted keys.
pub(crate) fn check(
    sig_file: Option<&[u8]>,
    message: &[u8],
    trusted: &[VerifyingKey],
) -> Result<SignatureStatus, PackageError> {
    let Some(sig_file) = sig_file else {
        return if trusted.is_empty() {
            Ok(SignatureStatus::Unsigned)
        } else {
            Err(PackageError::Unsigned)
        };
    };
    let bad = |why: String| PackageError::SignatureFile { why };
    let text = std::str::from_utf8(sig_file).map_err(|_| bad("not valid UTF-8".into()))?;
    let file: SigFile = toml::from_str(text).map_err(|e| bad(e.to_string().trim_end().into()))?;
    let key_id = file.key_id.to_ascii_lowercase();
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&file.signature, &mut sig)
        .map_err(|e| bad(format!("signature: not 128 hex digits ({e})")))?;
    let sig = Signature::from_bytes(&sig);
    if trusted.is_empty() {
        return Ok(SignatureStatus::Unverified { key_id });
    }
    let Some(key) = trusted.iter().find(|k| self::key_id(k) == key_id) else {
        return Err(PackageError::UnknownKey { key_id });
    };
    key.verify_strict(message, &sig)
        .map_err(|_| PackageError::BadSignature {
            key_id: key_id.clone(),
        })?;
    Ok(SignatureStatus::Verified { key_id })
}
