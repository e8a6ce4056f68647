//! The activity log: what it records, filters, pages, retention, and dropping under load.

use std::time::Duration;

use plugboard_engine::{Engine, Registration};
use plugboard_store::{
    ActivityKind, ActivityPriority, ActivityQuery, ActivityStatus, LogConfig, NewActivity, Store,
    StoreError,
};
use serde_json::json;

use crate::{Mark, each_backend};

#[test]
fn lifecycle_changes_are_recorded_and_can_be_filtered_and_paged() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let engine = store
            .engine(Engine::builder().reference_events(false))
            .unwrap();
        let log = store.activity_log(Some(&engine), LogConfig::default());
        // Counts what the engine publishes, as the log's forwarder sees it.
        let mut published = engine.subscribe();
        engine.register(Registration::new("a"), Mark("a")).unwrap();
        engine
            .register(Registration::new("b").hard_depends(["a"]), Mark("b"))
            .unwrap();
        engine.start(plugboard_engine::Target::All).unwrap();
        engine.stop("a").unwrap();
        let _ = engine.start("a"); // refused: recorded as an error
        let events = std::iter::from_fn(|| published.try_recv().ok())
            .filter(NewActivity::worth_recording)
            .count() as u64;
        crate::wait_written(&log, events);
        assert!(log.flush(Duration::from_secs(60)), "{backend:?}");
        assert_eq!(log.dropped(), 0);

        let about_b = store
            .activities(&ActivityQuery {
                subject: Some("b".into()),
                ..Default::default()
            })
            .unwrap();
        let held = about_b
            .iter()
            .find(|a| a.entry.extra["to"] == "held")
            .expect("b's hold is recorded");
        assert_eq!(held.entry.status, ActivityStatus::Warning);
        assert_eq!(held.entry.extra["cause"]["dependency"], "a");

        let errors = store
            .activities(&ActivityQuery {
                status: Some(ActivityStatus::Error),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].entry.action, "start");
        assert!(
            errors[0].entry.extra["error"]
                .as_str()
                .unwrap()
                .contains("is stopped")
        );

        // Pages, newest first, without overlap.
        let all = store
            .activities(&ActivityQuery {
                limit: Some(1000),
                ..Default::default()
            })
            .unwrap();
        let first = store
            .activities(&ActivityQuery {
                limit: Some(3),
                ..Default::default()
            })
            .unwrap();
        let second = store
            .activities(&ActivityQuery {
                limit: Some(3),
                before_id: first.last().map(|a| a.id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            first
                .iter()
                .chain(&second)
                .map(|a| a.id)
                .collect::<Vec<_>>(),
            all.iter().take(6).map(|a| a.id).collect::<Vec<_>>()
        );
        assert!(all.windows(2).all(|w| w[0].id > w[1].id));
        // Time range.
        let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        assert!(
            store
                .activities(&ActivityQuery {
                    since: Some(future),
                    ..Default::default()
                })
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .activities(&ActivityQuery {
                    until: Some(future),
                    limit: Some(1000),
                    ..Default::default()
                })
                .unwrap()
                .len(),
            all.len()
        );
    });
}

#[test]
fn retention_keeps_the_newest_rows() {
    each_backend(|_, url| {
        let store = Store::open(url).unwrap();
        let log = store.activity_log(None, LogConfig::default());
        for i in 0..30 {
            assert!(log.record(NewActivity {
                kind: ActivityKind::Setting,
                action: "edit".into(),
                priority: ActivityPriority::None,
                status: ActivityStatus::Info,
                subject: Some(format!("s{i}")),
                section_id: None,
                extra: json!({ "i": i }),
            }));
        }
        assert!(log.flush(Duration::from_secs(60)));
        let removed = store.prune_activities(Some(10), None).unwrap();
        assert_eq!(removed, 20);
        let left = store
            .activities(&ActivityQuery {
                limit: Some(100),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(left.len(), 10);
        assert_eq!(left[0].entry.subject.as_deref(), Some("s29"));
        assert_eq!(
            store.prune_activities(None, Some(Duration::ZERO)).unwrap(),
            10
        );
    });
}

#[test]
fn when_the_writer_cannot_keep_up_entries_are_dropped_counted_and_reported() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let log = store.activity_log(
            None,
            LogConfig {
                capacity: 4,
                batch: 2,
                ..Default::default()
            },
        );
        let entry = NewActivity {
            kind: ActivityKind::Event,
            action: "call".into(),
            priority: ActivityPriority::Low,
            status: ActivityStatus::Report,
            subject: None,
            section_id: None,
            extra: json!(null),
        };
        let accepted = (0..500).filter(|_| log.record(entry.clone())).count() as u64;
        assert!(accepted < 500, "{backend:?}");
        assert_eq!(log.dropped(), 500 - accepted);
        // Something new arrives later: the drop count is reported with it. "Later" is
        // once the writer has caught up (no lifecycle events here: `flush` sees all that
        // was queued), so that the queue has room for it, on a busy machine too.
        assert!(log.flush(Duration::from_secs(60)), "{backend:?}");
        assert!(log.record(entry.clone()), "{backend:?}: the queue is empty");
        assert!(log.flush(Duration::from_secs(60)));
        let reports = store
            .activities(&ActivityQuery {
                kind: Some(ActivityKind::Activity),
                ..Default::default()
            })
            .unwrap();
        assert!(!reports.is_empty());
        assert_eq!(
            reports[0].entry.extra["dropped_total"],
            json!(500 - accepted)
        );
    });
}

#[test]
fn invalid_entries_name_the_field() {
    let err = "urgent".parse::<ActivityPriority>().unwrap_err();
    assert!(matches!(
        err,
        StoreError::Invalid {
            field: "priority",
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "invalid priority: \"urgent\" is not one of none, low, medium, high, featured"
    );
    let long = NewActivity::new(
        ActivityKind::Plugin,
        &"x".repeat(33),
        ActivityStatus::Info,
        None,
        json!(null),
    );
    assert!(matches!(
        long.validate().unwrap_err(),
        StoreError::Invalid {
            field: "action",
            ..
        }
    ));
}

struct Boom;
impl plugboard_core::Plugin<crate::OnStore> for Boom {
    fn call(
        &self,
        _: crate::OnStore,
        _: &plugboard_core::Context<'_>,
    ) -> plugboard_core::Reply<crate::OnStore> {
        panic!("boom")
    }
}

#[test]
fn a_call_storm_under_the_limit_loses_no_entry() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        // Threshold 0: the failing plugin is never stopped, so every call fails and is logged.
        let engine = store
            .engine(
                Engine::builder()
                    .reference_events(false)
                    .failure_threshold(0)
                    .broadcast_capacity(8192),
            )
            .unwrap();
        let log = store.activity_log(Some(&engine), LogConfig::default());
        // Counts what the engine publishes, as the log's forwarder sees it.
        let mut published = engine.subscribe();
        engine.register(Registration::new("boom"), Boom).unwrap();
        engine.start("boom").unwrap();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let hook = engine.hook::<crate::OnStore>().unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let hook = hook.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        assert!(hook.call(crate::OnStore { trail: vec![] }).is_err());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        std::panic::set_hook(prev);
        let events = std::iter::from_fn(|| published.try_recv().ok())
            .filter(NewActivity::worth_recording)
            .count() as u64;
        crate::wait_written(&log, events);
        assert!(log.flush(Duration::from_secs(60)), "{backend:?}");
        assert_eq!(log.dropped(), 0);
        let failures = store
            .activities(&ActivityQuery {
                status: Some(ActivityStatus::Throw),
                subject: Some("boom".into()),
                limit: Some(1000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(failures.len(), 1000, "a page holds 1000");
        let second = store
            .activities(&ActivityQuery {
                status: Some(ActivityStatus::Throw),
                before_id: failures.last().map(|a| a.id),
                limit: Some(1000),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            failures.len() + second.len(),
            2000,
            "{backend:?}: every failure is in the log"
        );
    });
}

#[test]
fn entries_read_as_one_line_chain_rebuilds_are_not_recorded_and_an_event_filter_finds_its_own() {
    each_backend(|backend, url| {
        let store = Store::open(url).unwrap();
        let engine = store.engine(Engine::builder()).unwrap();
        let log = store.activity_log(Some(&engine), LogConfig::default());
        let mut published = engine.subscribe();
        engine.register(Registration::new("a"), Mark("a")).unwrap();
        engine.start("a").unwrap();
        // A call entry, as a host records one: its subject is the event.
        log.record(NewActivity::new(
            ActivityKind::Event,
            "call",
            ActivityStatus::Info,
            Some("on_store"),
            json!({ "summary": "on_store called" }),
        ));
        // And something about another event.
        log.record(NewActivity::new(
            ActivityKind::Event,
            "call",
            ActivityStatus::Info,
            Some("on_other"),
            serde_json::Value::Null,
        ));
        let all: Vec<_> = std::iter::from_fn(|| published.try_recv().ok()).collect();
        assert!(
            all.iter()
                .any(|e| matches!(e, plugboard_engine::LifecycleEvent::ChainRebuilt { .. })),
            "the engine does publish rebuilds"
        );
        let recorded = all
            .iter()
            .filter(|e| NewActivity::worth_recording(e))
            .count() as u64;
        crate::wait_written(&log, recorded + 2);
        assert!(log.flush(Duration::from_secs(60)), "{backend:?}");

        let entries = store.activities(&ActivityQuery::default()).unwrap();
        assert!(
            entries.iter().all(|a| a.entry.extra.get("chain").is_none()),
            "{backend:?}: a chain rebuild was recorded: {entries:?}"
        );
        let started = entries
            .iter()
            .find(|a| a.entry.extra["to"] == "started")
            .unwrap();
        assert_eq!(
            started.entry.extra["summary"],
            "plugin a started on on_store (was registered; by start)"
        );
        assert_eq!(started.entry.subject.as_deref(), Some("a"));

        let on_store = store
            .activities(&ActivityQuery {
                event: Some("on_store".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(on_store.len() >= 3, "{backend:?}: {on_store:?}");
        assert!(
            on_store
                .iter()
                .all(|a| a.entry.section_id.as_deref() == Some("on_store")
                    || a.entry.subject.as_deref() == Some("on_store"))
        );
        assert!(on_store.iter().any(|a| a.entry.action == "call"));
        assert!(
            on_store
                .iter()
                .all(|a| a.entry.subject.as_deref() != Some("on_other"))
        );
    });
}
