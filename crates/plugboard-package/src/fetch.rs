//! Downloading a package, failing closed.
//!
//! Before any connection: the URL's scheme must be `https` (or `http` when the policy
//! allows it), its `host[:port]` must be on the allow-list, and a sha256 pin must be
//! given unless the host is trusted. While streaming: the size limit (a too-large
//! `Content-Length` is refused before the body is read) and the overall time limit. A
//! broken connection is retried, resuming with `Range` when the server supports it,
//! restarting cleanly otherwise. At the end: the pin. Redirects are not followed, and no
//! proxy from the environment is used.

use std::io::Read;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ureq::http::{StatusCode, Uri};

use crate::archive::normalise_pin;

/// What downloads may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchPolicy {
    /// Hosts packages may come from, as `host` or `host:port`. A bare `host` matches the
    /// scheme's default port only. Case-insensitive.
    pub allowed_hosts: Vec<String>,
    /// Allowed hosts from which a package may be fetched without a sha256 pin.
    pub trusted_hosts: Vec<String>,
    /// Whether plain `http://` is allowed (never by default).
    pub allow_http: bool,
    /// Largest download, in bytes (default 32 MiB).
    pub max_bytes: u64,
    /// Time limit for the whole download, retries included (default 60 s).
    pub timeout: Duration,
    /// How many times a broken transfer is retried (default 3).
    pub retries: u32,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allowed_hosts: Vec::new(),
            trusted_hosts: Vec::new(),
            allow_http: false,
            max_bytes: 32 << 20,
            timeout: Duration::from_secs(60),
            retries: 3,
        }
    }
}

/// Why a download was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL cannot be parsed or has no host.
    #[error("`{url}` is not a usable URL: {why}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A scheme other than https (or http when allowed).
    #[error("`{url}`: only https:// URLs are allowed{}", if *.http_allowed { " (and http://)" } else { "" })]
    SchemeNotAllowed {
        /// The URL.
        url: String,
        /// Whether http was allowed too.
        http_allowed: bool,
    },
    /// The host is not on the allow-list; nothing was sent.
    #[error(
        "host `{host}` is not on the list of allowed package hosts (`allowed_hosts` in the `installer` setting)"
    )]
    HostNotAllowed {
        /// `host:port`.
        host: String,
    },
    /// No sha256 pin for a host that is not trusted; nothing was sent.
    #[error(
        "a sha256 pin is required to download from `{host}` (it is not on `trusted_hosts` in the `installer` setting)"
    )]
    PinRequired {
        /// `host:port`.
        host: String,
    },
    /// The pin is not 64 hex digits.
    #[error("`{pin}` is not a sha256 digest (64 hex digits)")]
    InvalidPin {
        /// The pin as given.
        pin: String,
    },
    /// The server announced or sent more than the limit.
    #[error("the download is larger than the limit of {limit} bytes ({seen})")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// What gave it away: the announced length or the bytes received.
        seen: String,
    },
    /// The download took longer than the limit.
    #[error("the download took longer than {0:?}")]
    TimedOut(Duration),
    /// The server answered with an error status.
    #[error("the server answered {status} for `{url}`")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server answered with a redirect, which is not followed.
    #[error(
        "the server redirects `{url}` to `{location}`; redirects are not followed, use the final URL"
    )]
    Redirect {
        /// The URL.
        url: String,
        /// Where it points.
        location: String,
    },
    /// The transfer failed and retries are used up.
    #[error("the download failed after {attempts} attempt(s): {last}")]
    Failed {
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The package's sha256 is not the pinned one.
    #[error("sha256 mismatch: expected {expected}, downloaded {actual}")]
    PinMismatch {
        /// The pin.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
}

/// The `host:port` a URL connects to, with the scheme's default port filled in.
fn authority(uri: &Uri) -> Option<(String, u16)> {
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    Some((host, port))
}

fn listed(list: &[String], host: &str, port: u16, default_port: u16) -> bool {
    list.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        match entry.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') => {
                h == host && p.parse() == Ok(port)
            }
            _ => entry == host && port == default_port,
        }
    })
}

/// How one attempt ended, when it did not succeed.
enum Broken {
    /// Stop: no retry helps.
    Fatal(FetchError),
    /// The connection broke; retry (resuming if `resumable`).
    Retry(String),
}

/// Downloads a package under `policy`, calling `progress(received, total)` as bytes
/// arrive (`total` when the server announced it; after a restart `received` goes back
/// to 0), and checks it against `pin` (sha256 hex) at the end.
pub fn fetch(
    url: &str,
    policy: &FetchPolicy,
    pin: Option<&str>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<u8>, FetchError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !(scheme.as_deref() == Some("https")
        || (policy.allow_http && scheme.as_deref() == Some("http")))
    {
        return Err(FetchError::SchemeNotAllowed {
            url: url.into(),
            http_allowed: policy.allow_http,
        });
    }
    let uri: Uri =
        url.parse()
            .map_err(|e: ureq::http::uri::InvalidUri| FetchError::InvalidUrl {
                url: url.into(),
                why: e.to_string(),
            })?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") if policy.allow_http => 80,
        _ => {
            return Err(FetchError::SchemeNotAllowed {
                url: url.into(),
                http_allowed: policy.allow_http,
            });
        }
    };
    let (host, port) = authority(&uri).ok_or_else(|| FetchError::InvalidUrl {
        url: url.into(),
        why: "no host".into(),
    })?;
    let host_port = format!("{host}:{port}");
    if !listed(&policy.allowed_hosts, &host, port, default_port) {
        return Err(FetchError::HostNotAllowed { host: host_port });
    }
    let pin = match pin {
        Some(p) => Some(normalise_pin(p).map_err(|_| FetchError::InvalidPin { pin: p.into() })?),
        None if listed(&policy.trusted_hosts, &host, port, default_port) => None,
        None => return Err(FetchError::PinRequired { host: host_port }),
    };

    let start = Instant::now();
    let mut buf: Vec<u8> = Vec::new();
    let mut resumable = false;
    let mut total: Option<u64> = None;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = policy
            .timeout
            .checked_sub(start.elapsed())
            .ok_or(FetchError::TimedOut(policy.timeout))?;
        let resume_from = if resumable && !buf.is_empty() {
            Some(buf.len() as u64)
        } else {
            buf.clear();
            None
        };
        match attempt(
            url,
            policy,
            left,
            resume_from,
            &mut buf,
            &mut total,
            &mut resumable,
            progress,
        ) {
            Ok(()) => break,
            Err(Broken::Fatal(e)) => return Err(e),
            Err(Broken::Retry(why)) => {
                if start.elapsed() >= policy.timeout {
                    return Err(FetchError::TimedOut(policy.timeout));
                }
                if attempts > policy.retries {
                    return Err(FetchError::Failed {
                        attempts,
                        last: why,
                    });
                }
            }
        }
    }
    if let Some(expected) = pin {
        let actual = hex::encode(Sha256::digest(&buf));
        if actual != expected {
            return Err(FetchError::PinMismatch { expected, actual });
        }
    }
    Ok(buf)
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    url: &str,
    policy: &FetchPolicy,
    left: Duration,
    resume_from: Option<u64>,
    buf: &mut Vec<u8>,
    total: &mut Option<u64>,
    resumable: &mut bool,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<(), Broken> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(left))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .https_only(!policy.allow_http)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(from) = resume_from {
        req = req.header("Range", format!("bytes={from}-"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            return Err(Broken::Fatal(FetchError::TimedOut(policy.timeout)));
        }
        Err(e) => return Err(Broken::Retry(e.to_string())),
    };
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if status.is_redirection() {
        return Err(Broken::Fatal(FetchError::Redirect {
            url: url.into(),
            location: header("location").unwrap_or_default(),
        }));
    }
    let length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    match (resume_from, status) {
        (Some(from), StatusCode::PARTIAL_CONTENT) => {
            // `Content-Range: bytes FROM-END/TOTAL` must start where we stopped.
            let range = header("content-range").unwrap_or_default();
            let ok = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('-'))
                .and_then(|(s, _)| s.trim().parse::<u64>().ok())
                == Some(from);
            if !ok {
                buf.clear();
                *resumable = false;
                return Err(Broken::Retry(format!(
                    "the server resumed at the wrong place (Content-Range: {range}); restarting"
                )));
            }
            if let Some((_, t)) = range.rsplit_once('/') {
                *total = t.trim().parse().ok().or(*total);
            }
        }
        (_, StatusCode::OK) => {
            // A full answer: start over (the server ignored the range, or this is the
            // first attempt).
            buf.clear();
            *total = length;
            *resumable = header("accept-ranges").is_some_and(|v| v.trim() == "bytes");
        }
        (_, s) => {
            let e = FetchError::Status {
                url: url.into(),
                status: s.as_u16(),
            };
            return Err(if s.is_server_error() {
                Broken::Retry(e.to_string())
            } else {
                Broken::Fatal(e)
            });
        }
    }
    if let Some(t) = *total
        && t > policy.max_bytes
    {
        return Err(Broken::Fatal(FetchError::TooLarge {
            limit: policy.max_bytes,
            seen: format!("announced {t} bytes"),
        }));
    }
    if resume_from.is_some() {
        *resumable = true;
    }
    progress(buf.len() as u64, *total);
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut chunk = vec![0u8; 64 << 10];
    let started = Instant::now();
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if buf.len() as u64 + n as u64 > policy.max_bytes {
                    return Err(Broken::Fatal(FetchError::TooLarge {
                        limit: policy.max_bytes,
                        seen: format!("received more than {} bytes", policy.max_bytes),
                    }));
                }
                buf.extend_from_slice(&chunk[..n]);
                progress(buf.len() as u64, *total);
            }
            Err(e) => {
                if started.elapsed() >= left {
                    return Err(Broken::Fatal(FetchError::TimedOut(policy.timeout)));
                }
                return Err(Broken::Retry(format!("connection broken: {e}")));
            }
        }
    }
    if let Some(t) = *total
        && (buf.len() as u64) < t
    {
        return Err(Broken::Retry(format!(
            "connection closed after {} of {t} bytes",
            buf.len()
        )));
    }
    Ok(())
}
