//! The webhook example written in Python (`plugins/python-webhook`, componentize-py against
//! the `plugin-http` world) as an operator meets it: packed and installed with the CLI,
//! denied until its URL's origin is granted, then posting each failed sign-up, with its
//! secret bearer token, to a running `plugboard serve`'s demo receiver. Outside CI it is
//! skipped, with a message, when componentize-py is not installed.

use crate::{PROMPTLY, arrivals, http, run, serve, stdout, wait_for};

const TOKEN: &str = "py-hook-token-4Rk9";

#[test]
fn the_python_webhook_is_denied_until_granted_then_posts_to_the_demo_receiver() {
    let Some(component) = plugboard_testkit::python_component("python-webhook", "plugin-http")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // The bundled (Rust) webhook stays out: what arrives is the Python one's.
    crate::skip_examples(&home, &["webhook"]);
    // CPython on a loaded machine can take longer than the second its manifest asks for:
    // the operator gives it more, with no change to the package.
    stdout(&run(
        &home,
        &[
            "settings",
            "set",
            "installer",
            r#"{"deadline_ms": {"python-webhook": 30000}}"#,
        ],
    ));
    let server = serve(&home);
    let origin = server.base.clone();
    let package = crate::pack_example_with(&home, tmp.path(), "python-webhook", &component, |m| m);

    // Its component imports `wasi:http/outgoing-handler`, which its manifest asks for.
    let inspected = stdout(&run(&home, &["inspect", package.to_str().unwrap()]));
    assert!(inspected.contains("http"), "{inspected}");
    // Granted another origin than the one its URL names.
    stdout(&run(
        &home,
        &[
            "install",
            package.to_str().unwrap(),
            "--grant",
            "settings,log,http=https://hooks.example.com",
        ],
    ));
    crate::wait_in_chain(&server, "python-webhook");
    // Settings and grants through the server's API (the dashboard's way), which the
    // server applies at once: a plugin whose calls keep failing (for want of a URL, or of
    // the grant) is stopped after a few.
    let (status, body) = http(
        &server,
        "PUT",
        "/api/settings/python-webhook",
        Some(&format!(
            r#"{{"url": "{origin}/demo/hooks", "token": "{TOKEN}"}}"#
        )),
    );
    assert_eq!(status, 200, "{body}");

    // Not granted that origin: the host refuses the request, and the step's failure says so.
    let s = crate::failed_save_step(&server, "python-webhook");
    assert!(
        s["outcome"] == "failed"
            && s["failure"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("HttpRequestDenied")),
        "{s}"
    );
    assert!(arrivals(&server).contains("Nothing has arrived yet"));

    // Granted: the next call posts, with the secret token.
    let (status, body) = http(
        &server,
        "POST",
        "/api/packages/python-webhook/grants",
        Some(&format!(r#"{{"grant": "http={origin}"}}"#)),
    );
    assert_eq!(status, 200, "{body}");
    let s = crate::failed_save_step(&server, "python-webhook");
    assert_eq!(s["outcome"], "continued", "{s}");
    wait_for(
        PROMPTLY,
        "the receiver lists the Python webhook's post",
        || {
            let page = arrivals(&server);
            page.contains("python-webhook") && page.contains("validation_failed")
        },
    );
    let page = arrivals(&server);
    assert!(
        page.contains("with a bearer token") && !page.contains(TOKEN),
        "{page}"
    );
}
