//! The crate stays light: no wasmtime, database, async runtime or engine (`cargo tree`).

use std::process::Command;

#[test]
fn the_package_crate_knows_no_wasmtime_sql_tokio_or_engine() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(["-p", "plugboard-package"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deps: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert!(deps.iter().any(|d| d == "ureq"), "{deps:?}");
    for banned in [
        "wasmtime",
        "sqlx",
        "tokio",
        "plugboard-engine",
        "plugboard-store",
        "plugboard-wasm",
    ] {
        assert!(
            !deps.iter().any(|d| d.starts_with(banned)),
            "plugboard-package depends on {banned}: {deps:?}"
        );
    }
}
