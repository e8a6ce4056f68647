//! The SSE stream, metrics and the OpenAPI document.

use std::io::{BufRead, BufReader};

use serde_json::{Value, json};

use crate::Env;

#[test]
fn the_stream_reports_a_stop() {
    let env = Env::start();
    env.send("GET", "/api/stream", &[], None)
        .assert_error(401, "unauthorized");
    let req = ureq::http::Request::builder()
        .uri(env.url("/api/stream"))
        .header("authorization", format!("Bearer {}", env.token))
        .body(())
        .unwrap();
    let r = crate::agent().run(req).unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut lines = BufReader::new(r.into_body().into_reader()).lines();
    assert_eq!(
        env.api("POST", "/api/plugins/shouter/stop", None).status,
        200
    );
    let mut event = String::new();
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            seen.push((event.clone(), v.clone()));
            if event == "change" && v["type"] == "status_changed" {
                assert_eq!(v["plugin"], "shouter");
                assert_eq!(v["to"], "stopped");
                assert_eq!(v["cause"], json!({ "by": "operator", "op": "stop" }));
                return;
            }
        }
    }
    panic!("no change event; saw {seen:?}");
}

#[test]
fn the_stream_announces_activity_written_by_another_process_after_it_is_written() {
    let env = Env::start();
    let req = ureq::http::Request::builder()
        .uri(env.url("/api/stream"))
        .header("authorization", format!("Bearer {}", env.token))
        .body(())
        .unwrap();
    let r = crate::agent().run(req).unwrap();
    let mut lines = BufReader::new(r.into_body().into_reader()).lines();
    // Another process's log on the same database (as the CLI's would be).
    let url = format!(
        "sqlite://{}",
        env.home.path().join("plugboard.db").display()
    );
    let other = plugboard_store::Store::open(&url).unwrap();
    let log = other.activity_log(None, plugboard_store::LogConfig::default());
    log.record(plugboard_store::NewActivity::new(
        plugboard_store::ActivityKind::Setting,
        "edit",
        plugboard_store::ActivityStatus::Info,
        Some("written-elsewhere"),
        json!({ "summary": "a setting changed elsewhere" }),
    ));
    assert!(log.flush(crate::PATIENCE));
    let mut event = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "activity"
        {
            let v: Value = serde_json::from_str(data).unwrap();
            if v["subject"] != "written-elsewhere" {
                continue;
            }
            assert_eq!(v["summary"], "a setting changed elsewhere");
            // Announced once written: the entry is there to be read.
            let id = v["id"].as_i64().unwrap();
            let listed = env
                .api("GET", "/api/activity?subject=written-elsewhere", None)
                .json();
            assert_eq!(listed[0]["id"].as_i64(), Some(id), "{listed}");
            return;
        }
    }
    panic!("no activity event");
}

#[test]
fn metrics_have_the_expected_families() {
    let env = Env::start();
    for state in [json!({}), json!({ "data": { "panic": true } })] {
        env.api(
            "POST",
            "/api/events/on_content_prepare/call",
            Some(json!({ "state": state })),
        );
    }
    let get = || env.metrics();
    let r = get();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let body = env.eventually("the failure is counted", || {
        let b = get().body;
        b.contains("kind=\"panic\"").then_some(b)
    });
    for family in [
        "plugboard_event_calls_total",
        "plugboard_event_latency_seconds",
        "plugboard_event_errors_total",
        "plugboard_plugin_calls_total",
        "plugboard_plugin_latency_seconds",
        "plugboard_plugin_latency_max_microseconds",
        "plugboard_plugin_failures_total",
        "plugboard_failures_by_kind_total",
        "plugboard_plugins",
        "plugboard_installs_total",
        "plugboard_background_dropped_total",
        "plugboard_emits_total",
        "plugboard_plugin_http_requests_total",
        "plugboard_plugin_http_denied_total",
        "plugboard_plugin_http_failures_total",
        "plugboard_plugin_http_sent_bytes_total",
        "plugboard_plugin_http_received_bytes_total",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{body}"
        );
    }
    assert!(
        body.contains("plugboard_event_calls_total{event=\"on_content_prepare\"} 2"),
        "{body}"
    );
    assert!(
        body.contains(
            "plugboard_plugin_calls_total{event=\"on_content_prepare\",plugin=\"greeter\"} 2"
        ),
        "{body}"
    );
    assert!(body.contains("plugboard_failures_by_kind_total{event=\"on_content_prepare\",plugin=\"shouter\",kind=\"panic\"} 1"), "{body}");
    assert!(
        body.contains("plugboard_plugins{status=\"started\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("plugboard_plugins{status=\"stopped\"} 0"),
        "{body}"
    );
    // The greeter's two timed calls are in its histogram, cumulatively up to +Inf.
    assert!(
        body.contains("plugboard_plugin_latency_seconds_bucket{event=\"on_content_prepare\",plugin=\"greeter\",le=\"+Inf\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("plugboard_plugin_latency_seconds_count{event=\"on_content_prepare\",plugin=\"greeter\"} 2"),
        "{body}"
    );
    // The event's whole calls: both timed, one ended in the shouter's panic.
    assert!(
        body.contains("plugboard_event_latency_seconds_count{event=\"on_content_prepare\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("plugboard_event_errors_total{event=\"on_content_prepare\"} 1"),
        "{body}"
    );
    // Every sample line is `name{labels} number`.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn the_openapi_document_lists_the_paths() {
    let env = Env::start();
    let r = env.api("GET", "/api/openapi.json", None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/health",
        "/api/health",
        "/api/session",
        "/api/events",
        "/api/events/{name}",
        "/api/events/{name}/call",
        "/api/plugins",
        "/api/plugins/{name}",
        "/api/plugins/{name}/{action}",
        "/api/packages",
        "/api/packages/url",
        "/api/packages/outdated",
        "/api/packages/{name}",
        "/api/packages/{name}/rollback",
        "/api/activity",
        "/api/settings",
        "/api/settings/{name}",
        "/api/profile",
        "/api/stream",
        "/api/openapi.json",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert!(paths["/api/settings/{name}"].get("put").is_some());
    assert!(paths["/api/packages/{name}"].get("delete").is_some());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(plugboard_server::openapi().paths.paths.len(), paths.len());
}

#[test]
fn the_openapi_document_matches_its_snapshot() {
    // The document is generated from the handlers' types; any change to what the API
    // answers shows here as a diff to review. Refresh with
    // `UPDATE_EXPECT=1 cargo test -p plugboard-server --test it openapi`.
    let env = Env::start();
    let r = env.api("GET", "/api/openapi.json", None);
    assert_eq!(r.status, 200);
    let doc = serde_json::to_string_pretty(&r.json()).unwrap() + "\n";
    expect_test::expect_file!["../../openapi.json"].assert_eq(&doc);
}

#[test]
fn every_response_is_a_type_not_free_json() {
    // No 200 answer of the JSON API is documented as bare `Value` (an empty object
    // schema): each names its type.
    let doc = serde_json::to_value(plugboard_server::openapi()).unwrap();
    let mut untyped = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(ok) = op["responses"].get("200") else {
                continue;
            };
            let Some(content) = ok.get("content").and_then(|c| c.get("application/json")) else {
                continue;
            };
            let schema = &content["schema"];
            if schema.as_object().is_some_and(|o| o.is_empty())
                || schema
                    .get("items")
                    .is_some_and(|i| i.as_object().is_some_and(|o| o.is_empty()))
            {
                untyped.push(format!("{method} {path}"));
            }
        }
    }
    assert!(untyped.is_empty(), "untyped responses: {untyped:?}");
    // /health is public.
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([{}]));
}

#[test]
fn the_package_index_is_polled_and_newer_versions_announced() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    std::fs::write(
        &index,
        json!({ "packages": { "audit": [
            { "version": "1.4.0", "sha256": "ab", "url": "https://example.org/audit-1.4.0.pbpkg" }
        ] } })
        .to_string(),
    )
    .unwrap();
    let path = index.to_str().unwrap().to_owned();
    let env = crate::Env::start_full(
        |o| o.index_poll = Some(std::time::Duration::from_millis(100)),
        move |c| c.index = Some(path),
    );
    let req = ureq::http::Request::builder()
        .uri(env.url("/api/stream"))
        .header("authorization", format!("Bearer {}", env.token))
        .body(())
        .unwrap();
    let r = crate::agent().run(req).unwrap();
    let mut lines = BufReader::new(r.into_body().into_reader()).lines();
    let r = env.send(
        "POST",
        "/api/packages?grant=all",
        &[
            ("authorization", format!("Bearer {}", env.token)),
            ("content-type", "application/octet-stream".into()),
        ],
        Some(crate::audit_package("audit", "1.0.0")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut event = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            if event == "outdated" && v.as_array().is_some_and(|a| !a.is_empty()) {
                assert_eq!(v[0]["name"], "audit");
                assert_eq!(v[0]["installed"], "1.0.0");
                assert_eq!(v[0]["latest"]["version"], "1.4.0");
                return;
            }
        }
    }
    panic!("no outdated event");
}
