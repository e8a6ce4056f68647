//! An operator's call deadline for a package (`deadline_ms` in the `installer` setting):
//! set with the CLI while `plugboard serve` runs, it lets a webhook whose receiver is slow
//! finish, from the server's next call, with no reinstall; out of range it is refused and
//! nothing changes; removed, the package's own deadline is back.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::{PROMPTLY, Serve, http, run, stdout, wait_for};

/// How long the receiver takes to answer: well past the package's own deadline, well
/// within the operator's.
const SLOW: Duration = Duration::from_millis(2500);

/// A receiver on loopback that answers each post after [`SLOW`].
fn slow_receiver() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let _ = plugboard_testkit::read_request(&mut reader);
                std::thread::sleep(SLOW);
                let _ = stream.write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    port
}

/// The webhook's step of a failed save's call: its outcome, and its failure's message.
fn webhook_step(server: &Serve) -> (String, String) {
    let step = crate::failed_save_step(server, "webhook");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (text(&step["outcome"]), text(&step["failure"]["message"]))
}

/// Whether a step failed at its deadline: the host ends the wait for the answer there,
/// and either the plugin sees the request time out or the call is ended in its wait.
fn timed_out((outcome, failure): &(String, String)) -> bool {
    outcome == "failed"
        && (failure.contains("ConnectionTimeout") || failure.contains("overran its deadline"))
}

/// How many times the server has applied a changed call deadline (it logs each).
fn applied(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("call deadline applied")
        .count()
}

#[test]
fn an_operators_deadline_for_a_package_applies_to_the_running_servers_next_call() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let log = tmp.path().join("serve.log");
    crate::skip_examples(&home, &["webhook"]);
    let server = crate::serve_logging(&home, &log);
    let origin = format!("http://127.0.0.1:{}", slow_receiver());
    // Half a second of its own: shorter than the receiver takes.
    let package = crate::pack_example(&home, tmp.path(), "webhook", "webhook", |m| {
        m.replace("deadline_ms = 1000", "deadline_ms = 500")
    });
    stdout(&run(
        &home,
        &[
            "install",
            package.to_str().unwrap(),
            "--grant",
            &format!("settings,log,http={origin}"),
        ],
    ));
    crate::wait_in_chain(&server, "webhook");
    // Through the server, which applies it at once (a plugin failing its calls
    // repeatedly, here for want of a URL, is stopped).
    let (status, body) = http(
        &server,
        "PUT",
        "/api/settings/webhook",
        Some(&format!(r#"{{"url": "{origin}/hook"}}"#)),
    );
    assert_eq!(status, 200, "{body}");
    let first = webhook_step(&server);
    assert!(
        timed_out(&first),
        "its own deadline passes while the receiver is still answering: {first:?}"
    );

    // The operator gives it 30 s from another process: once the running server has
    // applied it (it logs that), its next call finishes.
    let set = |value: &str| run(&home, &["settings", "set", "installer", value]);
    stdout(&set(r#"{"deadline_ms": {"webhook": 30000}}"#));
    let took = wait_for(PROMPTLY, "the server applies the longer deadline", || {
        applied(&log) == 1
    });
    println!("the server applied the operator's deadline in {took:?}");
    let step = webhook_step(&server);
    assert_eq!(step.0, "continued", "{step:?}");

    // Out of range: refused, naming the field, and the deadline in force stays.
    let refused = set(r#"{"deadline_ms": {"webhook": 600000}}"#);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("deadline_ms.webhook: 600000 ms is not a deadline (1 to 60000 ms)"),
        "{why}"
    );
    let kept = stdout(&run(&home, &["settings", "get", "installer"]));
    assert!(kept.contains("30000"), "{kept}");
    assert_eq!(webhook_step(&server).0, "continued");

    // Removed: the package's own half second again.
    stdout(&set("{}"));
    wait_for(
        PROMPTLY,
        "the server restores the package's deadline",
        || applied(&log) == 2,
    );
    let step = webhook_step(&server);
    assert!(timed_out(&step), "{step:?}");
}
