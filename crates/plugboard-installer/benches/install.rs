//! Install time (verify + compile + record) for a small and a ~2 MiB component, and boot
//! time with 50 installed packages using the artifact cache. Run with
//! `cargo bench -p plugboard-installer --bench install` (it builds the plugins it needs).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use plugboard_engine::Engine;
use plugboard_installer::{InstallOptions, Installer, InstallerConfig};
use plugboard_store::Store;
use plugboard_wasm::{HostConfig, WasmHost};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest(name: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"bench\"\nauthors = [\"bench\"]\nlicense = \"MIT\"\ncontract = \"0.2\"\n\n[capabilities]\nclock = true\n\n[[hooks]]\nevent = \"on_user_after_save_failure\"\npriority = 50\n"
    )
}

fn pack(dir: &Path, name: &str, component: &[u8]) -> PathBuf {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plugboard.toml"), manifest(name)).unwrap();
    std::fs::write(src.join("plugin.wasm"), component).unwrap();
    let (bytes, _) = plugboard_package::pack(&src, None).unwrap();
    let out = dir.join(format!("{name}.pbpkg"));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// A host on the SQLite file under `home`, not booted yet.
fn host(home: &Path) -> (Store, Engine, Installer) {
    let store = Store::open(&format!("sqlite://{}", home.join("db.sqlite").display())).unwrap();
    let engine = store.engine(Engine::builder()).unwrap();
    let wasm = WasmHost::new(HostConfig {
        cache_dir: Some(home.join("cache")),
        ..HostConfig::default()
    })
    .unwrap();
    let installer = Installer::new(
        store.clone(),
        engine.clone(),
        wasm,
        InstallerConfig::new(home.join("packages")),
    );
    (store, engine, installer)
}

fn install(c: &mut Criterion) {
    let plugins = plugboard_testkit::build_plugins(&root()).unwrap();
    let small = std::fs::read(plugins.join("plugin_audit.wasm")).unwrap();
    // ~2 MiB: the audit plugin built without optimisation (1 MB of code) plus a 1 MiB
    // bundled asset (a custom section).
    let unoptimized =
        plugboard_testkit::build_plugin_profile(&root(), "plugin-audit", "unoptimized").unwrap();
    let big = plugboard_testkit::with_custom_section(
        &std::fs::read(unoptimized).unwrap(),
        "asset",
        &vec![7u8; 1 << 20],
    );
    let files = tempfile::tempdir().unwrap();
    let cases = [
        ("small", pack(files.path(), "small", &small), small.len()),
        ("2mib", pack(files.path(), "big", &big), big.len()),
    ];
    let mut g = c.benchmark_group("install");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, file, size) in &cases {
        eprintln!("install/{name}: component {size} bytes");
        g.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    // A fresh host each time: no compiled artifact to reuse.
                    let home = tempfile::tempdir().unwrap();
                    let h = host(home.path());
                    h.2.boot().unwrap();
                    (home, h)
                },
                |(home, (_store, _engine, installer))| {
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
                    home
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn boot(c: &mut Criterion) {
    let plugins = plugboard_testkit::build_plugins(&root()).unwrap();
    let audit = std::fs::read(plugins.join("plugin_audit.wasm")).unwrap();
    let home = tempfile::tempdir().unwrap();
    {
        let (_store, engine, installer) = host(home.path());
        installer.boot().unwrap();
        engine.finish_boot().unwrap();
        for i in 0..50 {
            // Fifty different components (each its own hash and cache entry).
            let component =
                plugboard_testkit::with_custom_section(&audit, "id", format!("{i}").as_bytes());
            let file = pack(home.path(), &format!("pkg{i:02}"), &component);
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
        }
    }
    let mut g = c.benchmark_group("boot");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    // A restart: open the store, restore the records, load the 50 packages (verify,
    // deserialize from the artifact cache, validate, instantiate, register), finish boot.
    g.bench_function("fifty_packages", |b| {
        b.iter(|| {
            let (_store, engine, installer) = host(home.path());
            let report = installer.boot().unwrap();
            assert!(report.failed.is_empty());
            engine.finish_boot().unwrap();
            assert_eq!(engine.plugins().len(), 50);
        })
    });
    g.finish();
}

criterion_group!(benches, install, boot);
criterion_main!(benches);
