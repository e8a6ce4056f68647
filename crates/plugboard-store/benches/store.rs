//! Storage figures: durable lifecycle-operation latency (median and p99) on SQLite and
//! PostgreSQL, boot time with 10,000 plugin records, and the call path with a store
//! attached against the same engine without one. Run with
//! `cargo bench -p plugboard-store --bench store`; `cargo xtask bench-report` prints them.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use plugboard_core::{Context, Reply, from_fn};
use plugboard_engine::{Engine, EngineBuilder, Registration};
use plugboard_store::Store;
use plugboard_testkit::{Backend, fresh_url};

plugboard_core::event! {
    /// A seven-field state, as in the engine's call benchmark.
    pub struct OnBench("on_bench", section = "bench") {
        /// User id.
        pub user_id: u64,
        /// Email.
        pub email: String,
        /// Name.
        pub name: String,
        /// Role.
        pub role: String,
        /// Counter.
        pub hits: u32,
        /// Score.
        pub score: i64,
        /// Flag.
        pub flagged: bool,
    }
}

fn state() -> OnBench {
    OnBench {
        user_id: 42,
        email: "ada@example.com".into(),
        name: "Ada".into(),
        role: "editor".into(),
        hits: 0,
        score: 0,
        flagged: false,
    }
}

fn with_plugins(e: Engine, n: usize) -> Engine {
    for i in 0..n {
        let name = format!("p{i:03}");
        e.register::<OnBench, _>(
            Registration::new(name.clone()).priority(i as u8),
            from_fn(move |mut s: OnBench, _: &Context<'_>| {
                s.hits += 1;
                s.score += i as i64;
                s.flagged |= s.email.len() == i;
                Reply::Continue(s)
            }),
        )
        .unwrap();
        e.start(name.as_str()).unwrap();
    }
    e
}

fn builder() -> EngineBuilder {
    Engine::builder().reference_events(false)
}

/// Every op's latency over `n` alternating stop/enable operations: median and p99.
fn distribution(e: &Engine, n: usize) -> (f64, f64) {
    let mut times: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            if i % 2 == 0 {
                e.stop("p000").unwrap();
            } else {
                e.enable("p000").unwrap();
            }
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[(n * 99) / 100])
}

fn lifecycle(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("store_lifecycle");
    g.sample_size(30).measurement_time(Duration::from_secs(5));
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let url = fresh_url(backend, dir.path());
        let store = Store::open(&url).unwrap();
        let e = with_plugins(store.engine(builder()).unwrap(), 10);
        let name = format!("{backend:?}").to_lowercase();
        let mut flip = false;
        // One durable status write per iteration.
        g.bench_function(&name, |b| {
            b.iter(|| {
                flip = !flip;
                if flip {
                    e.stop("p000").unwrap()
                } else {
                    e.enable("p000").unwrap()
                };
            })
        });
        let (median, p99) = distribution(&e, 400);
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/criterion/store_lifecycle");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join(format!("{name}-distribution.json")),
            format!("{{\"ops\": 400, \"median_us\": {median:.1}, \"p99_us\": {p99:.1}}}"),
        )
        .unwrap();
    }
    g.finish();
}

fn boot(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("store_boot");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let url = fresh_url(backend, dir.path());
        seed(&url, backend, 10_000);
        let name = format!("{backend:?}_10000_records").to_lowercase();
        g.bench_function(&name, |b| {
            b.iter(|| {
                let store = Store::open(&url).unwrap();
                let e = store.engine(builder()).unwrap();
                assert_eq!(black_box(e.plugins().len()), 10_000);
            })
        });
    }
    g.finish();
}

/// Writes `n` records in one transaction, as a long-lived deployment would have them.
fn seed(url: &str, backend: Backend, n: usize) {
    Store::open(url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        macro_rules! fill {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.unwrap();
                for i in 0..n {
                    sqlx::query(
                        "INSERT INTO plugins (id, name, event, priority, status, depend_type, depends, extra, version, inserted_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'started', $5, $6, $7, 1, $8, $8)",
                    )
                    .bind(uuid::Uuid::new_v4())
                    .bind(format!("plugin_{i:05}"))
                    .bind(format!("on_event_{}", i % 100))
                    .bind((i % 100) as i32)
                    .bind(if i % 10 == 0 { "hard" } else { "soft" })
                    .bind(sqlx::types::Json(if i % 10 == 0 && i > 0 { vec![format!("plugin_{:05}", i - 1)] } else { vec![] }))
                    .bind(sqlx::types::Json(Vec::<serde_json::Value>::new()))
                    .bind(time::OffsetDateTime::now_utc())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
            }};
        }
        match backend {
            Backend::Sqlite => fill!(sqlx::SqlitePool::connect(url).await.unwrap()),
            Backend::Postgres => fill!(sqlx::PgPool::connect(url).await.unwrap()),
        }
    });
}

fn calls(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("store_calls");
    let bare = with_plugins(builder().build(), 10);
    let hook = bare.hook::<OnBench>().unwrap();
    g.bench_function("without_store", |b| {
        b.iter_batched(state, |s| hook.call(s).unwrap(), BatchSize::SmallInput)
    });
    let store = Store::open(&fresh_url(Backend::Sqlite, dir.path())).unwrap();
    let stored = with_plugins(store.engine(builder()).unwrap(), 10);
    let _log = store.activity_log(Some(&stored), plugboard_store::LogConfig::default());
    let _watch = store.watch(&stored);
    let hook = stored.hook::<OnBench>().unwrap();
    g.bench_function("with_store_log_and_watch", |b| {
        b.iter_batched(state, |s| hook.call(s).unwrap(), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, lifecycle, boot, calls);
criterion_main!(benches);
