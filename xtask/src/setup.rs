//! `cargo xtask test`: the README's test command. It installs what the test suite needs and
//! a fresh machine lacks (the `wasm32-wasip2` target, componentize-py, componentize-js,
//! Debian's Chromium and the end-to-end script's `node_modules`), finds PostgreSQL's server binaries, then runs
//! `cargo test --workspace`. What it cannot install (not root, no `apt-get`) is reported,
//! and the tests that need it skip themselves with a message (outside CI) or fail (`CI=true`).
//!
//! `cargo xtask fresh-machine`: proves that from a fresh clone, with a rustup home that lacks
//! the wasm target, an empty cargo home and a `PATH` without Chromium, componentize-py or
//! componentize-js, both README commands work; prints the cold time of each.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The componentize-py release the Python plugin is built with.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The wasm target the guest plugins are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// What the test run adds to its environment.
#[derive(Default)]
struct Env {
    /// Directories put in front of `PATH`.
    path: Vec<PathBuf>,
    /// Variables set for the test run.
    vars: Vec<(String, OsString)>,
}

impl Env {
    fn path_var(&self) -> OsString {
        let mut dirs = self.path.clone();
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        std::env::join_paths(dirs).unwrap_or_default()
    }

    /// `program` on this run's `PATH`, if it is there.
    fn which(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path_var())
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PATH", self.path_var());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }
}

/// Runs `cmd`, failing with `what` when it does not succeed.
fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get install` of Debian packages, where this process may (root, with apt-get).
fn apt_install(env: &Env, packages: &[&str]) -> Result<bool> {
    if !is_root() || env.which("apt-get").is_none() {
        return Ok(false);
    }
    println!("xtask: apt-get install {}", packages.join(" "));
    let mut update = env.command("apt-get");
    update.args(["update", "-qq"]).stdout(Stdio::null());
    run(update, "apt-get update")?;
    let mut install = env.command("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null());
    run(install, "apt-get install")?;
    Ok(true)
}

/// The guest plugins' target, added through rustup when the toolchain lacks it.
fn wasm_target(env: &Env) -> Result<()> {
    let out = env
        .command("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Ok(());
    }
    if env.which("rustup").is_none() {
        bail!(
            "the Rust target {WASM_TARGET} is missing and there is no rustup to add it: \
             install it with your toolchain's installer"
        );
    }
    println!("xtask: rustup target add {WASM_TARGET}");
    let mut add = env.command("rustup");
    add.args(["target", "add", WASM_TARGET]);
    run(add, "rustup target add")
}

/// PostgreSQL's `initdb`, `pg_ctl` and `psql`: the store's tests start their own cluster.
/// Debian keeps the server binaries outside `PATH`.
fn postgres(env: &mut Env) -> Result<()> {
    if env.which("initdb").is_none() {
        let debian = || -> Option<PathBuf> {
            let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|b| b.join("initdb").is_file())
                .collect();
            // The newest major version: directory names are numbers.
            bins.sort_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
            });
            bins.pop()
        };
        let dir = match debian() {
            Some(dir) => Some(dir),
            None if apt_install(env, &["postgresql"])? => debian(),
            None => None,
        };
        match dir {
            Some(dir) => env.path.insert(0, dir),
            None => bail!(
                "PostgreSQL's server binaries (initdb, pg_ctl) are missing: the store's tests \
                 start their own cluster (apt-get install postgresql)"
            ),
        }
    }
    if env.which("psql").is_none() && !apt_install(env, &["postgresql-client"])? {
        bail!("psql is missing (apt-get install postgresql-client)");
    }
    Ok(())
}

/// componentize-py, in a virtual environment of the project's own (`target/tools/python`)
/// when it is not on `PATH`.
fn componentize_py(env: &mut Env, root: &Path) {
    if env.which("componentize-py").is_some() {
        return;
    }
    let venv = root.join("target/tools/python");
    let bin = venv.join("bin");
    if !bin.join("componentize-py").is_file() {
        let Some(python) = env.which("python3") else {
            println!("xtask: no python3: the Python plugin's test will be skipped");
            return;
        };
        println!(
            "xtask: installing {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        let mut make = env.command(python);
        make.args(["-m", "venv"]).arg(&venv);
        let mut pip = env.command(bin.join("pip"));
        pip.args([
            "install",
            "-q",
            "--disable-pip-version-check",
            COMPONENTIZE_PY,
        ]);
        if let Err(e) = run(make, "python3 -m venv").and_then(|()| run(pip, "pip install")) {
            println!("xtask: {e:#}: the Python plugin's test will be skipped");
            return;
        }
    }
    env.path.insert(0, bin);
}

/// componentize-js for the JavaScript template's test, from `xtask/componentize-js`'s
/// lockfile, when it is not on `PATH`.
fn componentize_js(env: &mut Env, root: &Path) -> Result<()> {
    if env.which("componentize-js").is_some() {
        return Ok(());
    }
    let dir = root.join("xtask/componentize-js");
    let bin = dir.join("node_modules/.bin");
    if !bin.join("componentize-js").is_file() {
        if env.which("npm").is_none() {
            println!("xtask: no npm: the JavaScript template's test will be skipped");
            return Ok(());
        }
        println!("xtask: npm ci --prefix xtask/componentize-js");
        let mut npm = env.command("npm");
        npm.args(["ci", "--prefix"])
            .arg(&dir)
            .args(["--no-audit", "--no-fund", "--silent"]);
        run(npm, "npm ci")?;
    }
    env.path.insert(0, bin);
    Ok(())
}

/// Debian's Chromium for the dashboard's end-to-end test, and the script's `node_modules`.
fn chromium(env: &mut Env, root: &Path) -> Result<()> {
    let found = |env: &Env| {
        std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| env.which("chromium"))
            .or_else(|| Some(PathBuf::from("/usr/bin/chromium")).filter(|p| p.is_file()))
    };
    let path = match found(env) {
        Some(p) => Some(p),
        None if apt_install(env, &["chromium"])? => found(env),
        None => None,
    };
    match path {
        Some(p) => env.vars.push(("CHROMIUM".into(), p.into())),
        None => println!(
            "xtask: no Chromium (apt-get install chromium, as root): the dashboard's \
             end-to-end test will be skipped"
        ),
    }
    if root.join("e2e/node_modules/playwright-core").is_dir() {
        return Ok(());
    }
    if env.which("npm").is_none() {
        println!("xtask: no npm: the dashboard's end-to-end test will be skipped");
        return Ok(());
    }
    println!("xtask: npm ci --prefix e2e");
    let mut npm = env.command("npm");
    npm.args(["ci", "--prefix"]).arg(root.join("e2e")).args([
        "--no-audit",
        "--no-fund",
        "--silent",
    ]);
    run(npm, "npm ci")
}

/// `cargo xtask test [ARGS…]`: set up, then `cargo test --workspace --locked ARGS…`.
pub(crate) fn test(root: &Path, args: &[String]) -> Result<()> {
    let mut env = Env::default();
    wasm_target(&env)?;
    postgres(&mut env)?;
    componentize_py(&mut env, root);
    componentize_js(&mut env, root)?;
    chromium(&mut env, root)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: cargo test --workspace --locked {}", args.join(" "));
    let mut cmd = env.command(&cargo);
    cmd.current_dir(root)
        .args(["test", "--workspace", "--locked"])
        .args(args);
    run(cmd, "cargo test")?;
    if args.is_empty() {
        native_only(&env, root, &cargo)?;
    }
    Ok(())
}

/// The admin server without its `packages` feature: a native-only host's build. Its
/// dependency tree must hold neither the installer nor wasmtime, and its test must pass.
fn native_only(env: &Env, root: &Path, cargo: &std::ffi::OsStr) -> Result<()> {
    let no_packages = [
        "-p",
        "plugboard-server",
        "--no-default-features",
        "--locked",
    ];
    let tree = env
        .command(cargo)
        .current_dir(root)
        .arg("tree")
        .args(no_packages)
        .args(["-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("cargo tree")?;
    if !tree.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&tree.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&tree.stdout);
    for heavy in ["wasmtime ", "plugboard-installer ", "plugboard-wasm "] {
        if tree.lines().any(|l| l.starts_with(heavy)) {
            bail!("the native-only server (--no-default-features) depends on {heavy}");
        }
    }
    println!("xtask: the native-only server builds without the installer and wasmtime");
    let mut cmd = env.command(cargo);
    cmd.current_dir(root)
        .arg("test")
        .args(no_packages)
        .args(["--test", "native"]);
    run(cmd, "cargo test (native-only server)")
}

/// A directory of links to every program on `PATH` except `hidden`: a `PATH` that lacks them.
fn path_without(dir: &Path, hidden: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for from in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let Ok(entries) = std::fs::read_dir(&from) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = dir.join(&name);
            if hidden.iter().any(|h| name.to_string_lossy().starts_with(h)) || link.exists() {
                continue;
            }
            std::os::unix::fs::symlink(entry.path(), link)?;
        }
    }
    Ok(())
}

/// A copy of the active rustup toolchain in a rustup home of its own, without wasm targets.
fn rustup_home_without_wasm(home: &Path) -> Result<OsString> {
    let out = Command::new("rustup")
        .args(["show", "active-toolchain"])
        .output()
        .context("rustup show active-toolchain (the proof needs rustup)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let toolchain = text
        .split_whitespace()
        .next()
        .context("no active toolchain")?;
    let from = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
        .context("no rustup home")?;
    std::fs::create_dir_all(home.join("toolchains"))?;
    let src = std::fs::canonicalize(from.join("toolchains").join(toolchain))?;
    let mut cp = Command::new("cp");
    cp.arg("-a")
        .arg(src)
        .arg(home.join("toolchains").join(toolchain));
    run(cp, "copying the toolchain")?;
    std::fs::write(
        home.join("settings.toml"),
        format!("version = \"12\"\ndefault_toolchain = \"{toolchain}\"\nprofile = \"minimal\"\n"),
    )?;
    for target in ["wasm32-wasip1", "wasm32-wasip2"] {
        // Fails harmlessly where the target was never installed.
        let _ = Command::new("rustup")
            .env("RUSTUP_HOME", home)
            .args(["target", "remove", "--toolchain", toolchain, target])
            .stderr(Stdio::null())
            .status();
    }
    Ok(toolchain.into())
}

/// Reads `serve`'s output until it listens; its address.
fn wait_listening(out: impl Read + Send + 'static, deadline: Instant) -> Result<String> {
    let mut lines = BufReader::new(out).lines();
    while let Some(line) = lines.next() {
        let line = line?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            // Keep reading what it prints after (as a terminal would), so that its writes
            // never meet a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(addr.trim().trim_start_matches("http://").to_owned());
        }
        if Instant::now() > deadline {
            break;
        }
    }
    bail!("serve exited or did not listen in time")
}

/// `GET /health` over loopback: the status line.
fn health(addr: &str) -> Result<String> {
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// `cargo xtask fresh-machine`: both README commands from a fresh clone of `HEAD`, with a
/// rustup home lacking the wasm target, an empty cargo home and a `PATH` without Chromium
/// componentize-py or componentize-js. `CI=true`, so a test that would skip fails instead.
pub(crate) fn fresh_machine(root: &Path) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("plugboard-fresh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let clone = tmp.join("plugboard");
    let mut git = Command::new("git");
    git.args(["clone", "-q"]).arg(root).arg(&clone);
    run(git, "git clone")?;
    let rustup_home = tmp.join("rustup");
    let toolchain = rustup_home_without_wasm(&rustup_home)?;
    let bin = tmp.join("bin");
    path_without(&bin, &["chromium", "componentize-py", "componentize-js"])?;
    let cargo_home = tmp.join("cargo");
    std::fs::create_dir_all(&cargo_home)?;
    let env = |program: &str| {
        let mut cmd = Command::new(bin.join(program));
        cmd.current_dir(&clone)
            .env("PATH", &bin)
            .env("RUSTUP_HOME", &rustup_home)
            .env("RUSTUP_TOOLCHAIN", &toolchain)
            .env("CARGO_HOME", &cargo_home)
            .env("CI", "true")
            .env_remove("CHROMIUM")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("CARGO_TARGET_DIR");
        cmd
    };
    println!("fresh clone in {}", clone.display());

    // The main job: `cargo run --release -p plugboard-cli -- serve`, until /health answers.
    let started = Instant::now();
    let mut serve = env("cargo")
        .args(["run", "--release", "--locked", "-p", "plugboard-cli", "--"])
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("PLUGBOARD_HOME", tmp.join("home"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo run")?;
    let stdout = serve.stdout.take().context("stdout")?;
    let listening = wait_listening(stdout, started + Duration::from_secs(3600));
    let answer = listening.as_deref().map_err(|e| anyhow::anyhow!("{e}"));
    let answer = answer.and_then(health);
    let serve_time = started.elapsed();
    let _ = serve.kill();
    let _ = serve.wait();
    let answer = answer?;
    if !answer.contains(" 200 ") {
        bail!("GET /health answered {answer}");
    }
    println!(
        "main job: `cargo run --release -p plugboard-cli -- serve` answered /health after {:.0} s (cold)",
        serve_time.as_secs_f64()
    );

    // The whole test suite: `cargo xtask test`.
    let started = Instant::now();
    let mut tests = env("cargo");
    tests.args(["xtask", "test"]);
    run(tests, "cargo xtask test (the README's test command)")?;
    println!(
        "test suite: `cargo xtask test` passed in {:.0} s (cold, after the release build)",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
