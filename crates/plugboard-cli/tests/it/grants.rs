//! Consent from the command line: `install` shows what a package asks for and installs
//! only what is granted; `grants` lists; `grant` and `revoke` reach a running server
//! within a second, and are in the activity log.

use crate::kv::{in_chain, ip_ban_package};
use crate::{PATIENCE, PROMPTLY, Serve, http, run, serve, stdout, wait_for};

/// The error of a failed login call on the server, if the chain failed.
pub(crate) fn login_failure_error(server: &Serve, ip: &str) -> Option<String> {
    let body = format!(
        r#"{{"state": {{"conn": {{"method": "POST", "path": "/login"}}, "ip": "{ip}", "endpoint": "html", "error": {{"code": "bad_password", "message": "no"}}}}}}"#
    );
    let (status, out) = http(
        server,
        "POST",
        "/api/events/on_user_login_failure/call",
        Some(&body),
    );
    assert_eq!(status, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["error"]["message"].as_str().map(str::to_owned)
}

#[test]
fn install_asks_for_consent_and_a_revoke_reaches_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    crate::skip_examples(&home, &["ip-ban"]);
    let server = serve(&home);
    let package = ip_ban_package(&home, tmp.path());
    let file = package.to_str().unwrap();

    // Not on a terminal and nothing granted: refused, saying what and how; nothing installed.
    for (args, missing) in [
        (vec!["install", file], "log,settings,kv"),
        (vec!["install", file, "--grant", "kv"], "log,settings"),
    ] {
        let out = run(&home, &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("asks for capabilities it is not granted")
                && err.contains("settings (read the settings an operator gives it)")
                && err.contains(&format!("--grant {missing}")),
            "{err}"
        );
        let listed = stdout(&run(&home, &["grants"]));
        assert!(!listed.contains("ip-ban"), "{listed}");
    }
    let out = run(&home, &["install", file, "--grant", "disk"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no capability is called `disk`"));

    let out = stdout(&run(
        &home,
        &["install", file, "--grant", "kv,log,settings"],
    ));
    assert!(out.contains("granted: log,settings,kv"), "{out}");
    assert_eq!(
        stdout(&run(&home, &["grants", "ip-ban"])),
        "ip-ban\n  asks for  log,settings,kv\n  granted   log,settings,kv\n"
    );
    wait_for(PATIENCE, "the server loads ip-ban", || in_chain(&server));
    assert_eq!(login_failure_error(&server, "10.0.0.1"), None);

    // Revoked from the CLI: the server's next call is denied, within a second.
    let out = stdout(&run(&home, &["revoke", "ip-ban", "kv"]));
    assert_eq!(
        out,
        "ip-ban: granted log,settings\n  not granted: kv (its calls to these fail)\n"
    );
    let took = wait_for(PROMPTLY, "the server denies kv", || {
        login_failure_error(&server, "10.0.0.2").is_some_and(|e| e.contains("not granted the `kv`"))
    });
    eprintln!("the revocation reached the server in {took:?} (goal: 1 s)");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&home, &["grants", "--json"]))).unwrap();
    let ip_ban = json
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["package"] == "ip-ban")
        .unwrap();
    assert_eq!(ip_ban["missing"], "kv");

    // Granted again.
    stdout(&run(&home, &["grant", "ip-ban", "all"]));
    wait_for(PROMPTLY, "the server grants kv again", || {
        login_failure_error(&server, "10.0.0.3").is_none()
    });

    // All of it is in the activity log: the install's grant, the revocation, the denied
    // use (recorded by the server) and the grant.
    let activity = |action: &str| {
        let (_, body) = http(
            &server,
            "GET",
            "/api/activity?kind=package&subject=ip-ban&limit=200",
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count()
    };
    wait_for(PROMPTLY, "the activity log has every entry", || {
        activity("grant") >= 2 && activity("revoke") >= 1 && activity("denied") >= 1
    });
}
