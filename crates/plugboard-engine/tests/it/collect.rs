//! Collecting events: every plugin answers the same input; pluggy's semantics for
//! collected results where they apply (order, `None` is not a result, `firstresult`
//! stops at the first answer, an exception reaches the caller) plus halting, failure
//! policies, and every kind of plugin (native, async, JSON, encoded).

use std::sync::Arc;

use plugboard_core::{
    AsyncCollector, Collect, Collector, Context, Contribute, Mode, PluginRecord, Reason, Reply,
    Wire,
};
use plugboard_engine::{
    CallError, CallOptions, Callbacks, Code, EncodedStep, EngineError, Failure, FailureKind,
    OnFailure, Op, Registration, Target,
};
use serde_json::{Value, json};

use crate::{OnTest, engine};

plugboard_core::event! {
    /// Asks every plugin what it finds for a word.
    pub struct OnFind("on_find", section = "test") {
        /// The word.
        pub word: String,
    }
}

impl Collect for OnFind {
    type Output = String;
}

/// Answers `word:name`; `pass` answers nothing, `last` ends the collection with its
/// answer, `stop` ends it without one, `panic` fails.
struct Finder {
    name: &'static str,
    how: &'static str,
}

impl Collector<OnFind> for Finder {
    fn collect(&self, input: &OnFind, _cx: &Context<'_>) -> Contribute<String> {
        let found = format!("{}:{}", input.word, self.name);
        match self.how {
            "pass" => Contribute::Pass,
            "last" => Contribute::Last(found),
            "stop" => Contribute::Stop,
            "panic" => panic!("{} exploded", self.name),
            _ => Contribute::Add(found),
        }
    }
}

fn finder(name: &'static str, how: &'static str) -> Finder {
    Finder { name, how }
}

/// Registers and starts collectors: (name, priority, how).
fn collectors(e: &plugboard_engine::Engine, list: &[(&'static str, u8, &'static str)]) {
    for (name, priority, how) in list {
        e.register_collector::<OnFind, _>(
            Registration::new(*name).priority(*priority),
            finder(name, how),
        )
        .unwrap();
        e.start(*name).unwrap();
    }
}

fn find(e: &plugboard_engine::Engine) -> Result<Vec<(String, String)>, CallError> {
    let found = e
        .collector::<OnFind>()
        .unwrap()
        .collect(OnFind { word: "w".into() })?;
    Ok(found
        .results
        .into_iter()
        .map(|c| (c.plugin.to_string(), c.output))
        .collect())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn every_plugin_answers_in_chain_order_each_answer_attributed() {
    let e = engine();
    collectors(&e, &[("b", 20, ""), ("a", 20, ""), ("c", 10, "")]);
    // Priority, then name; a dependency runs before its dependent whatever its priority.
    assert_eq!(
        find(&e).unwrap(),
        pairs(&[("c", "w:c"), ("a", "w:a"), ("b", "w:b")])
    );
    e.register_collector::<OnFind, _>(
        Registration::new("c").priority(10).hard_depends(["b"]),
        finder("c", ""),
    )
    .unwrap();
    assert_eq!(
        find(&e).unwrap(),
        pairs(&[("a", "w:a"), ("b", "w:b"), ("c", "w:c")])
    );
    // An empty chain gathers nothing.
    let empty = engine();
    empty.declare_collect::<OnFind>().unwrap();
    assert!(find(&empty).unwrap().is_empty());
}

#[test]
fn passing_adds_nothing_and_last_or_stop_end_the_collection() {
    let e = engine();
    collectors(
        &e,
        &[("one", 1, ""), ("quiet", 2, "pass"), ("three", 3, "")],
    );
    // pluggy: a `None` answer is not a result.
    assert_eq!(
        find(&e).unwrap(),
        pairs(&[("one", "w:one"), ("three", "w:three")])
    );

    // pluggy's `firstresult`: the first answer that ends the collection is the last.
    let e = engine();
    collectors(
        &e,
        &[("one", 1, "pass"), ("first", 2, "last"), ("never", 3, "")],
    );
    let found = e
        .collector::<OnFind>()
        .unwrap()
        .collect(OnFind { word: "w".into() })
        .unwrap();
    assert_eq!(found.into_outputs(), ["w:first"]);

    let e = engine();
    collectors(
        &e,
        &[("one", 1, ""), ("enough", 2, "stop"), ("never", 3, "")],
    );
    let found = e
        .collector::<OnFind>()
        .unwrap()
        .collect(OnFind { word: "w".into() })
        .unwrap();
    assert_eq!(found.stopped_by.as_deref(), Some("enough"));
    assert_eq!(found.into_outputs(), ["w:one"]);
}

#[test]
fn a_failing_plugin_follows_the_events_policy_per_contribution() {
    let setup = |policy: OnFailure| {
        let e = plugboard_engine::Engine::builder()
            .reference_events(false)
            .on_failure(policy)
            .failure_threshold(100)
            .build();
        collectors(&e, &[("one", 1, ""), ("bad", 2, "panic"), ("three", 3, "")]);
        e
    };
    // Error (pluggy: the exception reaches the caller), naming the plugin.
    match find(&setup(OnFailure::Error)).unwrap_err() {
        CallError::PluginFailed {
            plugin, failure, ..
        } => {
            assert_eq!(plugin, "bad");
            assert_eq!(failure.kind, FailureKind::Panic);
            assert_eq!(failure.message, "bad exploded");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Skip: that contribution is left out, the others are kept and the rest still asked.
    let skip = setup(OnFailure::Skip);
    assert_eq!(
        find(&skip).unwrap(),
        pairs(&[("one", "w:one"), ("three", "w:three")])
    );
    assert_eq!(skip.plugin("bad").unwrap().failures, 1);
    // ReturnInput: nothing collected.
    assert!(find(&setup(OnFailure::ReturnInput)).unwrap().is_empty());
}

#[test]
fn a_collector_failing_at_the_threshold_is_stopped_and_the_others_keep_answering() {
    let e = plugboard_engine::Engine::builder()
        .reference_events(false)
        .on_failure(OnFailure::Skip)
        .failure_threshold(3)
        .build();
    collectors(&e, &[("one", 1, ""), ("bad", 2, "panic")]);
    for _ in 0..3 {
        assert_eq!(find(&e).unwrap(), pairs(&[("one", "w:one")]));
    }
    e.wait_idle(std::time::Duration::from_secs(60));
    assert_eq!(
        e.plugin("bad").unwrap().record.status,
        plugboard_core::Status::Stopped
    );
    assert_eq!(e.chain("on_find").unwrap(), ["one"]);
}

struct Slow;

impl AsyncCollector<OnFind> for Slow {
    async fn collect(&self, input: &OnFind, _cx: &Context<'_>) -> Contribute<String> {
        tokio::task::yield_now().await;
        Contribute::Add(format!("{}:slow", input.word))
    }
}

#[tokio::test]
async fn an_async_collector_answers_in_an_async_collection_only() {
    let e = engine();
    collectors(&e, &[("one", 1, "")]);
    e.register_async_collector::<OnFind, _>(Registration::new("slow").priority(2), Slow)
        .unwrap();
    e.start("slow").unwrap();
    let hook = e.collector::<OnFind>().unwrap();
    let found = hook
        .collect_async(OnFind { word: "w".into() })
        .await
        .unwrap();
    assert_eq!(found.into_outputs(), ["w:one", "w:slow"]);
    assert!(matches!(
        hook.collect(OnFind { word: "w".into() }),
        Err(CallError::NeedsAsync { plugin, .. }) if plugin == "slow"
    ));
}

/// An encoded (sandboxed-style) collector: answers with the word reversed, as JSON.
struct Reverse;

impl EncodedStep for Reverse {
    fn run(&self, state: &[u8], wire: Wire, _: &Context<'_>) -> Result<Reply<Vec<u8>>, Failure> {
        assert_eq!(wire, Wire::Json);
        let v: Value = serde_json::from_slice(state).unwrap();
        let word = v["word"].as_str().unwrap_or_default();
        if word == "garbage" {
            return Ok(Reply::Continue(b"{\"not\": \"a string\"}".to_vec()));
        }
        let reversed: String = word.chars().rev().collect();
        Ok(Reply::Continue(serde_json::to_vec(&reversed).unwrap()))
    }
}

impl Callbacks for Reverse {
    fn lifecycle(&self, _: Op, _: &PluginRecord) -> Result<(), Reason> {
        Ok(())
    }
    fn health_check(&self) -> Result<(), Reason> {
        Ok(())
    }
}

#[test]
fn json_and_encoded_plugins_are_given_the_input_and_answer_with_their_contribution() {
    let e = engine();
    collectors(&e, &[("native", 1, "")]);
    e.register_code(
        "on_find",
        Registration::new("encoded").priority(2),
        Code::encoded_step(Arc::new(Reverse)),
    )
    .unwrap();
    // A JSON plugin: `null` is no answer, a halt ends the collection.
    e.register_json(
        "on_find",
        Registration::new("json").priority(3),
        plugboard_core::from_fn(
            |input: Value, _cx: &Context<'_>| match input["word"].as_str() {
                Some("quiet") => Reply::Continue(Value::Null),
                Some(w) => Reply::Halt(json!(format!("{w}:json"))),
                None => Reply::Continue(json!(42)),
            },
        ),
    )
    .unwrap();
    collectors(&e, &[("after", 4, "")]);
    e.start(Target::All).unwrap();
    let hook = e.collector::<OnFind>().unwrap();
    let found = hook.collect(OnFind { word: "abc".into() }).unwrap();
    assert_eq!(found.stopped_by.as_deref(), Some("json"));
    assert_eq!(found.into_outputs(), ["abc:native", "cba", "abc:json"]);
    let found = hook
        .collect(OnFind {
            word: "quiet".into(),
        })
        .unwrap();
    assert_eq!(
        found.into_outputs(),
        ["quiet:native", "teiuq", "quiet:after"]
    );
    // A reply that is not a contribution is that plugin's failure.
    match hook.collect(OnFind {
        word: "garbage".into(),
    }) {
        Err(CallError::PluginFailed {
            plugin, failure, ..
        }) => {
            assert_eq!(plugin, "encoded");
            assert_eq!(failure.kind, FailureKind::InvalidReply);
            assert!(
                failure.message.contains("not a valid contribution"),
                "{}",
                failure.message
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn by_name_with_json_the_answers_are_results_with_their_plugins() {
    let e = engine();
    collectors(&e, &[("one", 1, ""), ("two", 2, "last"), ("three", 3, "")]);
    let out = e
        .call_json("on_find", json!({ "word": "w" }), &CallOptions::default())
        .unwrap();
    assert_eq!(
        out,
        json!({
            "results": [
                { "plugin": "one", "output": "w:one" },
                { "plugin": "two", "output": "w:two" },
            ],
            "stopped_by": "two",
        })
    );
    // `private` protects a waterfall's input from its plugins; a collection's answer is
    // what was gathered, with nothing of the input put back into it.
    let private = CallOptions {
        private: vec!["word".into()],
        ..CallOptions::default()
    };
    let out = e
        .call_json("on_find", json!({ "word": "w" }), &private)
        .unwrap();
    assert!(out.get("word").is_none(), "{out}");
    // A trace shows what was gathered after each step.
    let t = e.trace_json("on_find", json!({ "word": "w" }), &CallOptions::default());
    let sizes: Vec<usize> = t
        .steps
        .iter()
        .map(|s| {
            s.state.as_ref().unwrap()["results"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [1, 2]);
    assert_eq!(t.halted_by.as_deref(), Some("two"));
    // The first step was given nothing gathered yet.
    assert_eq!(t.given, Some(json!({ "results": [], "stopped_by": null })));
    // The input is checked against the event's state.
    assert!(matches!(
        e.call_json("on_find", json!({ "word": 5 }), &CallOptions::default()),
        Err(CallError::InvalidState { .. })
    ));
}

#[test]
fn the_mode_is_part_of_the_contract_and_a_plugin_of_the_other_mode_is_refused() {
    let e = engine();
    e.declare_collect::<OnFind>().unwrap();
    let info = e.event("on_find").unwrap();
    assert_eq!(info.mode, Mode::Collect);
    assert_eq!(info.output.as_ref().unwrap()["type"], "string");
    let v = serde_json::to_value(&info).unwrap();
    assert_eq!(v["mode"], "collect");
    // A waterfall plugin or handle on a collecting event, and the other way round.
    assert!(matches!(
        e.hook::<OnFind>(),
        Err(EngineError::ModeMismatch {
            declared: Mode::Collect,
            ..
        })
    ));
    let err = e
        .register::<OnFind, _>(
            Registration::new("waterfall"),
            plugboard_core::from_fn(|s: OnFind, _cx: &Context<'_>| Reply::Continue(s)),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("event `on_find` collects"),
        "{err}"
    );
    e.declare::<OnTest>().unwrap();
    assert!(
        serde_json::to_value(e.event("on_test").unwrap())
            .unwrap()
            .get("mode")
            .is_none()
    );
    assert!(matches!(
        e.collector::<OnTestCollect>(),
        Err(EngineError::ModeMismatch {
            declared: Mode::Waterfall,
            ..
        })
    ));
}

plugboard_core::event! {
    /// The name of the waterfall test event, declared as collecting.
    pub OnTestCollect("on_test", section = "test") => OnTest;
}

impl Collect for OnTestCollect {
    type Output = String;
}

#[test]
fn the_reference_search_events_collect() {
    use plugboard_core::reference::{OnContentSearch, Payload, SearchHit};
    let e = plugboard_engine::Engine::new();
    assert_eq!(e.event("on_content_search").unwrap().mode, Mode::Collect);
    assert_eq!(
        e.event("on_content_search_areas").unwrap().mode,
        Mode::Collect
    );
    struct Pages;
    impl Collector<OnContentSearch> for Pages {
        fn collect(&self, input: &Payload, _cx: &Context<'_>) -> Contribute<SearchHit> {
            Contribute::Add(SearchHit::new(
                input.data["text"].as_str().unwrap_or_default(),
                "/p",
            ))
        }
    }
    e.register_collector::<OnContentSearch, _>(Registration::new("pages"), Pages)
        .unwrap();
    e.start("pages").unwrap();
    let out = e
        .call_json(
            "on_content_search",
            json!({ "data": { "text": "rust" } }),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(out["results"][0]["output"]["title"], "rust");
    assert_eq!(out["results"][0]["output"]["href"], "/p");
}

#[test]
fn profiling_times_collections_like_calls() {
    let e = engine();
    collectors(&e, &[("one", 1, ""), ("two", 2, "")]);
    e.set_profiling("on_find", true).unwrap();
    for _ in 0..4 {
        find(&e).unwrap();
    }
    assert_eq!(e.event_profile("on_find").unwrap().calls, 4);
    assert!(e.profile("on_find").unwrap().iter().all(|p| p.calls == 4));
}
