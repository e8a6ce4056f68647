//! Secret settings: the fields a package's `settings.schema.json` marks write-only
//! (`"writeOnly": true`, or `"secret": true`) are sealed before they are stored, so the
//! database (and its backups, and every process reading it) holds only ciphertext; they
//! are opened for the package's plugins alone, and never shown back to an operator.
//!
//! A sealed field is stored as `{"$sealed": "v1:<key id>:<hex of nonce ‖ ciphertext ‖ tag>"}`
//! (ChaCha20-Poly1305, a random 96-bit nonce each time, the setting's and the field's names
//! as associated data so a sealed value cannot be moved to another package or field).
//!
//! The key is not in the database, by design: it is `$PLUGBOARD_SECRETS_KEY` (64 hex digits)
//! when set, else the file `<home>/secrets.key` (created 0600 on the first secret written).
//! Hosts sharing one PostgreSQL database must share the key (the same environment variable,
//! or a copy of the file): a host holding another key cannot open the fields, says so in its
//! log (naming both key ids), and hands its plugins their settings without them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value};
use thiserror::Error;

/// The environment variable that holds the key (64 hexadecimal digits), taking precedence
/// over the key file.
pub const KEY_ENV: &str = "PLUGBOARD_SECRETS_KEY";

pub use plugboard_store::{SEALED, is_sealed, redact_secrets};

const VERSION: &str = "v1";

/// The key file of a data directory: `<home>/secrets.key`.
pub fn key_file(home: &Path) -> PathBuf {
    home.join("secrets.key")
}

/// Why a secret could not be sealed or opened. Never carries the secret itself.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The key could not be read or created.
    #[error("the secrets key {where_}: {why}")]
    Key {
        /// The file or environment variable.
        where_: String,
        /// What is wrong.
        why: String,
    },
    /// No key exists here yet, so nothing sealed can be opened.
    #[error(
        "no secrets key here ({0}): this host cannot open secret settings; give it the key the other hosts use (${KEY_ENV} or a copy of the file)"
    )]
    NoKey(String),
    /// The value was sealed with another key.
    #[error(
        "sealed with the key {sealed_with}, and this host holds {held}: give every host sharing the database the same key (${KEY_ENV} or a copy of secrets.key)"
    )]
    OtherKey {
        /// The id of the key that sealed it.
        sealed_with: String,
        /// The id of the key this host holds.
        held: String,
    },
    /// The sealed value is not one this version writes, or was altered.
    #[error("the sealed value is damaged or altered ({0})")]
    Damaged(&'static str),
}

struct Key {
    aead: LessSafeKey,
    /// The first 4 bytes of the key's sha256, in hex: names a key without revealing it.
    id: String,
}

/// The secrets key of a host, loaded when first needed. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    source: Arc<Source>,
}

struct Source {
    /// The key from the environment (read once, when the `Secrets` was made).
    env: Option<String>,
    file: PathBuf,
    loaded: Mutex<Option<Arc<Key>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("file", &self.source.file)
            .field("from_env", &self.source.env.is_some())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// The key in `$PLUGBOARD_SECRETS_KEY` if set, else in `file` (created on the first seal).
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Secrets::with_env(file, std::env::var(KEY_ENV).ok())
    }

    /// The key given as 64 hex digits if `env` is some, else in `file`.
    pub fn with_env(file: impl Into<PathBuf>, env: Option<String>) -> Self {
        Secrets {
            source: Arc::new(Source {
                env: env.filter(|v| !v.trim().is_empty()),
                file: file.into(),
                loaded: Mutex::new(None),
            }),
        }
    }

    /// The key's id (the first 4 bytes of its sha256, in hex), if a key exists here.
    pub fn key_id(&self) -> Result<Option<String>, SecretError> {
        Ok(self.key(false)?.map(|k| k.id.clone()))
    }

    fn key(&self, create: bool) -> Result<Option<Arc<Key>>, SecretError> {
        let mut loaded = self
            .source
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = loaded.as_ref() {
            return Ok(Some(Arc::clone(k)));
        }
        let (hex_key, where_) = if let Some(v) = &self.source.env {
            (v.trim().to_owned(), format!("${KEY_ENV}"))
        } else {
            let where_ = self.source.file.display().to_string();
            match std::fs::read_to_string(&self.source.file) {
                Ok(text) => (text.trim().to_owned(), where_),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    (create_file(&self.source.file)?, where_)
                }
                Err(e) => {
                    return Err(SecretError::Key {
                        where_,
                        why: e.to_string(),
                    });
                }
            }
        };
        let key = parse_key(&hex_key).map_err(|why| SecretError::Key {
            where_,
            why: why.into(),
        })?;
        let key = Arc::new(key);
        *loaded = Some(Arc::clone(&key));
        Ok(Some(key))
    }

    /// Seals `value` as the field `field` of the setting `setting`.
    pub fn seal(&self, setting: &str, field: &str, value: &Value) -> Result<Value, SecretError> {
        let key = self
            .key(true)?
            .ok_or_else(|| SecretError::NoKey(self.where_()))?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Key {
                where_: "the system's random source".into(),
                why: "unavailable".into(),
            })?;
        let mut data = serde_json::to_vec(value).map_err(|_| SecretError::Damaged("encoding"))?;
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(setting, field)),
                &mut data,
            )
            .map_err(|_| SecretError::Damaged("sealing"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        data.fill(0);
        let mut m = Map::new();
        m.insert(
            SEALED.into(),
            Value::String(format!("{VERSION}:{}:{}", key.id, hex::encode(out))),
        );
        Ok(Value::Object(m))
    }

    /// Opens what [`Secrets::seal`] sealed as the field `field` of the setting `setting`.
    pub fn open(&self, setting: &str, field: &str, sealed: &Value) -> Result<Value, SecretError> {
        let text = sealed_text(sealed).ok_or(SecretError::Damaged("not a sealed value"))?;
        let mut parts = text.splitn(3, ':');
        let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::Damaged("unknown format"));
        };
        let key = self
            .key(false)?
            .ok_or_else(|| SecretError::NoKey(self.where_()))?;
        if key.id != id {
            return Err(SecretError::OtherKey {
                sealed_with: id.to_owned(),
                held: key.id.clone(),
            });
        }
        let bytes = hex::decode(body).map_err(|_| SecretError::Damaged("not hexadecimal"))?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Damaged("too short"));
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes.copy_from_slice(nonce);
        let mut data = rest.to_vec();
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad(setting, field)),
                &mut data,
            )
            .map_err(|_| SecretError::Damaged("authentication failed"))?;
        let value = serde_json::from_slice(plain).map_err(|_| SecretError::Damaged("not JSON"));
        data.fill(0);
        value
    }

    fn where_(&self) -> String {
        if self.source.env.is_some() {
            format!("${KEY_ENV}")
        } else {
            self.source.file.display().to_string()
        }
    }

    /// `value` with every sealed top-level field opened; the fields that cannot be opened
    /// are left out, each with why.
    pub fn open_all(&self, setting: &str, value: &Value) -> (Value, Vec<(String, SecretError)>) {
        let Value::Object(map) = value else {
            return (value.clone(), Vec::new());
        };
        let mut out = Map::new();
        let mut failed = Vec::new();
        for (k, v) in map {
            if is_sealed(v) {
                match self.open(setting, k, v) {
                    Ok(plain) => {
                        out.insert(k.clone(), plain);
                    }
                    Err(e) => failed.push((k.clone(), e)),
                }
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
        (Value::Object(out), failed)
    }
}

fn sealed_text(v: &Value) -> Option<&str> {
    if is_sealed(v) {
        v.get(SEALED).and_then(Value::as_str)
    } else {
        None
    }
}

fn aad(setting: &str, field: &str) -> Vec<u8> {
    format!("plugboard-secret:{VERSION}:{setting}:{field}").into_bytes()
}

fn parse_key(hex_key: &str) -> Result<Key, &'static str> {
    let mut bytes = hex::decode(hex_key).map_err(|_| "not hexadecimal")?;
    if bytes.len() != 32 {
        bytes.fill(0);
        return Err("must be 64 hexadecimal digits (32 bytes)");
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| "unusable");
    bytes.fill(0);
    Ok(Key {
        aead: LessSafeKey::new(unbound?),
        id: hex::encode(&digest.as_ref()[..4]),
    })
}

/// Creates the key file with a fresh random key (mode 0600, never replacing one: two
/// processes creating it at once agree on the first).
fn create_file(file: &Path) -> Result<String, SecretError> {
    let err = |why: String| SecretError::Key {
        where_: file.display().to_string(),
        why,
    };
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| err("the system's random source is unavailable".into()))?;
    let text = hex::encode(bytes);
    bytes.fill(0);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    // Written under a temporary name and linked into place, so a reader never sees a
    // half-written key.
    let tmp = file.with_extension(format!("key.{}.tmp", std::process::id()));
    let written = options
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{text}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| err(e.to_string()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let linked = std::fs::hard_link(&tmp, file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(file = %file.display(), "created the secrets key (keep it: secret settings cannot be read without it)");
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read_to_string(file)
            .map(|t| t.trim().to_owned())
            .map_err(|e| err(e.to_string())),
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn seals_opens_and_binds_to_the_setting_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::with_env(dir.path().join("secrets.key"), None);
        assert!(
            s.key_id().unwrap().is_none(),
            "no key before the first seal"
        );
        let sealed = s.seal("package.a", "token", &json!("hunter2")).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.to_string().contains("hunter2"));
        assert_eq!(s.open("package.a", "token", &sealed).unwrap(), "hunter2");
        // Moved to another field or package: refused.
        assert!(matches!(
            s.open("package.b", "token", &sealed),
            Err(SecretError::Damaged(_))
        ));
        assert!(s.open("package.a", "other", &sealed).is_err());
        // Two seals of one value differ (fresh nonces).
        assert_ne!(
            s.seal("package.a", "token", &json!("hunter2")).unwrap(),
            sealed
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secrets.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Another process reading the same file opens it; another key names both ids.
        let again = Secrets::with_env(dir.path().join("secrets.key"), None);
        assert_eq!(
            again.open("package.a", "token", &sealed).unwrap(),
            "hunter2"
        );
        let other = Secrets::with_env("/nonexistent", Some("11".repeat(32)));
        let e = other.open("package.a", "token", &sealed).unwrap_err();
        assert!(matches!(e, SecretError::OtherKey { .. }), "{e}");
        let keyless = Secrets::with_env(dir.path().join("none.key"), None);
        assert!(matches!(
            keyless.open("package.a", "token", &sealed),
            Err(SecretError::NoKey(_))
        ));
        assert!(
            !dir.path().join("none.key").exists(),
            "opening creates no key"
        );
    }

    #[test]
    fn redact_and_open_all() {
        let s = Secrets::with_env("/nonexistent", Some("ab".repeat(32)));
        let v =
            json!({ "url": "http://x", "token": s.seal("p", "token", &json!("t0k3n")).unwrap() });
        let (shown, secrets) = redact_secrets(&v);
        assert_eq!(shown, json!({ "url": "http://x" }));
        assert_eq!(secrets, ["token"]);
        let (open, failed) = s.open_all("p", &v);
        assert!(failed.is_empty());
        assert_eq!(open, json!({ "url": "http://x", "token": "t0k3n" }));
        let (open, failed) =
            Secrets::with_env("/nonexistent", Some("cd".repeat(32))).open_all("p", &v);
        assert_eq!(open, json!({ "url": "http://x" }));
        assert_eq!(failed.len(), 1);
    }

    #[test]
    fn refuses_a_malformed_key() {
        for bad in ["zz", "abcd", &"0".repeat(63)] {
            let s = Secrets::with_env("/nonexistent", Some(bad.to_owned()));
            assert!(matches!(
                s.seal("p", "f", &json!(1)),
                Err(SecretError::Key { .. })
            ));
        }
    }
}
