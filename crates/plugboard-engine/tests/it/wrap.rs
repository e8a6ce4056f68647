//! Wrappers around a chain, with pluggy's hookwrapper semantics where they apply (order
//! of the halves, a wrapper seeing the inner failure, a wrapper replacing the result)
//! plus halts, answering without the chain, retries, their own failures and async chains.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use plugboard_core::{AsyncPlugin, Context, Reply};
use plugboard_engine::{
    After, CallError, FailureKind, MAX_RETRIES, Outcome, Registration, Wrapper,
};

use crate::{OnTest, Tag, engine, started, trail};

/// Writes `name:before` into the trail on the way in and `name:after(…)` on the way out,
/// with what it saw: `ok`, `halt` or `err`.
struct Log {
    name: &'static str,
}

impl Wrapper<OnTest> for Log {
    type Token = ();

    fn before(&self, mut state: OnTest, _cx: &Context<'_>) -> (Reply<OnTest>, ()) {
        state.trail.push(format!("{}:before", self.name));
        (Reply::Continue(state), ())
    }

    fn after(&self, outcome: Outcome<OnTest>, _: &mut (), _cx: &Context<'_>) -> After<OnTest> {
        let seen = match &outcome {
            Ok(Reply::Continue(_)) => "ok",
            Ok(Reply::Halt(_)) => "halt",
            Err(_) => "err",
        };
        match outcome {
            Ok(reply) => {
                let halt = reply.is_halt();
                let mut s = reply.into_state();
                s.trail.push(format!("{}:after({seen})", self.name));
                After::Return(Ok(if halt {
                    Reply::Halt(s)
                } else {
                    Reply::Continue(s)
                }))
            }
            Err(e) => After::Return(Err(e)),
        }
    }
}

fn wrapper(e: &plugboard_engine::Engine, name: &'static str, priority: u8) {
    e.register_wrapper::<OnTest, _>(Registration::new(name).priority(priority), Log { name })
        .unwrap();
    e.start(name).unwrap();
}

#[test]
fn wrappers_run_around_the_chain_outermost_first() {
    let e = engine();
    started(&e, &[("one", 1), ("two", 2)]);
    wrapper(&e, "outer", 1);
    wrapper(&e, "inner", 2);
    // pluggy: each wrapper's first half before the implementations, its second half
    // after them, nested.
    assert_eq!(
        trail(&e),
        [
            "outer:before",
            "inner:before",
            "one",
            "two",
            "inner:after(ok)",
            "outer:after(ok)"
        ]
    );
    assert_eq!(e.chain("on_test").unwrap(), ["one", "two"]);
    assert_eq!(e.wrappers("on_test").unwrap(), ["outer", "inner"]);
    assert!(e.plugin("outer").unwrap().wrapper);
    assert!(!e.plugin("one").unwrap().wrapper);
    // Ordered as plugins are: a dependency is outside its dependent.
    e.register_wrapper::<OnTest, _>(
        Registration::new("outer")
            .priority(1)
            .soft_depends(["inner"]),
        Log { name: "outer" },
    )
    .unwrap();
    assert_eq!(e.wrappers("on_test").unwrap(), ["inner", "outer"]);
    // A stopped wrapper leaves; the chain runs without it.
    e.stop("inner").unwrap();
    assert_eq!(trail(&e), ["outer:before", "one", "two", "outer:after(ok)"]);
}

#[test]
fn a_wrapper_around_an_empty_chain_still_runs() {
    let e = engine();
    wrapper(&e, "alone", 1);
    assert_eq!(trail(&e), ["alone:before", "alone:after(ok)"]);
}

#[test]
fn a_wrapper_sees_a_halt_of_the_chain_and_the_halt_reaches_the_caller() {
    let e = engine();
    e.register(
        Registration::new("stopper").priority(1),
        Tag::halting("stopper"),
    )
    .unwrap();
    started(&e, &[("never", 2)]);
    e.start("stopper").unwrap();
    wrapper(&e, "w", 1);
    let t = e.hook::<OnTest>().unwrap().trace(OnTest::new());
    assert_eq!(
        t.result.unwrap().trail,
        ["w:before", "stopper", "w:after(halt)"]
    );
    assert_eq!(t.halted_by.as_deref(), Some("stopper"));
}

/// Turns any failure of the chain into the input with a mark: a fallback.
struct Fallback;

impl Wrapper<OnTest> for Fallback {
    type Token = OnTest;

    fn before(&self, state: OnTest, _cx: &Context<'_>) -> (Reply<OnTest>, OnTest) {
        (Reply::Continue(state.clone()), state)
    }

    fn after(
        &self,
        outcome: Outcome<OnTest>,
        input: &mut OnTest,
        _cx: &Context<'_>,
    ) -> After<OnTest> {
        match outcome {
            Err(CallError::PluginFailed { plugin, .. }) => {
                let mut s = input.clone();
                s.trail.push(format!("fallback after {plugin} failed"));
                After::Return(Ok(Reply::Continue(s)))
            }
            other => After::Return(other),
        }
    }
}

struct Boom;

impl plugboard_core::Plugin<OnTest> for Boom {
    fn call(&self, _: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        panic!("boom")
    }
}

#[test]
fn a_wrapper_sees_the_chains_failure_and_may_replace_it() {
    let e = engine();
    started(&e, &[("one", 1)]);
    e.register(Registration::new("boom").priority(2), Boom)
        .unwrap();
    e.start("boom").unwrap();
    // Without a wrapper the failure reaches the caller (pluggy: the exception).
    assert!(matches!(
        e.call::<OnTest>(OnTest::new()),
        Err(CallError::PluginFailed { plugin, .. }) if plugin == "boom"
    ));
    // A wrapper that sees it and answers instead (pluggy: `force_result`); the failure
    // is still counted against the plugin.
    e.register_wrapper::<OnTest, _>(Registration::new("fallback"), Fallback)
        .unwrap();
    e.start("fallback").unwrap();
    assert_eq!(trail(&e), ["fallback after boom failed"]);
    assert_eq!(e.plugin("boom").unwrap().failures, 2);
    // A wrapper that only logs passes the failure on.
    wrapper(&e, "log", 0);
    assert_eq!(
        trail(&e),
        ["log:before", "fallback after boom failed", "log:after(ok)"]
    );
}

/// Answers from its cache without running the chain; fills the cache on the way out.
struct Cache(Mutex<Option<OnTest>>);

impl Wrapper<OnTest> for Cache {
    type Token = ();

    fn before(&self, state: OnTest, _cx: &Context<'_>) -> (Reply<OnTest>, ()) {
        match self.0.lock().unwrap().clone() {
            Some(hit) => (Reply::Halt(hit), ()),
            None => (Reply::Continue(state), ()),
        }
    }

    fn after(&self, outcome: Outcome<OnTest>, _: &mut (), _cx: &Context<'_>) -> After<OnTest> {
        if let Ok(Reply::Continue(s)) = &outcome {
            *self.0.lock().unwrap() = Some(s.clone());
        }
        After::Return(outcome)
    }
}

#[test]
fn a_wrapper_may_answer_without_running_the_chain() {
    let e = engine();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    e.register::<OnTest, _>(
        Registration::new("counted"),
        plugboard_core::from_fn(move |mut s: OnTest, _cx: &Context<'_>| {
            counted.fetch_add(1, Ordering::SeqCst);
            s.trail.push("ran".into());
            Reply::Continue(s)
        }),
    )
    .unwrap();
    e.start("counted").unwrap();
    e.register_wrapper::<OnTest, _>(Registration::new("cache"), Cache(Mutex::new(None)))
        .unwrap();
    e.start("cache").unwrap();
    assert_eq!(trail(&e), ["ran"]);
    assert_eq!(trail(&e), ["ran"]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the second call was answered from the cache"
    );
}

/// Runs the rest again until it stops failing, up to `tries` times.
struct Retry {
    tries: u32,
}

impl Wrapper<OnTest> for Retry {
    type Token = (OnTest, u32);

    fn before(&self, state: OnTest, _cx: &Context<'_>) -> (Reply<OnTest>, (OnTest, u32)) {
        (Reply::Continue(state.clone()), (state, 0))
    }

    fn after(
        &self,
        outcome: Outcome<OnTest>,
        token: &mut (OnTest, u32),
        _cx: &Context<'_>,
    ) -> After<OnTest> {
        match outcome {
            Err(_) if token.1 < self.tries => {
                token.1 += 1;
                After::Retry(token.0.clone())
            }
            other => After::Return(other),
        }
    }
}

#[test]
fn a_wrapper_may_run_the_rest_again_within_a_bound() {
    let e = engine();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // Fails twice, then succeeds.
    e.register::<OnTest, _>(
        Registration::new("flaky"),
        plugboard_core::from_fn(move |mut s: OnTest, _cx: &Context<'_>| {
            if c.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("not yet");
            }
            s.trail.push("flaky".into());
            Reply::Continue(s)
        }),
    )
    .unwrap();
    e.start("flaky").unwrap();
    e.register_wrapper::<OnTest, _>(Registration::new("retry"), Retry { tries: 5 })
        .unwrap();
    e.start("retry").unwrap();
    assert_eq!(trail(&e), ["flaky"]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // A wrapper that never stops retrying is cut off, on its own account.
    let e = engine();
    e.register(Registration::new("boom"), Boom).unwrap();
    e.start("boom").unwrap();
    e.register_wrapper::<OnTest, _>(Registration::new("forever"), Retry { tries: u32::MAX })
        .unwrap();
    e.start("forever").unwrap();
    match e.call::<OnTest>(OnTest::new()) {
        Err(CallError::PluginFailed {
            plugin, failure, ..
        }) => {
            assert_eq!(plugin, "forever");
            assert!(
                failure.message.contains(&MAX_RETRIES.to_string()),
                "{failure:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Panics in its second half.
struct Broken;

impl Wrapper<OnTest> for Broken {
    type Token = ();

    fn before(&self, state: OnTest, _cx: &Context<'_>) -> (Reply<OnTest>, ()) {
        (Reply::Continue(state), ())
    }

    fn after(&self, _: Outcome<OnTest>, _: &mut (), _cx: &Context<'_>) -> After<OnTest> {
        panic!("broken wrapper")
    }
}

#[test]
fn a_wrappers_own_failure_fails_the_call_on_its_account_and_counts() {
    let e = engine();
    started(&e, &[("one", 1)]);
    e.register_wrapper::<OnTest, _>(Registration::new("broken"), Broken)
        .unwrap();
    e.start("broken").unwrap();
    match e.call::<OnTest>(OnTest::new()) {
        Err(CallError::PluginFailed {
            plugin, failure, ..
        }) => {
            assert_eq!(plugin, "broken");
            assert_eq!(failure.kind, FailureKind::Panic);
            assert_eq!(failure.message, "broken wrapper");
        }
        other => panic!("unexpected {other:?}"),
    }
    let info = e.plugin("broken").unwrap();
    assert_eq!((info.failures, info.consecutive_failures), (1, 1));
    // Past the threshold it is stopped like any plugin, and the chain runs without it.
    for _ in 0..4 {
        let _ = e.call::<OnTest>(OnTest::new());
    }
    e.wait_idle(std::time::Duration::from_secs(60));
    assert_eq!(
        e.plugin("broken").unwrap().record.status,
        plugboard_core::Status::Stopped
    );
    assert_eq!(trail(&e), ["one"]);
}

struct Later;

impl AsyncPlugin<OnTest> for Later {
    async fn call(&self, mut state: OnTest, _cx: &Context<'_>) -> Reply<OnTest> {
        tokio::task::yield_now().await;
        state.trail.push("later".into());
        Reply::Continue(state)
    }
}

#[tokio::test]
async fn wrappers_run_around_async_chains_too() {
    let e = engine();
    e.register_async(Registration::new("later").priority(2), Later)
        .unwrap();
    e.start("later").unwrap();
    started(&e, &[("one", 1)]);
    wrapper(&e, "outer", 1);
    e.register_wrapper::<OnTest, _>(Registration::new("retry").priority(2), Retry { tries: 1 })
        .unwrap();
    e.start("retry").unwrap();
    let out = e
        .hook::<OnTest>()
        .unwrap()
        .call_async(OnTest::new())
        .await
        .unwrap();
    assert_eq!(
        out.trail,
        ["outer:before", "one", "later", "outer:after(ok)"]
    );
}

#[test]
fn profiling_times_a_wrapper_with_the_rest_inside_it() {
    let e = engine();
    started(&e, &[("one", 1), ("two", 2)]);
    wrapper(&e, "w", 1);
    e.set_profiling("on_test", true).unwrap();
    for _ in 0..3 {
        trail(&e);
    }
    let p = e.profile("on_test").unwrap();
    assert!(p.iter().all(|p| p.calls == 3), "{p:?}");
    assert_eq!(e.event_profile("on_test").unwrap().calls, 3);
    let info = e.plugin("w").unwrap();
    assert_eq!(info.failures, 0);
}
