//! Each kind of misbehaviour is contained with its own error; the host and the other
//! plugins keep serving; the failure threshold stops the culprit.

use plugboard_core::{EventInfo, Status};
use plugboard_engine::{CallError, CallOptions, Engine, FailureKind, OnFailure, Registration};
use serde_json::json;

use crate::{add, host, load};

plugboard_core::event! {
    /// A typed event for the invalid-reply case.
    pub struct OnHostileInvalid("on_hostile_invalid", section = "test") {
        /// Anything.
        pub n: u32,
    }
}

fn setup() -> (Engine, plugboard_wasm::WasmHost) {
    let engine = Engine::builder()
        .reference_events(false)
        .failure_threshold(3)
        .build();
    let host = host();
    for event in [
        "loop",
        "memory",
        "trap",
        "recursion",
        "shadow_stack",
        "huge",
        "error",
        "sleep",
        "ok",
    ] {
        let name = format!("on_hostile_{event}");
        engine
            .declare_dynamic(EventInfo::dynamic(name.clone(), "test", "hostile"))
            .unwrap();
        // Only the endless loop is stopped by the clock: it keeps the default deadline,
        // which is what it tests. Every other one must be stopped by its own limit
        // (memory, stack, reply size) or fail by itself, however loaded the machine: the
        // memory hog writes 64 MiB, the huge reply is 2 MiB, and on a busy machine either
        // can outlast 100 ms, so they get the generous deadline of `load`.
        let plugin = if event == "loop" {
            std::sync::Arc::new(
                host.load_file(
                    event,
                    &crate::component("hostile"),
                    plugboard_wasm::Limits::default(),
                )
                .unwrap(),
            )
        } else {
            load(&host, "hostile", event)
        };
        add(&engine, &name, plugin, Registration::new(event));
    }
    engine.declare::<OnHostileInvalid>().unwrap();
    add(
        &engine,
        "on_hostile_invalid",
        load(&host, "hostile", "invalid"),
        Registration::new("invalid"),
    );
    (engine, host)
}

fn fail(engine: &Engine, event: &str) -> (FailureKind, String) {
    match engine.call_json(event, json!({"n": 1}), &CallOptions::default()) {
        Err(CallError::PluginFailed { failure, .. }) => (failure.kind, failure.message),
        other => panic!("{event}: expected a plugin failure, got {other:?}"),
    }
}

#[test]
fn each_hostile_plugin_fails_with_its_own_error_and_the_host_keeps_serving() {
    let (engine, _host) = setup();
    let cases = [
        (
            "on_hostile_loop",
            FailureKind::Timeout,
            "overran its deadline",
        ),
        ("on_hostile_memory", FailureKind::ResourceLimit, "memory"),
        ("on_hostile_trap", FailureKind::Trap, "trapped"),
        (
            "on_hostile_recursion",
            FailureKind::Trap,
            "overflowed its stack",
        ),
        (
            "on_hostile_shadow_stack",
            FailureKind::Trap,
            "overflowed its stack",
        ),
        (
            "on_hostile_invalid",
            FailureKind::InvalidReply,
            "not a valid state",
        ),
        (
            "on_hostile_huge",
            FailureKind::ResourceLimit,
            "the limit is 1048576",
        ),
        (
            "on_hostile_error",
            FailureKind::PluginError,
            "the plugin says no",
        ),
    ];
    for (event, kind, message) in cases {
        let (got_kind, got_message) = fail(&engine, event);
        assert_eq!(got_kind, kind, "{event}: {got_message}");
        assert!(got_message.contains(message), "{event}: {got_message}");
        // The host and the well-behaved plugin keep serving after every one.
        assert_eq!(
            engine
                .call_json("on_hostile_ok", json!({"n": 2}), &CallOptions::default())
                .unwrap(),
            json!({"n": 2})
        );
    }
}

#[test]
fn the_failure_threshold_stops_a_hostile_plugin_and_its_poisoned_instances_are_replaced() {
    let (engine, _host) = setup();
    for _ in 0..3 {
        fail(&engine, "on_hostile_trap");
    }
    assert!(
        engine.wait_idle(std::time::Duration::from_secs(60)),
        "the stop ran"
    );
    assert_eq!(
        engine.plugin("trap").unwrap().record.status,
        Status::Stopped
    );
    // Out of the chain now: the call returns its input.
    assert_eq!(
        engine
            .call_json("on_hostile_trap", json!({"n": 1}), &CallOptions::default())
            .unwrap(),
        json!({"n": 1})
    );
    // Brought back, it gets a fresh instance and a clean streak.
    engine.enable("trap").unwrap();
    assert_eq!(engine.plugin("trap").unwrap().consecutive_failures, 0);
    fail(&engine, "on_hostile_trap");
    assert_eq!(
        engine.plugin("trap").unwrap().record.status,
        Status::Restarted
    );
}

#[test]
fn skip_policy_goes_on_past_a_hostile_wasm_step() {
    let engine = Engine::builder()
        .reference_events(false)
        .on_failure(OnFailure::Skip)
        .build();
    engine
        .declare_dynamic(EventInfo::dynamic("on_hostile_trap", "test", ""))
        .unwrap();
    let host = host();
    add(
        &engine,
        "on_hostile_trap",
        load(&host, "hostile", "trap"),
        Registration::new("trap").priority(1),
    );
    engine
        .register_json(
            "on_hostile_trap",
            Registration::new("after").priority(2),
            plugboard_core::from_fn(
                |mut s: serde_json::Value, _: &plugboard_core::Context<'_>| {
                    s["after"] = json!(true);
                    plugboard_core::Reply::Continue(s)
                },
            ),
        )
        .unwrap();
    engine.start("after").unwrap();
    let out = engine
        .call_json("on_hostile_trap", json!({"n": 1}), &CallOptions::default())
        .unwrap();
    assert_eq!(out, json!({"n": 1, "after": true}));
}

#[test]
fn wasi_clocks_are_the_clock_capability_too() {
    let engine = Engine::builder().reference_events(false).build();
    let host = host();
    let event = "on_hostile_wasi_clock";
    engine
        .declare_dynamic(EventInfo::dynamic(event, "test", "hostile"))
        .unwrap();
    let read = |clock: bool| -> u64 {
        let limits = plugboard_wasm::Limits {
            grants: plugboard_wasm::Grants {
                clock,
                ..plugboard_wasm::Grants::ALL
            },
            ..crate::limits()
        };
        let name = if clock { "with-clock" } else { "without-clock" };
        let plugin = std::sync::Arc::new(
            host.load_file(name, &crate::component("hostile"), limits)
                .unwrap(),
        );
        add(&engine, event, plugin, Registration::new(name));
        let out = engine
            .call_json(event, json!({}), &CallOptions::default())
            .unwrap();
        engine.unregister(name).unwrap();
        out["ms"].as_u64().unwrap()
    };
    assert_eq!(read(false), 0, "a plugin without `clock` reads the epoch");
    assert!(
        read(true) > 1_700_000_000_000,
        "a plugin with `clock` reads the time"
    );

    // Granted and revoked live, on a loaded plugin.
    let limits = plugboard_wasm::Limits {
        grants: plugboard_wasm::Grants::NONE,
        ..crate::limits()
    };
    let plugin = std::sync::Arc::new(
        host.load_file("live", &crate::component("hostile"), limits)
            .unwrap(),
    );
    add(&engine, event, plugin.clone(), Registration::new("live"));
    let ms = || {
        engine
            .call_json(event, json!({}), &CallOptions::default())
            .unwrap()["ms"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(ms(), 0);
    plugin.set_grants(plugboard_wasm::Grants {
        clock: true,
        ..plugboard_wasm::Grants::NONE
    });
    assert!(ms() > 1_700_000_000_000, "granted live");
    plugin.set_grants(plugboard_wasm::Grants::NONE);
    assert_eq!(ms(), 0, "revoked live");
}

#[test]
fn wasi_random_is_the_random_capability() {
    let engine = Engine::builder().reference_events(false).build();
    let host = host();
    let event = "on_hostile_wasi_random";
    engine
        .declare_dynamic(EventInfo::dynamic(event, "test", "hostile"))
        .unwrap();
    // Each draw is a fresh instance (a plugin loaded anew), so only the capability decides
    // whether two draws agree.
    let draw = |random: bool, n: usize| -> String {
        let limits = plugboard_wasm::Limits {
            grants: plugboard_wasm::Grants {
                random,
                ..plugboard_wasm::Grants::ALL
            },
            ..crate::limits()
        };
        let name = format!("random-{random}-{n}");
        let plugin = std::sync::Arc::new(
            host.load_file(&name, &crate::component("hostile"), limits)
                .unwrap(),
        );
        add(&engine, event, plugin, Registration::new(name.as_str()));
        let out = engine
            .call_json(event, json!({}), &CallOptions::default())
            .unwrap();
        engine.unregister(name.as_str()).unwrap();
        out["hash"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        draw(false, 1),
        draw(false, 2),
        "without `random`: a fixed sequence"
    );
    assert_ne!(draw(true, 1), draw(true, 2), "with `random`: fresh numbers");
}

#[test]
fn a_plugins_log_flood_and_huge_error_are_cut_and_counted() {
    let engine = Engine::builder().reference_events(false).build();
    let host = host();
    let event = "on_hostile_chatty";
    engine
        .declare_dynamic(EventInfo::dynamic(event, "test", "hostile"))
        .unwrap();
    let plugin = load(&host, "hostile", "chatty");
    add(&engine, event, plugin.clone(), Registration::new("chatty"));
    let started = std::time::Instant::now();
    let (kind, message) = fail(&engine, event);
    let windows = started.elapsed().as_secs() + 1;
    assert_eq!(kind, FailureKind::PluginError);
    assert!(
        message.len() < plugboard_core::MAX_MESSAGE + 64,
        "{} bytes",
        message.len()
    );
    assert!(
        message.ends_with("more bytes cut)"),
        "{}",
        &message[message.len() - 40..]
    );
    // At most the budget got through in each one-second window the call spanned (however
    // loaded the machine is): the rest of the 1000 lines were dropped. (On a machine so
    // busy that the call spanned ten windows, the budget covers all 1000, and nothing need
    // have been dropped: no fixed `dropped > 0`.)
    let dropped = plugin.log_lines_dropped();
    let budget = u64::from(plugboard_wasm::LOG_LINES_PER_SECOND) * (windows + 1);
    assert!(
        dropped >= 1000u64.saturating_sub(budget),
        "{dropped} dropped in {windows} windows"
    );
    // The host counts them too, for its operator's metrics.
    assert_eq!(host.log_lines_dropped(), dropped);
}
