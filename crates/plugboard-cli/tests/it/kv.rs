//! A package's key-value data from the operator's side: written by the ip-ban example in a
//! running server, then listed, read, deleted and cleared with `plugboard kv`, kept or
//! removed by `plugboard uninstall`.

use std::path::{Path, PathBuf};

use crate::{PATIENCE, Serve, http, run, serve, stdout, wait_for};

/// The ip-ban example packed by the CLI from its committed manifest (plus the tests'
/// deadline), with the component built from its sources.
pub(crate) fn ip_ban_package(home: &Path, dir: &Path) -> PathBuf {
    crate::pack_example(home, dir, "ip-ban", "ip_ban", |m| {
        format!("{m}\n[limits]\n{}\n", crate::DEADLINE)
    })
}

/// Whether the server runs ip-ban's counter on failed logins.
pub(crate) fn in_chain(server: &Serve) -> bool {
    let (status, body) = http(server, "GET", "/api/events/on_user_login_failure", None);
    status == 200
        && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| {
            v["chain"]
                .as_array()
                .is_some_and(|c| c.iter().any(|p| p == "ip-ban-counter"))
        })
}

fn fail_login(server: &Serve, ip: &str) {
    assert_eq!(crate::grants::login_failure_error(server, ip), None);
}

#[test]
fn the_operator_lists_reads_and_erases_a_packages_data_and_uninstall_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    crate::skip_examples(&home, &["ip-ban"]);
    let server = serve(&home);
    let package = ip_ban_package(&home, tmp.path());
    stdout(&run(
        &home,
        &["install", "--grant", "all", package.to_str().unwrap()],
    ));
    wait_for(PATIENCE, "the server loads ip-ban", || in_chain(&server));
    for ip in ["10.0.0.9", "10.0.0.9", "10.0.0.10"] {
        fail_login(&server, ip);
    }

    let listed = stdout(&run(&home, &["kv", "ip-ban", "list"]));
    assert!(listed.starts_with("ip-ban: 2 keys, "), "{listed}");
    assert!(
        listed.contains("fail:10.0.0.9") && listed.contains("expires"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&run(&home, &["kv", "ip-ban", "list", "--json"]))).unwrap();
    assert_eq!(json[0]["key"], "fail:10.0.0.10");
    assert_eq!(json[1]["size"], 1);
    assert_eq!(
        stdout(&run(&home, &["kv", "ip-ban", "get", "fail:10.0.0.9"])),
        "2\n"
    );

    let out = stdout(&run(&home, &["kv", "ip-ban", "delete", "fail:10.0.0.9"]));
    assert_eq!(out, "deleted fail:10.0.0.9 of ip-ban\n");
    let missing = run(&home, &["kv", "ip-ban", "get", "fail:10.0.0.9"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("`ip-ban` has no key `fail:10.0.0.9`")
    );

    // Kept across an uninstall when asked, removed by a plain one.
    let out = stdout(&run(&home, &["uninstall", "ip-ban", "--keep-data"]));
    assert_eq!(out, "uninstalled ip-ban (its key-value data kept)\n");
    assert!(stdout(&run(&home, &["kv", "ip-ban", "list"])).starts_with("ip-ban: 1 keys"));
    stdout(&run(
        &home,
        &["install", "--grant", "all", package.to_str().unwrap()],
    ));
    stdout(&run(&home, &["uninstall", "ip-ban"]));
    assert_eq!(
        stdout(&run(&home, &["kv", "ip-ban", "list"])),
        "ip-ban: 0 keys, 0 bytes\n"
    );

    // `clear` erases everything of a package at once.
    stdout(&run(
        &home,
        &["install", "--grant", "all", package.to_str().unwrap()],
    ));
    wait_for(PATIENCE, "the server loads ip-ban again", || {
        in_chain(&server)
    });
    fail_login(&server, "10.0.0.11");
    fail_login(&server, "10.0.0.12");
    let out = stdout(&run(&home, &["kv", "ip-ban", "clear"]));
    assert_eq!(out, "cleared ip-ban: 2 keys deleted\n");
    assert_eq!(
        stdout(&run(&home, &["kv", "ip-ban", "list"])),
        "ip-ban: 0 keys, 0 bytes\n"
    );
}
