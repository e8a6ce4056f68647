//! The `kv` capability's cost: a guest's read and write of its key-value data, measured as
//! the ip-ban example's chain calls (each does one kv call and little else), against the
//! same store operation made by the host directly, in the same run. SQLite file, full
//! sync (a write is on disk before it returns). Run with
//! `cargo bench -p plugboard-installer --bench kv`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use plugboard_engine::{CallOptions, Engine};
use plugboard_installer::{InstallOptions, Installer, InstallerConfig};
use plugboard_store::{KvQuota, Store};
use plugboard_wasm::{HostConfig, WasmHost};
use serde_json::json;

fn kv(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let plugins = plugboard_testkit::build_plugins(&root).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("ip-ban");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(
        root.join("plugins/ip-ban/plugboard.toml"),
        src.join("plugboard.toml"),
    )
    .unwrap();
    std::fs::copy(plugins.join("plugin_ip_ban.wasm"), src.join("plugin.wasm")).unwrap();
    let (bytes, _) = plugboard_package::pack(&src, None).unwrap();
    let file = tmp.path().join("ip-ban.pbpkg");
    std::fs::write(&file, bytes).unwrap();

    let store = Store::open(&format!(
        "sqlite://{}",
        tmp.path().join("db.sqlite").display()
    ))
    .unwrap();
    let engine = store.engine(Engine::builder()).unwrap();
    let wasm = WasmHost::new(HostConfig::default()).unwrap();
    let installer = Installer::new(
        store.clone(),
        engine.clone(),
        wasm,
        InstallerConfig::new(tmp.path().join("packages")),
    );
    installer.boot().unwrap();
    engine.finish_boot().unwrap();
    installer
        .install(
            file.to_str().unwrap(),
            &InstallOptions {
                grant: plugboard_installer::Grant::Asked,
                ..InstallOptions::default()
            },
            &mut |_, _| {},
        )
        .unwrap();
    let opts = CallOptions::default();
    let failure = json!({
        "conn": {"method": "POST", "path": "/login"}, "ip": "10.0.0.1", "endpoint": "html",
        "error": {"code": "bad_password", "message": "no"},
    });
    let login = json!({ "ip": "10.0.0.1" });
    let scope = store.kv("ip-ban").unwrap();

    let mut g = c.benchmark_group("kv");
    g.bench_function("host_get", |b| {
        b.iter(|| scope.get("fail:10.0.0.1").unwrap());
    });
    g.bench_function("guest_get_chain", |b| {
        b.iter(|| {
            engine
                .call_json("on_user_before_login", login.clone(), &opts)
                .unwrap()
        });
    });
    g.bench_function("host_increment", |b| {
        b.iter(|| {
            scope
                .increment("fail:10.0.0.1", 1, None, KvQuota::DEFAULT)
                .unwrap()
        });
    });
    g.bench_function("guest_increment_chain", |b| {
        b.iter(|| {
            engine
                .call_json("on_user_login_failure", failure.clone(), &opts)
                .unwrap()
        });
    });
    g.bench_function("host_set", |b| {
        b.iter(|| {
            scope
                .set("last", b"203.0.113.9", None, KvQuota::DEFAULT)
                .unwrap()
        });
    });
    // The floor under any write acknowledged as on disk: one small append made durable
    // with `fdatasync`, in the database's directory, with no database at all.
    let mut floor = std::fs::File::create(tmp.path().join("floor")).unwrap();
    g.bench_function("disk_fdatasync_floor", |b| {
        b.iter(|| {
            std::io::Write::write_all(&mut floor, b"203.0.113.9\n").unwrap();
            floor.sync_data().unwrap();
        });
    });
    g.finish();
}

criterion_group!(benches, kv);
criterion_main!(benches);
