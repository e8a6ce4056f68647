//! Two hosts (`plugboard serve`) on a PostgreSQL cluster of the test's own, which the test
//! restarts (fast and immediate), stops, stalls (SIGSTOP) and cuts one host off from
//! (`pg_terminate_backend`), while a thread fires calls at both hosts the whole time.
//! Calls never fail; operations while the database is away fail fast with a clear error
//! (503 `store_unavailable`, or a timeout at the configured bound); the hosts reconnect
//! and resynchronise by themselves and converge; nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use plugboard_testkit::PgCluster;
use serde_json::Value;

use crate::{PROMPTLY, Serve, http, serve_on, stdout, wait_for};

/// The store's operation deadline the hosts run with (`PLUGBOARD_DB_TIMEOUT`).
const TIMEOUT: Duration = Duration::from_secs(2);

/// What "at once" means for an operation refused while the database is down: far under
/// the deadline on an idle machine (milliseconds), but a loaded one may not schedule the
/// answer for a while. Any wait on the pool's connection retries would take `TIMEOUT`
/// and show in the figures printed.
const FAIL_FAST: Duration = Duration::from_secs(10);

/// The plugin the test starts and stops: a sample with no dependents.
const PLUGIN: &str = "remember_me";

fn status_on(server: &Serve, plugin: &str) -> Option<String> {
    let (code, body) = http(server, "GET", &format!("/api/plugins/{plugin}"), None);
    (code == 200)
        .then(|| serde_json::from_str::<Value>(&body).ok())
        .flatten()
        .and_then(|v| v["status"].as_str().map(str::to_owned))
}

/// `enable` makes it `restarted`, a start `started`: both run.
fn running(server: &Serve) -> bool {
    matches!(
        status_on(server, PLUGIN).as_deref(),
        Some("started" | "restarted")
    )
}

fn health(server: &Serve) -> Value {
    let (_, body) = http(server, "GET", "/health", None);
    serde_json::from_str(&body).unwrap()
}

fn metric(server: &Serve, name: &str) -> u64 {
    let (code, body) = http(server, "GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// `stop` or `enable` on `server`: the status code, the error code and message, and how
/// long the answer took.
fn act(server: &Serve, action: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (code, body) = http(
        server,
        "POST",
        &format!("/api/plugins/{PLUGIN}/{action}"),
        None,
    );
    (code, body, started.elapsed())
}

/// While the database is away: the operation is refused with a clear error, quickly, and
/// changes nothing.
fn refused_while_away(server: &Serve, what: &str) -> Duration {
    let before = status_on(server, PLUGIN);
    let action = if before.as_deref() == Some("stopped") {
        "enable"
    } else {
        "stop"
    };
    let (code, body, took) = act(server, action);
    assert_eq!(code, 503, "{what}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable", "{what}: {body}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unreachable") || message.contains("did not answer within"),
        "{what}: not a clear message: {message}"
    );
    assert_eq!(
        status_on(server, PLUGIN),
        before,
        "{what}: the refused operation changed the host"
    );
    took
}

/// Fires failed saves at both hosts until stopped; counts calls and failures.
struct Caller {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Caller {
    fn start(servers: [(String, String); 2]) -> Caller {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, c, f) = (stop.clone(), calls.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let servers: Vec<Serve> = servers
                .into_iter()
                .map(|(base, token)| Serve::remote(base, token))
                .collect();
            while !s.load(Relaxed) {
                for server in &servers {
                    let body = r#"{"state": {"error": {"code": "validation_failed", "message": "m", "fields": {}, "details": null}, "ip": "203.0.113.9", "endpoint": "html", "status": "added", "conn": {"method": "POST", "path": "/demo/signup", "headers": {}, "peer": null}, "modifier_user": "self", "extra": null}}"#;
                    let (code, out) = http(
                        server,
                        "POST",
                        "/api/events/on_user_after_save_failure/call",
                        Some(body),
                    );
                    let ok = code == 200
                        && serde_json::from_str::<Value>(&out)
                            .is_ok_and(|v| v.get("error").is_none_or(Value::is_null));
                    if !ok {
                        f.lock().unwrap().push(format!("{code} {out}"));
                    }
                    c.fetch_add(1, Relaxed);
                }
            }
        });
        Caller {
            stop,
            calls,
            failures,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more calls were made (calls go on, whatever the database does).
    fn more(&self, n: u64, what: &str) {
        let from = self.calls.load(Relaxed);
        wait_for(PROMPTLY, &format!("calls go on {what}"), || {
            self.calls.load(Relaxed) >= from + n
        });
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.calls.load(Relaxed), failures)
    }
}

#[test]
fn postgres_restarts_stalls_and_lost_connections_fail_no_call_lose_nothing_acknowledged_and_heal_by_themselves()
 {
    let cluster = PgCluster::private().unwrap();
    let url = cluster.database().unwrap();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&home_a).unwrap();
    std::fs::create_dir_all(&home_b).unwrap();
    // The bundled examples stay out: this test is about the database, not packages.
    let offered = serde_json::json!({ "offered": [
        "wasm-audit-1.0.0.pbpkg", "title-validator-1.0.0.pbpkg", "audit-follower-1.0.0.pbpkg",
        "ip-ban-1.0.0.pbpkg", "site-search-1.0.0.pbpkg", "webhook-1.0.0.pbpkg"] })
    .to_string();
    let cli = |args: &[&str]| {
        crate::plugboard_in(&home_a)
            .env("PLUGBOARD_DATABASE_URL", &url)
            .args(args)
            .output()
            .unwrap()
    };
    stdout(&cli(&["settings", "set", "serve.examples", &offered]));
    let timeout = format!("{}s", TIMEOUT.as_secs());
    let env = [("PLUGBOARD_DB_TIMEOUT", timeout.as_str())];
    let a = serve_on(&home_a, &url, None, &env);
    let url_b = format!("{url}?application_name=plugboard_host_b");
    let b = serve_on(&home_b, &url_b, Some(&a.token), &env);
    for s in [&a, &b] {
        wait_for(PROMPTLY, "the host runs the samples", || running(s));
        assert_eq!(health(s)["ready"], true);
    }
    let caller = Caller::start([
        (a.base.clone(), a.token.clone()),
        (b.base.clone(), b.token.clone()),
    ]);
    caller.more(20, "before any fault");

    // Acknowledged before the database goes away: must survive everything below.
    let (code, body, _) = act(&a, "stop");
    assert_eq!(code, 200, "{body}");
    let converged = wait_for(PROMPTLY, "b applies a's stop", || {
        status_on(&b, PLUGIN).as_deref() == Some("stopped")
    });
    println!("stop on a applied by b in {converged:?}");

    // 1. The database stops (as in a restart's down time).
    let reconnects_b = metric(&b, "plugboard_store_reconnects_total");
    let resyncs_b = metric(&b, "plugboard_store_resyncs_total");
    cluster.stop("fast").unwrap();
    caller.more(20, "while the database is down");
    for s in [&a, &b] {
        wait_for(PROMPTLY, "/health says the store is unreachable", || {
            let h = health(s);
            h["serving"] == true && h["ready"] == false && h["store"]["reachable"] == false
        });
        let (code, _) = http(s, "GET", "/ready", None);
        assert_eq!(code, 503);
    }
    let took = refused_while_away(&a, "database stopped");
    println!("operation while the database is down refused in {took:?}");
    assert!(took < FAIL_FAST, "refused after {took:?}, not at once");
    // The CLI too: a clear error, quickly.
    let started = Instant::now();
    let out = cli(&["stop", PLUGIN]);
    let cli_took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unreachable"), "{err}");
    println!(
        "CLI while the database is down refused in {cli_took:?}: {}",
        err.trim()
    );
    assert!(cli_took < FAIL_FAST);
    cluster.start_again().unwrap();
    for s in [&a, &b] {
        wait_for(PROMPTLY, "/ready once the database is back", || {
            http(s, "GET", "/ready", None).0 == 200
        });
    }
    wait_for(PROMPTLY, "b reconnects and resyncs by itself", || {
        metric(&b, "plugboard_store_reconnects_total") > reconnects_b
            && metric(&b, "plugboard_store_resyncs_total") > resyncs_b
    });
    assert_eq!(
        status_on(&a, PLUGIN).as_deref(),
        Some("stopped"),
        "acknowledged stop lost"
    );
    // Changes flow again, both ways.
    let (code, body, _) = act(&b, "enable");
    assert_eq!(code, 200, "{body}");
    let converged = wait_for(PROMPTLY, "a applies b's start after the outage", || {
        running(&a)
    });
    println!("after the restart, start on b applied by a in {converged:?}");

    // 2. Restarts, fast and immediate, under operations: each either acknowledged (and
    // then kept) or refused with a clear error.
    for mode in ["fast", "immediate"] {
        let ops = std::thread::scope(|scope| {
            let restart = scope.spawn(|| cluster.restart(mode).unwrap());
            let mut ops = Vec::new();
            let mut action = "stop";
            let mut last = None;
            let mut unknown_after_last = false;
            while !restart.is_finished() || ops.len() < 4 {
                let (code, body, took) = act(&a, action);
                match code {
                    200 => {
                        let status = status_on(&a, PLUGIN).unwrap();
                        last = Some((action, status));
                        unknown_after_last = false;
                        action = if action == "stop" { "enable" } else { "stop" };
                    }
                    503 => {
                        assert!(body.contains("store_unavailable"), "{body}");
                        unknown_after_last |= body.contains("may or may not have been stored");
                    }
                    _ => panic!("restart -m {mode}: {code} {body}"),
                }
                ops.push((code, took));
            }
            (ops, last, unknown_after_last)
        });
        let (ops, acknowledged_last, unknown_after_last) = ops;
        let acknowledged = ops.iter().filter(|(c, _)| *c == 200).count();
        let slowest = ops.iter().map(|(_, t)| *t).max().unwrap();
        println!(
            "restart -m {mode}: {} operations, {acknowledged} acknowledged, slowest answer {slowest:?}",
            ops.len()
        );
        // Whatever was acknowledged last is what every host and the database hold (an
        // operation cut off while committing may have landed: then all hold that).
        wait_for(
            PROMPTLY,
            "a, b and the database agree after the restart",
            || {
                let (sa, sb) = (status_on(&a, PLUGIN), status_on(&b, PLUGIN));
                let stored = stdout(&cli(&["plugins"]));
                sa.is_some()
                    && sa == sb
                    && stored
                        .lines()
                        .any(|l| l.contains(PLUGIN) && l.contains(sa.as_deref().unwrap_or("?")))
            },
        );
        if let Some((_, last)) = acknowledged_last {
            // Nothing acknowledged is lost: unless a later, unacknowledged operation
            // landed, the last acknowledged one holds.
            let now = status_on(&a, PLUGIN).unwrap();
            let consistent = now == last || unknown_after_last;
            assert!(consistent, "acknowledged `{last}` lost: now `{now}`");
        }
        caller.more(10, &format!("after restart -m {mode}"));
    }

    // 3. A stalled database: operations end at the deadline with a clear error, calls go
    // on, and the hosts recover without a restart.
    cluster.pause().unwrap();
    let stalled = Instant::now();
    caller.more(20, "while the database is stalled");
    let took = refused_while_away(&a, "database stalled");
    println!("operation on a stalled database refused in {took:?} (deadline {TIMEOUT:?})");
    assert!(
        took < TIMEOUT + FAIL_FAST,
        "the deadline did not hold: {took:?}"
    );
    wait_for(
        PROMPTLY,
        "/health says the stalled store is unreachable",
        || health(&b)["ready"] == false,
    );
    println!("stalled for {:?}", stalled.elapsed());
    cluster.resume().unwrap();
    wait_for(PROMPTLY, "operations work again after the stall", || {
        act(&a, "stop").0 == 200
    });
    wait_for(PROMPTLY, "b applies the stop after the stall", || {
        status_on(&b, PLUGIN).as_deref() == Some("stopped")
    });

    // 4. One host loses its connections (the others keep theirs): a change made
    // meanwhile, whose notification that host never gets, is applied by its resync.
    let resyncs_b = metric(&b, "plugboard_store_resyncs_total");
    let killed = cluster
        .psql(
            &db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'plugboard_host_b'",
        )
        .unwrap();
    assert!(
        killed.trim().parse::<u32>().unwrap() >= 1,
        "b had no connection: {killed}"
    );
    let (code, body, _) = act(&a, "enable");
    assert_eq!(code, 200, "{body}");
    wait_for(
        PROMPTLY,
        "b applies the change made while it was cut off",
        || running(&b),
    );
    wait_for(PROMPTLY, "b resynchronised after reconnecting", || {
        metric(&b, "plugboard_store_resyncs_total") > resyncs_b
    });
    // b's own operations work again too.
    wait_for(PROMPTLY, "b's operations work again", || {
        act(&b, "stop").0 == 200
    });
    wait_for(PROMPTLY, "a applies b's stop", || {
        status_on(&a, PLUGIN).as_deref() == Some("stopped")
    });

    let (calls, failures) = caller.finish();
    println!(
        "{calls} calls through every fault, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "calls failed: {failures:?}");
    let log = std::fs::read_to_string(home_a.join("serve.log")).unwrap();
    assert!(
        log.contains("the database is unreachable"),
        "the outage was not logged"
    );
    assert!(log.contains("the database is reachable again"));
}

/// `PUT /api/settings/NAME` with `{"n": n}`: whether it was acknowledged.
fn put_setting(server: &Serve, name: &str, n: u64) -> (u16, String) {
    http(
        server,
        "PUT",
        &format!("/api/settings/{name}"),
        Some(&serde_json::json!({ "n": n }).to_string()),
    )
}

#[test]
fn sqlite_hosts_killed_mid_write_lose_nothing_acknowledged_and_leave_the_file_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let url = format!("sqlite://{}", db.display());
    let homes: Vec<_> = (0..3).map(|i| dir.path().join(format!("h{i}"))).collect();
    for h in &homes {
        std::fs::create_dir_all(h).unwrap();
    }
    let offered = serde_json::json!({ "offered": [
        "wasm-audit-1.0.0.pbpkg", "title-validator-1.0.0.pbpkg", "audit-follower-1.0.0.pbpkg",
        "ip-ban-1.0.0.pbpkg", "site-search-1.0.0.pbpkg", "webhook-1.0.0.pbpkg"] })
    .to_string();
    let out = crate::plugboard_in(&homes[0])
        .env("PLUGBOARD_DATABASE_URL", &url)
        .args(["settings", "set", "serve.examples", &offered])
        .output()
        .unwrap();
    stdout(&out);
    // Host 0 stays up throughout; hosts 1 and 2 take writes and are killed mid-stream.
    let keeper = serve_on(&homes[0], &url, None, &[]);
    let token = keeper.token.clone();
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    for round in 0..3u64 {
        let victim = serve_on(&homes[1 + (round as usize % 2)], &url, Some(&token), &[]);
        let base = victim.base.clone();
        let stop = Arc::new(AtomicBool::new(false));
        // Two writers on the victim, one on the keeper: the file's write lock changes
        // hands all the time, so the kill finds the victim inside a transaction often.
        let writers: Vec<_> = [
            (base.clone(), "victim"),
            (base.clone(), "victim2"),
            (keeper.base.clone(), "keeper"),
        ]
        .into_iter()
        .map(|(base, who)| {
            let (stop, token) = (stop.clone(), token.clone());
            std::thread::spawn(move || {
                let server = Serve::remote(base, token);
                let mut acked = Vec::new();
                for n in 0.. {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let name = format!("test.{who}-{round}-{n}");
                    // A killed server answers nothing (or resets): not acknowledged.
                    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        put_setting(&server, &name, n)
                    }));
                    match answer {
                        Ok((200, _)) => acked.push((name, n)),
                        Ok((code, body)) if who == "keeper" => {
                            panic!("the keeper refused a write: {code} {body}")
                        }
                        _ => {}
                    }
                }
                acked
            })
        })
        .collect();
        // Kill once the victim has acknowledged some writes.
        let counted = Serve::remote(keeper.base.clone(), token.clone());
        wait_for(PROMPTLY, "the victim takes writes", || {
            let (_, body) = http(&counted, "GET", "/api/settings", None);
            body.matches(&format!("test.victim-{round}-")).count() >= 20
        });
        drop(victim); // SIGKILL
        stop.store(true, Relaxed);
        for w in writers {
            acknowledged.extend(w.join().unwrap());
        }
        // The keeper writes on as if nothing happened: the lock died with the victim.
        let (code, body) = put_setting(&keeper, &format!("test.after-kill-{round}"), round);
        assert_eq!(code, 200, "{body}");
        acknowledged.push((format!("test.after-kill-{round}"), round));
    }
    drop(keeper);
    let store = plugboard_store::Store::open_existing(&url).unwrap();
    let all = store.settings().list().unwrap();
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|(name, n)| {
            !all.iter()
                .any(|(s, v, _)| s == name && *v == serde_json::json!({ "n": n }))
        })
        .collect();
    println!(
        "{} acknowledged writes across 3 kills, {} missing",
        acknowledged.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let check = store.integrity_check().unwrap();
    assert_eq!(check, "ok");
}

/// Unmounts the test's tmpfs, whatever happens.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_keeps_what_was_acknowledged_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&disk)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "cannot mount a small tmpfs (this test needs root)"
        );
        eprintln!("skipped: cannot mount a small tmpfs (this test needs root)");
        return;
    }
    let _mount = Mount(disk.clone());
    // Only the database is on the small disk; the host's home and log are not.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let url = format!("sqlite://{}", disk.join("plugboard.db").display());
    let offered = serde_json::json!({ "offered": [
        "wasm-audit-1.0.0.pbpkg", "title-validator-1.0.0.pbpkg", "audit-follower-1.0.0.pbpkg",
        "ip-ban-1.0.0.pbpkg", "site-search-1.0.0.pbpkg", "webhook-1.0.0.pbpkg"] })
    .to_string();
    let out = crate::plugboard_in(&home)
        .env("PLUGBOARD_DATABASE_URL", &url)
        .args(["settings", "set", "serve.examples", &offered])
        .output()
        .unwrap();
    stdout(&out);
    let server = serve_on(&home, &url, None, &[]);
    wait_for(PROMPTLY, "the host runs the samples", || running(&server));
    for n in 0..5 {
        let (code, body) = put_setting(&server, &format!("test.before-{n}"), n);
        assert_eq!(code, 200, "{body}");
    }

    // Fill the disk.
    let mut filler = std::fs::File::create(disk.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    let _ = filler.sync_all();
    drop(filler);

    // Writes grow the journal until one finds no room: refused, clearly.
    let big = "x".repeat(200 * 1024);
    let mut refused = None;
    for n in 0..50 {
        let (code, body) = http(
            &server,
            "PUT",
            &format!("/api/settings/test.big-{n}"),
            Some(&serde_json::json!({ "v": big }).to_string()),
        );
        if code != 200 {
            refused = Some((n, code, body));
            break;
        }
    }
    let (n, code, body) = refused.expect("no write was refused on a full disk");
    println!("refused on a full disk: {code} {body}");
    assert_eq!(code, 507, "{body}");
    assert!(
        body.contains("store_full") && body.contains("disk is full"),
        "{body}"
    );
    let (code, _) = http(&server, "GET", &format!("/api/settings/test.big-{n}"), None);
    assert_eq!(code, 404, "the refused write left a row");
    // A lifecycle operation: refused with the same cause named, the plugin untouched.
    let (code, body) = http(
        &server,
        "POST",
        &format!("/api/plugins/{PLUGIN}/stop"),
        None,
    );
    if code != 200 {
        assert!(body.contains("disk is full"), "{code} {body}");
        assert!(running(&server), "a refused stop changed the plugin");
    } else {
        // It fitted in the journal's free pages; then it must be stored.
        assert_eq!(status_on(&server, PLUGIN).as_deref(), Some("stopped"));
    }
    // Calls go on.
    let (code, out) = http(
        &server,
        "POST",
        "/api/events/on_user_after_save_failure/call",
        Some(
            r#"{"state": {"error": {"code": "validation_failed", "message": "m", "fields": {}, "details": null}, "ip": "203.0.113.9", "endpoint": "html", "status": "added", "conn": {"method": "POST", "path": "/demo/signup", "headers": {}, "peer": null}, "modifier_user": "self", "extra": null}}"#,
        ),
    );
    assert_eq!(code, 200, "{out}");

    // Room again: writes work without a restart, and everything acknowledged is there.
    std::fs::remove_file(disk.join("filler")).unwrap();
    wait_for(PROMPTLY, "writes work again once there is room", || {
        put_setting(&server, "test.after", 1).0 == 200
    });
    drop(server);
    let store = plugboard_store::Store::open_existing(&url).unwrap();
    for n in 0..5 {
        assert_eq!(
            store.settings().get(&format!("test.before-{n}")).unwrap(),
            Some(serde_json::json!({ "n": n }))
        );
    }
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
