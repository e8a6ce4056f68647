//! Edge cases of the lifecycle: queries from callbacks, panicking callbacks of any kind of
//! code, streaks reset by operators, causes, and failed operations leaving no trace.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use plugboard_core::{Context, Plugin, PluginRecord, Reason, Reply, Status};
use plugboard_engine::{
    Callbacks, Cause, Code, Engine, EngineError, Failure, LifecycleEvent, OnFailure, Op,
    Registration, SyncStep,
};
use serde_json::Value;

use crate::{OnTest, Tag, engine, started, status, trail};

struct Curious(Engine, Arc<AtomicBool>);
impl Plugin<OnTest> for Curious {
    fn call(&self, s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        Reply::Continue(s)
    }
    fn start(&self, _: &PluginRecord) -> Result<(), Reason> {
        // Reading the registry from a callback must not deadlock.
        let seen = self.0.plugins().len() == 2 && self.0.plugin("other").is_some();
        self.1.store(seen, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_callback_can_read_the_registry() {
    let e = engine();
    started(&e, &[("other", 1)]);
    let seen = Arc::new(AtomicBool::new(false));
    e.register(
        Registration::new("curious"),
        Curious(e.clone(), seen.clone()),
    )
    .unwrap();
    e.start("curious").unwrap();
    assert!(seen.load(Ordering::SeqCst));
}

/// A JSON step whose `restart` and `stop` callbacks panic.
struct PanickyStep;
impl SyncStep<Value> for PanickyStep {
    fn run(&self, state: Value, _: &Context<'_>) -> Result<Reply<Value>, Failure> {
        Ok(Reply::Continue(state))
    }
}
impl Callbacks for PanickyStep {
    fn lifecycle(&self, op: Op, _: &PluginRecord) -> Result<(), Reason> {
        if matches!(op, Op::Restart | Op::Stop) {
            panic!("{op} exploded");
        }
        Ok(())
    }
    fn health_check(&self) -> Result<(), Reason> {
        panic!("health exploded")
    }
}

#[test]
fn panicking_callbacks_of_any_code_are_refusals() {
    let e = engine();
    started(&e, &[("a", 1)]);
    e.register_code(
        "on_test",
        Registration::new("step").priority(2),
        Code::json_step(Arc::new(PanickyStep)),
    )
    .unwrap();
    e.start("step").unwrap();
    let err = e.restart("step").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `step` refused to restart: callback panicked: restart exploded"
    );
    assert_eq!(status(&e, "step"), Status::Started);
    let h = e.health("step").unwrap();
    assert!(!h.healthy);
    assert_eq!(
        h.reason.as_deref(),
        Some("callback panicked: health exploded")
    );
    // In bulk, the refusal is reported and the others still restart, consistently.
    let r = e.restart(plugboard_engine::Target::All).unwrap();
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(status(&e, "a"), Status::Restarted);
    assert_eq!(status(&e, "step"), Status::Started);
    // A panicking stop callback cannot keep the plugin running: reported, and stopped.
    let r = e.stop(plugboard_engine::Target::All).unwrap();
    assert!(r.skipped.is_empty());
    assert_eq!(
        r.overridden,
        vec![(
            "step".to_owned(),
            "callback panicked: stop exploded".to_owned()
        )]
    );
    assert_eq!(status(&e, "step"), Status::Stopped);
    assert!(trail(&e).is_empty());
}

struct Flaky(Arc<AtomicBool>);
impl Plugin<OnTest> for Flaky {
    fn call(&self, s: OnTest, _: &Context<'_>) -> Reply<OnTest> {
        if self.0.load(Ordering::SeqCst) {
            panic!("flaky");
        }
        Reply::Continue(s)
    }
}

#[test]
fn enabling_after_an_auto_stop_gives_a_clean_streak() {
    let e = Engine::builder()
        .reference_events(false)
        .failure_threshold(3)
        .on_failure(OnFailure::Skip)
        .build();
    let on = Arc::new(AtomicBool::new(true));
    e.register(Registration::new("flaky"), Flaky(on.clone()))
        .unwrap();
    e.start("flaky").unwrap();
    for _ in 0..3 {
        e.call::<OnTest>(OnTest::new()).unwrap();
    }
    assert!(
        e.wait_idle(std::time::Duration::from_secs(60)),
        "the stop ran"
    );
    assert_eq!(status(&e, "flaky"), Status::Stopped);
    e.enable("flaky").unwrap();
    assert_eq!(e.plugin("flaky").unwrap().consecutive_failures, 0);
    // One more failure is one, not four: the plugin keeps running.
    e.call::<OnTest>(OnTest::new()).unwrap();
    assert!(e.wait_idle(std::time::Duration::from_secs(60)));
    assert_eq!(status(&e, "flaky"), Status::Restarted);
}

#[test]
fn restart_of_a_plugin_that_never_ran_starts_it() {
    let e = engine();
    let tag = Tag::new("a");
    let starts = tag.starts.clone();
    e.register(Registration::new("a"), tag).unwrap();
    let r = e.restart("a").unwrap();
    assert_eq!(r.changed[0].status, Status::Started);
    assert_eq!(starts.load(Ordering::SeqCst), 1, "its start callback ran");
}

#[test]
fn a_start_held_by_a_missing_dependency_names_the_dependency() {
    let e = engine();
    let mut rx = e.subscribe();
    e.register(
        Registration::new("child").hard_depends(["parent"]),
        Tag::new("child"),
    )
    .unwrap();
    e.start("child").unwrap();
    let mut cause = None;
    while let Ok(ev) = rx.try_recv() {
        if let LifecycleEvent::StatusChanged {
            plugin,
            to: Status::Held,
            cause: c,
            ..
        } = ev
        {
            assert_eq!(plugin, "child");
            cause = Some(c);
        }
    }
    assert_eq!(
        cause,
        Some(Cause::DependencyDown {
            dependency: "parent".into()
        })
    );
}

#[test]
fn a_failed_registration_declares_nothing() {
    plugboard_core::event! {
        /// Never declared.
        pub struct OnNever("on_never", section = "test") {
            /// Nothing.
            pub x: u8,
        }
    }
    struct P;
    impl Plugin<OnNever> for P {
        fn call(&self, s: OnNever, _: &Context<'_>) -> Reply<OnNever> {
            Reply::Continue(s)
        }
    }
    let e = engine();
    assert!(matches!(
        e.register(Registration::new("bad name!"), P),
        Err(EngineError::InvalidName { .. })
    ));
    assert!(e.event("on_never").is_none());
}

#[test]
fn unregister_reports_what_it_removed() {
    let e = engine();
    started(&e, &[("a", 1)]);
    let r = e.unregister("a").unwrap();
    assert_eq!(r.changed.len(), 1);
    assert_eq!(r.changed[0].name, "a");
}
