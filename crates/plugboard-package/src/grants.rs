//! Capabilities: what a package asks for under `[capabilities]`, and what an operator
//! grants it. Both are a [`Capabilities`] value; a package runs with the capabilities it
//! asked for *and* was granted, nothing else.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One kind of capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// `host.log`: write to the host's log, under a per-second budget.
    Log,
    /// `host.settings`: read the package's settings.
    Settings,
    /// `host.now-ms` and the WASI clocks (without it they stand still at the epoch).
    Clock,
    /// WASI random numbers (without it they are a fixed sequence).
    Random,
    /// `kv`: the package's own key-value data, under the operator's quota.
    Kv,
    /// `wasi:http/outgoing-handler`: HTTP requests to the listed origins.
    Http,
    /// `emit`: fire the listed events, fire-and-forget.
    Emit,
}

impl Capability {
    /// Every capability, in display order.
    pub const ALL: [Capability; 7] = [
        Capability::Log,
        Capability::Settings,
        Capability::Clock,
        Capability::Random,
        Capability::Kv,
        Capability::Http,
        Capability::Emit,
    ];

    /// Its name in manifests, grants and messages.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Settings => "settings",
            Capability::Clock => "clock",
            Capability::Random => "random",
            Capability::Kv => "kv",
            Capability::Http => "http",
            Capability::Emit => "emit",
        }
    }

    /// The capability with this name.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What it lets a plugin do, in words (for consent prompts).
    pub fn describe(self) -> &'static str {
        match self {
            Capability::Log => "write lines to the host's log",
            Capability::Settings => "read the settings an operator gives it",
            Capability::Clock => "read the current time",
            Capability::Random => "draw random numbers",
            Capability::Kv => "keep its own key-value data in the host's database (under a quota)",
            Capability::Http => "send HTTP requests",
            Capability::Emit => "fire other events (fire-and-forget)",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scheme of an HTTP origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

impl Scheme {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// An origin a plugin may send HTTP requests to: scheme, host and port. Written
/// `https://api.example.com`, `api.example.com` (HTTPS on 443), `http://127.0.0.1:8080`
/// or `https://*.example.com` (any subdomain; only where it is written).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpTarget {
    /// The scheme.
    pub scheme: Scheme,
    /// The host, lowercase: a DNS name, `*.` and a DNS name, or an IP address (IPv6
    /// without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HttpTarget {
    /// `*` in a manifest: whichever origins the operator grants (a webhook whose URL is a
    /// setting). Never granted itself: an operator grants origins by name.
    pub fn any() -> HttpTarget {
        HttpTarget {
            scheme: Scheme::Https,
            host: "*".to_owned(),
            port: 0,
        }
    }

    /// Whether this is `*` ([`HttpTarget::any`]).
    pub fn is_any(&self) -> bool {
        self.host == "*"
    }

    /// Parses an origin as written in a manifest or a grant.
    pub fn parse(text: &str) -> Result<HttpTarget, String> {
        let t = text.trim();
        if t == "*" {
            return Ok(HttpTarget::any());
        }
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, r),
            Some((s, r)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, r),
            Some((s, _)) => {
                return Err(format!(
                    "`{t}`: the scheme must be http or https, not `{s}`"
                ));
            }
            None => (Scheme::Https, t),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{t}`: an origin is a scheme, a host and a port only (no path, query or user)"
            ));
        }
        // `[v6]:port`, `[v6]`, `host:port`, `host`.
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| format!("`{t}`: an IPv6 address needs its closing `]`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("`{t}`: unexpected `{p}` after the address"))?,
                ),
            };
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("`{t}`: `{h}` is not an IPv6 address"));
            }
            (h.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (rest.to_owned(), None),
            }
        };
        let port = match port {
            None => scheme.default_port(),
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{t}`: `{p}` is not a port (1–65535)"))?,
        };
        let host = host.to_ascii_lowercase();
        if host.parse::<IpAddr>().is_err() {
            let name = host.strip_prefix("*.").unwrap_or(&host);
            let valid_label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
                return Err(format!(
                    "`{t}`: `{host}` is not a host name or an IP address (a wildcard is `*.` before a name)"
                ));
            }
            if host.starts_with("*.") && !name.contains('.') {
                return Err(format!(
                    "`{t}`: a wildcard must keep at least two labels (`*.example.com`, not `*.com`)"
                ));
            }
        }
        Ok(HttpTarget { scheme, host, port })
    }

    /// Whether this is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }

    /// The IP address it names, if its host is one (an operator who writes an address
    /// grants that address, private or not).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether a request to `scheme://host:port` is within this origin.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if self.is_any() || scheme != self.scheme || port != self.port {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        match self.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => match (self.ip(), host.parse::<IpAddr>()) {
                (Some(a), Ok(b)) => a == b,
                _ => host == self.host,
            },
        }
    }

    /// Whether this origin covers `other` (every request `other` allows, this allows).
    pub fn covers(&self, other: &HttpTarget) -> bool {
        if self.is_any() || other.is_any() {
            return false;
        }
        if other.is_wildcard() {
            // A wildcard is covered by the same wildcard or a wider one.
            return self.scheme == other.scheme
                && self.port == other.port
                && (self.host == other.host
                    || self.allows(other.scheme, &other.host[2..], other.port)
                        && self.is_wildcard());
        }
        self.allows(other.scheme, &other.host, other.port)
    }
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            return f.write_str("*");
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

impl TryFrom<String> for HttpTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HttpTarget::parse(&s)
    }
}

impl From<HttpTarget> for String {
    fn from(t: HttpTarget) -> String {
        t.to_string()
    }
}

/// A set of capabilities with their scopes: what a package asks for (`[capabilities]` in
/// its manifest) or what an operator granted it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `host.log`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// `host.settings`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settings: bool,
    /// `host.now-ms` and the WASI clocks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock: bool,
    /// WASI random numbers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub random: bool,
    /// `kv`: the package's own key-value data (contract 0.3), under the operator's quota.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kv: bool,
    /// Outbound HTTP to these origins (contract 0.3, `wasi:http`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpTarget>,
    /// The events it may fire (contract 0.3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emit: Vec<String>,
}

/// Why a grant written by an operator could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("grant `{item}`: {why}")]
pub struct GrantError {
    /// The item of the grant.
    pub item: String,
    /// What is wrong with it.
    pub why: String,
}

impl Capabilities {
    /// Nothing.
    pub fn none() -> Capabilities {
        Capabilities::default()
    }

    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        *self == Capabilities::default()
    }

    /// The kinds in it, in display order.
    pub fn kinds(&self) -> Vec<Capability> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .collect()
    }

    /// Whether it holds this kind (with any scope).
    pub fn has(&self, c: Capability) -> bool {
        match c {
            Capability::Log => self.log,
            Capability::Settings => self.settings,
            Capability::Clock => self.clock,
            Capability::Random => self.random,
            Capability::Kv => self.kv,
            Capability::Http => !self.http.is_empty(),
            Capability::Emit => !self.emit.is_empty(),
        }
    }

    /// What is in `self` and not covered by `granted`: what a package asks for beyond
    /// its grants.
    pub fn missing(&self, granted: &Capabilities) -> Capabilities {
        self.without(granted)
    }

    /// What a package asking for `self` runs with under `granted`: only what it asked
    /// for, only where granted (an upgrade asking for less drops the rest).
    pub fn within(&self, granted: &Capabilities) -> Capabilities {
        Capabilities {
            log: self.log && granted.log,
            settings: self.settings && granted.settings,
            clock: self.clock && granted.clock,
            random: self.random && granted.random,
            kv: self.kv && granted.kv,
            http: if self.http.iter().any(HttpTarget::is_any) {
                // Asked for `*`: whichever origins were granted.
                granted
                    .http
                    .iter()
                    .filter(|g| !g.is_any())
                    .cloned()
                    .collect()
            } else {
                self.http
                    .iter()
                    .filter(|a| granted.http.iter().any(|g| g.covers(a)))
                    .cloned()
                    .collect()
            },
            emit: self
                .emit
                .iter()
                .filter(|e| granted.emit.contains(e))
                .cloned()
                .collect(),
        }
    }

    /// Everything in either.
    pub fn union(&self, other: &Capabilities) -> Capabilities {
        let merge = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter()
                .chain(b)
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        Capabilities {
            log: self.log || other.log,
            settings: self.settings || other.settings,
            clock: self.clock || other.clock,
            random: self.random || other.random,
            kv: self.kv || other.kv,
            http: self
                .http
                .iter()
                .chain(&other.http)
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            emit: merge(&self.emit, &other.emit),
        }
    }

    /// `self` without what is in `gone` (a revocation). Revoking `http` or `emit` with
    /// no scope revokes every scope.
    pub fn without(&self, gone: &Capabilities) -> Capabilities {
        Capabilities {
            log: self.log && !gone.log,
            settings: self.settings && !gone.settings,
            clock: self.clock && !gone.clock,
            random: self.random && !gone.random,
            kv: self.kv && !gone.kv,
            http: self
                .http
                .iter()
                .filter(|t| {
                    if t.is_any() {
                        // `*` is met by any origin named (never by `*`).
                        !gone.http.iter().any(|g| !g.is_any())
                    } else {
                        !gone.http.iter().any(|g| g.covers(t))
                    }
                })
                .cloned()
                .collect(),
            emit: self
                .emit
                .iter()
                .filter(|e| !gone.emit.contains(e))
                .cloned()
                .collect(),
        }
    }

    /// One line per capability with its scope, in words: what a consent prompt shows.
    pub fn describe(&self) -> Vec<String> {
        self.kinds()
            .into_iter()
            .map(|c| match c {
                Capability::Http => {
                    format!("http      {} to {}", c.describe(), self.origins_text())
                }
                Capability::Emit => {
                    format!("emit      {}: {}", c.describe(), self.emit.join(", "))
                }
                c => format!("{:<9} {}", c.name(), c.describe()),
            })
            .collect()
    }

    /// The origins, as a consent prompt says them.
    fn origins_text(&self) -> String {
        self.http
            .iter()
            .map(|t| {
                if t.is_any() {
                    "origins you choose (grant each as http=ORIGIN)".to_owned()
                } else {
                    t.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One phrase for messages: `kv (keep its own …); http (send HTTP requests to …)`.
    pub fn summary(&self) -> String {
        self.kinds()
            .into_iter()
            .map(|c| match c {
                Capability::Http => format!("http ({} to {})", c.describe(), self.origins_text()),
                Capability::Emit => format!("emit ({}: {})", c.describe(), self.emit.join(", ")),
                c => format!("{c} ({})", c.describe()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The grant as an operator writes it (`log,kv,http=https://api.example.com:443`):
    /// what [`Capabilities::parse_grant`] reads back.
    pub fn to_grant(&self) -> String {
        let mut items = Vec::new();
        for c in self.kinds() {
            match self.scopes(c) {
                scopes if scopes.is_empty() => items.push(c.name().to_owned()),
                scopes => items.extend(scopes.iter().map(|s| format!("{c}={s}"))),
            }
        }
        items.join(",")
    }

    /// A capability's scopes as written (origins for `http`, events for `emit`; none for
    /// the others).
    pub fn scopes(&self, c: Capability) -> Vec<String> {
        match c {
            Capability::Http => self.http.iter().map(ToString::to_string).collect(),
            Capability::Emit => self.emit.clone(),
            _ => Vec::new(),
        }
    }

    /// Reads a grant as an operator writes it: `all` (everything `asked` holds), `none`,
    /// or comma-separated items (spaces around them allowed, no empty ones), each a capability's name or `http=ORIGIN` / `emit=EVENT`
    /// (repeat the item for more scopes; `http` or `emit` alone grants every scope
    /// `asked` holds).
    pub fn parse_grant(text: &str, asked: &Capabilities) -> Result<Capabilities, GrantError> {
        let mut out = Capabilities::default();
        for item in text.split(',').map(|i| i.trim_matches(' ')) {
            let err = |why: String| GrantError {
                item: item.to_owned(),
                why,
            };
            if item.is_empty() {
                return Err(err(
                    "an empty item: capabilities are written `kv,log,http=ORIGIN`".into(),
                ));
            }
            let (name, scope) = match item.split_once('=') {
                Some((n, s)) => (n, Some(s)),
                None => (item, None),
            };
            if name == "all" && scope.is_none() {
                out = out.union(asked);
                continue;
            }
            if name == "none" && scope.is_none() {
                continue;
            }
            let c = Capability::from_name(name).ok_or_else(|| {
                err(format!(
                    "no capability is called `{name}` (they are {}, or `all`/`none`)",
                    Capability::ALL.map(Capability::name).join(", ")
                ))
            })?;
            match (c, scope) {
                (Capability::Http, Some("*")) => {
                    return Err(err(
                        "grant origins by name (`http=hooks.example.com`); `*` is how a package asks for the origins you choose".into(),
                    ));
                }
                (Capability::Http, Some(s)) => out.http.push(HttpTarget::parse(s).map_err(err)?),
                (Capability::Emit, Some(s)) => {
                    if let Some(why) = plugboard_core::invalid_name(s) {
                        return Err(err(format!("`{s}` is not an event name: {why}")));
                    }
                    out.emit.push(s.to_owned());
                }
                (Capability::Http, None) => out.http.extend(asked.http.iter().cloned()),
                (Capability::Emit, None) => out.emit.extend(asked.emit.iter().cloned()),
                (c, Some(_)) => return Err(err(format!("`{c}` takes no scope"))),
                (Capability::Log, None) => out.log = true,
                (Capability::Settings, None) => out.settings = true,
                (Capability::Clock, None) => out.clock = true,
                (Capability::Random, None) => out.random = true,
                (Capability::Kv, None) => out.kv = true,
            }
        }
        // Sorted and without duplicates, as stored.
        Ok(out.union(&Capabilities::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_print_canonically() {
        for (text, shown) in [
            ("api.example.com", "https://api.example.com:443"),
            ("HTTPS://API.example.com/", "https://api.example.com:443"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:9", "http://[::1]:9"),
            ("https://*.example.com", "https://*.example.com:443"),
        ] {
            assert_eq!(HttpTarget::parse(text).unwrap().to_string(), shown);
        }
        for bad in [
            "ftp://x.com",
            "https://x.com/path",
            "https://user@x.com",
            "https://x.com:0",
            "https://x.com:99999",
            "*.com",
            "https://exa mple.com",
            "http://[::1",
            "",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_origin_allows_only_its_scheme_host_and_port() {
        let t = HttpTarget::parse("https://api.example.com").unwrap();
        assert!(t.allows(Scheme::Https, "API.example.com.", 443));
        assert!(!t.allows(Scheme::Http, "api.example.com", 443));
        assert!(!t.allows(Scheme::Https, "api.example.com", 8443));
        assert!(!t.allows(Scheme::Https, "x.api.example.com", 443));
        assert!(!t.allows(Scheme::Https, "api.example.com.evil.org", 443));
        let w = HttpTarget::parse("https://*.example.com").unwrap();
        assert!(w.allows(Scheme::Https, "a.b.example.com", 443));
        assert!(!w.allows(Scheme::Https, "example.com", 443));
        assert!(!w.allows(Scheme::Https, "badexample.com", 443));
        assert!(w.covers(&t));
        assert!(!t.covers(&w));
        let v6 = HttpTarget::parse("http://[::1]:8080").unwrap();
        assert!(v6.allows(Scheme::Http, "[::1]", 8080));
        assert!(v6.allows(Scheme::Http, "0:0:0:0:0:0:0:1", 8080));
    }

    #[test]
    fn grants_read_missing_and_within() {
        let asked = Capabilities {
            kv: true,
            log: true,
            http: vec![
                HttpTarget::parse("api.example.com").unwrap(),
                HttpTarget::parse("hooks.example.org").unwrap(),
            ],
            emit: vec!["on_x".into()],
            ..Capabilities::default()
        };
        assert_eq!(Capabilities::parse_grant("all", &asked).unwrap(), asked);
        assert!(
            Capabilities::parse_grant("none", &asked)
                .unwrap()
                .is_empty()
        );
        let g = Capabilities::parse_grant("kv, http=api.example.com", &asked).unwrap();
        let missing = asked.missing(&g);
        assert_eq!(
            missing.to_grant(),
            "log,http=https://hooks.example.org:443,emit=on_x"
        );
        assert_eq!(
            asked.within(&g).to_grant(),
            "kv,http=https://api.example.com:443"
        );
        assert_eq!(
            Capabilities::parse_grant(&asked.to_grant(), &Capabilities::default()).unwrap(),
            asked
        );
        for (bad, why) in [
            ("disk", "no capability is called `disk`"),
            ("kv=x", "`kv` takes no scope"),
            ("http=ftp://x", "the scheme must be http or https"),
            ("emit=Bad Name", "is not an event name"),
            ("kv,", "an empty item"),
            ("", "an empty item"),
            ("kv =x", "no capability is called `kv `"),
        ] {
            let e = Capabilities::parse_grant(bad, &asked).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        assert!(
            asked
                .without(&Capabilities::parse_grant("http", &asked).unwrap())
                .http
                .is_empty()
        );

        // `*`: whichever origins the operator grants; met by one, never granted itself.
        let webhook = Capabilities {
            http: vec![HttpTarget::any()],
            ..Capabilities::default()
        };
        assert_eq!(
            webhook.missing(&Capabilities::default()).to_grant(),
            "http=*"
        );
        let all = Capabilities::parse_grant("all", &webhook).unwrap();
        assert_eq!(webhook.missing(&all).to_grant(), "http=*");
        assert!(webhook.within(&all).is_empty());
        let g = Capabilities::parse_grant("http=http://127.0.0.1:9000", &webhook).unwrap();
        assert!(webhook.missing(&g).is_empty());
        assert_eq!(webhook.within(&g).to_grant(), "http=http://127.0.0.1:9000");
        assert!(Capabilities::parse_grant("http=*", &webhook).is_err());
        assert!(webhook.summary().contains("origins you choose"));
    }
}
