//! Isolation: panics are contained, counted, published, and stop a plugin past the threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use plugboard_core::{Context, Plugin, Reply, Status};
use plugboard_engine::{
    CallError, Cause, Engine, FailureKind, LifecycleEvent, OnFailure, Registration,
};

use crate::{OnTest, Tag, status};

/// Panics while its switch is on.
struct Flaky(Arc<AtomicBool>);

impl Plugin<OnTest> for Flaky {
    fn call(&self, mut s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        if self.0.load(Ordering::SeqCst) {
            panic!("flaky plugin exploded");
        }
        s.trail.push("flaky".into());
        Reply::Continue(s)
    }
}

fn setup(policy: OnFailure, threshold: u32) -> (Engine, Arc<AtomicBool>) {
    let e = Engine::builder()
        .reference_events(false)
        .on_failure(policy)
        .failure_threshold(threshold)
        .build();
    let on = Arc::new(AtomicBool::new(true));
    e.register(Registration::new("before").priority(1), Tag::new("before"))
        .unwrap();
    e.register(Registration::new("flaky").priority(2), Flaky(on.clone()))
        .unwrap();
    e.register(Registration::new("after").priority(3), Tag::new("after"))
        .unwrap();
    e.start(plugboard_engine::Target::All).unwrap();
    (e, on)
}

#[test]
fn default_policy_reports_the_failing_plugin() {
    let (e, _) = setup(OnFailure::default(), 5);
    let err = e.call::<OnTest>(OnTest::new()).unwrap_err();
    match err {
        CallError::PluginFailed {
            event,
            plugin,
            failure,
        } => {
            assert_eq!((event.as_str(), plugin.as_str()), ("on_test", "flaky"));
            assert_eq!(failure.kind, FailureKind::Panic);
            assert_eq!(failure.message, "flaky plugin exploded");
        }
        other => panic!("unexpected {other:?}"),
    }
    let info = e.plugin("flaky").unwrap();
    assert_eq!((info.failures, info.consecutive_failures), (1, 1));
    assert_eq!(info.last_error.unwrap().message, "flaky plugin exploded");
}

#[test]
fn the_event_profile_counts_calls_that_ended_in_an_error_and_a_trace_shows_where() {
    let (e, on) = setup(OnFailure::default(), 100);
    e.set_profiling("on_test", true).unwrap();
    for _ in 0..3 {
        assert!(e.call::<OnTest>(OnTest::new()).is_err());
    }
    on.store(false, Ordering::SeqCst);
    e.call::<OnTest>(OnTest::new()).unwrap();
    let whole = e.event_profile("on_test").unwrap();
    assert_eq!((whole.calls, whole.errors), (4, 3));
    // A skipped failure leaves its step without a reply; the next step's is the state.
    let (e, _) = setup(OnFailure::Skip, 100);
    let t = e.hook::<OnTest>().unwrap().trace(OnTest::new());
    let replied: Vec<_> = t
        .steps
        .iter()
        .map(|s| s.state.as_ref().map(|v| v["trail"].clone()))
        .collect();
    assert_eq!(
        replied,
        [
            Some(serde_json::json!(["before"])),
            None,
            Some(serde_json::json!(["before", "after"]))
        ]
    );
}

#[test]
fn return_input_policy_gives_back_the_input() {
    let (e, _) = setup(OnFailure::ReturnInput, 5);
    let out = e.call::<OnTest>(OnTest::new()).unwrap();
    assert!(out.trail.is_empty());
    assert_eq!(out.secret, "s3cret");
}

#[test]
fn skip_policy_goes_on_without_the_failing_plugin() {
    let (e, _) = setup(OnFailure::Skip, 5);
    let out = e.call::<OnTest>(OnTest::new()).unwrap();
    assert_eq!(out.trail, ["before", "after"]);
}

#[test]
fn policy_can_be_set_per_event() {
    let (e, _) = setup(OnFailure::Error, 0);
    assert!(e.call::<OnTest>(OnTest::new()).is_err());
    e.set_failure_policy("on_test", OnFailure::Skip).unwrap();
    assert_eq!(
        e.call::<OnTest>(OnTest::new()).unwrap().trail,
        ["before", "after"]
    );
}

#[test]
fn consecutive_failures_stop_the_plugin_at_the_threshold() {
    let (e, on) = setup(OnFailure::Skip, 3);
    let mut rx = e.subscribe();
    // Two failures, then a success resets the streak.
    for _ in 0..2 {
        e.call::<OnTest>(OnTest::new()).unwrap();
    }
    on.store(false, Ordering::SeqCst);
    assert_eq!(
        e.call::<OnTest>(OnTest::new()).unwrap().trail,
        ["before", "flaky", "after"]
    );
    assert_eq!(e.plugin("flaky").unwrap().consecutive_failures, 0);
    on.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        e.call::<OnTest>(OnTest::new()).unwrap();
    }
    assert_eq!(status(&e, "flaky"), Status::Started);
    e.call::<OnTest>(OnTest::new()).unwrap();
    // The stop runs off the call path; wait for it.
    assert!(
        e.wait_idle(std::time::Duration::from_secs(60)),
        "the stop ran"
    );
    assert_eq!(status(&e, "flaky"), Status::Stopped);
    assert_eq!(e.plugin("flaky").unwrap().failures, 5);
    assert_eq!(
        e.call::<OnTest>(OnTest::new()).unwrap().trail,
        ["before", "after"]
    );

    let mut failed = 0;
    let mut stopped = None;
    while let Ok(ev) = rx.try_recv() {
        match ev {
            LifecycleEvent::PluginFailed { plugin, .. } if plugin == "flaky" => failed += 1,
            LifecycleEvent::StatusChanged {
                plugin,
                to: Status::Stopped,
                cause,
                ..
            } if plugin == "flaky" => stopped = Some(cause),
            _ => {}
        }
    }
    assert_eq!(failed, 5);
    assert_eq!(stopped, Some(Cause::FailureThreshold { failures: 3 }));
}

#[test]
fn a_panic_inside_a_thread_does_not_reach_the_caller() {
    let (e, _) = setup(OnFailure::ReturnInput, 0);
    let handle = std::thread::spawn(move || e.call::<OnTest>(OnTest::new()).map(|s| s.trail.len()));
    assert_eq!(
        handle
            .join()
            .expect("the caller's thread survived")
            .unwrap(),
        0
    );
}

struct PanicsInCallbacks;
impl Plugin<OnTest> for PanicsInCallbacks {
    fn call(&self, s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        Reply::Continue(s)
    }
    fn start(&self, _: &plugboard_core::PluginRecord) -> Result<(), plugboard_core::Reason> {
        panic!("start blew up")
    }
}

#[test]
fn a_panicking_callback_is_a_refusal_and_the_engine_stays_usable() {
    let e = crate::engine();
    e.register(Registration::new("p"), PanicsInCallbacks)
        .unwrap();
    let err = e.start("p").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `p` refused to start: callback panicked: start blew up"
    );
    assert_eq!(status(&e, "p"), Status::Registered);
    crate::started(&e, &[("ok", 1)]);
    assert_eq!(crate::trail(&e), ["ok"]);
}

#[test]
fn the_default_policy_also_auto_stops_at_five() {
    let (e, _) = setup(OnFailure::default(), 5);
    for i in 1..=5 {
        let err = e.call::<OnTest>(OnTest::new()).unwrap_err();
        assert!(matches!(err, CallError::PluginFailed { .. }), "call {i}");
    }
    assert!(
        e.wait_idle(std::time::Duration::from_secs(60)),
        "the stop ran"
    );
    assert_eq!(status(&e, "flaky"), Status::Stopped);
    assert_eq!(
        e.call::<OnTest>(OnTest::new()).unwrap().trail,
        ["before", "after"]
    );
    // Stopped by the threshold is sticky like any stop.
    assert!(e.start("flaky").is_err());
}

/// Always fails; its `stop` callback waits until the test lets it go.
struct SlowToStop(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Plugin<OnTest> for SlowToStop {
    fn call(&self, _: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        panic!("always fails")
    }
    fn stop(&self, _: &plugboard_core::PluginRecord) -> Result<(), plugboard_core::Reason> {
        let rx = self.0.lock().unwrap();
        let _ = rx.recv_timeout(std::time::Duration::from_secs(60));
        Ok(())
    }
}

#[test]
fn the_call_that_reaches_the_threshold_does_not_run_the_stop_and_the_stop_is_never_dropped() {
    // A background queue of one: the stop does not go through it (it has its own thread).
    let e = Engine::builder()
        .reference_events(false)
        .failure_threshold(2)
        .background_limit(1)
        .build();
    let (release, rx) = std::sync::mpsc::channel();
    e.register(
        Registration::new("slow"),
        SlowToStop(std::sync::Mutex::new(rx)),
    )
    .unwrap();
    e.start("slow").unwrap();
    assert!(e.call::<OnTest>(OnTest::new()).is_err());
    // The second failure reaches the threshold: the call returns while the stop callback
    // is still waiting (were the stop run inside the call, it would not return).
    let (done_tx, done) = std::sync::mpsc::channel();
    let caller = e.clone();
    std::thread::spawn(move || {
        let r = caller.call::<OnTest>(OnTest::new());
        let _ = done_tx.send(r.is_err());
    });
    assert_eq!(
        done.recv_timeout(std::time::Duration::from_secs(30)),
        Ok(true),
        "the call waited for the stop"
    );
    assert!(
        !e.wait_idle(std::time::Duration::from_millis(50)),
        "the stop is pending"
    );
    release.send(()).unwrap();
    assert!(e.wait_idle(std::time::Duration::from_secs(60)));
    assert_eq!(status(&e, "slow"), Status::Stopped);
}
