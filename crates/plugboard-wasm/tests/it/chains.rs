//! Wasm plugins in the same ordered, halting, dependency-aware chains as native ones.

use plugboard_core::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnContentBeforeSave, OnUserAfterSaveFailure,
    Payload, SaveStatus,
};
use plugboard_core::{Context, Event, Plugin, Reply, Status, Wire};
use plugboard_engine::EncodedStep;
use plugboard_engine::{Engine, Registration};
use serde_json::{Value, json};

use crate::{add, host, load};

fn failure() -> OnUserAfterSaveFailure {
    OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email taken"),
        ip: Ip::LOCALHOST,
        endpoint: Endpoint::Api,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/users"),
        modifier_user: ModifierUser::SelfUser,
        extra: Value::Null,
    }
}

/// An engine whose `on_user_after_save_failure` chain runs these components (file, name)
/// in this order.
fn chain_of(host: &plugboard_wasm::WasmHost, plugins: &[(&str, &str)]) -> Engine {
    let engine = Engine::new();
    for (i, (file, name)) in (0_u8..).zip(plugins) {
        add(
            &engine,
            OnUserAfterSaveFailure::NAME,
            load(host, file, name),
            Registration::new(*name).priority(i),
        );
    }
    engine
}

/// An engine that knows `on_user_after_save_failure` only by name (so its state crosses
/// as JSON), with one component on it.
fn json_chain(host: &plugboard_wasm::WasmHost, file: &str, name: &str) -> Engine {
    let event = OnUserAfterSaveFailure::NAME;
    let engine = Engine::builder().reference_events(false).build();
    engine
        .declare_dynamic(plugboard_core::EventInfo::dynamic(event, "user", "as JSON"))
        .unwrap();
    add(
        &engine,
        event,
        load(host, file, name),
        Registration::new(name),
    );
    engine
}

/// A native plugin that records, in `extra.native`, what it saw before it.
struct Native(&'static str);
impl Plugin<OnUserAfterSaveFailure> for Native {
    fn call(
        &self,
        mut s: OnUserAfterSaveFailure,
        _: &Context<'_>,
    ) -> Reply<OnUserAfterSaveFailure> {
        let seen_audit = s.extra.get("audited_by").is_some();
        if !s.extra.is_object() {
            s.extra = json!({});
        }
        s.extra[self.0] = json!({ "saw_audit": seen_audit });
        Reply::Continue(s)
    }
}

#[test]
fn native_and_wasm_plugins_share_one_ordered_chain() {
    let engine = Engine::new();
    let host = host();
    engine
        .register(Registration::new("before").priority(1), Native("before"))
        .unwrap();
    engine
        .register(Registration::new("after").priority(90), Native("after"))
        .unwrap();
    engine.start(plugboard_engine::Target::All).unwrap();
    add(
        &engine,
        "on_user_after_save_failure",
        load(&host, "audit", "audit"),
        Registration::new("audit").priority(50),
    );
    let out = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    assert_eq!(out.extra["audited_by"], "wasm-audit");
    assert_eq!(out.extra["code"], "validation_failed");
    assert_eq!(out.extra["ip"], "127.0.0.1");
    // `before` ran first and its mark was kept by the wasm plugin? No: the audit plugin
    // replaces `extra` with its own entry; `after` ran last and saw the audit.
    assert_eq!(out.extra["after"]["saw_audit"], true);
    assert_eq!(
        engine.chain("on_user_after_save_failure").unwrap(),
        ["before", "audit", "after"]
    );
}

#[test]
fn a_wasm_validator_halts_the_chain() {
    let engine = Engine::new();
    let host = host();
    add(
        &engine,
        "on_content_before_save",
        load(&host, "validator", "validator"),
        Registration::new("validator").priority(10),
    );
    engine
        .register::<OnContentBeforeSave, _>(
            Registration::new("store").priority(20),
            plugboard_core::from_fn(|mut s: Payload, _: &Context<'_>| {
                s.extra.insert("stored".into(), true.into());
                Reply::Continue(s)
            }),
        )
        .unwrap();
    engine.start("store").unwrap();
    let hook = engine.hook::<OnContentBeforeSave>().unwrap();
    let empty = hook.trace(Payload::default());
    assert_eq!(empty.halted_by.as_deref(), Some("validator"));
    let out = empty.result.unwrap();
    assert_eq!(out.extra["rejected"], "a title is required");
    assert!(!out.extra.contains_key("stored"));
    let mut titled = Payload::default();
    titled.data.insert("title".into(), "Hello".into());
    let out = hook.call(titled).unwrap();
    assert_eq!(out.extra["validated"], true);
    assert_eq!(out.extra["stored"], true);
}

#[test]
fn a_wasm_plugin_with_a_hard_dependency_is_held_and_released() {
    let engine = Engine::new();
    let host = host();
    // Its `initial` refuses a registration without the dependency.
    let err = engine
        .register_code(
            "on_user_after_save_failure",
            Registration::new("dependent"),
            load(&host, "dependent", "dependent").code(),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("must be registered with a hard dependency on `audit`"),
        "{err}"
    );
    add(
        &engine,
        "on_user_after_save_failure",
        load(&host, "dependent", "dependent"),
        Registration::new("dependent")
            .priority(60)
            .hard_depends(["audit"]),
    );
    assert_eq!(
        engine.plugin("dependent").unwrap().record.status,
        Status::Held
    );
    add(
        &engine,
        "on_user_after_save_failure",
        load(&host, "audit", "audit"),
        Registration::new("audit").priority(50),
    );
    assert_eq!(
        engine.plugin("dependent").unwrap().record.status,
        Status::Restarted
    );
    let out = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    assert_eq!(out.extra["followed_audit"], true);
    engine.stop("audit").unwrap();
    assert_eq!(
        engine.plugin("dependent").unwrap().record.status,
        Status::Held
    );
    assert!(
        engine
            .chain("on_user_after_save_failure")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn calls_from_several_threads_run_concurrently() {
    let engine = Engine::builder().reference_events(false).build();
    engine
        .declare_dynamic(plugboard_core::EventInfo::dynamic(
            "on_hostile_spin",
            "test",
            "spins 300 ms",
        ))
        .unwrap();
    let host = host();
    let plugin = load(&host, "hostile", "spinner");
    add(
        &engine,
        "on_hostile_spin",
        plugin.clone(),
        Registration::new("spinner"),
    );
    // Two calls at once, each spinning 300 ms: when both are in flight together, each
    // runs on its own instance, and two are warm afterwards. Were calls serialised, one
    // instance would do for both, every time. Whether a round overlaps depends on the
    // scheduler (on a busy machine the second thread may start after the first call has
    // ended): rounds go on until one does; the deadline only guards against a hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut rounds = 0;
    while plugin.warm_instances() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no two calls overlapped in {rounds} rounds"
        );
        rounds += 1;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (engine, barrier) = (engine.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    engine
                        .call_json("on_hostile_spin", json!({"n": 1}), &Default::default())
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), json!({"n": 1}));
        }
    }
    // Both calls were in flight at once, each on its own instance: two are warm now.
    assert_eq!(plugin.warm_instances(), 2, "after {rounds} rounds");
}

#[test]
fn plugins_built_against_the_states_layout_get_the_binary_wire() {
    let host = host();
    let audit = load(&host, "audit", "audit");
    let hostile = load(&host, "hostile", "hostile");
    let event = OnUserAfterSaveFailure::NAME;
    let layout = OnUserAfterSaveFailure::binary_layout();
    assert!(layout.is_some());
    // The audit plugin reads the reference state as its struct: same layout, binary.
    assert_eq!(audit.wire(event, layout), Wire::Binary);
    // Another layout (a plugin built against another version of the state), or an event
    // without one: JSON, never misread bytes.
    assert_eq!(audit.wire(event, layout.map(|l| l ^ 1)), Wire::Json);
    assert_eq!(audit.wire(event, None), Wire::Json);
    // A plugin that works on free JSON asks for no layout.
    assert_eq!(hostile.wire(event, layout), Wire::Json);

    // The same audit plugin on both wires gives the same state.
    let engine = Engine::new();
    add(&engine, event, audit, Registration::new("audit"));
    let binary = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    let dynamic = json_chain(&host, "audit", "audit2");
    let json = dynamic
        .call_json(
            event,
            serde_json::to_value(failure()).unwrap(),
            &Default::default(),
        )
        .unwrap();
    let mut binary = serde_json::to_value(binary).unwrap();
    let mut json = json;
    // The timestamp is the only field that may differ.
    binary["extra"]["at"] = Value::Null;
    json["extra"]["at"] = Value::Null;
    assert_eq!(binary, json);
}

/// A guest decodes each call's state into the one its previous call returned (to keep
/// its allocations): nothing of an earlier, larger state may show through a later one.
#[test]
fn a_guest_reusing_its_previous_state_returns_exactly_the_new_one() {
    let host = host();
    let event = OnUserAfterSaveFailure::NAME;
    let big = OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "a much longer message ".repeat(20))
            .field("email", "is taken")
            .field("email", "is invalid")
            .field("name", "is too short"),
        ip: "2001:db8::7".parse().unwrap(),
        endpoint: Endpoint::Html,
        status: SaveStatus::Edited,
        conn: Conn::new("PATCH", "/users/42/profile")
            .header("User-Agent", "x".repeat(300))
            .header("Accept", "text/html"),
        modifier_user: ModifierUser::SelfUser,
        extra: json!({ "nested": { "list": [1, 2, 3] }, "flag": true }),
    };
    let small = failure();
    let engine = chain_of(&host, &[("probe", "probe")]);
    let dynamic = json_chain(&host, "probe", "probe2");
    for state in [big.clone(), small.clone(), big, small] {
        let expected = serde_json::to_value(&state).unwrap();
        // Binary wire (the probe was built against the state's layout) ...
        let out = engine.call::<OnUserAfterSaveFailure>(state).unwrap();
        assert_eq!(serde_json::to_value(out).unwrap(), expected);
        // ... and JSON.
        let out = dynamic
            .call_json(event, expected.clone(), &Default::default())
            .unwrap();
        assert_eq!(out, expected);
    }
}

/// A plugin that never asks for the state (`call_lazy`) passes it on as the bytes it came
/// in, before or after plugins that change it, on both wires.
#[test]
fn a_plugin_that_never_decodes_the_state_passes_it_on_untouched() {
    let host = host();
    let engine = chain_of(
        &host,
        &[
            ("observer", "first"),
            ("audit", "audit"),
            ("observer", "last"),
        ],
    );
    let out = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    assert_eq!(out.extra["audited_by"], "wasm-audit");
    assert_eq!(out.error.code, "validation_failed");

    // Alone, on the JSON wire: out is in.
    let dynamic = json_chain(&host, "observer", "json");
    let input = serde_json::to_value(failure()).unwrap();
    let out = dynamic
        .call_json(
            OnUserAfterSaveFailure::NAME,
            input.clone(),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(out, input);
}

/// A plugin that only reads the state halts or goes on with it as it came in; its
/// settings choose what it halts on.
#[test]
fn a_plugin_that_only_reads_the_state_halts_on_what_it_reads() {
    let host = host();
    let event = OnUserAfterSaveFailure::NAME;
    let engine = chain_of(&host, &[("guard", "guard"), ("audit", "audit")]);
    // Not on the block list: on to the audit plugin.
    let out = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    assert_eq!(out.extra["audited_by"], "wasm-audit");
    // On it: halted before the audit, the state exactly as it was.
    let mut blocked = failure();
    blocked.error.code = "blocked".into();
    let expected = serde_json::to_value(&blocked).unwrap();
    let out = engine.call::<OnUserAfterSaveFailure>(blocked).unwrap();
    assert_eq!(serde_json::to_value(out).unwrap(), expected);
    // Its settings replace the list (read when its instance first needs them).
    let other = load(&host, "guard", "guard2");
    other.set_settings(Some(r#"["validation_failed"]"#.into()));
    let engine = Engine::new();
    add(
        &engine,
        event,
        other,
        Registration::new("guard2").priority(0),
    );
    add(
        &engine,
        event,
        load(&host, "audit", "audit2"),
        Registration::new("audit2").priority(1),
    );
    let out = engine.call::<OnUserAfterSaveFailure>(failure()).unwrap();
    assert!(
        out.extra.is_null(),
        "halted before the audit: {:?}",
        out.extra
    );
}
