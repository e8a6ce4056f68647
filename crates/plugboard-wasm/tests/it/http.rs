//! The `http` capability against real HTTP servers on loopback: a granted origin works; no
//! grant, an origin or port not granted, a name resolving to loopback, a redirect to an
//! address or origin not granted, and IPv6 forms of loopback are refused; a response bomb
//! is cut at its cap and a stalling server at the call's deadline; requests, bytes,
//! failures and denials are counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_core::EventInfo;
use plugboard_engine::{CallOptions, Engine, Registration};
use plugboard_wasm::{HttpAccess, HttpPolicy, Limits, WasmPlugin};
use serde_json::{Value, json};

use crate::{add, host};

/// A test policy: origins as `(https, host, port)`, and the addresses written by the
/// operator (granted even if loopback).
struct Origins {
    origins: Vec<(bool, String, u16)>,
    addresses: Vec<(IpAddr, u16)>,
}

impl HttpPolicy for Origins {
    fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        self.origins
            .iter()
            .any(|(s, h, p)| *s == https && h == host && *p == port)
    }
    fn allows_address(&self, _https: bool, ip: IpAddr, port: u16) -> bool {
        self.addresses.iter().any(|(a, p)| *a == ip && *p == port)
    }
}

/// A loopback server answering every request with `respond(path)` (the raw response
/// bytes; `None`: accept and never answer).
fn server(respond: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let respond = respond.clone();
            std::thread::spawn(move || serve_one(stream, &*respond));
        }
    });
    port
}

fn serve_one(mut stream: TcpStream, respond: &dyn Fn(&str) -> Option<Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    match respond(&path) {
        Some(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        // Stall: hold the connection open, answer nothing.
        None => std::thread::sleep(Duration::from_secs(120)),
    }
}

fn ok(body: &str) -> Option<Vec<u8>> {
    Some(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn redirect(to: &str) -> Option<Vec<u8>> {
    Some(
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

struct Fetcher {
    engine: Engine,
    plugin: Arc<WasmPlugin>,
}

impl Fetcher {
    fn new(deadline: Duration) -> Fetcher {
        let engine = Engine::builder().reference_events(false).build();
        engine
            .declare_dynamic(EventInfo::dynamic("on_reach_fetch", "test", "fetch"))
            .unwrap();
        let limits = Limits {
            deadline,
            ..Limits::default()
        };
        let plugin = Arc::new(
            host()
                .load_file("fetcher", &crate::component("fetch"), limits)
                .unwrap(),
        );
        add(
            &engine,
            "on_reach_fetch",
            plugin.clone(),
            Registration::new("fetcher"),
        );
        Fetcher { engine, plugin }
    }

    fn grant(&self, origins: &[(&str, u16)], addresses: &[(&str, u16)], max_response: u64) {
        let mut access = HttpAccess::new(Arc::new(Origins {
            origins: origins
                .iter()
                .map(|(h, p)| (false, (*h).to_owned(), *p))
                .collect(),
            addresses: addresses
                .iter()
                .map(|(a, p)| (a.parse().unwrap(), *p))
                .collect(),
        }));
        access.max_response_body = max_response;
        self.plugin.set_http(Some(access));
    }

    fn fetch(&self, url: &str) -> Value {
        self.engine
            .call_json(
                "on_reach_fetch",
                json!({ "url": url }),
                &CallOptions::default(),
            )
            .unwrap()
    }
}

fn refused(out: &Value, code: &str) {
    println!("{code}: {out}");
    let phrase = match code {
        "HttpRequestDenied" => "denied",
        "DestinationIpProhibited" => "prohibited",
        "HttpResponseBodySize" => "body size exceeds limit",
        other => other,
    };
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|e| e.contains(code) || e.to_lowercase().contains(phrase)),
        "expected {code}: {out}"
    );
}

#[test]
fn a_granted_origin_is_reached_and_everything_else_is_refused() {
    let target = server(|_| ok("hello from loopback"));
    let other = server(|_| ok("should never be reached"));
    let redirecting = server(move |path| match path {
        "/to-other" => redirect(&format!("http://127.0.0.1:{other}/")),
        "/to-name" => redirect(&format!("http://localhost:{other}/")),
        _ => redirect(&format!("http://127.0.0.1:{target}/")),
    });
    let f = Fetcher::new(Duration::from_secs(60));
    let url = format!("http://127.0.0.1:{target}/");

    // Not granted at all.
    refused(&f.fetch(&url), "HttpRequestDenied");

    // Granted by address: reached.
    f.grant(
        &[
            ("127.0.0.1", target),
            ("127.0.0.1", redirecting),
            // Names and forms of loopback granted as origins, never as addresses.
            ("localhost", other),
            ("::ffff:127.0.0.1", other),
        ],
        &[("127.0.0.1", target), ("127.0.0.1", redirecting)],
        1 << 20,
    );
    let out = f.fetch(&url);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], "hello from loopback");

    // Another port of the same address: not granted.
    refused(
        &f.fetch(&format!("http://127.0.0.1:{other}/")),
        "HttpRequestDenied",
    );
    // HTTPS to the granted port: another origin.
    refused(
        &f.fetch(&format!("https://127.0.0.1:{target}/")),
        "HttpRequestDenied",
    );
    // A granted name that resolves to loopback: the address was not granted.
    refused(
        &f.fetch(&format!("http://localhost:{other}/")),
        "DestinationIpProhibited",
    );
    // The IPv4-mapped IPv6 form of the granted loopback address is another address.
    refused(
        &f.fetch(&format!("http://[::ffff:127.0.0.1]:{other}/")),
        "DestinationIpProhibited",
    );
    // A redirect to the granted origin is followed; to another port or to a name for
    // loopback, refused at the hop.
    let out = f.fetch(&format!("http://127.0.0.1:{redirecting}/"));
    assert_eq!(
        (out["status"].clone(), out["hops"].clone()),
        (json!(200), json!(1)),
        "{out}"
    );
    let out = f.fetch(&format!("http://127.0.0.1:{redirecting}/to-other"));
    refused(&out, "HttpRequestDenied");
    assert_eq!(out["hops"], 1);
    refused(
        &f.fetch(&format!("http://127.0.0.1:{redirecting}/to-name")),
        "DestinationIpProhibited",
    );

    // Revoked live: refused again.
    f.plugin.set_http(None);
    refused(&f.fetch(&url), "HttpRequestDenied");

    let counts = f.plugin.http_counts();
    // Requests to a granted origin (the two refused by address among them); every
    // refusal, by origin or address.
    assert_eq!(counts.requests, 8, "{counts:?}");
    assert_eq!(counts.denied, 8, "{counts:?}");
    assert_eq!(counts.failures, 0, "{counts:?}");
    assert_eq!(
        counts.bytes_received,
        2 * "hello from loopback".len() as u64
    );
}

#[test]
fn a_response_bomb_is_cut_at_its_cap_and_a_stalling_server_at_the_deadline() {
    let bomb = server(|_| {
        let body = vec![b'x'; 8 << 20];
        let mut r = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(&body);
        Some(r)
    });
    let chunked_bomb = server(|_| {
        let mut r =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
        for _ in 0..256 {
            r.extend_from_slice(format!("{:x}\r\n", 32 << 10).as_bytes());
            r.extend_from_slice(&vec![b'y'; 32 << 10]);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        Some(r)
    });
    let stall = server(|_| None);

    let f = Fetcher::new(Duration::from_secs(60));
    f.grant(
        &[("127.0.0.1", bomb), ("127.0.0.1", chunked_bomb)],
        &[("127.0.0.1", bomb), ("127.0.0.1", chunked_bomb)],
        1 << 20,
    );
    refused(
        &f.fetch(&format!("http://127.0.0.1:{bomb}/")),
        "HttpResponseBodySize",
    );
    refused(
        &f.fetch(&format!("http://127.0.0.1:{chunked_bomb}/")),
        "HttpResponseBodySize",
    );
    assert!(f.plugin.http_counts().bytes_received <= 1 << 20);

    // A server that never answers: the call ends at the plugin's deadline (2 s), as a
    // failure of the call or an error the plugin sees, never a hang.
    let f = Fetcher::new(Duration::from_secs(2));
    f.grant(&[("127.0.0.1", stall)], &[("127.0.0.1", stall)], 1 << 20);
    let started = Instant::now();
    let out = f.engine.call_json(
        "on_reach_fetch",
        json!({ "url": format!("http://127.0.0.1:{stall}/") }),
        &CallOptions::default(),
    );
    let took = started.elapsed();
    match &out {
        Ok(v) => assert!(v["error"].is_string(), "{v}"),
        Err(e) => assert!(e.to_string().contains("deadline"), "{e}"),
    }
    assert!(took < Duration::from_secs(30), "took {took:?}: {out:?}");
    println!("a stalled request ended after {took:?} (deadline 2 s): {out:?}");
    // When the call ends in its wait, the request is dropped unfinished, and counted as it
    // is dropped, on the runtime's thread: soon, not necessarily before the call returns.
    let counted = Instant::now();
    while f.plugin.http_counts().failures == 0 && counted.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(f.plugin.http_counts().failures, 1);
}
