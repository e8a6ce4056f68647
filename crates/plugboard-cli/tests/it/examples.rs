//! The bundled examples of contract 0.3.0 in `plugboard serve`: `ip-ban` installed with
//! what it asks for, and `webhook` granted this server's origin and posting failed sign-ups
//! to the demo receiver; restarted on another port, the webhook follows. The demo search
//! (a collecting event) with a wasm package among its answers, and a wasm wrapper (0.4.0)
//! installed from the command line around the server's chain.

use crate::{PATIENCE, PROMPTLY, Serve, arrivals, http, run, serve, stdout, wait_for};

/// Fires a failed save; whether the chain (the webhook's post included) succeeded. On a
/// loaded machine a post to this very server can overrun the webhook's 1 s deadline: the
/// tests fire again rather than fail on one slow call.
fn fire(server: &Serve) -> bool {
    let answer = crate::failed_save(server);
    if !answer["error"].is_null() {
        eprintln!("the chain failed: {answer}");
    }
    answer["error"].is_null()
}

fn origin(server: &Serve) -> String {
    server.base.clone()
}

#[test]
fn serve_installs_the_webhook_granted_its_demo_receiver_and_it_follows_a_new_port() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let first = serve(&home);
    wait_for(PATIENCE, "serve installs the webhook", || {
        let (_, body) = http(
            &first,
            "GET",
            "/api/events/on_user_after_save_failure",
            None,
        );
        body.contains("\"webhook\"")
    });
    let grants = stdout(&run(&home, &["grants"]));
    assert!(
        grants.contains(&format!("granted   log,settings,http={}", origin(&first)))
            && grants.contains("granted   log,settings,kv"),
        "{grants}"
    );
    assert!(arrivals(&first).contains("Nothing has arrived yet"));
    wait_for(PROMPTLY, "the receiver lists the post", || {
        fire(&first);
        arrivals(&first).contains("validation_failed")
    });
    let settings = stdout(&run(&home, &["settings", "get", "webhook"]));
    assert!(
        settings.contains(&format!("{}/demo/hooks", origin(&first))),
        "{settings}"
    );
    let old = origin(&first);
    drop(first);

    // Another port: the URL and the grant follow; the old origin is revoked.
    let second = serve(&home);
    assert_ne!(origin(&second), old);
    wait_for(PROMPTLY, "the webhook follows the new address", || {
        stdout(&run(&home, &["grants", "webhook"])).contains(&format!("http={}", origin(&second)))
    });
    let grants = stdout(&run(&home, &["grants", "webhook"]));
    assert!(!grants.contains(&old), "{grants}");
    wait_for(PROMPTLY, "the new server's receiver gets the post", || {
        fire(&second);
        arrivals(&second).contains("validation_failed")
    });

    // An operator's own URL is left alone on the next start.
    stdout(&run(
        &home,
        &[
            "settings",
            "set",
            "webhook",
            r#"{"url": "https://hooks.example.com/x"}"#,
        ],
    ));
    drop(second);
    let third = serve(&home);
    let settings = stdout(&run(&home, &["settings", "get", "webhook"]));
    assert!(
        settings.contains("https://hooks.example.com/x"),
        "{settings}"
    );
    drop(third);
}

#[test]
fn the_demo_search_lists_every_plugins_answer_a_wasm_packages_among_them() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    // `on_content_search` collects: the sample `pages` plugin (native) and the
    // `site-search` example package (WebAssembly) both answer.
    let (status, event) = http(&server, "GET", "/api/events/on_content_search", None);
    assert_eq!(status, 200, "{event}");
    let event: serde_json::Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["mode"], "collect");
    assert_eq!(event["chain"], serde_json::json!(["pages", "site-search"]));
    let (status, page) = http(&server, "GET", "/demo/search?q=search", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("2 answers"), "{page}");
    assert!(
        page.contains("data-from=\"pages\"") && page.contains("data-from=\"site-search\""),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"/docs/search\">Search events</a>"),
        "{page}"
    );
    // Words no plugin knows: nothing found, said so.
    let (_, page) = http(&server, "GET", "/demo/search?q=zzzz", None);
    assert!(page.contains("No plugin found anything."), "{page}");
    // Markup in the words is shown as text.
    let (_, page) = http(&server, "GET", "/demo/search?q=%3Cscript%3E", None);
    assert!(
        page.contains("value=\"&lt;script&gt;\"") && !page.contains("<script>"),
        "{page}"
    );
    // Stopping the package leaves the native plugin's answer.
    stdout(&run(&home, &["stop", "site-search"]));
    wait_for(PROMPTLY, "the stop reaches the server", || {
        let (_, page) = http(&server, "GET", "/demo/search?q=search", None);
        page.contains("1 answer.") && !page.contains("data-from=\"site-search\"")
    });
}

#[test]
fn a_wasm_wrapper_installed_from_the_command_line_runs_around_the_servers_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = serve(&home);
    let file = crate::pack_example(&home, tmp.path(), "safety-net", "safety_net", |m| m);
    let shown = stdout(&run(&home, &["inspect", file.to_str().unwrap()]));
    assert!(
        shown.contains("on_user_after_save_failure")
            && shown.contains("(wrapper: runs around the chain)"),
        "{shown}"
    );
    let out = stdout(&run(
        &home,
        &["install", "--grant", "all", file.to_str().unwrap()],
    ));
    assert!(out.starts_with("installed safety-net 1.0.0"), "{out}");
    let listed = stdout(&run(&home, &["plugins"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("safety-net") && l.ends_with("(wrapper: runs around the chain)")),
        "{listed}"
    );
    // Another process installed it: the server loads it from the database.
    wait_for(PATIENCE, "the server wraps the chain in safety-net", || {
        let (_, body) = http(
            &server,
            "GET",
            "/api/events/on_user_after_save_failure",
            None,
        );
        serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|e| e["wrappers"] == serde_json::json!(["safety-net"]))
    });
    let (_, plugin) = http(&server, "GET", "/api/plugins/safety-net", None);
    let plugin: serde_json::Value = serde_json::from_str(&plugin).unwrap();
    assert_eq!(plugin["wrapper"], true, "{plugin}");
    assert_eq!(plugin["kind"], "encoded", "{plugin}");
    // A call runs inside it: its step spans the call, and its `after` marked the result
    // (attempts when the chain went through; a fallback when the webhook's post to this
    // server overran its deadline on a loaded machine, even after the retries).
    let answer = crate::failed_save(&server);
    let net = answer["trace"]
        .as_array()
        .and_then(|t| t.iter().find(|s| s["plugin"] == "safety-net"))
        .cloned()
        .unwrap_or_else(|| panic!("no safety-net step: {answer}"));
    assert_eq!(net["outcome"], "wrapped", "{answer}");
    let extra = &answer["result"]["extra"];
    assert!(
        extra["attempts"].is_u64() || extra["fallback"].is_string(),
        "{answer}"
    );
}
