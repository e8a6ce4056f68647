//! Authentication: the admin token (only its sha256 is kept, in `<home>/admin-token.sha256`),
//! browser sessions with a CSRF token each, and the rate limit on failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::error::ServerError;

/// The file, in the data directory, that holds the admin token's sha256 (hex).
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
    move |source| ServerError::Token {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a token's hash, readable by its owner only.
fn write_hash(path: &Path, token: &str) -> Result<(), ServerError> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(token_error(path))?;
    }
    let tmp = path.with_extension("sha256.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(token_error(path))?;
    f.write_all(format!("{}\n", hex::encode(sha256(token))).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(token_error(path))?;
    std::fs::rename(&tmp, path).map_err(token_error(path))
}

/// Reads the stored hash; `None` when there is no file.
fn read_hash(path: &Path) -> Result<Option<[u8; 32]>, ServerError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let bytes = hex::decode(s.trim())
                .map_err(|_| ServerError::DamagedToken(path.display().to_string()))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| ServerError::DamagedToken(path.display().to_string()))?;
            Ok(Some(hash))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(token_error(path)(e)),
    }
}

/// Reads the admin token's hash from `home`, creating a new token when there is none;
/// returns the hash and the new token (only when one was created).
pub(crate) fn load_or_create(home: &Path) -> Result<([u8; 32], Option<String>), ServerError> {
    let path = token_path(home);
    if let Some(hash) = read_hash(&path)? {
        return Ok((hash, None));
    }
    let token = random_token()?;
    write_hash(&path, &token)?;
    Ok((sha256(&token), Some(token)))
}

/// Replaces the admin token of the data directory `home` with a new one and returns it
/// (the only time it is shown). A running server keeps accepting the old token until it
/// restarts.
pub fn rotate_token(home: &Path) -> Result<String, ServerError> {
    let token = random_token()?;
    write_hash(&token_path(home), &token)?;
    Ok(token)
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
