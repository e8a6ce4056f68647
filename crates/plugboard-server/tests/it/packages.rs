//! Packages over HTTP: upload, list, uninstall, rollback, refusals; the demo host with
//! an installed sandboxed plugin.

use serde_json::json;

use crate::{Env, audit_package};

fn upload(env: &Env, bytes: Vec<u8>, query: &str) -> crate::Resp {
    env.send(
        "POST",
        &format!("/api/packages{query}"),
        &[
            ("authorization", format!("Bearer {}", env.token)),
            ("content-type", "application/octet-stream".into()),
        ],
        Some(bytes),
    )
}

/// A state of `on_user_after_save_failure`, as JSON.
fn save_failure_state() -> serde_json::Value {
    use plugboard_core::reference::*;
    serde_json::to_value(OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email taken"),
        ip: Ip::LOCALHOST,
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/users"),
        modifier_user: ModifierUser::SelfUser,
        extra: serde_json::Value::Null,
    })
    .unwrap()
}

#[test]
fn upload_installs_into_the_chain_and_uninstall_removes_it() {
    let env = Env::start();
    assert_eq!(env.api("GET", "/api/packages", None).json(), json!([]));
    // It asks for the clock: without consent it is refused, with what it asks for in the
    // details; a grant that cannot be read is a bad request; nothing is installed.
    let r = upload(&env, audit_package("audit", "1.0.0"), "");
    r.assert_error(409, "consent_required");
    assert_eq!(
        r.json()["error"]["details"],
        json!({ "asks": [{ "capability": "clock", "scope": [], "description": "read the current time" }], "grant": "clock" })
    );
    upload(&env, audit_package("audit", "1.0.0"), "?grant=disk").assert_error(400, "bad_request");
    assert_eq!(env.api("GET", "/api/packages", None).json(), json!([]));
    let r = upload(&env, audit_package("audit", "1.0.0"), "?grant=clock");
    assert_eq!(r.status, 200, "{}", r.body);
    let done = r.json();
    assert_eq!(done["name"], "audit");
    assert_eq!(done["action"], "install");
    assert_eq!(done["plugins"], json!(["audit"]));

    let ev = env
        .api("GET", "/api/events/on_user_after_save_failure", None)
        .json();
    assert_eq!(ev["chain"], json!(["audit"]));
    assert_eq!(ev["plugins"][0]["package"], "audit");
    assert_eq!(ev["plugins"][0]["kind"], "encoded");
    let list = env.api("GET", "/api/packages", None).json();
    assert_eq!(list[0]["name"], "audit");
    assert_eq!(list[0]["loaded"], true);

    // Its grants, listed and revoked: the next call runs without the clock.
    let grants = env.api("GET", "/api/grants", None).json();
    assert_eq!(grants[0]["package"], "audit");
    assert_eq!(grants[0]["granted"], "clock");
    let call = |env: &Env| {
        env.api(
            "POST",
            "/api/events/on_user_after_save_failure/call",
            Some(json!({ "state": save_failure_state() })),
        )
        .json()
    };
    assert!(call(&env)["result"]["extra"]["at"].as_u64().unwrap() > 0);
    let r = env.api(
        "POST",
        "/api/packages/audit/grants",
        Some(json!({ "revoke": "clock" })),
    );
    assert_eq!(r.json()["missing"], "clock", "{}", r.body);
    let out = call(&env);
    assert!(
        out["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("without the `clock` capability")),
        "{out}"
    );
    // Neither: the grants as they are.
    let r = env.api("POST", "/api/packages/audit/grants", Some(json!({})));
    assert_eq!(r.json()["granted"], "", "{}", r.body);
    env.api(
        "POST",
        "/api/packages/audit/grants",
        Some(json!({ "grant": "http=ftp://x" })),
    )
    .assert_error(400, "bad_request");
    env.api(
        "POST",
        "/api/packages/nope/grants",
        Some(json!({ "grant": "all" })),
    )
    .assert_error(404, "not_found");
    let r = env.api(
        "POST",
        "/api/packages/audit/grants",
        Some(json!({ "grant": "all" })),
    );
    assert_eq!(r.json()["granted"], "clock", "{}", r.body);
    assert!(call(&env)["result"]["extra"]["at"].as_u64().unwrap() > 0);

    // Stopping its plugin changes the chain.
    assert_eq!(env.api("POST", "/api/plugins/audit/stop", None).status, 200);
    let ev = env
        .api("GET", "/api/events/on_user_after_save_failure", None)
        .json();
    assert_eq!(ev["chain"], json!([]));
    assert_eq!(
        env.api("POST", "/api/plugins/audit/enable", None).status,
        200
    );

    // The same version again is a conflict; forced, a reinstall.
    upload(&env, audit_package("audit", "1.0.0"), "").assert_error(409, "conflict");
    let r = upload(&env, audit_package("audit", "1.0.0"), "?force=true");
    assert_eq!(r.json()["action"], "reinstall", "{}", r.body);
    // A wrong pin, garbage and an empty body are refused.
    upload(
        &env,
        audit_package("audit", "1.1.0"),
        &format!("?sha256={}", "0".repeat(64)),
    )
    .assert_error(422, "refused");
    upload(&env, b"not a package".to_vec(), "").assert_error(422, "refused");
    upload(&env, Vec::new(), "").assert_error(400, "bad_request");
    // Upgrade, then roll back.
    assert_eq!(
        upload(&env, audit_package("audit", "1.1.0"), "").json()["action"],
        "upgrade"
    );
    let r = env.api("POST", "/api/packages/audit/rollback", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], "1.0.0");
    env.api("POST", "/api/packages/nope/rollback", None)
        .assert_error(404, "not_found");
    env.api("GET", "/api/packages/outdated", None)
        .assert_error(409, "invalid_state");
    env.api(
        "POST",
        "/api/packages/url",
        Some(json!({ "url": "/etc/passwd" })),
    )
    .assert_error(400, "bad_request");

    let r = env.api("DELETE", "/api/packages/audit?cascade=true", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["uninstalled"], "audit");
    env.api("DELETE", "/api/packages/audit", None)
        .assert_error(404, "not_found");
    let ev = env
        .api("GET", "/api/events/on_user_after_save_failure", None)
        .json();
    assert_eq!(ev["chain"], json!([]));

    let metrics = env.metrics().body;
    assert!(
        metrics.contains("plugboard_installs_total{action=\"install\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plugboard_installs_total{action=\"uninstall\",result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn demo_signup_fires_events_and_records_the_plugins_effect() {
    let env = Env::start_with(|o| o.demo = true);
    assert_eq!(
        upload(&env, audit_package("audit", "1.0.0"), "?grant=all").status,
        200
    );

    let page = env.send("GET", "/demo", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("name=\"password\""));

    let form = [
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
        ("user-agent", "server-tests".to_owned()),
    ];
    let r = env.send(
        "POST",
        "/demo/signup",
        &form,
        Some(b"name=Ada&email=nope&password=short".to_vec()),
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("must contain @"), "{}", r.body);
    assert!(r.body.contains("at least 8"), "{}", r.body);
    assert!(
        r.body.contains("wasm-audit"),
        "the plugins' effect is shown: {}",
        r.body
    );

    let rows = env.eventually("the failed sign-up is recorded", || {
        let rows = env
            .api(
                "GET",
                "/api/activity?kind=event&subject=on_user_after_save_failure",
                None,
            )
            .json();
        (!rows.as_array().unwrap().is_empty()).then_some(rows)
    });
    assert_eq!(rows[0]["action"], "call");
    assert_eq!(
        rows[0]["extra"]["summary"],
        "on_user_after_save_failure called by the demo host's sign-up form"
    );
    assert_eq!(rows[0]["extra"]["added"]["audited_by"], "wasm-audit");
    assert_eq!(rows[0]["extra"]["added"]["code"], "validation_failed");
    assert_eq!(rows[0]["extra"]["added"]["ip"], "127.0.0.1");

    // A good sign-up fires on_user_after_save; the same email again is taken.
    let ok = env.send(
        "POST",
        "/demo/signup",
        &form,
        Some(b"name=Ada&email=ada%40example.com&password=long+enough".to_vec()),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("Welcome, Ada"));
    let again = env.send(
        "POST",
        "/demo/signup",
        &form,
        Some(b"name=Ada&email=ada%40example.com&password=long+enough".to_vec()),
    );
    assert_eq!(again.status, 422);
    assert!(again.body.contains("already taken"));
    env.eventually("the sign-up is recorded", || {
        let rows = env
            .api(
                "GET",
                "/api/activity?kind=event&subject=on_user_after_save",
                None,
            )
            .json();
        (!rows.as_array().unwrap().is_empty()).then_some(())
    });
}

#[test]
fn install_from_a_url_streams_progress() {
    use std::io::{BufRead, BufReader};

    let bytes = audit_package("audit", "1.0.0");
    let sha = plugboard_package::sha256_hex(&bytes);
    let host = crate::file_server(bytes);
    let allowed = host.clone();
    let env = Env::start_full(
        |_| {},
        move |c| {
            c.fetch.allowed_hosts = vec![allowed];
            c.fetch.allow_http = true;
        },
    );
    let req = ureq::http::Request::builder()
        .uri(env.url("/api/stream"))
        .header("authorization", format!("Bearer {}", env.token))
        .body(())
        .unwrap();
    let stream = crate::agent().run(req).unwrap();
    let mut lines = BufReader::new(stream.into_body().into_reader()).lines();

    let url = format!("http://{host}/audit.pbpkg");
    // Not pinned, from a host that is not trusted: refused.
    env.api("POST", "/api/packages/url", Some(json!({ "url": url })))
        .assert_error(422, "refused");
    let r = env.api(
        "POST",
        "/api/packages/url",
        Some(json!({ "url": url, "sha256": sha, "grant": "all" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["name"], "audit");

    let mut event = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "install"
        {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            assert_eq!(v["url"], url);
            if v["received"] == v["total"] {
                return;
            }
        }
    }
    panic!("no final install progress event");
}

#[test]
fn a_plugins_dropped_log_lines_are_counted_in_the_metrics() {
    let env = Env::start();
    let event = "on_hostile_chatty";
    env.engine
        .declare_dynamic(plugboard_core::EventInfo::dynamic(event, "test", "hostile"))
        .unwrap();
    let manifest = plugboard_testkit::manifest("chatty", "1.0.0", event, "")
        .replace("[capabilities]", "[capabilities]\nlog = true")
        + &format!("\n[limits]\ndeadline_ms = {}\n", crate::DEADLINE_MS);
    let package = plugboard_testkit::pack(&manifest, &crate::component("hostile")).unwrap();
    let r = upload(&env, package, "?grant=all");
    assert_eq!(r.status, 200, "{}", r.body);
    let metric = |env: &Env| -> u64 {
        let body = env.metrics().body;
        let line = body
            .lines()
            .find(|l| l.starts_with("plugboard_guest_log_lines_dropped_total "))
            .unwrap_or_else(|| panic!("no dropped-lines metric: {body}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(metric(&env), 0);
    // The plugin writes 1,000 lines in one call, against a budget of 100 a second.
    let started = std::time::Instant::now();
    let r = env.api(
        "POST",
        &format!("/api/events/{event}/call"),
        Some(json!({ "state": {} })),
    );
    let windows = started.elapsed().as_secs() + 1;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["trace"][0]["failure"]["kind"], "plugin_error");
    let budget = u64::from(plugboard_wasm::LOG_LINES_PER_SECOND) * (windows + 1);
    let dropped = metric(&env);
    assert!(
        dropped >= 1000u64.saturating_sub(budget) && dropped <= 1000,
        "{dropped} dropped in {windows} windows"
    );
    // Still counted once the package is gone: a counter does not go down.
    let r = env.api("DELETE", "/api/packages/chatty", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(metric(&env), dropped);
}
