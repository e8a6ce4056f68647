//! Call overhead against a bare loop over the same closures, the cost of a lifecycle
//! change, and throughput while plugins toggle. Run with `cargo bench -p plugboard-engine`;
//! `cargo xtask bench-report` turns the medians into the table in BENCHMARKS.md.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use plugboard_core::{Collect, Collector, Context, Contribute, Reply, from_fn};
use plugboard_engine::{Engine, OnFailure, Registration};

plugboard_core::event! {
    /// A seven-field state, the size the reference figures used.
    pub struct OnBench("on_bench", section = "bench") {
        /// User id.
        pub user_id: u64,
        /// Email.
        pub email: String,
        /// Display name.
        pub name: String,
        /// Role.
        pub role: String,
        /// Counter the plugins bump.
        pub hits: u32,
        /// Score the plugins adjust.
        pub score: i64,
        /// Whether a plugin flagged it.
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

/// The body every plugin runs, in the baseline and in the engine alike.
fn body(i: usize) -> impl Fn(OnBench) -> Reply<OnBench> + Clone + Send + Sync + 'static {
    move |mut s: OnBench| {
        s.hits += 1;
        s.score += i as i64;
        s.flagged |= s.email.len() == i;
        Reply::Continue(s)
    }
}

fn engine_with(n: usize, policy: OnFailure) -> Engine {
    let e = Engine::builder()
        .reference_events(false)
        .on_failure(policy)
        .build();
    for i in 0..n {
        let f = body(i);
        let name = format!("p{i:03}");
        e.register::<OnBench, _>(
            Registration::new(name.clone()).priority((i % 100) as u8),
            from_fn(move |s, _cx: &Context<'_>| f(s)),
        )
        .unwrap();
        e.start(name.as_str()).unwrap();
    }
    e
}

type Baseline = Vec<Box<dyn Fn(OnBench) -> Reply<OnBench>>>;

fn baseline(n: usize) -> Baseline {
    (0..n)
        .map(|i| Box::new(body(i)) as Box<dyn Fn(OnBench) -> Reply<OnBench>>)
        .collect()
}

fn run_baseline(v: &Baseline, mut s: OnBench) -> OnBench {
    for f in v {
        match f(s) {
            Reply::Continue(next) => s = next,
            Reply::Halt(last) => return last,
        }
    }
    s
}

fn call_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("call");
    for n in [1usize, 10, 100] {
        let base = baseline(n);
        g.bench_with_input(BenchmarkId::new("baseline", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| run_baseline(black_box(&base), s),
                BatchSize::SmallInput,
            )
        });
        let e = engine_with(n, OnFailure::Error);
        let hook = e.hook::<OnBench>().unwrap();
        g.bench_with_input(BenchmarkId::new("hook", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| black_box(&hook).call(s).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("engine_call", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| black_box(&e).call::<OnBench>(s).unwrap(),
                BatchSize::SmallInput,
            )
        });
        let e = engine_with(n, OnFailure::ReturnInput);
        let hook = e.hook::<OnBench>().unwrap();
        g.bench_with_input(BenchmarkId::new("hook_return_input", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| black_box(&hook).call(s).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn lifecycle_change(c: &mut Criterion) {
    let mut g = c.benchmark_group("lifecycle");
    for n in [10usize, 100] {
        let e = engine_with(n, OnFailure::Error);
        // One stop plus one enable: two rebuilds and swaps of the event's chain.
        g.bench_with_input(BenchmarkId::new("stop_enable", n), &n, |b, _| {
            b.iter(|| {
                e.stop("p000").unwrap();
                e.enable("p000").unwrap();
            })
        });
    }
    g.finish();
}

/// Wall time for `iters` calls split over two threads, optionally with a third thread
/// toggling a plugin every millisecond.
fn two_threads(e: &Engine, iters: u64, toggle: bool) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = toggle.then(|| {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                e.stop("p005").unwrap();
                std::thread::sleep(Duration::from_millis(1));
                e.enable("p005").unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    });
    let start = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let hook = e.hook::<OnBench>().unwrap();
            std::thread::spawn(move || {
                for _ in 0..iters / 2 {
                    black_box(hook.call(state()).unwrap());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = toggler {
        t.join().unwrap();
    }
    elapsed
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    let e = engine_with(10, OnFailure::Error);
    g.bench_function("calls", |b| {
        b.iter_custom(|iters| two_threads(&e, iters, false))
    });
    g.bench_function("calls_while_toggling", |b| {
        b.iter_custom(|iters| two_threads(&e, iters, true))
    });
    g.finish();
}

/// The collecting form of the bench event: each plugin answers with a number.
struct OnBenchCollect;

impl plugboard_core::Event for OnBenchCollect {
    const NAME: &'static str = "on_bench_collect";
    const SECTION: &'static str = "bench";
    const DOC: &'static str = "Each plugin answers the same state with a number.";
    type State = OnBench;
}

impl Collect for OnBenchCollect {
    type Output = u64;
}

/// What every collector answers, in the baseline and in the engine alike.
fn answer(i: usize) -> impl Fn(&OnBench) -> u64 + Clone + Send + Sync + 'static {
    move |s: &OnBench| s.user_id + i as u64 + s.email.len() as u64
}

struct Answer<F>(F);

impl<F: Fn(&OnBench) -> u64 + Send + Sync + 'static> Collector<OnBenchCollect> for Answer<F> {
    fn collect(&self, input: &OnBench, _cx: &Context<'_>) -> Contribute<u64> {
        Contribute::Add((self.0)(input))
    }
}

type CollectBaseline = Vec<(Arc<str>, Box<dyn Fn(&OnBench) -> u64>)>;

/// The bare loop: each closure's answer pushed with its name into a vector reserved for
/// all of them.
fn run_collect_baseline(v: &CollectBaseline, input: OnBench) -> Vec<(Arc<str>, u64)> {
    let mut out = Vec::with_capacity(v.len());
    for (name, f) in v {
        out.push((name.clone(), f(&input)));
    }
    out
}

fn collect_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("collect");
    for n in [1usize, 10] {
        let base: CollectBaseline = (0..n)
            .map(|i| {
                (
                    Arc::from(format!("p{i:03}")),
                    Box::new(answer(i)) as Box<dyn Fn(&OnBench) -> u64>,
                )
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("baseline", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| run_collect_baseline(black_box(&base), s),
                BatchSize::SmallInput,
            )
        });
        let e = Engine::builder().reference_events(false).build();
        for i in 0..n {
            let name = format!("p{i:03}");
            e.register_collector::<OnBenchCollect, _>(
                Registration::new(name.clone()).priority((i % 100) as u8),
                Answer(answer(i)),
            )
            .unwrap();
            e.start(name.as_str()).unwrap();
        }
        let hook = e.collector::<OnBenchCollect>().unwrap();
        g.bench_with_input(BenchmarkId::new("collect", n), &n, |b, _| {
            b.iter_batched(
                state,
                |s| black_box(&hook).collect(s).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A wrapper that hands the state through both ways: what wrapping itself costs.
struct Through;

impl plugboard_engine::Wrapper<OnBench> for Through {
    type Token = ();

    fn before(&self, state: OnBench, _cx: &Context<'_>) -> (Reply<OnBench>, ()) {
        (Reply::Continue(state), ())
    }

    fn after(
        &self,
        outcome: plugboard_engine::Outcome<OnBench>,
        _: &mut (),
        _cx: &Context<'_>,
    ) -> plugboard_engine::After<OnBench> {
        plugboard_engine::After::Return(outcome)
    }
}

/// The bare loop inside the same wrapper, its halves called by hand: what a host would
/// write without the engine.
fn run_wrapped_baseline(w: &Through, v: &Baseline, s: OnBench) -> OnBench {
    use plugboard_engine::{After, Wrapper};
    let meta = plugboard_core::Meta::new();
    let cx = Context::new("on_bench", "through", &meta);
    let (reply, mut token) = w.before(s, &cx);
    let outcome = match reply {
        Reply::Continue(s) => Ok(Reply::Continue(run_baseline(v, s))),
        Reply::Halt(s) => Ok(Reply::Halt(s)),
    };
    match w.after(outcome, &mut token, &cx) {
        After::Return(Ok(reply)) => reply.into_state(),
        After::Return(Err(e)) => panic!("{e}"),
        After::Retry(s) => run_baseline(v, s),
    }
}

fn wrap_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("wrap");
    let n = 10;
    let base = baseline(n);
    g.bench_with_input(BenchmarkId::new("baseline", n), &n, |b, _| {
        b.iter_batched(
            state,
            |s| run_wrapped_baseline(black_box(&Through), black_box(&base), s),
            BatchSize::SmallInput,
        )
    });
    let e = engine_with(n, OnFailure::Error);
    let bare = e.hook::<OnBench>().unwrap();
    g.bench_with_input(BenchmarkId::new("hook", n), &n, |b, _| {
        b.iter_batched(
            state,
            |s| black_box(&bare).call(s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    e.register_wrapper::<OnBench, _>(Registration::new("through"), Through)
        .unwrap();
    e.start("through").unwrap();
    let hook = e.hook::<OnBench>().unwrap();
    g.bench_with_input(BenchmarkId::new("wrapped", n), &n, |b, _| {
        b.iter_batched(
            state,
            |s| black_box(&hook).call(s).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = call_overhead, collect_overhead, wrap_overhead, lifecycle_change, contended
}
criterion_main!(benches);
