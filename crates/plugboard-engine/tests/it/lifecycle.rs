//! Lifecycle and dependencies, as tables of (plugin, expected status).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use plugboard_core::{PluginRecord, Reason, Status::*};
use plugboard_engine::{Cause, EngineError, LifecycleEvent, Op, Registration, Target};

use crate::{OnTest, Tag, engine, started, status, trail};

fn expect(e: &plugboard_engine::Engine, table: &[(&str, plugboard_core::Status)]) {
    let got: Vec<_> = table.iter().map(|(n, _)| (*n, status(e, n))).collect();
    assert_eq!(got, table, "statuses");
}

fn chain_of_five(e: &plugboard_engine::Engine) {
    // one <- two <- three <- four <- five (each hard-depends on the previous).
    let names = ["one", "two", "three", "four", "five"];
    for (i, n) in names.iter().enumerate() {
        let mut reg = Registration::new(*n).priority(10 - i as u8);
        if i > 0 {
            reg = reg.hard_depends([names[i - 1]]);
        }
        e.register(reg, Tag::new(n)).unwrap();
    }
    e.start(Target::All).unwrap();
}

#[test]
fn hard_dependency_missing_holds_then_releases_when_it_starts() {
    let e = engine();
    e.register(
        Registration::new("child").hard_depends(["parent"]),
        Tag::new("child"),
    )
    .unwrap();
    e.start("child").unwrap();
    expect(&e, &[("child", Held)]);
    assert_eq!(e.plugin("child").unwrap().waiting_for, ["parent"]);
    assert!(trail(&e).is_empty());

    e.register(Registration::new("parent"), Tag::new("parent"))
        .unwrap();
    expect(&e, &[("child", Held), ("parent", Registered)]);
    e.start("parent").unwrap();
    expect(&e, &[("child", Restarted), ("parent", Started)]);
    assert_eq!(trail(&e), ["parent", "child"]);
}

#[test]
fn stopping_the_root_holds_all_four_and_enable_releases_them() {
    let e = engine();
    chain_of_five(&e);
    expect(
        &e,
        &[
            ("one", Started),
            ("two", Started),
            ("three", Started),
            ("four", Started),
            ("five", Started),
        ],
    );
    assert_eq!(trail(&e), ["one", "two", "three", "four", "five"]);
    assert_eq!(e.plugin("one").unwrap().dependents, ["two"]);
    let all = e.plugins();
    let four = all.iter().find(|p| p.record.name == "four").unwrap();
    assert_eq!(four.dependents, ["five"]);
    assert!(
        all.iter()
            .find(|p| p.record.name == "five")
            .unwrap()
            .dependents
            .is_empty()
    );

    let mut rx = e.subscribe();
    e.stop("one").unwrap();
    expect(
        &e,
        &[
            ("one", Stopped),
            ("two", Held),
            ("three", Held),
            ("four", Held),
            ("five", Held),
        ],
    );
    assert!(trail(&e).is_empty());
    let mut held = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let LifecycleEvent::StatusChanged {
            plugin,
            to: Held,
            cause: Cause::DependencyDown { .. },
            ..
        } = ev
        {
            held.push(plugin);
        }
    }
    held.sort();
    assert_eq!(held, ["five", "four", "three", "two"]);

    // Stop is sticky.
    assert!(matches!(e.start("one"), Err(EngineError::Stopped(n)) if n == "one"));
    assert!(matches!(e.restart("one"), Err(EngineError::Stopped(_))));
    expect(&e, &[("one", Stopped), ("two", Held)]);

    e.enable("one").unwrap();
    expect(
        &e,
        &[
            ("one", Restarted),
            ("two", Restarted),
            ("three", Restarted),
            ("four", Restarted),
            ("five", Restarted),
        ],
    );
    assert_eq!(trail(&e), ["one", "two", "three", "four", "five"]);
}

#[test]
fn holds_cross_events() {
    plugboard_core::event! {
        /// Another event.
        pub struct OnOther("on_other", section = "test") {
            /// Trail.
            pub trail: Vec<String>,
        }
    }
    struct Other;
    impl plugboard_core::Plugin<OnOther> for Other {
        fn call(
            &self,
            mut s: OnOther,
            _: &plugboard_core::Context<'_>,
        ) -> plugboard_core::Reply<OnOther> {
            s.trail.push("other".into());
            plugboard_core::Reply::Continue(s)
        }
    }
    let e = engine();
    started(&e, &[("base", 1)]);
    e.register(Registration::new("other").hard_depends(["base"]), Other)
        .unwrap();
    e.start("other").unwrap();
    expect(&e, &[("other", Started)]);
    e.stop("base").unwrap();
    expect(&e, &[("other", Held)]);
    assert!(
        e.call::<OnOther>(OnOther { trail: vec![] })
            .unwrap()
            .trail
            .is_empty()
    );
    e.enable("base").unwrap();
    assert_eq!(
        e.call::<OnOther>(OnOther { trail: vec![] }).unwrap().trail,
        ["other"]
    );
}

#[test]
fn a_cycle_is_rejected_naming_it_and_nothing_changes() {
    let e = engine();
    e.register(Registration::new("a").hard_depends(["b"]), Tag::new("a"))
        .unwrap();
    e.register(Registration::new("b").soft_depends(["c"]), Tag::new("b"))
        .unwrap();
    let err = e
        .register(Registration::new("c").hard_depends(["a"]), Tag::new("c"))
        .unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: c -> a -> b -> c");
    assert!(e.plugin("c").is_none());
    let err = e
        .register(
            Registration::new("self").hard_depends(["self"]),
            Tag::new("self"),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "dependency cycle: self -> self");
    // Re-registering an existing plugin into a cycle leaves its old record.
    e.register(Registration::new("c"), Tag::new("c")).unwrap();
    let err = e
        .register(Registration::new("c").hard_depends(["a"]), Tag::new("c"))
        .unwrap_err();
    assert!(matches!(err, EngineError::Cycle(_)));
    assert!(e.plugin("c").unwrap().record.depends.is_empty());
}

#[test]
fn stopped_survives_restart_and_start_attempts_from_every_target() {
    let e = engine();
    started(&e, &[("a", 1), ("b", 2)]);
    e.stop("a").unwrap();
    assert!(e.start("a").is_err());
    assert!(e.restart("a").is_err());
    // In bulk, started ones are a no-op and stopped ones are skipped with the reason.
    let r = e.start(Target::All).unwrap();
    assert!(r.changed.is_empty());
    assert!(matches!(&r.skipped[..], [(n, EngineError::Stopped(_))] if n == "a"));
    let r = e.restart(Target::Event("on_test")).unwrap();
    assert_eq!(
        r.skipped
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    expect(&e, &[("a", Stopped), ("b", Restarted)]);
    assert_eq!(trail(&e), ["b"]);
}

#[test]
fn reregister_updates_fields_and_code_but_keeps_stopped() {
    let e = engine();
    started(&e, &[("a", 10), ("b", 20)]);
    e.stop("a").unwrap();
    let inserted = e.plugin("a").unwrap().record.inserted_at;
    let rec = e
        .register(Registration::new("a").priority(30), Tag::new("a2"))
        .unwrap();
    assert_eq!(rec.priority.get(), 30);
    assert_eq!(rec.status, Stopped);
    assert_eq!(rec.inserted_at, inserted);
    e.enable("a").unwrap();
    // New priority and new code (Mishka 0.0.3 ignored code changes on re-register).
    assert_eq!(trail(&e), ["b", "a2"]);
}

#[test]
fn unregister_holds_dependents_and_removes_nothing_else() {
    let e = engine();
    chain_of_five(&e);
    e.unregister("two").unwrap();
    assert!(e.plugin("two").is_none());
    expect(
        &e,
        &[
            ("one", Started),
            ("three", Held),
            ("four", Held),
            ("five", Held),
        ],
    );
    assert_eq!(e.plugins().len(), 4);
    assert_eq!(trail(&e), ["one"]);
    // Registering it again releases them.
    e.register(
        Registration::new("two").hard_depends(["one"]),
        Tag::new("two"),
    )
    .unwrap();
    e.start("two").unwrap();
    assert_eq!(trail(&e), ["one", "two", "three", "four", "five"]);
}

#[test]
fn delete_unloads_code_keeps_record_and_reregister_restores() {
    let e = engine();
    chain_of_five(&e);
    e.delete("one").unwrap();
    let one = e.plugin("one").unwrap();
    assert!(!one.loaded);
    assert_eq!(one.record.status, Started);
    expect(&e, &[("two", Held), ("five", Held)]);
    assert!(trail(&e).is_empty());
    e.register(Registration::new("one").priority(10), Tag::new("one"))
        .unwrap();
    expect(
        &e,
        &[("one", Started), ("two", Restarted), ("five", Restarted)],
    );
    assert_eq!(trail(&e).len(), 5);
}

#[test]
fn operations_by_event_and_all() {
    let e = engine();
    started(&e, &[("a", 1), ("b", 2), ("c", 3)]);
    let r = e.stop(Target::Event("on_test")).unwrap();
    assert_eq!(r.changed.len(), 3);
    assert!(trail(&e).is_empty());
    e.enable(Target::All).unwrap();
    assert_eq!(trail(&e), ["a", "b", "c"]);
    assert!(matches!(
        e.stop(Target::Event("on_nothing")),
        Err(EngineError::UnknownEvent(_))
    ));
    assert!(matches!(
        e.stop("nobody"),
        Err(EngineError::UnknownPlugin(_))
    ));
    e.unregister(Target::All).unwrap();
    assert!(e.plugins().is_empty());
}

struct Picky;
impl plugboard_core::Plugin<OnTest> for Picky {
    fn call(&self, s: OnTest, _: &plugboard_core::Context<'_>) -> plugboard_core::Reply<OnTest> {
        plugboard_core::Reply::Continue(s)
    }
    fn initial(&self, record: &PluginRecord) -> Result<(), Reason> {
        if record.extra.is_empty() {
            Err("needs configuration in extra".into())
        } else {
            Ok(())
        }
    }
    fn start(&self, record: &PluginRecord) -> Result<(), Reason> {
        if record.extra.iter().any(|m| m.len() > 1) {
            Err("too much configuration".into())
        } else {
            Ok(())
        }
    }
    fn stop(&self, _: &PluginRecord) -> Result<(), Reason> {
        Err("busy".into())
    }
    fn unregister(&self, _: &PluginRecord) -> Result<(), Reason> {
        Err("still needed".into())
    }
}

#[test]
fn refusals_change_nothing() {
    let e = engine();
    let err = e.register(Registration::new("picky"), Picky).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `picky` refused to register: needs configuration in extra"
    );
    assert!(e.plugin("picky").is_none());
    let mut extra = serde_json::Map::new();
    extra.insert("k".into(), 1.into());
    e.register(Registration::new("picky").extra(extra), Picky)
        .unwrap();
    e.start("picky").unwrap();
    expect(&e, &[("picky", Started)]);
}

#[test]
fn a_plugin_may_refuse_to_start_but_never_to_be_taken_out() {
    let e = engine();
    let mut changes = e.subscribe();
    let mut extra = serde_json::Map::new();
    extra.insert("k".into(), 1.into());
    e.register(Registration::new("picky").extra(extra), Picky)
        .unwrap();
    e.start("picky").unwrap();
    // The operator wins over a failing stop callback; the failure is reported.
    let report = e.stop("picky").unwrap();
    assert_eq!(
        report.overridden,
        vec![("picky".to_owned(), "busy".to_owned())]
    );
    expect(&e, &[("picky", Stopped)]);
    let overridden: Vec<_> = std::iter::from_fn(|| changes.try_recv().ok())
        .filter_map(|ev| match ev {
            LifecycleEvent::CallbackOverridden {
                plugin, op, reason, ..
            } => Some((plugin, op, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(overridden, vec![("picky".into(), Op::Stop, "busy".into())]);
    // A refusing unregister callback does not keep the record either.
    let report = e.unregister("picky").unwrap();
    assert_eq!(report.overridden.len(), 1);
    assert!(e.plugin("picky").is_none());
    // Starting is the plugin's to refuse: nothing changes.
    let mut extra = serde_json::Map::new();
    extra.insert("a".into(), 1.into());
    extra.insert("b".into(), 2.into());
    e.register(Registration::new("picky").extra(extra), Picky)
        .unwrap();
    let err = e.start("picky").unwrap_err();
    assert!(matches!(err, EngineError::Refused { op: Op::Start, .. }));
    expect(&e, &[("picky", Registered)]);
}

#[test]
fn callbacks_run_and_invalid_names_are_refused() {
    let e = engine();
    let tag = Tag::new("a");
    let starts = Arc::clone(&tag.starts);
    e.register(Registration::new("a"), tag).unwrap();
    e.start("a").unwrap();
    e.start("a").unwrap(); // already started: no second callback
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    let err = e
        .register(Registration::new("bad name!"), Tag::new("x"))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid plugin name \"bad name!\""),
        "{err}"
    );
    let err = e
        .register(Registration::new(""), Tag::new("x"))
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidName { .. }));
}

struct Meddler(plugboard_engine::Engine);
impl plugboard_core::Plugin<OnTest> for Meddler {
    fn call(&self, s: OnTest, _: &plugboard_core::Context<'_>) -> plugboard_core::Reply<OnTest> {
        plugboard_core::Reply::Continue(s)
    }
    fn start(&self, _: &PluginRecord) -> Result<(), Reason> {
        // Calling back into the engine from a callback must not deadlock.
        match self.0.stop("other") {
            Err(EngineError::Reentrant(Op::Stop)) => Ok(()),
            other => Err(format!("expected a reentrancy error, got {other:?}").into()),
        }
    }
}

#[test]
fn a_callback_calling_the_engine_gets_an_error_not_a_deadlock() {
    let e = engine();
    started(&e, &[("other", 1)]);
    e.register(Registration::new("meddler"), Meddler(e.clone()))
        .unwrap();
    e.start("meddler").unwrap();
    expect(&e, &[("meddler", Started), ("other", Started)]);
}

#[test]
fn every_change_is_published_in_order() {
    let e = engine();
    let mut rx = e.subscribe();
    e.register(Registration::new("a"), Tag::new("a")).unwrap();
    e.start("a").unwrap();
    e.stop("a").unwrap();
    e.unregister("a").unwrap();
    let mut kinds = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        kinds.push(match ev {
            LifecycleEvent::Registered { .. } => "registered".to_owned(),
            LifecycleEvent::StatusChanged { from, to, .. } => format!("{from}->{to}"),
            LifecycleEvent::ChainRebuilt { plugins, .. } => format!("chain{plugins:?}"),
            LifecycleEvent::Unregistered { .. } => "unregistered".to_owned(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        kinds,
        [
            "registered",
            "registered->started",
            "chain[\"a\"]",
            "started->stopped",
            "chain[]",
            "unregistered"
        ]
    );
}
