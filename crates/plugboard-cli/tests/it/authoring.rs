//! A plugin author's first five minutes, as commands: `plugboard new` makes a project in
//! Rust, JavaScript or Python, `plugboard build` builds and packs it with the language's toolchain,
//! `plugboard test` runs it in the real host, and `plugboard install` puts it into a
//! running `plugboard serve`, where the next call of its event runs it. Timed; the
//! JavaScript and Python halves are skipped outside CI when componentize-js or
//! componentize-py is not installed.

use std::path::Path;
use std::time::Instant;

use crate::{plugboard_in, run, stdout};

/// `plugboard new`, `build` and `test` in `dir`; the package built.
fn new_build_test(home: &Path, dir: &Path, name: &str, args: &[&str]) -> String {
    let project = dir.join(name);
    let mut new = vec!["new", name, "--dir", project.to_str().unwrap()];
    new.extend_from_slice(args);
    let created = stdout(&run(home, &new));
    assert!(created.contains("plugboard build"), "{created}");
    let built = plugboard_in(home)
        .args(["build", project.to_str().unwrap()])
        // The Rust project shares the compiled dependencies of the repository's plugins.
        .env("CARGO_TARGET_DIR", crate::plugins_target())
        .output()
        .unwrap();
    let package = project.join(format!("{name}-0.1.0.pbpkg"));
    assert!(
        built.status.success() && package.is_file(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let tested = run(
        home,
        &[
            "test",
            project.to_str().unwrap(),
            "--state",
            project.join("state.json").to_str().unwrap(),
        ],
    );
    let shown = stdout(&tested);
    assert!(
        shown.contains(&format!("{name} ")) && shown.contains("continued"),
        "{shown}"
    );
    assert!(
        String::from_utf8_lossy(&tested.stderr)
            .contains(&format!("{name} saw on_user_after_save_failure")),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    package.display().to_string()
}

/// Runs a project's own tests (`cargo test`, `python3 -m unittest`), which build it and
/// call it through `plugboard`.
fn own_tests(home: &Path, project: &Path, program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(project)
        .env("PLUGBOARD", env!("CARGO_BIN_EXE_plugboard"))
        .env("PLUGBOARD_HOME", home)
        .env("CARGO_TARGET_DIR", crate::plugins_target())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}:\n{}\n{}",
        project.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a language's toolchain is on PATH; outside CI its half of the test is skipped
/// when it is not.
fn installed(tool: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "{tool} is required in CI"
    );
    eprintln!("skipped a language: {tool} is not installed");
    false
}

/// One language: `new`, `build`, `test`, then `install` into the running server and a
/// call that runs the plugin (timed), then the project's own tests (`own` in its directory).
fn new_to_firing(
    home: &Path,
    dir: &Path,
    server: &crate::Serve,
    (language, name, args): (&str, &str, &[&str]),
    own: &[&str],
) {
    let started = Instant::now();
    let package = new_build_test(home, dir, name, args);
    stdout(&run(home, &["install", &package, "--grant", "all"]));
    crate::wait_in_chain(server, name);
    assert_eq!(
        crate::failed_save_step(server, name)["outcome"],
        "continued"
    );
    println!(
        "{language}: new, build, test, install, firing in a running server: {:?} (4 commands)",
        started.elapsed()
    );
    own_tests(home, &dir.join(name), own[0], &own[1..]);
}

#[test]
fn a_new_plugin_goes_from_nothing_to_firing_in_a_running_server_in_each_language() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = crate::serve(&home);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    new_to_firing(
        &home,
        tmp.path(),
        &server,
        ("Rust", "hello-rust", &[]),
        &[&cargo, "test"],
    );
    if installed("componentize-js") {
        new_to_firing(
            &home,
            tmp.path(),
            &server,
            ("JavaScript", "hello-js", &["--lang", "js"]),
            &["node", "--test", "tests/"],
        );
    }
    if installed("componentize-py") {
        new_to_firing(
            &home,
            tmp.path(),
            &server,
            ("Python", "hello-py", &["--lang", "python"]),
            &["python3", "-m", "unittest", "discover", "tests"],
        );
    }
}

#[test]
fn new_refuses_a_name_that_could_never_be_installed_and_an_existing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out = run(
        &home,
        &[
            "new",
            "Bad Name",
            "--dir",
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`Bad Name`"));
    assert!(!tmp.path().join("x").exists(), "nothing is written");
    let out = run(
        &home,
        &["new", "taken", "--dir", tmp.path().to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));

    // A host's own event: the project takes its state as free JSON.
    let dir = tmp.path().join("own");
    stdout(&run(
        &home,
        &[
            "new",
            "own",
            "--event",
            "on_invoice_paid",
            "--dir",
            dir.to_str().unwrap(),
        ],
    ));
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("type State = Value;"), "{lib}");
    assert_eq!(
        std::fs::read_to_string(dir.join("state.json"))
            .unwrap()
            .trim(),
        "{}"
    );
}

/// `plugboard dev` printing into a channel, line by line.
struct Dev {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Dev {
    /// The next line containing `what`, failing after `crate::PATIENCE`.
    fn wait_line(&mut self, what: &str) -> String {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("plugboard dev never printed `{what}`: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dev_reinstalls_each_change_into_the_running_server_and_prints_the_plugins_failures() {
    use std::io::BufRead as _;

    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let server = crate::serve(&home);
    let project = tmp.path().join("hello-dev");
    stdout(&run(
        &home,
        &["new", "hello-dev", "--dir", project.to_str().unwrap()],
    ));
    let mut child = plugboard_in(&home)
        .args(["dev", project.to_str().unwrap(), "--server", &server.base])
        .env("PLUGBOARD_TOKEN", &server.token)
        .env("CARGO_TARGET_DIR", crate::plugins_target())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut dev = Dev {
        child,
        lines,
        seen: Vec::new(),
    };
    dev.wait_line("installed hello-dev 0.1.0");
    dev.wait_line("watching for changes");
    crate::wait_in_chain(&server, "hello-dev");
    assert_eq!(
        crate::failed_save_step(&server, "hello-dev")["outcome"],
        "continued"
    );

    // A change that fails every call: reinstalled, and its failure is printed.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let continuing = "Ok(Reply::Continue(state))";
    assert!(source.contains(continuing), "{source}");
    std::fs::write(
        &lib,
        source.replace(
            continuing,
            "{ let _ = state; Err(\"boom from dev\".into()) }",
        ),
    )
    .unwrap();
    dev.wait_line("changed: rebuilding");
    dev.wait_line("installed hello-dev 0.1.0");
    dev.wait_line("watching for changes");
    assert_eq!(
        crate::failed_save_step(&server, "hello-dev")["outcome"],
        "failed"
    );
    let failed = dev.wait_line("hello-dev failed on on_user_after_save_failure");
    assert!(failed.contains("boom from dev"), "{failed}");

    // A change that halts: from the write to the server running it.
    let changed = Instant::now();
    std::fs::write(&lib, source.replace(continuing, "Ok(Reply::Halt(state))")).unwrap();
    let installed = dev.wait_line("installed hello-dev 0.1.0");
    assert_eq!(
        crate::failed_save_step(&server, "hello-dev")["outcome"],
        "halted"
    );
    println!(
        "plugboard dev (Rust): a source change running in the server {:?} after the write ({installed})",
        changed.elapsed()
    );

    // A change that does not build: said, and the server keeps the last good build.
    std::fs::write(&lib, "this is not Rust").unwrap();
    dev.wait_line("not installed");
    assert_eq!(
        crate::failed_save_step(&server, "hello-dev")["outcome"],
        "halted"
    );
}
