//! The dependency invariants of ARCHITECTURE.md, checked with `cargo tree`.

use std::process::Command;

fn normal_deps(package: &str) -> Vec<String> {
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
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_core_does_no_io_and_needs_no_async_runtime() {
    let deps = normal_deps("plugboard-core");
    for banned in [
        "tokio",
        "async-std",
        "arc-swap",
        "sqlx",
        "wasmtime",
        "axum",
        "hyper",
        "mio",
        "plugboard-engine",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "plugboard-core depends on {banned}: {deps:?}"
        );
    }
}

#[test]
fn only_the_store_knows_sql() {
    for package in ["plugboard-core", "plugboard-engine", "plugboard"] {
        assert!(
            !normal_deps(package).iter().any(|d| d.starts_with("sqlx")),
            "{package} depends on sqlx"
        );
    }
    assert!(normal_deps("plugboard-store").iter().any(|d| d == "sqlx"));
}

#[test]
fn only_the_wasm_host_knows_wasmtime() {
    for package in [
        "plugboard-core",
        "plugboard-engine",
        "plugboard",
        "plugboard-store",
        "plugboard-pdk",
    ] {
        assert!(
            !normal_deps(package)
                .iter()
                .any(|d| d.starts_with("wasmtime")),
            "{package} depends on wasmtime"
        );
    }
    assert!(
        normal_deps("plugboard-wasm")
            .iter()
            .any(|d| d == "wasmtime")
    );
}

#[test]
fn heavy_crates_stay_out_of_the_engine_and_facade() {
    for package in ["plugboard-engine", "plugboard"] {
        let deps = normal_deps(package);
        for banned in ["sqlx", "wasmtime", "axum", "hyper", "mio"] {
            assert!(
                !deps.iter().any(|d| d == banned),
                "{package} depends on {banned}"
            );
        }
    }
}

#[test]
fn only_the_server_knows_http_serving() {
    for package in [
        "plugboard-core",
        "plugboard-engine",
        "plugboard",
        "plugboard-store",
        "plugboard-wasm",
        "plugboard-installer",
    ] {
        let deps = normal_deps(package);
        for banned in ["axum", "utoipa"] {
            assert!(
                !deps.iter().any(|d| d == banned),
                "{package} depends on {banned}"
            );
        }
    }
    let server = normal_deps("plugboard-server");
    assert!(server.iter().any(|d| d == "axum"));
}

#[test]
fn the_package_format_stays_light() {
    let deps = normal_deps("plugboard-package");
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
            "plugboard-package depends on {banned}"
        );
    }
}
