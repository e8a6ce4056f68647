//! The `emit` capability: a package fires the events it was granted, fire-and-forget; a
//! loop (ping emits pong emits ping…) is stopped at the depth limit and counted; an event
//! it was not granted, or no grant at all, is refused.

use std::time::{Duration, Instant};

use plugboard_core::EventInfo;
use plugboard_engine::CallOptions;
use plugboard_installer::{Grant, MAX_EMIT_DEPTH};
use plugboard_testkit::{BOTH, fresh_url};
use serde_json::json;

use crate::{DEADLINE_MS, HostEnv, component, package};

fn manifest(emit: &str) -> String {
    format!(
        r#"[package]
name = "pingpong"
version = "1.0.0"
license = "MIT"
contract = "0.3"

[capabilities]
{emit}

[limits]
deadline_ms = {DEADLINE_MS}

[[hooks]]
event = "on_reach_ping"
plugin = "pinger"
priority = 10

[[hooks]]
event = "on_reach_pong"
plugin = "ponger"
priority = 10
"#
    )
}

fn env(url: &str, home: &std::path::Path) -> HostEnv {
    let env = HostEnv::boot(url, home);
    for e in ["on_reach_ping", "on_reach_pong"] {
        env.engine
            .declare_dynamic(EventInfo::dynamic(e, "test", "ping"))
            .unwrap();
    }
    env
}

#[test]
fn an_emit_loop_is_stopped_at_the_depth_limit_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = env(&url, &tmp.path().join("a"));
    let file = package(
        tmp.path(),
        &manifest(r#"emit = ["on_reach_ping", "on_reach_pong"]"#),
        &component("ping"),
    );
    env.install_granting(&file, Grant::Asked).unwrap();

    let out = env
        .engine
        .call_json("on_reach_ping", json!({ "n": 0 }), &CallOptions::default())
        .unwrap();
    assert_eq!(out, json!({ "n": 0, "emitted": true, "error": null }));
    // The background runs ping, pong, ping… until the limit refuses the next emit.
    let started = Instant::now();
    while env.installer.emit_counts().loops_stopped == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the loop was never stopped: {:?}",
            env.installer.emit_counts()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let counts = env.installer.emit_counts();
    assert_eq!(counts.queued, u64::from(MAX_EMIT_DEPTH), "{counts:?}");
    assert_eq!(counts.loops_stopped, 1, "{counts:?}");
    // Nothing more happens after it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.installer.emit_counts(), counts);
}

#[test]
fn an_event_not_granted_and_a_package_without_emit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_url(BOTH[0], tmp.path());
    let env = env(&url, &tmp.path().join("a"));
    // Only ping may be fired: pong emits ping (allowed), ping emits pong (refused).
    let file = package(
        tmp.path(),
        &manifest(r#"emit = ["on_reach_ping"]"#),
        &component("ping"),
    );
    env.install_granting(&file, Grant::Asked).unwrap();
    let out = env
        .engine
        .call_json("on_reach_ping", json!({ "n": 0 }), &CallOptions::default())
        .unwrap();
    assert_eq!(out["emitted"], false);
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("not granted `emit` of `on_reach_pong`"),
        "{out}"
    );
    let out = env
        .engine
        .call_json("on_reach_pong", json!({ "n": 0 }), &CallOptions::default())
        .unwrap();
    assert_eq!(out["emitted"], true, "{out}");

    // An event the host does not declare cannot be asked for at all.
    let e = env
        .install_granting(
            &package(
                tmp.path(),
                &manifest(r#"emit = ["on_nothing_here"]"#).replace("1.0.0", "1.1.0"),
                &component("ping"),
            ),
            Grant::Asked,
        )
        .unwrap_err();
    assert!(e.to_string().contains("on_nothing_here"), "{e}");

    // Revoked: every emit is denied.
    env.installer
        .change_grants(
            "pingpong",
            &Default::default(),
            &plugboard_package::Capabilities::parse_grant(
                "emit=on_reach_ping",
                &Default::default(),
            )
            .unwrap(),
        )
        .unwrap();
    let out = env
        .engine
        .call_json("on_reach_pong", json!({ "n": 0 }), &CallOptions::default())
        .unwrap();
    assert_eq!(out["emitted"], false);
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("not granted the `emit` capability"),
        "{out}"
    );
}
