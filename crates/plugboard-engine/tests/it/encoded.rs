//! Encoded steps (the kind sandboxed plugins are): consecutive ones pass the encoded state
//! along without decoding it in between; a bad reply is charged to the step that made it.

use std::sync::Arc;

use std::sync::Mutex;

use plugboard_core::{Context, Event, PluginRecord, Reason, Reply, Wire};
use plugboard_engine::{
    Callbacks, Code, EncodedStep, Failure, FailureKind, OnFailure, Op, Registration,
};
use serde_json::{Value, json};

use crate::{OnTest, engine, started, trail};

/// Rewrites the JSON state with a function.
struct Rewrite(fn(Value) -> Value);

impl EncodedStep for Rewrite {
    fn run(&self, state: &[u8], wire: Wire, _: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure> {
        assert_eq!(
            wire,
            Wire::Json,
            "a step that never asked for binary got it"
        );
        let v: Value = serde_json::from_slice(state)
            .map_err(|e| Failure::new(FailureKind::InvalidReply, e.to_string()))?;
        Ok(Reply::Continue(serde_json::to_vec(&(self.0)(v)).unwrap()))
    }
}

impl Callbacks for Rewrite {
    fn lifecycle(&self, _: Op, _: &PluginRecord) -> Result<(), Reason> {
        Ok(())
    }
    fn health_check(&self) -> Result<(), Reason> {
        Ok(())
    }
}

fn add(e: &plugboard_engine::Engine, name: &str, priority: u8, f: fn(Value) -> Value) {
    e.register_code(
        "on_test",
        Registration::new(name).priority(priority),
        Code::encoded_step(Arc::new(Rewrite(f))),
    )
    .unwrap();
    e.start(name).unwrap();
}

#[test]
fn consecutive_encoded_steps_are_not_decoded_in_between() {
    let e = engine();
    started(&e, &[("native_first", 1), ("native_last", 9)]);
    // `break` leaves a state that is not an `OnTest` (trail is a string): decoding it
    // between the two steps would fail. `mend` repairs it.
    add(&e, "break", 2, |mut v| {
        v["trail"] = json!("not a list");
        v
    });
    add(&e, "mend", 3, |mut v| {
        v["trail"] = json!(["native_first", "mended"]);
        v
    });
    assert_eq!(trail(&e), ["native_first", "mended", "native_last"]);
}

/// An engine that skips failed steps, with `on_test` and an encoded step `fine` that
/// writes its mark in `secret`.
fn skipping_with_fine() -> plugboard_engine::Engine {
    let e = plugboard_engine::Engine::builder()
        .reference_events(false)
        .on_failure(OnFailure::Skip)
        .build();
    e.declare::<OnTest>().unwrap();
    add(&e, "fine", 1, |mut v| {
        v["secret"] = json!("fine was here");
        v
    });
    e
}

#[test]
fn an_invalid_state_after_a_group_is_charged_to_its_last_step() {
    let e = skipping_with_fine();
    add(&e, "bad", 2, |mut v| {
        v["trail"] = json!(42);
        v
    });
    // Skip goes on with the state `bad` was given: `fine`'s change survives.
    let out = e.call::<OnTest>(OnTest::new()).unwrap();
    assert_eq!(out.secret, "fine was here");
    assert_eq!(e.plugin("bad").unwrap().failures, 1);
    assert_eq!(e.plugin("fine").unwrap().failures, 0);
    // Under the default policy the call fails, naming it.
    e.set_failure_policy("on_test", OnFailure::Error).unwrap();
    let err = e.call::<OnTest>(OnTest::new()).unwrap_err().to_string();
    assert!(
        err.contains("plugin `bad` failed") && err.contains("not a valid state"),
        "{err}"
    );
}

#[test]
fn a_json_reply_with_fields_the_state_lacks_is_refused_naming_them_not_silently_cut() {
    let e = skipping_with_fine();
    add(&e, "adds", 2, |mut v| {
        v["note"] = json!("lost?");
        v["trail"] = json!(["adds"]);
        v
    });
    // Skip goes on with the state `adds` was given; its reply is not half-applied.
    let out = e.call::<OnTest>(OnTest::new()).unwrap();
    assert_eq!(out.secret, "fine was here");
    assert!(out.trail.is_empty(), "{:?}", out.trail);
    let info = e.plugin("adds").unwrap();
    assert_eq!(info.failures, 1);
    let why = info.last_error.unwrap().message;
    assert!(
        why.contains("reply has fields the event's state does not: `note`"),
        "{why}"
    );
    // A reply with only the state's fields is taken, as before.
    assert_eq!(e.plugin("fine").unwrap().failures, 0);
    // Under the default policy the call fails, naming the plugin and the field.
    e.set_failure_policy("on_test", OnFailure::Error).unwrap();
    let err = e.call::<OnTest>(OnTest::new()).unwrap_err().to_string();
    assert!(
        err.contains("plugin `adds` failed") && err.contains("`note`"),
        "{err}"
    );
}

/// Replies with bytes that are not JSON at all.
struct Garbage;
impl EncodedStep for Garbage {
    fn run(&self, _: &[u8], _: Wire, _: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure> {
        Ok(Reply::Continue(b"{not json".to_vec()))
    }
}
impl Callbacks for Garbage {
    fn lifecycle(&self, _: Op, _: &PluginRecord) -> Result<(), Reason> {
        Ok(())
    }
    fn health_check(&self) -> Result<(), Reason> {
        Ok(())
    }
}

#[test]
fn malformed_bytes_are_charged_to_the_step_that_made_them_not_the_next() {
    let e = engine();
    e.declare::<OnTest>().unwrap();
    e.register_code(
        "on_test",
        Registration::new("garbage").priority(1),
        Code::encoded_step(Arc::new(Garbage)),
    )
    .unwrap();
    e.start("garbage").unwrap();
    add(&e, "innocent", 2, |v| v);
    let err = e.call::<OnTest>(OnTest::new()).unwrap_err().to_string();
    assert!(
        err.contains("plugin `garbage` failed") && err.contains("not a valid state"),
        "{err}"
    );
    assert_eq!(e.plugin("garbage").unwrap().failures, 1);
    assert_eq!(e.plugin("innocent").unwrap().failures, 0);
}

#[test]
fn an_encoded_step_that_keeps_replying_an_invalid_state_is_stopped_at_the_threshold() {
    let e = engine();
    e.declare::<OnTest>().unwrap();
    add(&e, "bad", 1, |mut v| {
        v["trail"] = json!(42);
        v
    });
    for _ in 0..5 {
        assert!(e.call::<OnTest>(OnTest::new()).is_err());
    }
    assert!(
        e.wait_idle(std::time::Duration::from_secs(60)),
        "the stop ran"
    );
    let bad = e.plugin("bad").unwrap();
    assert_eq!(bad.record.status, plugboard_core::Status::Stopped);
    assert_eq!(bad.failures, 5);
}

#[test]
fn a_trace_through_encoded_steps_records_each_step_once() {
    let e = engine();
    e.declare::<OnTest>().unwrap();
    add(&e, "one", 1, |v| v);
    add(&e, "two", 2, |mut v| {
        v["trail"] = json!(["two"]);
        v
    });
    let t = e.hook::<OnTest>().unwrap().trace(OnTest::new());
    assert_eq!(t.result.unwrap().trail, ["two"]);
    let names: Vec<_> = t.steps.iter().map(|s| s.plugin.as_str()).collect();
    assert_eq!(names, ["one", "two"]);
    assert!(
        t.steps
            .iter()
            .all(|s| s.outcome == plugboard_engine::StepOutcome::Continued)
    );
    // A trace decodes what passes between encoded steps, to show each step's reply.
    let replied: Vec<_> = t
        .steps
        .iter()
        .map(|s| s.state.as_ref().map(|v| v["trail"].clone()))
        .collect();
    assert_eq!(replied, [Some(json!([])), Some(json!(["two"]))]);
}

/// Appends its name to the trail, working in the binary layout when its `expects`
/// fingerprint matches the event's; records the wire it was given. `corrupt` replies bytes
/// that are not a state.
struct Typed {
    name: &'static str,
    expects: Option<u64>,
    corrupt: bool,
    seen: Arc<Mutex<Vec<(&'static str, Wire)>>>,
}

impl EncodedStep for Typed {
    fn run(&self, state: &[u8], wire: Wire, _: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure> {
        self.seen.lock().unwrap().push((self.name, wire));
        if self.corrupt {
            return Ok(Reply::Continue(vec![0xff; 3]));
        }
        let mut s: OnTest = wire
            .decode(state)
            .map_err(|e| Failure::new(FailureKind::PluginError, format!("invalid state: {e}")))?;
        s.trail.push(self.name.to_owned());
        Ok(Reply::Continue(wire.encode(&s).unwrap()))
    }

    fn wire(&self, _: &str, layout: Option<u64>) -> Wire {
        if layout.is_some() && layout == self.expects {
            Wire::Binary
        } else {
            Wire::Json
        }
    }
}

impl Callbacks for Typed {
    fn lifecycle(&self, _: Op, _: &PluginRecord) -> Result<(), Reason> {
        Ok(())
    }
    fn health_check(&self) -> Result<(), Reason> {
        Ok(())
    }
}

type Seen = Arc<Mutex<Vec<(&'static str, Wire)>>>;

fn typed(
    e: &plugboard_engine::Engine,
    seen: &Seen,
    name: &'static str,
    priority: u8,
    expects: Option<u64>,
    corrupt: bool,
) {
    e.register_code(
        "on_test",
        Registration::new(name).priority(priority),
        Code::encoded_step(Arc::new(Typed {
            name,
            expects,
            corrupt,
            seen: seen.clone(),
        })),
    )
    .unwrap();
    e.start(name).unwrap();
}

#[test]
fn steps_that_share_the_layout_fingerprint_get_the_binary_wire_others_json() {
    let e = engine();
    e.declare::<OnTest>().unwrap();
    let seen = Seen::default();
    let layout = OnTest::binary_layout();
    assert!(layout.is_some());
    typed(&e, &seen, "bin1", 1, layout, false);
    typed(&e, &seen, "bin2", 2, layout, false);
    // Built against another layout: falls back to JSON rather than misread bytes.
    typed(&e, &seen, "stale", 3, Some(12345), false);
    typed(&e, &seen, "bin3", 4, layout, false);
    assert_eq!(trail(&e), ["bin1", "bin2", "stale", "bin3"]);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("bin1", Wire::Binary),
            ("bin2", Wire::Binary),
            ("stale", Wire::Json),
            ("bin3", Wire::Binary)
        ]
    );
    // A dynamic event has no layout: everybody gets JSON.
    let e = engine();
    e.declare_dynamic(plugboard_core::EventInfo::dynamic(
        "on_free", "test", "free",
    ))
    .unwrap();
    let seen2 = Seen::default();
    e.register_code(
        "on_free",
        Registration::new("t"),
        Code::encoded_step(Arc::new(Typed {
            name: "t",
            expects: layout,
            corrupt: true,
            seen: seen2.clone(),
        })),
    )
    .unwrap();
    e.start("t").unwrap();
    let _ = e.call_json("on_free", json!({}), &Default::default());
    assert_eq!(*seen2.lock().unwrap(), [("t", Wire::Json)]);
}

#[test]
fn binary_garbage_is_charged_to_the_step_that_made_it_under_every_policy() {
    for policy in [OnFailure::Error, OnFailure::ReturnInput, OnFailure::Skip] {
        let e = plugboard_engine::Engine::builder()
            .reference_events(false)
            .on_failure(policy)
            .build();
        e.declare::<OnTest>().unwrap();
        let seen = Seen::default();
        let layout = OnTest::binary_layout();
        typed(&e, &seen, "first", 1, layout, false);
        typed(&e, &seen, "garbage", 2, layout, true);
        typed(&e, &seen, "innocent", 3, layout, false);
        let out = e.call::<OnTest>(OnTest::new());
        match policy {
            OnFailure::Error => {
                let err = out.unwrap_err().to_string();
                assert!(err.contains("plugin `garbage` failed"), "{err}");
            }
            OnFailure::ReturnInput => assert!(out.unwrap().trail.is_empty()),
            // Skipping `garbage` goes on from what it was given.
            OnFailure::Skip => assert_eq!(out.unwrap().trail, ["first", "innocent"]),
        }
        assert_eq!(e.plugin("garbage").unwrap().failures, 1, "{policy:?}");
        assert_eq!(e.plugin("innocent").unwrap().failures, 0, "{policy:?}");
        assert_eq!(e.plugin("first").unwrap().failures, 0, "{policy:?}");
    }
}
