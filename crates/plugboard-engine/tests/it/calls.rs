//! Dispatch: order, halting, private parts, meta, traces.

use plugboard_core::{Context, Meta, Plugin, Reply, from_fn};
use plugboard_engine::{CallOptions, Registration, StepOutcome};
use serde_json::json;

use crate::{OnTest, Tag, engine, started, trail};

#[test]
fn halt_at_priority_two_keeps_one_and_two_never_hundred() {
    let e = engine();
    e.register(Registration::new("one").priority(1), Tag::new("one"))
        .unwrap();
    e.register(Registration::new("two").priority(2), Tag::halting("two"))
        .unwrap();
    e.register(
        Registration::new("hundred").priority(100),
        Tag::new("hundred"),
    )
    .unwrap();
    e.start(plugboard_engine::Target::All).unwrap();
    assert_eq!(trail(&e), ["one", "two"]);
}

#[test]
fn no_plugins_returns_the_input_unchanged() {
    let e = engine();
    // Never declared.
    let out = e.call::<OnTest>(OnTest::new()).unwrap();
    assert!(out.trail.is_empty());
    assert_eq!(out.secret, "s3cret");
    // Declared, registered but not started.
    e.register(Registration::new("idle"), Tag::new("idle"))
        .unwrap();
    assert!(trail(&e).is_empty());
    let v = json!({"trail": ["x"], "secret": "y"});
    assert_eq!(
        e.call_json("on_test", v.clone(), &CallOptions::default())
            .unwrap(),
        v
    );
}

#[test]
fn ties_are_broken_by_name() {
    let e = engine();
    started(
        &e,
        &[("charlie", 10), ("alpha", 10), ("bravo", 10), ("first", 1)],
    );
    assert_eq!(trail(&e), ["first", "alpha", "bravo", "charlie"]);
}

#[test]
fn dependencies_run_before_priority() {
    let e = engine();
    // `a` would run first by priority, but it depends (softly) on `z`, priority 90.
    e.register(
        Registration::new("a").priority(1).soft_depends(["z"]),
        Tag::new("a"),
    )
    .unwrap();
    e.register(Registration::new("m").priority(50), Tag::new("m"))
        .unwrap();
    e.register(Registration::new("z").priority(90), Tag::new("z"))
        .unwrap();
    e.start(plugboard_engine::Target::All).unwrap();
    assert_eq!(trail(&e), ["m", "z", "a"]);
    // A soft dependency that is absent only orders: `a` still runs.
    e.stop("z").unwrap();
    assert_eq!(trail(&e), ["a", "m"]);
}

#[test]
fn private_part_is_restored_typed_and_json() {
    let e = engine();
    started(&e, &[("one", 1), ("two", 2)]);
    let hook = e.hook::<OnTest>().unwrap();
    let out = hook.call_keeping(OnTest::new(), |s| &mut s.secret).unwrap();
    assert_eq!(out.trail, ["one", "two"]);
    assert_eq!(out.secret, "s3cret");

    let opts = CallOptions {
        private: vec!["secret".into()],
        ..Default::default()
    };
    let out = e
        .call_json("on_test", json!({"trail": [], "secret": "keep"}), &opts)
        .unwrap();
    assert_eq!(out, json!({"trail": ["one", "two"], "secret": "keep"}));
    // Without it, the plugins' change shows.
    let out = e
        .call_json(
            "on_test",
            json!({"trail": [], "secret": "keep"}),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(out["secret"], "changed by two");
}

#[test]
fn no_return_runs_the_chain_and_returns_the_input() {
    let e = engine();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = seen.clone();
    e.register::<OnTest, _>(
        Registration::new("count"),
        from_fn(move |s: OnTest, _: &Context<'_>| {
            s2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Reply::Continue(OnTest {
                trail: vec!["x".into()],
                ..s
            })
        }),
    )
    .unwrap();
    e.start("count").unwrap();
    let out = e.hook::<OnTest>().unwrap().call_no_return(OnTest::new());
    assert!(out.trail.is_empty());
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    let opts = CallOptions {
        return_input: true,
        ..Default::default()
    };
    let v = json!({"trail": [], "secret": "a"});
    assert_eq!(e.call_json("on_test", v.clone(), &opts).unwrap(), v);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);
}

struct ReadsMeta;
impl Plugin<OnTest> for ReadsMeta {
    fn call(&self, mut s: OnTest, cx: &Context<'_>) -> Reply<OnTest> {
        let who = cx
            .meta()
            .get("request_id")
            .and_then(|v| v.as_str())
            .unwrap_or("none");
        let host = cx
            .meta()
            .host::<String>()
            .map(String::as_str)
            .unwrap_or("no host");
        s.trail
            .push(format!("{}:{}:{}:{}", cx.event(), cx.plugin(), who, host));
        Reply::Continue(s)
    }
}

#[test]
fn meta_reaches_plugins_and_never_the_result() {
    let e = engine();
    e.register(Registration::new("meta"), ReadsMeta).unwrap();
    e.start("meta").unwrap();
    let meta = Meta::new()
        .with("request_id", "r-42")
        .with_host(std::sync::Arc::new("host object".to_owned()));
    let out = e
        .hook::<OnTest>()
        .unwrap()
        .call_with(OnTest::new(), &meta)
        .unwrap();
    assert_eq!(out.trail, ["on_test:meta:r-42:host object"]);
    let out = e.hook::<OnTest>().unwrap().call(OnTest::new()).unwrap();
    assert_eq!(out.trail, ["on_test:meta:none:no host"]);
}

#[test]
fn trace_reports_order_and_who_halted() {
    let e = engine();
    e.register(Registration::new("one").priority(1), Tag::new("one"))
        .unwrap();
    e.register(Registration::new("two").priority(2), Tag::halting("two"))
        .unwrap();
    e.register(Registration::new("three").priority(3), Tag::new("three"))
        .unwrap();
    e.start(plugboard_engine::Target::Event("on_test")).unwrap();
    let t = e.hook::<OnTest>().unwrap().trace(OnTest::new());
    assert_eq!(t.result.unwrap().trail, ["one", "two"]);
    let steps: Vec<_> = t
        .steps
        .iter()
        .map(|s| (s.plugin.as_str(), s.outcome.clone()))
        .collect();
    assert_eq!(
        steps,
        [
            ("one", StepOutcome::Continued),
            ("two", StepOutcome::Halted)
        ]
    );
    assert_eq!(t.halted_by.as_deref(), Some("two"));
    // Each step carries the state it replied: what the next one was given.
    let replied: Vec<_> = t
        .steps
        .iter()
        .map(|s| s.state.as_ref().map(|v| v["trail"].clone()))
        .collect();
    assert_eq!(replied, [Some(json!(["one"])), Some(json!(["one", "two"]))]);
    // And the trace the state the first was given.
    assert_eq!(
        t.given.as_ref().map(|v| v["trail"].clone()),
        Some(json!([]))
    );
    let t = e.trace_json(
        "on_test",
        serde_json::to_value(OnTest::new()).unwrap(),
        &CallOptions::default(),
    );
    assert_eq!(t.result.unwrap()["trail"], json!(["one", "two"]));
}

#[test]
fn profile_counts_calls_while_on() {
    let e = engine();
    started(&e, &[("one", 1), ("two", 2)]);
    for _ in 0..3 {
        trail(&e);
    }
    assert!(e.profile("on_test").unwrap().iter().all(|p| p.calls == 0));
    e.set_profiling("on_test", true).unwrap();
    for _ in 0..5 {
        trail(&e);
    }
    let p = e.profile("on_test").unwrap();
    assert_eq!(
        p.iter()
            .map(|p| (p.plugin.as_str(), p.position, p.calls))
            .collect::<Vec<_>>(),
        [("one", 0, 5), ("two", 1, 5)]
    );
    assert!(p.iter().all(|p| p.max_us >= p.mean_us && p.mean_us > 0.0));
    // The event's own profile times whole calls: as many as its first plugin's, each at
    // least as long as the two plugins' mean together.
    let whole = e.event_profile("on_test").unwrap();
    assert_eq!((whole.calls, whole.errors), (5, 0));
    assert_eq!(whole.buckets.last(), Some(&5));
    assert!(whole.sum_us >= p.iter().map(|p| p.sum_us).sum::<f64>());
    assert!(e.event_profile("on_nothing").is_err());
    // The histogram is cumulative and ends with every call in +Inf.
    for p in &p {
        assert_eq!(
            p.buckets.len(),
            plugboard_engine::LATENCY_BUCKETS_US.len() + 1
        );
        assert!(p.buckets.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(p.buckets.last(), Some(&5));
        assert!((p.sum_us / 5.0 - p.mean_us).abs() < 1e-6);
    }
}
