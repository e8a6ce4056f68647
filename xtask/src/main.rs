//! Project automation behind `cargo xtask` (see `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS…]`: the README's test command: installs what a fresh machine
//!   lacks (wasm target, componentize-py, Chromium, the e2e script's modules), then runs
//!   `cargo test --workspace --locked ARGS…` (see `setup.rs`).
//! - `cargo xtask fresh-machine`: both README commands from a fresh clone, in a rustup home
//!   without the wasm target and a `PATH` without Chromium or componentize-py, timed.
//! - `cargo xtask build-plugins`: builds the example and test plugins in `plugins/` as
//!   WebAssembly components (`wasm32-wasip2`) into `target/wasm-plugins/`.
//! - `cargo xtask package-examples [NAME…]`: builds the example plugins and packs each (or
//!   those named) with its `plugboard.toml` and settings schema into `examples/packages/`
//!   (committed: `plugboard serve` installs them).
//! - `cargo xtask serve-bench`: load on `plugboard serve`'s call endpoint with `wrk` (run
//!   `cargo build --release -p plugboard-cli` first): throughput and p50/p99 latency of
//!   calling `on_user_after_save_failure` (native + wasm chain), beside `GET /health`.
//! - `cargo xtask convergence [--hosts N] [--rounds R] [--debug]`: N hosts (`plugboard
//!   serve`, default 5) on one throwaway PostgreSQL; how long each operation issued on one
//!   takes to be applied by the others, p50/p99/max (see `convergence.rs`).
//! - `cargo xtask schemathesis [--seconds N]`: schemathesis against a live `plugboard serve`
//!   (see `schemathesis.rs`); fails on any failure it finds.
//! - `cargo xtask fuzz [--seconds N] [--release] [--merge] [TARGET…]`: the fuzz targets in
//!   `fuzz/` (cargo-fuzz on the stable toolchain, installed when missing), N seconds each
//!   (default 20) from their committed corpora; fails on any crash (see `fuzz.rs`).
//! - `cargo xtask bench-report`: reads criterion's medians from `target/criterion` (after
//!   `cargo bench -p plugboard-engine`) and prints the ratio table quoted in BENCHMARKS.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod convergence;
mod fuzz;
mod schemathesis;
mod setup;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().cloned().unwrap_or_default();
    match task.as_str() {
        "test" => setup::test(&root(), &args[1..]),
        "fresh-machine" => setup::fresh_machine(&root()),
        "bench-report" => bench_report(),
        "build-plugins" => build_plugins(),
        "package-examples" => package_examples(&args[1..]),
        "serve-bench" => serve_bench(),
        "fuzz" => fuzz::fuzz(&root(), &args[1..]),
        "convergence" => convergence::convergence(&root(), &args[1..]),
        "schemathesis" => schemathesis::schemathesis(&root(), &args[1..]),
        _ => bail!(
            "usage: cargo xtask test [ARGS…] | fresh-machine | bench-report | build-plugins | package-examples [NAME…] | serve-bench | convergence [--hosts N] [--rounds R] [--debug] | schemathesis [--seconds N] | fuzz [--seconds N] [--release] [--merge] [TARGET…]"
        ),
    }
}

/// Builds the guest plugins workspace and copies the components to `target/wasm-plugins`.
fn build_plugins() -> Result<()> {
    let root = root();
    let from = plugboard_testkit::build_plugins(&root).map_err(anyhow::Error::msg)?;
    let to = root.join("target/wasm-plugins");
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(&from)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path.file_name().context("file name")?;
            std::fs::copy(&path, to.join(name))?;
            println!("{}", to.join(name).display());
        }
    }
    Ok(())
}

/// The example plugins that ship as packages (their directory in `plugins/`). The first
/// three are contract 0.2.0 builds and `webhook`, `ip-ban` 0.3.0 ones, kept as released
/// (the tests run them beside 0.4.0 plugins): repack them only on purpose, by name.
const EXAMPLES: &[&str] = &[
    "audit",
    "validator",
    "dependent",
    "webhook",
    "ip-ban",
    "site-search",
];

/// Packs the named example plugins (all of them when none is named) with their manifest
/// and settings schema into `examples/packages/NAME-VERSION.pbpkg`.
fn package_examples(names: &[String]) -> Result<()> {
    let root = root();
    for n in names {
        if !EXAMPLES.contains(&n.as_str()) {
            bail!(
                "`{n}` is not an example (examples: {})",
                EXAMPLES.join(", ")
            );
        }
    }
    let built = plugboard_testkit::build_plugins(&root).map_err(anyhow::Error::msg)?;
    let out = root.join("examples/packages");
    std::fs::create_dir_all(&out)?;
    for example in EXAMPLES
        .iter()
        .filter(|e| names.is_empty() || names.iter().any(|n| n == *e))
    {
        let dir = tempdir(example)?;
        let src = root.join("plugins").join(example);
        let manifest = std::fs::read_to_string(src.join("plugboard.toml"))?;
        let parsed = plugboard_package::Manifest::parse(&manifest)?;
        std::fs::write(dir.join("plugboard.toml"), &manifest)?;
        if let Some(schema) = &parsed.package.settings_schema {
            std::fs::copy(src.join(schema), dir.join(schema))?;
        }
        std::fs::copy(
            built.join(format!("plugin_{}.wasm", example.replace('-', "_"))),
            dir.join("plugin.wasm"),
        )?;
        let (bytes, sha) = plugboard_package::pack(&dir, None)?;
        let file = out.join(format!(
            "{}-{}.pbpkg",
            parsed.package.name, parsed.package.version
        ));
        std::fs::write(&file, bytes)?;
        std::fs::remove_dir_all(&dir)?;
        println!("{} sha256 {sha}", file.display());
    }
    Ok(())
}

/// Starts the release binary's `serve` in a fresh home, then loads it with wrk.
fn serve_bench() -> Result<()> {
    use std::io::BufRead;
    let root = root();
    let bin = root.join("target/release/plugboard");
    if !bin.exists() {
        bail!("build it first: cargo build --release -p plugboard-cli");
    }
    let home = tempdir("serve-bench")?;
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("PLUGBOARD_HOME", &home)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let (mut base, mut token) = (None, None);
    while base.is_none() || token.is_none() {
        let line = lines.next().context("serve exited")??;
        if let Some(b) = line.strip_prefix("listening on ") {
            base = Some(b.trim().to_owned());
        }
        if let Some((_, t)) = line.split_once("kept): ") {
            token = Some(t.trim().to_owned());
        }
    }
    let (base, token) = (base.context("address")?, token.context("token")?);
    let chain = std::process::Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{base}/api/events/on_user_after_save_failure"))
        .output()?;
    let chain: serde_json::Value = serde_json::from_slice(&chain.stdout)?;
    println!("chain of on_user_after_save_failure: {}", chain["chain"]);
    let wrk = |script: &str, path: &str| -> Result<()> {
        let out = std::process::Command::new("wrk")
            .args(["-t2", "-c32", "-d20s", "--latency", "-s"])
            .arg(root.join("xtask/bench").join(script))
            .arg(format!("{base}{path}"))
            .env("PLUGBOARD_TOKEN", &token)
            .output()
            .context("running wrk (apt-get install wrk)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{path}: {}", text.lines().last().unwrap_or_default());
        Ok(())
    };
    let result = wrk("health.lua", "/health")
        .and_then(|()| wrk("call.lua", "/api/events/on_user_after_save_failure/call"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&home);
    result
}

fn tempdir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("plugboard-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The median of one benchmark, in nanoseconds.
fn median(id: &str) -> Result<f64> {
    let path = root()
        .join("target/criterion")
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `cargo bench -p plugboard-engine` first)",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no median in {}", path.display()))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn bench_report() -> Result<()> {
    println!(
        "| plugins | bare loop (baseline) | `Hook::call` | ratio | `Engine::call::<E>` | ratio | `Hook::call`, `ReturnInput` | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in [1, 10, 100] {
        let base = median(&format!("call/baseline/{n}"))?;
        let mut row = format!("| {n} | {} ", fmt_ns(base));
        for variant in ["hook", "engine_call", "hook_return_input"] {
            let t = median(&format!("call/{variant}/{n}"))?;
            row.push_str(&format!("| {} | {:.2}× ", fmt_ns(t), t / base));
        }
        println!("{row}|");
    }
    println!();
    println!("| lifecycle change (stop + enable: two rebuilds and swaps) | median |");
    println!("|---|---:|");
    for n in [10, 100] {
        let t = median(&format!("lifecycle/stop_enable/{n}"))?;
        println!("| chain of {n} | {} |", fmt_ns(t));
    }
    println!();
    let calm = median("two_threads/calls")?;
    let busy = median("two_threads/calls_while_toggling")?;
    println!("| 2 threads calling a 10-plugin chain | per call | calls/s |");
    println!("|---|---:|---:|");
    println!(
        "| alone (baseline) | {} | {:.1} M |",
        fmt_ns(calm),
        1e3 / calm
    );
    println!(
        "| while a third thread toggles a plugin every ms | {} | {:.1} M ({:.2}× the baseline's time) |",
        fmt_ns(busy),
        1e3 / busy,
        busy / calm
    );
    store_report();
    Ok(())
}

/// The storage figures, when `cargo bench -p plugboard-store --bench store` has run.
fn store_report() {
    let Ok(sqlite) = median("store_lifecycle/sqlite") else {
        return;
    };
    println!();
    println!(
        "| durable lifecycle operation | criterion median | median of 400 ops | p99 of 400 ops |"
    );
    println!("|---|---:|---:|---:|");
    for (name, crit) in [
        ("sqlite", Ok(sqlite)),
        ("postgres", median("store_lifecycle/postgres")),
    ] {
        let dist = std::fs::read_to_string(root().join(format!(
            "target/criterion/store_lifecycle/{name}-distribution.json"
        )))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let (m, p) = dist
            .map(|d| {
                (
                    d["median_us"].as_f64().unwrap_or(f64::NAN),
                    d["p99_us"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .unwrap_or((f64::NAN, f64::NAN));
        if let Ok(c) = crit {
            println!(
                "| {name} | {} | {} | {} |",
                fmt_ns(c),
                fmt_ns(m * 1e3),
                fmt_ns(p * 1e3)
            );
        }
    }
    println!();
    println!("| boot: open, check schema, load and restore 10,000 records | median |");
    println!("|---|---:|");
    for name in ["sqlite", "postgres"] {
        if let Ok(t) = median(&format!("store_boot/{name}_10000_records")) {
            println!("| {name} | {} |", fmt_ns(t));
        }
    }
    if let (Ok(bare), Ok(stored)) = (
        median("store_calls/without_store"),
        median("store_calls/with_store_log_and_watch"),
    ) {
        println!();
        println!("| 10-plugin call | median | ratio |");
        println!("|---|---:|---:|");
        println!(
            "| engine without a store (baseline) | {} | 1.00× |",
            fmt_ns(bare)
        );
        println!(
            "| engine on SQLite, activity log and watcher running | {} | {:.2}× |",
            fmt_ns(stored),
            stored / bare
        );
    }
}
