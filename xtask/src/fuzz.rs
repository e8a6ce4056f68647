//! `cargo xtask fuzz [--seconds N] [--release] [--merge] [TARGET…]`: runs the fuzz targets
//! in `fuzz/` (cargo-fuzz, libFuzzer) on the stable toolchain, each for `--seconds` (default
//! 20) starting from its committed corpus (`fuzz/corpus/TARGET`), two at a time on two
//! cores or more; fails on any crash, naming the input and how to reproduce it.
//!
//! cargo-fuzz is installed (pinned, `--locked`) into the cargo bin directory when missing.
//! The targets are built with `--sanitizer none`: AddressSanitizer needs `-Zsanitizer`,
//! which only a nightly compiler takes; without it cargo-fuzz passes only stable flags
//! (`-Cpasses=sancov-module` and `-Cllvm-args=-sanitizer-coverage-…`), so the fuzzing is
//! coverage-guided as usual. The build is unoptimised (`--dev`: a third of the optimised
//! build's time, which dominates a bounded pass on a fresh machine) unless `--release`.
//!
//! Each run also replays `fuzz/regressions/TARGET` (inputs that once failed, kept as they
//! are). New inputs go to `fuzz/target/new-corpus/TARGET` and each run's output to
//! `fuzz/target/logs/TARGET.log`; with `--merge` the new inputs are added to the committed
//! corpus and it is minimised (`cargo fuzz cmin`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The cargo-fuzz release installed when missing.
const CARGO_FUZZ: &str = "0.13.2";

/// Default time per target, in seconds.
const DEFAULT_SECONDS: u64 = 20;

/// The targets, with their libFuzzer dictionary (`fuzz/dicts/NAME.dict`).
const TARGETS: &[(&str, Option<&str>)] = &[
    ("manifest", Some("manifest")),
    ("archive", Some("archive")),
    ("binary_state", None),
    ("json_state", Some("state")),
    ("http_bodies", Some("http_bodies")),
];

struct Args {
    seconds: u64,
    release: bool,
    merge: bool,
    targets: Vec<&'static str>,
}

fn parse_args(args: &[String]) -> Result<Args> {
    const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--release] [--merge] [TARGET…]";
    let mut out = Args {
        seconds: DEFAULT_SECONDS,
        release: false,
        merge: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let n = it.next().context(USAGE)?;
                out.seconds = n
                    .parse()
                    .with_context(|| format!("--seconds {n}: {USAGE}"))?;
            }
            "--release" => out.release = true,
            "--merge" => out.merge = true,
            name => match TARGETS.iter().find(|(t, _)| *t == name) {
                Some((t, _)) => out.targets.push(t),
                None => bail!(
                    "unknown fuzz target `{name}` (targets: {}); {USAGE}",
                    TARGETS
                        .iter()
                        .map(|(t, _)| *t)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    if out.targets.is_empty() {
        out.targets = TARGETS.iter().map(|(t, _)| *t).collect();
    }
    Ok(out)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `cargo fuzz SUBCOMMAND` on `fuzz/`, with the build options every call must share (a
/// call with others would rebuild everything).
fn cargo_fuzz(root: &Path, subcommand: &str, release: bool) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "fuzz",
        subcommand,
        "--fuzz-dir",
        "fuzz",
        "--sanitizer",
        "none",
    ]);
    if !release {
        cmd.arg("--dev");
    }
    cmd
}

/// cargo-fuzz, installed into the cargo bin directory when missing.
fn install_cargo_fuzz() -> Result<()> {
    let found = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    println!("xtask: cargo install cargo-fuzz --version {CARGO_FUZZ} --locked");
    let mut install = cargo();
    install.args(["install", "cargo-fuzz", "--version", CARGO_FUZZ, "--locked"]);
    run(install, "cargo install cargo-fuzz")
}

/// The `stat::NAME: VALUE` line libFuzzer prints at the end (`-print_final_stats=1`).
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// Files in `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// One target's run, started.
struct Running {
    target: &'static str,
    child: Child,
    log: PathBuf,
    artifacts_before: Vec<PathBuf>,
}

fn start(root: &Path, target: &'static str, args: &Args) -> Result<Running> {
    let fuzz = root.join("fuzz");
    let new = fuzz.join("target/new-corpus").join(target);
    let _ = std::fs::remove_dir_all(&new);
    std::fs::create_dir_all(&new)?;
    let logs = fuzz.join("target/logs");
    std::fs::create_dir_all(&logs)?;
    let log = logs.join(format!("{target}.log"));
    let out = std::fs::File::create(&log)?;
    let mut cmd = cargo_fuzz(root, "run", args.release);
    // The first corpus directory receives the new inputs; the committed ones are only
    // read: the minimised corpus, and the inputs that once failed (kept as they are).
    cmd.arg(target)
        .arg(&new)
        .arg(fuzz.join("corpus").join(target));
    let regressions = fuzz.join("regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(regressions);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"]);
    if let Some(dict) = TARGETS.iter().find(|(t, _)| *t == target).and_then(|t| t.1) {
        cmd.arg(format!(
            "-dict={}",
            fuzz.join("dicts").join(format!("{dict}.dict")).display()
        ));
    }
    cmd.stdout(out.try_clone()?).stderr(out);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    Ok(Running {
        target,
        child,
        log,
        artifacts_before: files(&fuzz.join("artifacts").join(target)),
    })
}

/// Waits for a run; its failure, if it failed.
fn finish(root: &Path, mut r: Running, args: &Args) -> Result<Option<String>> {
    let seconds = args.seconds;
    let status = r.child.wait()?;
    let log = std::fs::read_to_string(&r.log).unwrap_or_default();
    let execs = stat(&log, "number_of_executed_units").unwrap_or(0);
    let new = stat(&log, "new_units_added").unwrap_or(0);
    println!(
        "xtask: {:<13} {execs:>9} executions in {seconds} s ({:.0}/s), {new} new inputs",
        r.target,
        execs as f64 / seconds.max(1) as f64
    );
    if status.success() {
        return Ok(None);
    }
    let tail: Vec<&str> = log.lines().rev().take(80).collect();
    println!("---- {} (last lines of {})", r.target, r.log.display());
    for line in tail.iter().rev() {
        println!("{line}");
    }
    let dir = root.join("fuzz/artifacts").join(r.target);
    let found: Vec<PathBuf> = files(&dir)
        .into_iter()
        .filter(|p| !r.artifacts_before.contains(p))
        .collect();
    let mut why = format!("{} failed ({status})", r.target);
    for a in found {
        let rel = a.strip_prefix(root).unwrap_or(&a).display().to_string();
        why.push_str(&format!(
            "\n  input: {rel}\n  reproduce: cargo fuzz run{} -s none {} {rel}",
            if args.release { "" } else { " --dev" },
            r.target
        ));
    }
    Ok(Some(why))
}

/// Adds the new inputs to the committed corpus, then minimises it.
fn merge(root: &Path, target: &str, release: bool) -> Result<()> {
    let corpus = root.join("fuzz/corpus").join(target);
    for f in files(&root.join("fuzz/target/new-corpus").join(target)) {
        if let Some(name) = f.file_name() {
            std::fs::copy(&f, corpus.join(name))?;
        }
    }
    // Edges only (no hit counts): a corpus a third the size, with the same coverage.
    let mut cmin = cargo_fuzz(root, "cmin", release);
    cmin.arg(target)
        .arg(&corpus)
        .args(["--", "-use_counters=0"]);
    run(cmin, &format!("cargo fuzz cmin {target}"))?;
    let (n, bytes) = files(&corpus).iter().fold((0, 0), |(n, b), f| {
        (n + 1, b + std::fs::metadata(f).map_or(0, |m| m.len()))
    });
    println!("xtask: corpus of {target}: {n} inputs, {bytes} bytes");
    Ok(())
}

/// `cargo xtask fuzz [--seconds N] [--release] [--merge] [TARGET…]`.
pub(crate) fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let args = parse_args(args)?;
    let started = Instant::now();
    install_cargo_fuzz()?;

    // cargo-fuzz has no `--locked`: check the committed lock file first.
    let mut locked = cargo();
    locked
        .current_dir(root)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(root.join("fuzz/Cargo.toml"))
        .stdout(Stdio::null());
    run(
        locked,
        "fuzz/Cargo.lock is not up to date (cargo metadata --locked)",
    )?;

    // Every target at once: they share their dependencies.
    run(cargo_fuzz(root, "build", args.release), "cargo fuzz build")?;
    println!(
        "xtask: fuzz targets built after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let parallel = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let mut failures = Vec::new();
    for batch in args.targets.chunks(parallel) {
        let running = batch
            .iter()
            .map(|t| start(root, t, &args))
            .collect::<Result<Vec<_>>>()?;
        for r in running {
            failures.extend(finish(root, r, &args)?);
        }
    }
    if !failures.is_empty() {
        bail!("fuzzing found a failure:\n{}", failures.join("\n"));
    }
    if args.merge {
        for t in &args.targets {
            merge(root, t, args.release)?;
        }
    }
    println!(
        "xtask: {} fuzz targets ran {} s each without a failure ({:.0} s in all)",
        args.targets.len(),
        args.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
