//! Authentication: the admin token (only its sha256 is kept, in the database, so that
//! every server sharing it accepts the same token and a rotation reaches them all),
//! browser sessions with a CSRF token each, and the rate limit on failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use plugboard_store::Store;

use crate::error::ServerError;

/// The file, in the data directory, where earlier versions kept the admin token's sha256
/// (hex): imported into the database once, then no longer read.
pub const TOKEN_FILE: &str = "admin-token.sha256";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pb_session";

/// 32 random bytes, hex.
pub(crate) fn random_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn token_path(home: &Path) -> PathBuf {
    home.join(TOKEN_FILE)
}

fn token_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |error| ServerError::Token {
        path: path.display().to_string(),
        error,
    }
}

/// Reads the hash earlier versions kept in a file; `None` when there is no file.
fn read_legacy_hash(path: &Path) -> Result<Option<[u8; 32]>, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => parse_hash(s.trim())
            .map(Some)
            .ok_or_else(|| ServerError::DamagedToken(path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(token_error(path)(e)),
    }
}

fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// The hash stored in the database, if any.
fn stored_hash(store: &Store) -> Result<Option<[u8; 32]>, ServerError> {
    match store.admin_token_hash()? {
        Some(h) => parse_hash(&h)
            .map(Some)
            .ok_or_else(|| ServerError::DamagedToken(format!("the database {}", store.url()))),
        None => Ok(None),
    }
}

/// Reads the admin token's hash from the database, creating a new token when there is
/// none (or importing the one an earlier version kept in `home`); returns the hash and the
/// new token (only when this call created it).
pub(crate) fn load_or_create(
    store: &Store,
    home: &Path,
) -> Result<([u8; 32], Option<String>), ServerError> {
    if let Some(hash) = stored_hash(store)? {
        return Ok((hash, None));
    }
    if let Some(hash) = read_legacy_hash(&token_path(home))? {
        store.init_admin_token_hash(&hex::encode(hash))?;
    } else {
        let token = random_token()?;
        let hash = sha256(&token);
        if store.init_admin_token_hash(&hex::encode(hash))? {
            return Ok((hash, Some(token)));
        }
    }
    // Another server starting on the same database at the same moment won.
    let hash = stored_hash(store)?
        .ok_or_else(|| ServerError::DamagedToken(format!("the database {}", store.url())))?;
    Ok((hash, None))
}

/// Replaces the admin token of the database with a new one and returns it (the only time
/// it is shown). Every running server sharing the database stops accepting the old token,
/// ends its sessions and closes their event streams within a second.
pub fn rotate_token(store: &Store) -> Result<String, ServerError> {
    let token = random_token()?;
    store.set_admin_token_hash(&hex::encode(sha256(&token)))?;
    Ok(token)
}

/// The admin token in force, followed from the database.
pub(crate) struct Token {
    hash: std::sync::RwLock<[u8; 32]>,
    /// Bumped on every rotation: event streams end when it moves.
    version: tokio::sync::watch::Sender<u64>,
}

impl Token {
    pub(crate) fn new(hash: [u8; 32]) -> Self {
        Token {
            hash: std::sync::RwLock::new(hash),
            version: tokio::sync::watch::channel(0).0,
        }
    }

    /// Whether `token` is the admin token now, compared in constant time.
    pub(crate) fn matches(&self, token: &str) -> bool {
        let hash = *self.hash.read().unwrap_or_else(|p| p.into_inner());
        token_matches(&hash, token)
    }

    /// Reads the stored hash; when it changed, takes it and returns true.
    pub(crate) fn refresh(&self, store: &Store) -> Result<bool, ServerError> {
        let Some(now) = stored_hash(store)? else {
            return Ok(false);
        };
        let mut hash = self.hash.write().unwrap_or_else(|p| p.into_inner());
        if bool::from(now.ct_eq(&*hash)) {
            return Ok(false);
        }
        *hash = now;
        self.version.send_modify(|v| *v += 1);
        Ok(true)
    }

    /// Changes when the token is rotated.
    pub(crate) fn rotations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Whether `token` hashes to `hash`, compared in constant time.
pub(crate) fn token_matches(hash: &[u8; 32], token: &str) -> bool {
    bool::from(sha256(token).ct_eq(hash))
}

/// Whether two secrets are equal, in constant time.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    bool::from(sha256(a).ct_eq(&sha256(b)))
}

/// A browser session.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The CSRF token state-changing requests must repeat.
    pub(crate) csrf: String,
    /// When it ends (monotonic).
    pub(crate) expires: Instant,
    /// When it ends (wall clock), for the dashboard.
    pub(crate) expires_at: OffsetDateTime,
}

/// The sessions, keyed by the sha256 of their id (so a lookup leaks nothing about ids).
pub(crate) struct Sessions {
    lifetime: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Sessions {
            lifetime,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session; returns its id.
    pub(crate) fn create(&self) -> Result<(String, Session), ServerError> {
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            expires: Instant::now() + self.lifetime,
            expires_at: OffsetDateTime::now_utc() + self.lifetime,
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(sha256(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this id.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = sha256(id);
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends every session (the admin token they were opened with was rotated).
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&sha256(id));
    }
}

/// Failed logins per client address in a sliding window.
pub(crate) struct LoginLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
}

impl LoginLimiter {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        LoginLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when `ip` has used up its failures.
    pub(crate) fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let list = map.entry(ip).or_default();
        list.retain(|t| now.duration_since(*t) < self.window);
        if list.len() < self.max as usize {
            return None;
        }
        let oldest = list.iter().min().copied().unwrap_or(now);
        let wait = self.window.saturating_sub(now.duration_since(oldest));
        Some(wait.as_secs().max(1))
    }

    /// Counts a failure.
    pub(crate) fn fail(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, l| l.iter().any(|t| now.duration_since(*t) < self.window));
        map.entry(ip).or_default().push(now);
    }

    /// Forgets an address's failures (after a successful login).
    pub(crate) fn clear(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&ip);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}
