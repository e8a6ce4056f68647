//! Project automation behind `cargo xtask` (see `.cargo/config.toml`).
//!
//! - `cargo xtask bench-report`: reads criterion's medians from `target/criterion` (after
//!   `cargo bench -p plugboard-engine`) and prints the ratio table quoted in BENCHMARKS.md.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "bench-report" => bench_report(),
        _ => bail!("usage: cargo xtask bench-report"),
    }
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
    Ok(())
}
