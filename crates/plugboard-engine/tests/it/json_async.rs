//! Calls by name with JSON, JSON plugins in typed chains, async plugins, fire-and-forget,
//! and the reference catalogue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plugboard_core::reference::{self, OnUserAfterSaveFailure};
use plugboard_core::{AsyncPlugin, Context, EventInfo, Json, Plugin, Reply};
use plugboard_engine::{
    CallError, CallOptions, Engine, EngineError, FailureKind, OnFailure, Registration, Spawned,
};
use serde_json::{Value, json};

use crate::{OnTest, Tag, engine, started, trail};

/// A JSON plugin: adds its mark to `trail`.
struct JsonMark;
impl Plugin<Json> for JsonMark {
    fn call(&self, mut s: Value, _: &Context<'_>) -> Reply<Value> {
        if let Some(t) = s.get_mut("trail").and_then(Value::as_array_mut) {
            t.push("json".into());
        }
        Reply::Continue(s)
    }
}

/// A JSON plugin that replies with something that is not the event's state.
struct Garbage;
impl Plugin<Json> for Garbage {
    fn call(&self, _: Value, _: &Context<'_>) -> Reply<Value> {
        Reply::Continue(json!({"trail": 42}))
    }
}

#[test]
fn json_plugins_join_typed_chains() {
    let e = engine();
    started(&e, &[("a", 1), ("c", 3)]);
    e.register_json("on_test", Registration::new("b").priority(2), JsonMark)
        .unwrap();
    e.start("b").unwrap();
    assert_eq!(trail(&e), ["a", "json", "c"]);
}

#[test]
fn an_invalid_json_reply_is_a_typed_failure() {
    let e = Engine::builder()
        .reference_events(false)
        .on_failure(OnFailure::Skip)
        .build();
    started(&e, &[("a", 1)]);
    e.register_json("on_test", Registration::new("garbage").priority(2), Garbage)
        .unwrap();
    e.start("garbage").unwrap();
    assert_eq!(trail(&e), ["a"]);
    let last = e.plugin("garbage").unwrap().last_error.unwrap();
    assert_eq!(last.kind, FailureKind::InvalidReply);
    assert!(
        last.message.contains("invalid type: integer `42`"),
        "{}",
        last.message
    );
}

#[test]
fn calls_by_name_validate_the_state() {
    let e = engine();
    started(&e, &[("a", 1)]);
    let err = e
        .call_json("on_test", json!({"trail": "nope"}), &CallOptions::default())
        .unwrap_err();
    assert!(matches!(err, CallError::InvalidState { .. }));
    assert!(
        err.to_string()
            .starts_with("invalid state for event `on_test`:"),
        "{err}"
    );
    let err = e
        .call_json("on_missing", json!({}), &CallOptions::default())
        .unwrap_err();
    assert_eq!(err.to_string(), "no event named `on_missing` is declared");
}

#[test]
fn dynamic_events_take_free_json() {
    let e = engine();
    e.declare_dynamic(EventInfo::dynamic(
        "on_custom",
        "custom",
        "A host's own event.",
    ))
    .unwrap();
    e.register_json("on_custom", Registration::new("mark"), JsonMark)
        .unwrap();
    e.start("mark").unwrap();
    let out = e
        .call_json(
            "on_custom",
            json!({"trail": [], "other": 1}),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(out, json!({"trail": ["json"], "other": 1}));
    // A native typed plugin cannot join a JSON event's chain.
    let err = e.register(Registration::new("typed"), Tag::new("typed"));
    assert!(err.is_ok(), "OnTest is its own event");
    let err = e
        .declare_dynamic(EventInfo::dynamic("on_test", "x", "y"))
        .unwrap_err();
    assert!(matches!(err, EngineError::EventConflict { .. }));
}

struct SlowAsync(Arc<AtomicUsize>);
impl AsyncPlugin<OnTest> for SlowAsync {
    async fn call(&self, mut s: OnTest, cx: &Context<'_>) -> Reply<OnTest> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.fetch_add(1, Ordering::SeqCst);
        s.trail.push(format!("async:{}", cx.plugin()));
        Reply::Continue(s)
    }
}

struct AsyncPanics;
impl AsyncPlugin<OnTest> for AsyncPanics {
    async fn call(&self, s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        tokio::task::yield_now().await;
        if s.secret == "boom" {
            panic!("async boom");
        }
        Reply::Continue(s)
    }
}

/// Waits at a gate until the test opens it, then counts its call: while the gate is
/// closed, no call can have ended, whatever the machine's speed.
struct Gated {
    gate: tokio::sync::watch::Receiver<bool>,
    ran: Arc<AtomicUsize>,
}
impl AsyncPlugin<OnTest> for Gated {
    async fn call(&self, s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        self.ran.fetch_add(1, Ordering::SeqCst);
        Reply::Continue(s)
    }
}

/// Polls until `n` holds `want` (background work ends when the scheduler gets to it); the
/// deadline only guards against a hang.
fn wait_for_count(n: &AtomicUsize, want: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while n.load(Ordering::SeqCst) < want {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {want} ran",
            n.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn async_chains_mix_sync_and_async_plugins() {
    let e = engine();
    let n = Arc::new(AtomicUsize::new(0));
    started(&e, &[("a", 1), ("c", 3)]);
    e.register_async(Registration::new("b").priority(2), SlowAsync(n.clone()))
        .unwrap();
    e.start("b").unwrap();
    let hook = e.hook::<OnTest>().unwrap();
    assert_eq!(
        hook.call_async(OnTest::new()).await.unwrap().trail,
        ["a", "async:b", "c"]
    );
    // A sync call refuses the chain, naming the async plugin.
    let err = hook.call(OnTest::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "event `on_test` has the async plugin `b` in its chain; call it with `call_async`"
    );
    let out = e
        .call_json_async(
            "on_test",
            json!({"trail": [], "secret": ""}),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out["trail"], json!(["a", "async:b", "c"]));
    let t = hook.trace_async(OnTest::new()).await;
    assert_eq!(t.steps.len(), 3);
    assert!(t.steps[1].elapsed >= Duration::from_millis(5));
}

#[tokio::test]
async fn async_panics_are_contained() {
    let e = Engine::builder()
        .reference_events(false)
        .on_failure(OnFailure::ReturnInput)
        .build();
    e.register_async(Registration::new("p"), AsyncPanics)
        .unwrap();
    e.start("p").unwrap();
    let mut input = OnTest::new();
    input.secret = "boom".into();
    let out = e.hook::<OnTest>().unwrap().call_async(input).await.unwrap();
    assert_eq!(out.secret, "boom");
    assert_eq!(
        e.plugin("p").unwrap().last_error.unwrap().message,
        "async boom"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_returns_at_once_and_runs_in_the_background() {
    let e = engine();
    let ran = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    e.register_async(
        Registration::new("gated"),
        Gated {
            gate,
            ran: ran.clone(),
        },
    )
    .unwrap();
    e.start("gated").unwrap();
    let hook = e.hook::<OnTest>().unwrap();
    // The plugin waits at a closed gate: were the calls run in this loop, it would not end
    // (a watchdog opens the gate after a while, so that such a bug fails the test rather
    // than hangs it). Not timed: how fast the loop runs says nothing on a busy machine.
    let watchdog = open.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(300));
        watchdog.send_replace(true);
    });
    for _ in 0..10 {
        assert_eq!(hook.spawn(OnTest::new()), Spawned::Queued);
    }
    // Ten plugins run in the background, not in this loop: none has got past the gate.
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a call ran in `spawn`");
    open.send_replace(true);
    tokio::task::spawn_blocking(move || wait_for_count(&ran, 10))
        .await
        .unwrap();
}

#[test]
fn spawn_outside_a_runtime_uses_the_engines_worker_and_drops_when_full() {
    let e = Engine::builder()
        .reference_events(false)
        .background_limit(2)
        .build();
    let ran = Arc::new(AtomicUsize::new(0));
    // The plugin waits at a gate, closed while the calls are handed over: none can end
    // (and free its place) during the loop, however slowly the loop runs.
    let (open, gate) = tokio::sync::watch::channel(false);
    e.register_async(
        Registration::new("gated"),
        Gated {
            gate,
            ran: ran.clone(),
        },
    )
    .unwrap();
    e.start("gated").unwrap();
    let hook = e.hook::<OnTest>().unwrap();
    let results: Vec<Spawned> = (0..5).map(|_| hook.spawn(OnTest::new())).collect();
    let queued = results.iter().filter(|s| **s == Spawned::Queued).count();
    assert!((1..=2).contains(&queued), "{results:?}");
    assert_eq!(e.background_dropped() as usize, 5 - queued);
    open.send_replace(true);
    wait_for_count(&ran, queued);
    assert_eq!(ran.load(Ordering::SeqCst), queued);
}

#[test]
fn the_reference_catalogue_has_all_32_events_in_their_sections() {
    let e = Engine::new();
    let events = e.events();
    assert_eq!(events.len(), 32);
    let count = |section: &str| events.iter().filter(|i| i.section == section).count();
    assert_eq!(
        (count("content"), count("user"), count("installer")),
        (13, 16, 1)
    );
    let f = e.event("on_user_after_save_failure").unwrap();
    assert_eq!(
        f.fields(),
        [
            "error",
            "ip",
            "endpoint",
            "status",
            "conn",
            "modifier_user",
            "extra"
        ]
    );
    assert_eq!(reference::catalogue().len(), 32);
}

#[test]
fn on_user_after_save_failure_accepts_mishka_shapes() {
    let e = Engine::new();
    let state = json!({
        "error": {"code": "validation_failed", "message": "email taken", "fields": {"email": ["is taken"]}},
        "ip": [10, 0, 0, 7],
        "endpoint": "api",
        "status": "added",
        "conn": {"method": "POST", "path": "/users", "headers": {"user-agent": "t"}, "peer": "10.0.0.7:5555"},
        "modifier_user": "self",
    });
    let out = e
        .call_json("on_user_after_save_failure", state, &CallOptions::default())
        .unwrap();
    assert_eq!(out["ip"], "10.0.0.7");
    assert_eq!(out["modifier_user"], "self");
    assert_eq!(out["extra"], Value::Null);
    let typed: OnUserAfterSaveFailure = serde_json::from_value(out).unwrap();
    assert_eq!(typed.error.fields["email"], ["is taken"]);
    let bad = json!({"error": {"code": "x", "message": "y"}, "ip": "nope", "endpoint": "api", "status": "added", "conn": {}, "modifier_user": "self"});
    let err = e
        .call_json("on_user_after_save_failure", bad, &CallOptions::default())
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid IP address \"nope\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_sync_trace_of_an_async_chain_names_the_async_plugin() {
    let e = engine();
    e.register_async(Registration::new("slow"), SlowAsync(Arc::default()))
        .unwrap();
    e.start("slow").unwrap();
    let t = e.trace_json(
        "on_test",
        json!({"trail": [], "secret": ""}),
        &CallOptions::default(),
    );
    assert!(matches!(t.result, Err(CallError::NeedsAsync { plugin, .. }) if plugin == "slow"));
    let t = e
        .trace_json_async(
            "on_test",
            json!({"trail": [], "secret": ""}),
            &CallOptions::default(),
        )
        .await;
    assert_eq!(t.result.unwrap()["trail"], json!(["async:slow"]));
}

/// A synchronous (JSON) plugin that says it has started (the first flag), then waits, up
/// to 120 s (a guard against a hang, not a speed), for another task to raise the second.
struct WaitsForFlag(
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicBool>,
);
impl Plugin<Json> for WaitsForFlag {
    fn call(&self, mut s: Value, _: &Context<'_>) -> Reply<Value> {
        self.0.store(true, Ordering::SeqCst);
        let started = std::time::Instant::now();
        while !self.1.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(1));
        }
        s["secret"] = json!(if self.1.load(Ordering::SeqCst) {
            "ran beside"
        } else {
            "starved"
        });
        Reply::Continue(s)
    }
}

#[test]
fn a_synchronous_step_in_an_async_call_does_not_hold_the_executor() {
    // One worker: were the synchronous step run on it, the flag task could not run.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let e = engine();
    e.declare::<OnTest>().unwrap();
    let entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    e.register_json(
        "on_test",
        Registration::new("waits"),
        WaitsForFlag(entered.clone(), flag.clone()),
    )
    .unwrap();
    e.register_async(
        Registration::new("b").priority(60),
        SlowAsync(Arc::default()),
    )
    .unwrap();
    e.start(plugboard_engine::Target::All).unwrap();
    let hook = e.hook::<OnTest>().unwrap();
    let out = rt.block_on(async move {
        let call = tokio::spawn(async move { hook.call_async(OnTest::new()).await });
        // Raised only once the synchronous step runs (not after a fixed delay, which on
        // a busy machine could pass before the step starts, and prove nothing): this
        // task gets to run only if the step does not hold the one worker.
        tokio::spawn(async move {
            while !entered.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            flag.store(true, Ordering::SeqCst);
        });
        call.await.unwrap().unwrap()
    });
    assert_eq!(out.secret, "ran beside");
}

/// A JSON plugin that fires `on_second` in the background, once, and counts its calls.
struct Relay {
    engine: plugboard_engine::WeakEngine,
    ran: Arc<AtomicUsize>,
}
impl Plugin<Json> for Relay {
    fn call(&self, s: Value, cx: &Context<'_>) -> Reply<Value> {
        self.ran.fetch_add(1, Ordering::SeqCst);
        if cx.event() == "on_first"
            && let Some(e) = self.engine.upgrade()
        {
            let _ = e.spawn_json("on_second", json!({}), CallOptions::default());
        }
        Reply::Continue(s)
    }
}

#[test]
fn a_background_call_that_fires_another_in_the_background_gets_it_run() {
    // Outside any runtime: the first call runs on the engine's worker, whose runtime is
    // current-thread; what it fires must still run (it once waited for a next job).
    let e = Engine::builder().reference_events(false).build();
    let ran = Arc::new(AtomicUsize::new(0));
    for event in ["on_first", "on_second"] {
        e.declare_dynamic(EventInfo::dynamic(event, "test", "relay"))
            .unwrap();
        let name = format!("relay-{event}");
        e.register_json(
            event,
            Registration::new(name.as_str()),
            Relay {
                engine: e.downgrade(),
                ran: ran.clone(),
            },
        )
        .unwrap();
        e.start(name.as_str()).unwrap();
    }
    e.spawn_json("on_first", json!({}), CallOptions::default())
        .unwrap();
    wait_for_count(&ran, 2);
}
