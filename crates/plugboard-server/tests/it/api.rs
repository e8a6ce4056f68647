//! Events, plugins, settings, activity, profile and their errors.

use serde_json::json;

use crate::Env;

#[test]
fn events_list_chains_and_plugins() {
    let env = Env::start();
    let r = env.api("GET", "/api/events", None);
    assert_eq!(r.status, 200);
    let list = r.json();
    let list = list.as_array().unwrap();
    assert!(list.len() >= 32, "the reference events are declared");
    let prepare = list
        .iter()
        .find(|e| e["name"] == "on_content_prepare")
        .unwrap();
    assert_eq!(prepare["chain"], json!(["greeter", "shouter"]));
    assert_eq!(prepare["section"], "content");
    assert!(
        prepare["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("extra"))
    );
    assert!(prepare.get("schema").is_none());
    let shouter = prepare["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shouter")
        .unwrap();
    assert_eq!(shouter["status"], "started");
    assert_eq!(shouter["priority"], 20);
    assert_eq!(shouter["kind"], "native");
    assert_eq!(shouter["in_chain"], true);
    assert_eq!(shouter["package"], json!(null));

    let one = env
        .api("GET", "/api/events/on_content_prepare", None)
        .json();
    assert_eq!(one["chain"], json!(["greeter", "shouter"]));
    assert!(one["schema"].is_object());
    env.api("GET", "/api/events/nope", None)
        .assert_error(404, "not_found");
}

#[test]
fn calling_an_event_returns_result_and_trace() {
    let env = Env::start();
    let r = env.api(
        "POST",
        "/api/events/on_content_prepare/call",
        Some(json!({ "state": { "data": {}, "extra": {} } })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["result"]["extra"]["shout"], "HELLO");
    assert_eq!(v["error"], json!(null));
    assert_eq!(v["halted_by"], json!(null));
    let trace = v["trace"].as_array().unwrap();
    assert_eq!(trace.len(), 2);
    assert_eq!(trace[0]["plugin"], "greeter");
    assert_eq!(trace[0]["outcome"], "continued");
    assert!(trace[0]["elapsed_us"].is_number());
    // Each step says what it changed in the state it was given.
    assert_eq!(
        trace[0]["changes"],
        json!([{ "path": "/extra/greeting", "after": "hello" }])
    );
    assert_eq!(
        trace[1]["changes"],
        json!([{ "path": "/extra/shout", "after": "HELLO" }])
    );

    let halted = env
        .api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": { "data": { "halt": true } } })),
        )
        .json();
    assert_eq!(halted["halted_by"], "shouter");
    assert_eq!(halted["trace"][1]["outcome"], "halted");

    let failed = env
        .api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": { "data": { "panic": true } } })),
        )
        .json();
    assert_eq!(failed["result"], json!(null));
    assert_eq!(failed["error"]["code"], "plugin_failed");
    assert_eq!(failed["trace"][1]["outcome"], "failed");
    assert_eq!(failed["trace"][1]["failure"]["kind"], "panic");
    assert_eq!(failed["trace"][1]["changes"], json!([]));

    env.api(
        "POST",
        "/api/events/on_content_prepare/call",
        Some(json!({ "state": { "data": 5 } })),
    )
    .assert_error(400, "invalid_state");
    env.api(
        "POST",
        "/api/events/nope/call",
        Some(json!({ "state": {} })),
    )
    .assert_error(404, "not_found");
    // A body that is not the call's shape.
    env.api(
        "POST",
        "/api/events/on_content_prepare/call",
        Some(json!({ "nope": 1 })),
    )
    .assert_error(400, "bad_request");
    let r = env.send(
        "POST",
        "/api/events/on_content_prepare/call",
        &[
            ("authorization", format!("Bearer {}", env.token)),
            ("content-type", "application/json".into()),
        ],
        Some(b"{not json".to_vec()),
    );
    r.assert_error(400, "bad_request");
}

#[test]
fn plugins_list_filter_and_lifecycle() {
    let env = Env::start();
    let all = env.api("GET", "/api/plugins", None).json();
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["greeter", "shouter"]);
    let greeter = &all[0];
    for key in [
        "event",
        "priority",
        "status",
        "depend_type",
        "depends",
        "extra",
        "inserted_at",
        "updated_at",
        "loaded",
        "kind",
        "in_chain",
        "waiting_for",
        "dependents",
        "failures",
        "consecutive_failures",
        "last_error",
        "package",
    ] {
        assert!(greeter.get(key).is_some(), "missing {key}: {greeter}");
    }
    assert_eq!(greeter["dependents"], json!(["shouter"]));

    let filtered = env
        .api(
            "GET",
            "/api/plugins?event=on_content_prepare&status=started",
            None,
        )
        .json();
    assert_eq!(filtered.as_array().unwrap().len(), 2);
    let none = env.api("GET", "/api/plugins?status=stopped", None).json();
    assert_eq!(none, json!([]));

    // Stopping greeter holds shouter and empties the chain.
    let r = env.api("POST", "/api/plugins/greeter/stop", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["action"], "stop");
    assert_eq!(report["changed"][0]["name"], "greeter");
    assert_eq!(report["changed"][0]["status"], "stopped");
    let shouter = env.api("GET", "/api/plugins/shouter", None).json();
    assert_eq!(shouter["status"], "held");
    assert_eq!(shouter["waiting_for"], json!(["greeter"]));
    let ev = env
        .api("GET", "/api/events/on_content_prepare", None)
        .json();
    assert_eq!(ev["chain"], json!([]));

    // Start on a stopped plugin is an invalid state; enable brings both back.
    env.api("POST", "/api/plugins/greeter/start", None)
        .assert_error(409, "invalid_state");
    assert_eq!(
        env.api("POST", "/api/plugins/greeter/enable", None).status,
        200
    );
    let ev = env
        .api("GET", "/api/events/on_content_prepare", None)
        .json();
    assert_eq!(ev["chain"], json!(["greeter", "shouter"]));
    assert_eq!(
        env.api("POST", "/api/plugins/shouter/restart", None).status,
        200
    );

    env.api("GET", "/api/plugins/nope", None)
        .assert_error(404, "not_found");
    env.api("POST", "/api/plugins/nope/stop", None)
        .assert_error(404, "not_found");
    env.api("POST", "/api/plugins/greeter/explode", None)
        .assert_error(400, "bad_request");
    env.api("GET", "/api/plugins/greeter/stop", None)
        .assert_error(405, "method_not_allowed");
    env.api("GET", "/api/nothing-here", None)
        .assert_error(404, "not_found");

    // Delete unloads the code, unregister removes the record.
    let r = env.api("POST", "/api/plugins/shouter/delete", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        env.api("GET", "/api/plugins/shouter", None).json()["loaded"],
        false
    );
    assert_eq!(
        env.api("POST", "/api/plugins/shouter/unregister", None)
            .status,
        200
    );
    env.api("GET", "/api/plugins/shouter", None)
        .assert_error(404, "not_found");
}

#[test]
fn settings_crud() {
    let env = Env::start();
    assert_eq!(env.api("GET", "/api/settings", None).json(), json!([]));
    env.api("GET", "/api/settings/theme", None)
        .assert_error(404, "not_found");
    let r = env.api("PUT", "/api/settings/theme", Some(json!({ "dark": true })));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        env.api("GET", "/api/settings/theme", None).json(),
        json!({ "name": "theme", "configs": { "dark": true } })
    );
    let list = env.api("GET", "/api/settings", None).json();
    assert_eq!(list[0]["name"], "theme");
    assert!(list[0]["updated_at"].is_string());
    assert_eq!(env.api("DELETE", "/api/settings/theme", None).status, 200);
    env.api("DELETE", "/api/settings/theme", None)
        .assert_error(404, "not_found");
}

#[test]
fn activity_health_and_profile() {
    let env = Env::start_with(|o| o.log_lifecycle = true);
    assert_eq!(
        env.api("POST", "/api/plugins/shouter/stop", None).status,
        200
    );
    let rows = env.eventually("the stop is recorded", || {
        let rows = env
            .api(
                "GET",
                "/api/activity?kind=plugin&subject=shouter&limit=5",
                None,
            )
            .json();
        (!rows.as_array().unwrap().is_empty()).then_some(rows)
    });
    assert_eq!(rows[0]["subject"], "shouter");
    assert!(rows[0]["id"].is_number());
    let older = rows[0]["id"].as_i64().unwrap();
    let page = env
        .api("GET", &format!("/api/activity?before_id={older}"), None)
        .json();
    assert!(
        page.as_array()
            .unwrap()
            .iter()
            .all(|r| r["id"].as_i64().unwrap() < older)
    );
    env.api("GET", "/api/activity?limit=abc", None)
        .assert_error(400, "bad_request");

    let h = env.api("GET", "/api/health", None).json();
    let greeter = h["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "greeter")
        .unwrap();
    assert_eq!(greeter["healthy"], true);
    let prepare = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "on_content_prepare")
        .unwrap();
    assert_eq!(prepare["chain_len"], 1);
    assert_eq!(prepare["healthy"], true);

    env.api(
        "POST",
        "/api/events/on_content_prepare/call",
        Some(json!({ "state": {} })),
    );
    let p = env.api("GET", "/api/profile", None).json();
    let prepare = p
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "on_content_prepare")
        .unwrap();
    assert_eq!(prepare["plugins"][0]["plugin"], "greeter");
    assert_eq!(prepare["plugins"][0]["calls"], 1);
}

#[test]
fn every_response_carries_the_security_headers() {
    let env = Env::start_with(|o| o.demo = true);
    for path in [
        "/",
        "/login",
        "/health",
        "/demo",
        "/api/events",
        "/assets/app.js",
    ] {
        let r = env.send("GET", path, &[], None);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(!csp.contains("unsafe-eval"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
    }
}

#[test]
fn nul_characters_and_non_object_states_are_clear_400s() {
    let env = Env::start();
    for path in [
        "/api/settings/abc%00defgh",
        "/api/plugins/a%00b",
        "/api/activity?subject=a%00b",
    ] {
        env.api("GET", path, None).assert_error(400, "bad_request");
    }
    env.api(
        "PUT",
        "/api/settings/my-setting",
        Some(json!({ "text": "a\u{0}b" })),
    )
    .assert_error(400, "bad_request");
    for state in [json!(5), json!("text"), json!([1, 2]), json!(null)] {
        env.api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": state })),
        )
        .assert_error(400, "invalid_state");
    }
    // Nothing was stored.
    assert_eq!(env.api("GET", "/api/settings", None).json(), json!([]));
}

#[test]
fn the_demo_host_is_served_only_when_asked_for() {
    // An embedder's server does not mount a public form that fires its real events.
    let env = Env::start();
    assert_eq!(env.send("GET", "/demo", &[], None).status, 404);
    assert_eq!(env.send("POST", "/demo/signup", &[], None).status, 404);
}

#[test]
fn series_give_each_event_and_plugin_the_last_minutes_per_interval() {
    let env = Env::start_with(|o| o.sample_every = Some(std::time::Duration::from_millis(250)));
    let empty = env.api("GET", "/api/series", None).json();
    assert_eq!(empty["interval_ms"], 250);
    // Calls and a failure between samples show up as one interval's counts and times.
    let call = |state: serde_json::Value| {
        env.api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": state })),
        )
    };
    for _ in 0..3 {
        call(json!({ "data": {}, "extra": {} }));
    }
    call(json!({ "data": { "panic": true } }));
    let v = env.eventually("the calls are sampled", || {
        let v = env.api("GET", "/api/series", None).json();
        let sum = |line: &serde_json::Value, field: &str| -> u64 {
            line[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum()
        };
        let event = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["event"] == "on_content_prepare")?
            .clone();
        (sum(&event, "calls") == 4 && sum(&event, "failures") == 1).then_some(v)
    });
    let points = v["points"].as_u64().unwrap() as usize;
    assert!((2..=150).contains(&points), "{v}");
    assert!(v["end_ms"].as_u64().unwrap() > 0);
    let lines = |key: &str| v[key].as_array().unwrap().clone();
    for line in lines("events").iter().chain(lines("plugins").iter()) {
        for field in ["calls", "failures", "p50_us", "p99_us"] {
            assert_eq!(
                line[field].as_array().unwrap().len(),
                points,
                "{field}: {line}"
            );
        }
    }
    // The interval with calls has latencies; one without has none.
    let event = lines("events")
        .into_iter()
        .find(|l| l["event"] == "on_content_prepare")
        .unwrap();
    let (calls, p50, p99) = (
        event["calls"].as_array().unwrap(),
        event["p50_us"].as_array().unwrap(),
        event["p99_us"].as_array().unwrap(),
    );
    for i in 0..points {
        assert_eq!(calls[i] == 0, p50[i].is_null(), "{event}");
        if !p50[i].is_null() {
            assert!(p99[i].as_f64().unwrap() >= p50[i].as_f64().unwrap());
        }
    }
    // The shouter failed once; the greeter never did; both ran.
    let plugin = |name: &str| {
        lines("plugins")
            .into_iter()
            .find(|l| l["plugin"] == name)
            .unwrap_or_else(|| panic!("no series for {name}: {v}"))
    };
    let total = |l: &serde_json::Value, f: &str| -> u64 {
        l[f].as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    assert_eq!(total(&plugin("shouter"), "failures"), 1);
    assert_eq!(total(&plugin("greeter"), "failures"), 0);
    assert_eq!(total(&plugin("greeter"), "calls"), 4);
    assert_eq!(plugin("greeter")["event"], "on_content_prepare");
    // Events nobody called are left out.
    assert!(
        lines("events")
            .iter()
            .all(|l| l["event"] == "on_content_prepare"),
        "{v}"
    );
}

/// Answers a search with one hit naming the words.
struct Hits;

impl plugboard_core::Collector<plugboard_core::reference::OnContentSearch> for Hits {
    fn collect(
        &self,
        input: &plugboard_core::reference::Payload,
        _: &plugboard_core::Context<'_>,
    ) -> plugboard_core::Contribute<plugboard_core::reference::SearchHit> {
        let text = input.data["text"].as_str().unwrap_or_default();
        plugboard_core::Contribute::Add(plugboard_core::reference::SearchHit::new(
            format!("about {text}"),
            "/about",
        ))
    }
}

/// Marks the state on the way out.
struct Mark;

impl plugboard_engine::Wrapper<plugboard_core::reference::OnContentPrepare> for Mark {
    type Token = ();

    fn before(
        &self,
        state: plugboard_core::reference::Payload,
        _: &plugboard_core::Context<'_>,
    ) -> (
        plugboard_core::Reply<plugboard_core::reference::Payload>,
        (),
    ) {
        (plugboard_core::Reply::Continue(state), ())
    }

    fn after(
        &self,
        outcome: plugboard_engine::Outcome<plugboard_core::reference::Payload>,
        _: &mut (),
        _: &plugboard_core::Context<'_>,
    ) -> plugboard_engine::After<plugboard_core::reference::Payload> {
        plugboard_engine::After::Return(outcome.map(|r| {
            let mut s = r.into_state();
            s.extra.insert("marked".into(), true.into());
            plugboard_core::Reply::Continue(s)
        }))
    }
}

#[test]
fn collecting_events_and_wrappers_over_http() {
    let env = Env::start();
    env.engine
        .register_collector::<plugboard_core::reference::OnContentSearch, _>(
            plugboard_core::Registration::new("hits"),
            Hits,
        )
        .unwrap();
    env.engine.start("hits").unwrap();
    env.engine
        .register_wrapper::<plugboard_core::reference::OnContentPrepare, _>(
            plugboard_core::Registration::new("mark"),
            Mark,
        )
        .unwrap();
    env.engine.start("mark").unwrap();

    // The mode and the contribution's schema are part of the event's description.
    let search = env.api("GET", "/api/events/on_content_search", None).json();
    assert_eq!(search["mode"], "collect");
    assert_eq!(search["chain"], json!(["hits"]));
    assert!(
        search["output"]["properties"]["href"].is_object(),
        "{search}"
    );
    // A call answers every contribution with its plugin; the trace says what each added.
    let r = env
        .api(
            "POST",
            "/api/events/on_content_search/call",
            Some(json!({ "state": { "data": { "text": "rust" } } })),
        )
        .json();
    assert_eq!(r["result"]["results"][0]["plugin"], "hits");
    assert_eq!(r["result"]["results"][0]["output"]["title"], "about rust");
    assert_eq!(r["trace"][0]["changes"][0]["path"], "/results/0");

    // Wrappers are listed apart from the chain, and run around it.
    let prepare = env
        .api("GET", "/api/events/on_content_prepare", None)
        .json();
    assert_eq!(prepare["mode"], "waterfall");
    assert_eq!(prepare["wrappers"], json!(["mark"]));
    assert_eq!(prepare["chain"], json!(["greeter", "shouter"]));
    let mark = prepare["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mark")
        .unwrap();
    assert_eq!(mark["wrapper"], true);
    let r = env
        .api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": { "data": {}, "extra": {} } })),
        )
        .json();
    assert_eq!(r["result"]["extra"]["marked"], true);
    assert_eq!(r["result"]["extra"]["shout"], "HELLO");
    let outcomes: Vec<_> = r["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["plugin"].clone(), s["outcome"].clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (json!("greeter"), json!("continued")),
            (json!("shouter"), json!("continued")),
            (json!("mark"), json!("wrapped")),
        ]
    );
    let plugin = env.api("GET", "/api/plugins/mark", None).json();
    assert_eq!(plugin["wrapper"], true);
}
