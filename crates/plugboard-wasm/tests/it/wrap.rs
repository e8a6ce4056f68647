//! A sandboxed wrapper (contract 0.4's `wrapper` interface, `plugins/safety-net`) around
//! chains of native and wasm plugins: its two calls, retries with a token it updates, a
//! fallback for a failure, answering without the chain, its own failures and replies
//! that are not the event's state, async chains, and what is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use plugboard_core::reference::{OnContentSearch, OnUserAfterSaveFailure};
use plugboard_core::{AsyncPlugin, Context, Event, Plugin, Reply};
use plugboard_engine::{CallError, Engine, EngineError, FailureKind, Registration, StepOutcome};
use serde_json::{Value, json};

use crate::{add, host, load};

fn state(wrap: &str) -> OnUserAfterSaveFailure {
    let mut s: OnUserAfterSaveFailure = serde_json::from_value(json!({
        "error": {"code": "validation_failed", "message": "email taken"},
        "ip": "127.0.0.1",
        "endpoint": "api",
        "status": "added",
        "conn": {"method": "POST", "path": "/users"},
        "modifier_user": "self",
    }))
    .unwrap();
    if !wrap.is_empty() {
        s.extra = json!({ "wrap": wrap });
    }
    s
}

/// A native step that fails (panics) its first `fails` calls; it keeps the `extra` it
/// was given on each call (the wasm audit after it replaces `extra`).
struct Flaky {
    fails: usize,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Plugin<OnUserAfterSaveFailure> for Flaky {
    fn call(&self, s: OnUserAfterSaveFailure, _: &Context<'_>) -> Reply<OnUserAfterSaveFailure> {
        self.seen.lock().unwrap().push(s.extra.clone());
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(n >= self.fails, "flaky failure {}", n + 1);
        Reply::Continue(s)
    }
}

/// An engine with the safety net (settings: `retries`) around a flaky native step
/// that fails `fails` times, and the wasm audit after it.
fn netted(fails: usize, retries: u32) -> (Engine, Arc<AtomicUsize>, Arc<Mutex<Vec<Value>>>) {
    let engine = Engine::new();
    let host = host();
    let net = load(&host, "safety_net", "net");
    net.set_settings(Some(json!({ "retries": retries }).to_string()));
    engine
        .register_code(
            OnUserAfterSaveFailure::NAME,
            Registration::new("net").priority(50),
            net.wrapper_code().unwrap(),
        )
        .unwrap();
    engine.start("net").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::default();
    engine
        .register(
            Registration::new("flaky").priority(1),
            Flaky {
                fails,
                calls: calls.clone(),
                seen: Arc::clone(&seen),
            },
        )
        .unwrap();
    engine.start("flaky").unwrap();
    add(
        &engine,
        OnUserAfterSaveFailure::NAME,
        load(&host, "audit", "audit"),
        Registration::new("audit").priority(2),
    );
    (engine, calls, seen)
}

#[test]
fn a_wasm_wrapper_runs_around_native_and_wasm_steps() {
    let (engine, calls, seen) = netted(0, 2);
    let hook = engine.hook::<OnUserAfterSaveFailure>().unwrap();
    let t = hook.trace(state(""));
    let out = t.result.unwrap();
    // `before` changed the state the steps were given, `after` the one they replied.
    assert_eq!(*seen.lock().unwrap(), [json!({ "wrapped": true })]);
    assert_eq!(out.extra["audited_by"], "wasm-audit");
    assert_eq!(out.extra["attempts"], 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let ran: Vec<(&str, &StepOutcome)> = t
        .steps
        .iter()
        .map(|s| (s.plugin.as_str(), &s.outcome))
        .collect();
    assert_eq!(
        ran,
        [
            ("flaky", &StepOutcome::Continued),
            ("audit", &StepOutcome::Continued),
            ("net", &StepOutcome::Wrapped),
        ]
    );
    assert_eq!(
        engine.wrappers(OnUserAfterSaveFailure::NAME).unwrap(),
        ["net"]
    );
    assert!(engine.plugin("net").unwrap().wrapper);
}

#[test]
fn a_wasm_wrapper_retries_a_failing_chain_with_the_token_it_updates() {
    let (engine, calls, seen) = netted(2, 2);
    let out = engine.call::<OnUserAfterSaveFailure>(state("")).unwrap();
    // Two failures, then a third run that went through: the token counted them, and
    // each retry ran the rest from the input (not from what `before` made of it).
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            json!({ "wrapped": true }),
            json!({ "retry": 1 }),
            json!({ "retry": 2 })
        ]
    );
    assert_eq!(out.extra["attempts"], 3);
    assert_eq!(out.extra["audited_by"], "wasm-audit");
    // The step's failures are counted against it, not the wrapper.
    let flaky = engine.plugin("flaky").unwrap();
    assert_eq!(flaky.failures, 2);
    assert_eq!(engine.plugin("net").unwrap().failures, 0);
}

#[test]
fn a_wasm_wrapper_falls_back_when_the_retries_run_out() {
    let (engine, calls, _) = netted(usize::MAX, 1);
    let out = engine.call::<OnUserAfterSaveFailure>(state("")).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The input, marked with the failure the wrapper was told (naming the plugin).
    let why = out.extra["fallback"].as_str().unwrap();
    assert!(
        why.contains("flaky") && why.contains("flaky failure 2"),
        "{why}"
    );
    assert_eq!(out.extra.get("audited_by"), None);
    assert_eq!(out.error.code, "validation_failed");
}

#[test]
fn a_wasm_wrapper_may_answer_without_running_the_chain() {
    let (engine, calls, _) = netted(0, 2);
    let t = engine
        .hook::<OnUserAfterSaveFailure>()
        .unwrap()
        .trace(state("answer"));
    let out = t.result.unwrap();
    assert_eq!(out.extra["answered"], true);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(t.steps.len(), 1, "{:?}", t.steps);
    assert_eq!(t.steps[0].plugin, "net");
}

#[test]
fn a_wasm_wrappers_own_failures_and_bad_replies_are_charged_to_it() {
    let (engine, _, _) = netted(0, 2);
    for (wrap, kind, says) in [
        (
            "fail_before",
            FailureKind::PluginError,
            "asked to fail before",
        ),
        (
            "fail_after",
            FailureKind::PluginError,
            "asked to fail after",
        ),
        (
            "garbage",
            FailureKind::InvalidReply,
            "not the event's: invalid type: string \"not a state\"",
        ),
    ] {
        let err = engine
            .call::<OnUserAfterSaveFailure>(state(wrap))
            .unwrap_err();
        let CallError::PluginFailed {
            plugin, failure, ..
        } = &err
        else {
            panic!("{wrap}: {err:?}");
        };
        assert_eq!(plugin, "net", "{wrap}");
        assert_eq!(failure.kind, kind, "{wrap}: {failure:?}");
        assert!(
            failure.message.contains(says),
            "{wrap}: {}",
            failure.message
        );
    }
    let net = engine.plugin("net").unwrap();
    assert_eq!(net.failures, 3);
    assert_eq!(engine.plugin("flaky").unwrap().failures, 0);
}

/// An async step that fails its first call.
struct AsyncFlaky(Arc<AtomicUsize>);

impl AsyncPlugin<OnUserAfterSaveFailure> for AsyncFlaky {
    async fn call(
        &self,
        mut s: OnUserAfterSaveFailure,
        _: &Context<'_>,
    ) -> Reply<OnUserAfterSaveFailure> {
        tokio::task::yield_now().await;
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        assert!(n > 0, "async failure");
        s.extra["async_ran"] = json!(true);
        Reply::Continue(s)
    }
}

#[tokio::test]
async fn a_wasm_wrapper_retries_an_async_chain() {
    let engine = Engine::new();
    let net = load(&host(), "safety_net", "net");
    engine
        .register_code(
            OnUserAfterSaveFailure::NAME,
            Registration::new("net"),
            net.wrapper_code().unwrap(),
        )
        .unwrap();
    engine.start("net").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    engine
        .register_async(Registration::new("slow"), AsyncFlaky(calls.clone()))
        .unwrap();
    engine.start("slow").unwrap();
    let out = engine
        .hook::<OnUserAfterSaveFailure>()
        .unwrap()
        .call_async(state(""))
        .await
        .unwrap();
    assert_eq!(out.extra["async_ran"], true);
    assert_eq!(out.extra["retry"], 1);
    assert_eq!(out.extra["attempts"], 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_wasm_wrapper_works_on_an_event_known_only_by_name() {
    let engine = Engine::builder().reference_events(false).build();
    engine
        .declare_dynamic(plugboard_core::EventInfo::dynamic(
            "on_order",
            "shop",
            "free JSON",
        ))
        .unwrap();
    let host = host();
    engine
        .register_code(
            "on_order",
            Registration::new("net"),
            load(&host, "safety_net", "net").wrapper_code().unwrap(),
        )
        .unwrap();
    engine.start("net").unwrap();
    let out = engine
        .call_json("on_order", json!({ "total": 3 }), &Default::default())
        .unwrap();
    assert_eq!(
        out,
        json!({ "total": 3, "extra": { "wrapped": true, "attempts": 1 } })
    );
}

#[test]
fn what_cannot_be_a_wrapper_is_refused() {
    let host = host();
    // A 0.3 component has no `wrapper` export.
    let old = Arc::new(
        host.load(
            "ip-ban",
            &crate::released("ip-ban-1.0.0.pbpkg"),
            crate::limits(),
        )
        .unwrap(),
    );
    let err = old.wrapper_code().err().unwrap().to_string();
    assert!(
        err.contains("does not export `plugboard:plugin/wrapper`") && err.contains("0.3"),
        "{err}"
    );
    // A PDK plugin exported with `export_plugin!` answers that it is not a wrapper.
    let engine = Engine::new();
    engine
        .register_code(
            OnUserAfterSaveFailure::NAME,
            Registration::new("audit"),
            load(&host, "audit", "audit").wrapper_code().unwrap(),
        )
        .unwrap();
    engine.start("audit").unwrap();
    let err = engine
        .call::<OnUserAfterSaveFailure>(state(""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("this plugin is not a wrapper"), "{err}");
    // A collecting event has no chain to wrap.
    let err = engine
        .register_code(
            OnContentSearch::NAME,
            Registration::new("net"),
            load(&host, "safety_net", "net").wrapper_code().unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(err, EngineError::WrapperOnCollecting { .. }),
        "{err}"
    );
    assert!(engine.plugin("net").is_none());
}
