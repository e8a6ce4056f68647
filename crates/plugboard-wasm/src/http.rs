//! The `http` capability: plugins send requests through the standard
//! `wasi:http/outgoing-handler`, so that ordinary HTTP clients work in them, and the host
//! sends each one itself, after checking it:
//!
//! - the origin (scheme, host, port) must be one the plugin was granted ([`HttpPolicy`]);
//! - the host name is resolved here, and an address that is loopback, private,
//!   link-local, unspecified, multicast or otherwise not public is refused unless the
//!   operator granted that address by writing it; the connection goes to the address that
//!   was checked (no second lookup, so no DNS rebinding);
//! - redirects are not followed here: a guest's client that follows one sends a new
//!   request, checked again;
//! - request and response bodies are capped, and the whole exchange (connecting, the
//!   response and every byte of its body) ends at the plugin's call deadline.
//!
//! Requests, bytes and failures are counted per plugin ([`HttpCounts`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What a plugin may reach over HTTP: given by whoever loads it (the installer, from the
/// package's grants). Asked on every request, so a change applies to the next one.
pub trait HttpPolicy: Send + Sync {
    /// Whether requests to `scheme://host:port` are allowed (`https` or not).
    fn allows(&self, https: bool, host: &str, port: u16) -> bool;
    /// Whether this exact address was granted (a loopback or private address is refused
    /// unless it was).
    fn allows_address(&self, https: bool, ip: IpAddr, port: u16) -> bool;
}

/// The `http` capability as granted to a plugin: its policy and body caps.
#[derive(Clone)]
pub struct HttpAccess {
    /// Which origins and addresses.
    pub policy: Arc<dyn HttpPolicy>,
    /// The largest request body sent, in bytes.
    pub max_request_body: u64,
    /// The largest response body received, in bytes.
    pub max_response_body: u64,
}

impl HttpAccess {
    /// Default caps: 1 MiB out, 4 MiB in.
    pub fn new(policy: Arc<dyn HttpPolicy>) -> HttpAccess {
        HttpAccess {
            policy,
            max_request_body: 1 << 20,
            max_response_body: 4 << 20,
        }
    }
}

/// A plugin's outbound HTTP, counted since it was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounts {
    /// Requests to a granted origin (sent, or refused for their address).
    pub requests: u64,
    /// Requests refused by the policy (origin or address) or for lack of the capability.
    pub denied: u64,
    /// Requests that failed (connection, TLS, timeout, a body over its cap, a protocol
    /// error).
    pub failures: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
}

/// The counters behind [`HttpCounts`], shared by a plugin's instances.
#[derive(Default)]
pub(crate) struct HttpStats {
    requests: AtomicU64,
    denied: AtomicU64,
    failures: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl HttpStats {
    pub(crate) fn counts(&self) -> HttpCounts {
        HttpCounts {
            requests: self.requests.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}

/// Whether an address is one a plugin reaches only when the operator wrote it: anything
/// but a public unicast address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // IETF protocol assignments, 192.0.0.0/24; benchmarking, 198.18.0.0/15;
                // reserved, 240.0.0.0/4.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // Unique local fc00::/7, link-local fe80::/10, site-local fec0::/10.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                // IPv4-compatible (deprecated) ::a.b.c.d, NAT64 64:ff9b::/96, 6to4
                // 2002::/16 and Teredo 2001::/32 embed IPv4 addresses: refused whole.
                || (s[0..6] == [0, 0, 0, 0, 0, 0])
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                // Documentation 2001:db8::/32.
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// The `wasi:http` hooks of one plugin instance: the access it has now, its counters, and
/// the current call's deadline.
pub(crate) struct PluginHttp {
    pub(crate) plugin: Arc<str>,
    pub(crate) access: Arc<RwLock<Option<HttpAccess>>>,
    pub(crate) stats: Arc<HttpStats>,
    pub(crate) deadline: Instant,
    pub(crate) denied: crate::host::DeniedSink,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl PluginHttp {
    fn refuse(&self, why: &str, report: bool) -> SendFuture {
        self.stats.denied.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(plugin = %self.plugin, "outbound HTTP refused: {why}");
        if report && let Some(hook) = self.denied.read().ok().and_then(|h| h.clone()) {
            hook(&self.plugin, "http");
        }
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

impl WasiHttpHooks for PluginHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let Some(access) = self.access.read().ok().and_then(|a| a.clone()) else {
            return self.refuse(
                "the plugin is not granted the `http` capability (a package asks for it under [capabilities] http)",
                true,
            );
        };
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let Some(host) = uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !access.policy.allows(https, &host, port) {
            let scheme = if https { "https" } else { "http" };
            return self.refuse(
                &format!("{scheme}://{host}:{port} is not among the origins it is granted"),
                true,
            );
        }
        let stats = self.stats.clone();
        let plugin = self.plugin.clone();
        let deadline = tokio::time::Instant::from_std(self.deadline);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        // The call can end at its deadline (the guest's wait for the answer is cut there)
        // before this future sees its own timeout: dropped unfinished, it is a failure.
        let mut unfinished = Unfinished(Some(stats.clone()));
        Box::new(async move {
            let sent = tokio::time::timeout_at(
                deadline,
                send(request, &access, https, &host, port, deadline, &stats),
            )
            .await
            .unwrap_or(Err(Error::ConnectionTimeout));
            unfinished.finished();
            match sent {
                Ok(response) => Ok((
                    response,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                )),
                Err(e) => {
                    if matches!(e, Error::DestinationIpProhibited) {
                        stats.denied.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::info!(plugin = %plugin, host, port, error = ?e, "outbound HTTP request failed");
                    Err(e)
                }
            }
        })
    }
}

/// Counts a request as failed when its future is dropped before it finished.
struct Unfinished(Option<Arc<HttpStats>>);

impl Unfinished {
    /// It finished (its outcome is counted where it is known).
    fn finished(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(stats) = self.0.take() {
            stats.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resolves, checks, connects and sends; the response's body is capped and ends at the
/// deadline.
async fn send(
    mut request: http::Request<WasiBody>,
    access: &HttpAccess,
    https: bool,
    host: &str,
    port: u16,
    deadline: tokio::time::Instant,
    stats: &Arc<HttpStats>,
) -> Result<http::Response<WasiBody>, Error> {
    let addr = resolve(access, https, host, port).await?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
            _ => Error::Connect(e),
        })?;
    let io: Box<dyn Io> = if https {
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => tokio_rustls::rustls::pki_types::ServerName::from(ip),
            Err(_) => tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .map_err(|_| Error::TlsCertificateError)?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io))
            .await
            .map_err(|_| Error::HttpProtocolError)?;
    // The connection is driven beside the request; it ends with the response's body (or
    // when everything is dropped at the deadline).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The request line carries the path only (the origin is the connection's).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let max_out = access.max_request_body;
    if let Some(len) = request.body().size_hint().exact()
        && len > max_out
    {
        return Err(Error::HttpRequestBodySize(Some(len)));
    }
    let request = request.map(|body| {
        Capped {
            inner: body,
            left: max_out,
            counter: CountInto::Sent(stats.clone()),
            over: |cap| Error::HttpRequestBodySize(Some(cap)),
            cap: max_out,
            deadline: None,
        }
        .boxed_unsync()
    });
    let response = sender.send_request(request).await.map_err(Error::from)?;
    let max_in = access.max_response_body;
    if let Some(len) = response.body().size_hint().exact()
        && len > max_in
    {
        return Err(Error::HttpResponseBodySize(Some(len)));
    }
    Ok(response.map(|body| {
        Capped {
            inner: body.map_err(Error::from),
            left: max_in,
            counter: CountInto::Received(stats.clone()),
            over: |cap| Error::HttpResponseBodySize(Some(cap)),
            cap: max_in,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        .boxed_unsync()
    }))
}

/// The address to connect to: the host's own if it is an address, else the first
/// resolved address that is public or was granted by writing it.
async fn resolve(
    access: &HttpAccess,
    https: bool,
    host: &str,
    port: u16,
) -> Result<SocketAddr, Error> {
    let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Error::DestinationNotFound)?
            .collect(),
    };
    if candidates.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    candidates
        .into_iter()
        .find(|a| !is_internal(a.ip()) || access.policy.allows_address(https, a.ip(), port))
        .ok_or(Error::DestinationIpProhibited)
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    use std::sync::OnceLock;
    static CONFIG: OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                // The ring provider supports the default versions; kept total anyway.
                tokio_rustls::rustls::ClientConfig::builder()
                    .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
                    .with_no_client_auth()
            }),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// Which counter a body's bytes go to.
enum CountInto {
    Sent(Arc<HttpStats>),
    Received(Arc<HttpStats>),
}

/// A body capped in bytes and, for responses, in time.
struct Capped<B> {
    inner: B,
    left: u64,
    counter: CountInto,
    /// The error past the cap (`cap` bytes).
    over: fn(u64) -> Error,
    cap: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes, Error = Error> + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        return Poll::Ready(Some(Err((this.over)(this.cap))));
                    }
                    this.left -= n;
                    match &this.counter {
                        CountInto::Sent(s) => s.bytes_sent.fetch_add(n, Ordering::Relaxed),
                        CountInto::Received(s) => s.bytes_received.fetch_add(n, Ordering::Relaxed),
                    };
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let passed = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if passed {
                    Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::is_internal;

    #[test]
    fn internal_addresses_are_recognised_in_every_form() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001::1",
            "ff02::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
