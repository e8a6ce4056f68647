//! `pack`, `inspect` and `keygen`, run as an operator runs them.

use std::path::Path;

use crate::{run, stdout};

const MANIFEST: &str = r#"[package]
name = "audit"
version = "1.2.0"
description = "Enriches extra on failed saves"
license = "MIT"
contract = "0.2"

[[hooks]]
event = "on_user_after_save_failure"
priority = 100
depends = ["validator"]

[limits]
memory_mib = 64

[capabilities]
log = true
"#;

fn package_dir(root: &Path, manifest: &str) -> std::path::PathBuf {
    let dir = root.join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plugboard.toml"), manifest).unwrap();
    std::fs::write(dir.join("plugin.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    dir
}

fn stderr(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected a failure");
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn sha_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap()
        .to_owned()
}

#[test]
fn pack_then_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = package_dir(tmp.path(), MANIFEST);
    let file = tmp.path().join("audit.pbpkg");
    let out = stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    let sha = sha_line(&out);
    assert_eq!(sha.len(), 64);
    assert!(
        out.starts_with(&format!("wrote {} (", file.display())),
        "{out}"
    );

    let out = stdout(&run(
        tmp.path(),
        &["inspect", file.to_str().unwrap(), "--sha256", &sha],
    ));
    let expected = format!(
        "package       audit 1.2.0
description   Enriches extra on failed saves
license       MIT
contract      ^0.2
sha256        {sha}
signature     unsigned
hooks
  audit            on_user_after_save_failure    100  validator (soft)
limits        memory_mib=64
capabilities  (asked for; an operator grants them at install)
  log       write lines to the host's log
files         plugin.wasm (8 bytes)
checks
  archive     ok
  manifest    ok
  component   ok (header; the contract is checked when the host loads it)
  policy      ok (default install policy)
"
    );
    assert_eq!(out, expected);

    let json: serde_json::Value = serde_json::from_str(&stdout(&run(
        tmp.path(),
        &["inspect", file.to_str().unwrap(), "--json"],
    )))
    .unwrap();
    assert_eq!(json["sha256"], sha.as_str());
    assert_eq!(json["manifest"]["package"]["name"], "audit");
    assert_eq!(json["manifest"]["hooks"][0]["priority"], 100);
    assert_eq!(json["signature"]["status"], "unsigned");
    assert_eq!(json["checks"]["policy"], serde_json::json!([]));
}

#[test]
fn pack_names_the_file_after_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = package_dir(tmp.path(), MANIFEST);
    let out = stdout(
        &crate::plugboard_in(tmp.path())
            .current_dir(tmp.path())
            .args(["pack", dir.to_str().unwrap()])
            .output()
            .unwrap(),
    );
    assert!(out.starts_with("wrote audit-1.2.0.pbpkg ("), "{out}");
    assert!(tmp.path().join("audit-1.2.0.pbpkg").is_file());
}

#[test]
fn keygen_sign_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("release");
    let out = stdout(&run(
        tmp.path(),
        &["keygen", "--out", prefix.to_str().unwrap()],
    ));
    let id = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("key id ")
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16);
    let secret = tmp.path().join("release.key");
    let public = tmp.path().join("release.pub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // keygen never overwrites a key.
    let again = run(tmp.path(), &["keygen", "--out", prefix.to_str().unwrap()]);
    assert!(stderr(&again).contains("release.key"));

    let dir = package_dir(tmp.path(), MANIFEST);
    let file = tmp.path().join("signed.pbpkg");
    let out = stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
            "--sign-key",
            secret.to_str().unwrap(),
        ],
    ));
    assert!(out.ends_with(&format!("signed by key {id}\n")), "{out}");
    let out = stdout(&run(
        tmp.path(),
        &[
            "inspect",
            file.to_str().unwrap(),
            "--trusted-key",
            public.to_str().unwrap(),
        ],
    ));
    assert!(
        out.contains(&format!("signature     verified (key {id})\n")),
        "{out}"
    );
    let out = stdout(&run(tmp.path(), &["inspect", file.to_str().unwrap()]));
    assert!(
        out.contains(&format!("signed by key {id}, not verified")),
        "{out}"
    );

    // Another trusted key refuses it; an unsigned package is refused when keys are given.
    let other = tmp.path().join("other");
    stdout(&run(
        tmp.path(),
        &["keygen", "--out", other.to_str().unwrap()],
    ));
    let other_pub = tmp.path().join("other.pub");
    let err = stderr(&run(
        tmp.path(),
        &[
            "inspect",
            file.to_str().unwrap(),
            "--trusted-key",
            other_pub.to_str().unwrap(),
        ],
    ));
    assert!(
        err.contains(&format!("signed with key {id}, which is not a trusted key")),
        "{err}"
    );
    let unsigned = tmp.path().join("unsigned.pbpkg");
    stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            unsigned.to_str().unwrap(),
        ],
    ));
    let err = stderr(&run(
        tmp.path(),
        &[
            "inspect",
            unsigned.to_str().unwrap(),
            "--trusted-key",
            public.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("the package is not signed"), "{err}");
}

#[test]
fn inspect_refuses_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = package_dir(tmp.path(), MANIFEST);
    let file = tmp.path().join("audit.pbpkg");
    stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    let wrong = "0".repeat(64);
    let err = stderr(&run(
        tmp.path(),
        &["inspect", file.to_str().unwrap(), "--sha256", &wrong],
    ));
    assert!(
        err.starts_with(&format!(
            "error: {} is refused: sha256 mismatch: expected {wrong}",
            file.display()
        )),
        "{err}"
    );

    // A manifest error names the field and line, from pack too.
    std::fs::write(
        dir.join("plugboard.toml"),
        MANIFEST.replace("priority = 100", "priority = 120"),
    )
    .unwrap();
    let err = stderr(&run(tmp.path(), &["pack", dir.to_str().unwrap()]));
    assert!(
        err.contains("plugboard.toml line 10: hooks[0].priority: 120 is out of range"),
        "{err}"
    );

    // A policy violation is printed and fails the command.
    std::fs::write(
        dir.join("plugboard.toml"),
        MANIFEST.replace("memory_mib = 64", "memory_mib = 512"),
    )
    .unwrap();
    stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    let out = run(tmp.path(), &["inspect", file.to_str().unwrap()]);
    let err = stderr(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "    limits.memory_mib: requested 512 MiB, the operator allows at most 128 MiB\n"
        ),
        "{text}"
    );
    assert!(err.contains("the default install policy refuses"), "{err}");

    // Not a package at all.
    let junk = tmp.path().join("junk.pbpkg");
    std::fs::write(&junk, b"not a package").unwrap();
    let err = stderr(&run(tmp.path(), &["inspect", junk.to_str().unwrap()]));
    assert!(
        err.contains("not a readable gzip-compressed tar archive"),
        "{err}"
    );
}

#[test]
fn terminal_control_characters_from_a_package_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = MANIFEST.replace(
        "description = \"Enriches extra on failed saves\"",
        "description = \"Clears \\u001b[2J\\u001b]0;owned\\u0007 the screen \\u009b31m\"",
    );
    let dir = package_dir(tmp.path(), &manifest);
    let file = tmp.path().join("evil.pbpkg");
    stdout(&run(
        tmp.path(),
        &[
            "pack",
            dir.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    ));
    for args in [vec!["inspect"], vec!["inspect", "--json"]] {
        let mut all = args.clone();
        all.push(file.to_str().unwrap());
        let out = run(tmp.path(), &all);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{9b}'),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("u001b[2J"), "{args:?}: {text}");
    }
    // The JSON stays JSON.
    let out = run(tmp.path(), &["inspect", "--json", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["manifest"]["package"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Clears \u{1b}[2J")
    );
}

#[test]
fn devices_fifos_and_directories_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo.pbpkg");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let mut sources = vec!["/dev/zero".to_owned(), tmp.path().display().to_string()];
    if made.is_ok_and(|s| s.success()) {
        sources.push(fifo.display().to_string());
    }
    for source in &sources {
        for command in ["inspect", "install"] {
            let started = std::time::Instant::now();
            let out = run(tmp.path(), &[command, source.as_str()]);
            let err = stderr(&out);
            assert!(
                err.contains("not a regular file"),
                "{command} {source}: {err}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "{command} {source} took {:?}",
                started.elapsed()
            );
        }
    }
}

/// A component whose imports need a capability its manifest does not ask for would be
/// denied at its first call: `pack`, `inspect` and `install` refuse it up front, naming the
/// import and the line to add; nothing is written or installed.
#[test]
fn a_component_importing_what_its_manifest_does_not_ask_for_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (plugin, component, cut, import, fix) in [
        (
            "ip-ban",
            "ip_ban",
            "kv = true\n",
            "plugboard:plugin/kv@0.4.0",
            "add `kv = true`",
        ),
        (
            "webhook",
            "webhook",
            "http = [\"*\"]\n",
            "wasi:http/outgoing-handler@0.2",
            "add `http = [",
        ),
    ] {
        let manifest =
            std::fs::read_to_string(root.join(format!("plugins/{plugin}/plugboard.toml")))
                .unwrap()
                .replace("settings_schema = \"settings.schema.json\"\n", "");
        assert!(manifest.contains(cut), "{plugin}'s manifest asks for it");
        let without = manifest.replace(cut, "");
        let wasm = std::fs::read(plugboard_testkit::component_path(component)).unwrap();
        let imports = plugboard_package::component_imports(&wasm).unwrap();
        assert!(
            imports.iter().any(|i| i.starts_with(import)),
            "{plugin} imports {imports:?}"
        );
        let refused = |out: &std::process::Output, what: &str| {
            assert!(!out.status.success(), "{what} accepted it");
            let err = stderr(out);
            assert!(
                err.contains(&format!("imports `{import}"))
                    && err.contains(fix)
                    && err.contains("does not ask for it"),
                "{what}: {err}"
            );
        };

        // pack: refused, no file.
        let src = tmp.path().join(format!("{plugin}-src"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("plugboard.toml"), &without).unwrap();
        std::fs::write(src.join("plugin.wasm"), &wasm).unwrap();
        let file = tmp.path().join(format!("{plugin}.pbpkg"));
        let out = run(
            &home,
            &[
                "pack",
                src.to_str().unwrap(),
                "--out",
                file.to_str().unwrap(),
            ],
        );
        refused(&out, "pack");
        assert!(!file.exists());

        // Built by another tool, without the check: inspect and install refuse it too.
        let bytes = plugboard_package::write_archive([
            ("plugboard.toml", without.as_bytes()),
            ("plugin.wasm", wasm.as_slice()),
        ])
        .unwrap();
        // A package installed before this check existed is loaded as it was accepted then.
        plugboard_package::verify(
            &bytes,
            &plugboard_package::VerifyOptions {
                skip_import_check: true,
                ..plugboard_package::VerifyOptions::default()
            },
        )
        .unwrap();
        std::fs::write(&file, bytes).unwrap();
        refused(&run(&home, &["inspect", file.to_str().unwrap()]), "inspect");
        refused(
            &run(
                &home,
                &["install", file.to_str().unwrap(), "--grant", "all"],
            ),
            "install",
        );
        let listed = stdout(&run(&home, &["packages"]));
        assert!(!listed.contains(plugin), "{listed}");

        // Asking for it, the same component packs.
        std::fs::write(src.join("plugboard.toml"), &manifest).unwrap();
        stdout(&run(
            &home,
            &[
                "pack",
                src.to_str().unwrap(),
                "--out",
                file.to_str().unwrap(),
            ],
        ));
    }
}
