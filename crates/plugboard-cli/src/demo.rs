//! `plugboard demo`: an in-process host that registers sample plugins on three reference
//! events, calls them, changes statuses, and prints every step.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use plugboard::broadcast::Receiver;
use plugboard::prelude::*;
use plugboard::reference::{
    Conn, Endpoint, ErrorPayload, Ip, ModifierUser, OnContentPrepare, OnContentSearch,
    OnUserAfterSaveFailure, OnUserBeforeLogin, Payload, SaveStatus, SearchHit,
};
use plugboard::{Cause, LifecycleEvent, StepOutcome, TraceStep};
use serde_json::{Value, json};

/// Records every failed save with an audit id and the error's code.
struct Audit {
    next_id: AtomicU64,
}

impl Plugin<OnUserAfterSaveFailure> for Audit {
    fn call(
        &self,
        mut s: OnUserAfterSaveFailure,
        _: &Context<'_>,
    ) -> Reply<OnUserAfterSaveFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        set(
            &mut s.extra,
            "audit",
            json!({ "id": id, "code": s.error.code, "ip": s.ip.to_string() }),
        );
        Reply::Continue(s)
    }
}

/// Counts failures per address; needs `audit` (hard dependency).
#[derive(Default)]
struct RateGuard {
    seen: Mutex<HashMap<String, u32>>,
}

impl Plugin<OnUserAfterSaveFailure> for RateGuard {
    fn call(
        &self,
        mut s: OnUserAfterSaveFailure,
        _: &Context<'_>,
    ) -> Reply<OnUserAfterSaveFailure> {
        let n = match self.seen.lock() {
            Ok(mut seen) => {
                let n = seen.entry(s.ip.to_string()).or_default();
                *n += 1;
                *n
            }
            Err(_) => 0,
        };
        set(&mut s.extra, "failures_from_ip", json!(n));
        if n >= 3 {
            set(&mut s.extra, "block_ip", json!(true));
        }
        Reply::Continue(s)
    }
}

/// Asks for a captcha: halts the login page's chain until one is given.
struct Captcha;

impl Plugin<OnUserBeforeLogin> for Captcha {
    fn call(&self, mut s: OnUserBeforeLogin, _: &Context<'_>) -> Reply<OnUserBeforeLogin> {
        if s.input.contains_key("captcha") {
            Reply::Continue(s)
        } else {
            s.output = Some("<div class=\"captcha\">What is 3 + 4?</div>".into());
            Reply::Halt(s)
        }
    }
}

/// Offers "remember me" on the login page.
struct RememberMe;

impl Plugin<OnUserBeforeLogin> for RememberMe {
    fn call(&self, mut s: OnUserBeforeLogin, _: &Context<'_>) -> Reply<OnUserBeforeLogin> {
        s.assigns.insert("remember_me".into(), json!(true));
        Reply::Continue(s)
    }
}

/// Renders `data.body` (lines; `# ` starts a heading) to HTML in `extra.html`.
struct Markdown;

impl Plugin<OnContentPrepare> for Markdown {
    fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
        let body = s
            .data
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let html: String = body
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(h) => format!("<h1>{h}</h1>"),
                None => format!("<p>{l}</p>"),
            })
            .collect();
        s.extra.insert("html".into(), json!(html));
        Reply::Continue(s)
    }
}

/// Builds a table of contents from the rendered HTML; needs `markdown` (hard dependency).
struct Toc;

impl Plugin<OnContentPrepare> for Toc {
    fn call(&self, mut s: Payload, _: &Context<'_>) -> Reply<Payload> {
        let html = s
            .extra
            .get("html")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let toc: Vec<&str> = html
            .split("<h1>")
            .skip(1)
            .filter_map(|h| h.split("</h1>").next())
            .collect();
        s.extra.insert("toc".into(), json!(toc));
        Reply::Continue(s)
    }
}

/// A plugin with a bug: it panics on every call.
struct Broken;

impl Plugin<OnContentPrepare> for Broken {
    fn call(&self, _: Payload, _: &Context<'_>) -> Reply<Payload> {
        panic!("index out of bounds: the len is 0 but the index is 0")
    }
}

/// Answers the content search (a collecting event) with the demo host's own pages whose
/// title holds a word searched for; the `site-search` example package answers beside it.
struct Pages;

/// The demo host's pages: (title, path, what is there).
const PAGES: &[(&str, &str, &str)] = &[
    ("Sign up", "/demo", "the demo host's sign-up form"),
    (
        "Webhook receiver",
        "/demo/hooks",
        "what the webhook example posted",
    ),
    (
        "Search",
        "/demo/search",
        "this search, answered by several plugins",
    ),
];

impl Collector<OnContentSearch> for Pages {
    fn collect(&self, input: &Payload, _: &Context<'_>) -> Contribute<SearchHit> {
        let text = input.data.get("text").and_then(Value::as_str).unwrap_or("");
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let found = PAGES.iter().find(|(title, _, what)| {
            let page = format!("{title} {what}").to_lowercase();
            !words.is_empty() && words.iter().any(|w| page.contains(w.as_str()))
        });
        match found {
            Some((title, href, what)) => Contribute::Add(SearchHit {
                section: Some("demo".into()),
                ..SearchHit::new(*title, *href).text(*what)
            }),
            None => Contribute::Pass,
        }
    }
}

/// Runs around the content chain and says how long it took (`extra.prepared_in_us`): a
/// wrapper, the shape of a timing or transaction layer.
struct Timing;

impl Wrapper<OnContentPrepare> for Timing {
    type Token = std::time::Instant;

    fn before(&self, state: Payload, _: &Context<'_>) -> (Reply<Payload>, std::time::Instant) {
        (Reply::Continue(state), std::time::Instant::now())
    }

    fn after(
        &self,
        outcome: Outcome<Payload>,
        started: &mut std::time::Instant,
        _: &Context<'_>,
    ) -> After<Payload> {
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        After::Return(outcome.map(|reply| {
            let halt = reply.is_halt();
            let mut s = reply.into_state();
            s.extra.insert("prepared_in_us".into(), took.into());
            if halt {
                Reply::Halt(s)
            } else {
                Reply::Continue(s)
            }
        }))
    }
}

fn set(extra: &mut Value, key: &str, value: Value) {
    if !extra.is_object() {
        *extra = json!({});
    }
    if let Some(map) = extra.as_object_mut() {
        map.insert(key.to_owned(), value);
    }
}

fn failure(ip: &str) -> OnUserAfterSaveFailure {
    OnUserAfterSaveFailure {
        error: ErrorPayload::new("validation_failed", "email has already been taken")
            .field("email", "has already been taken"),
        ip: ip.parse().unwrap_or(Ip::LOCALHOST),
        endpoint: Endpoint::Html,
        status: SaveStatus::Added,
        conn: Conn::new("POST", "/signup").header("User-Agent", "demo"),
        modifier_user: ModifierUser::SelfUser,
        extra: Value::Null,
    }
}

fn article() -> Payload {
    let mut p = Payload::default();
    p.data.insert(
        "body".into(),
        json!("# Plugboard\nEvents and plugins.\n# Chains\nOrdered, halting."),
    );
    p
}

/// Runs the demo, writing to `out`.
/// The sample plugins' names.
pub(crate) const SAMPLES: [&str; 9] = [
    "audit",
    "rate_guard",
    "captcha",
    "remember_me",
    "toc",
    "markdown",
    "timing",
    "pages",
    "broken",
];

/// Registers the sample plugins (all but `broken`) and ends the boot: a host's start-up.
pub(crate) fn register_samples(engine: &Engine) -> Result<()> {
    engine.register(
        Registration::new("audit").priority(10),
        Audit {
            next_id: AtomicU64::new(1),
        },
    )?;
    engine.register(
        Registration::new("rate_guard")
            .priority(20)
            .hard_depends(["audit"]),
        RateGuard::default(),
    )?;
    engine.register(Registration::new("captcha").priority(10), Captcha)?;
    engine.register(Registration::new("remember_me").priority(20), RememberMe)?;
    // Registered before its dependency on purpose: it waits, held, until `markdown` runs.
    engine.register(
        Registration::new("toc")
            .priority(5)
            .hard_depends(["markdown"]),
        Toc,
    )?;
    engine.register(Registration::new("markdown").priority(10), Markdown)?;
    engine.register_wrapper::<OnContentPrepare, _>(Registration::new("timing"), Timing)?;
    engine
        .register_collector::<OnContentSearch, _>(Registration::new("pages").priority(10), Pages)?;
    Ok(())
}

/// A sample content call, for hosts that show what their chain does.
pub(crate) fn prepare_article(engine: &Engine) -> Result<Vec<String>> {
    let t = engine.hook::<OnContentPrepare>()?.trace(article());
    // The chain's plugins: a wrapper runs around them, it is not one of them.
    Ok(t.steps
        .into_iter()
        .filter(|s| s.outcome != StepOutcome::Wrapped)
        .map(|s| s.plugin)
        .collect())
}

/// Runs the demo on `engine` (whose records are stored), writing to `out`.
pub(crate) fn run(engine: &Engine, out: &mut impl Write) -> Result<()> {
    // Start from a clean slate: the demo's own records from an earlier run go.
    for name in SAMPLES {
        if engine.plugin(name).is_some() {
            engine.unregister(name)?;
        }
    }
    let mut changes = engine.subscribe();
    writeln!(
        out,
        "Plugboard demo: an in-process host with {} reference events.\n",
        engine.events().len()
    )?;

    writeln!(out, "1. Register and start the sample plugins")?;
    register_samples(engine)?;
    engine.start(Target::All)?;
    drain(&mut changes);
    for event in [
        "on_user_after_save_failure",
        "on_user_before_login",
        "on_content_prepare",
    ] {
        chain(out, engine, event)?;
    }

    writeln!(
        out,
        "\n2. A sign-up fails validation three times from one address"
    )?;
    let hook = engine.hook::<OnUserAfterSaveFailure>()?;
    for _ in 0..3 {
        let t = hook.trace(failure("203.0.113.9"));
        steps(out, &t.steps)?;
        writeln!(out, "   extra = {}", t.result?.extra)?;
    }

    writeln!(
        out,
        "\n3. The login page is opened without a captcha, then with one"
    )?;
    let login = engine.hook::<OnUserBeforeLogin>()?;
    let page = OnUserBeforeLogin {
        ip: Ip::LOCALHOST,
        assigns: Default::default(),
        output: None,
        input: Default::default(),
    };
    let t = login.trace(page.clone());
    steps(out, &t.steps)?;
    let s = t.result?;
    writeln!(
        out,
        "   halted by {}: output = {:?}; remember_me did not run",
        t.halted_by.unwrap_or_default(),
        s.output.unwrap_or_default()
    )?;
    let mut solved = page;
    solved.input.insert("captcha".into(), json!("7"));
    let t = login.trace(solved);
    steps(out, &t.steps)?;
    writeln!(out, "   assigns = {}", Value::Object(t.result?.assigns))?;

    writeln!(
        out,
        "\n4. An article is prepared: toc runs after markdown although its priority is lower"
    )?;
    let content = engine.hook::<OnContentPrepare>()?;
    let t = content.trace(article());
    steps(out, &t.steps)?;
    writeln!(out, "   extra = {}", Value::Object(t.result?.extra))?;

    writeln!(out, "\n5. The operator stops `markdown`")?;
    engine.stop("markdown")?;
    report(out, &mut changes)?;
    chain(out, engine, "on_content_prepare")?;
    let t = content.trace(article());
    writeln!(
        out,
        "   {} plugins ran; the article came back unchanged: {}",
        t.steps.len(),
        t.result?.extra.is_empty()
    )?;
    writeln!(
        out,
        "   `start markdown` is refused: {}",
        engine
            .start("markdown")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    )?;

    writeln!(out, "\n6. The operator enables `markdown`")?;
    engine.enable("markdown")?;
    report(out, &mut changes)?;
    chain(out, engine, "on_content_prepare")?;

    writeln!(
        out,
        "\n7. A broken plugin joins the chain; the event skips it, and after 5 failures in a row it is stopped"
    )?;
    engine.set_failure_policy("on_content_prepare", OnFailure::Skip)?;
    engine.register(Registration::new("broken").priority(50), Broken)?;
    engine.start("broken")?;
    drain(&mut changes);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 1..=6 {
        let t = content.trace(article());
        let ran: Vec<String> = t
            .steps
            .iter()
            .map(|s| format!("{}:{}", s.plugin, outcome(&s.outcome)))
            .collect();
        writeln!(out, "   call {i}: {}", ran.join(" "))?;
    }
    std::panic::set_hook(quiet);
    // The stop at the threshold runs on the engine's own thread: let it finish.
    engine.wait_idle(Duration::from_secs(30));
    report(out, &mut changes)?;
    if let Some(info) = engine.plugin("broken") {
        let last = info.last_error.map(|f| f.message).unwrap_or_default();
        writeln!(
            out,
            "   broken: status {}, {} failures, last: {last}",
            info.record.status, info.failures
        )?;
    }
    writeln!(
        out,
        "\nDone. The host never saw a panic; every change above was published to subscribers."
    )?;
    writeln!(
        out,
        "The plugin records stay in the database: try `plugboard plugins`, `plugboard stop audit`, `plugboard activity`."
    )?;
    Ok(())
}

pub(crate) fn chain(out: &mut impl Write, engine: &Engine, event: &str) -> Result<()> {
    let names = engine.chain(event)?;
    let shown: Vec<String> = names
        .iter()
        .map(|n| match engine.plugin(n) {
            Some(p) if !p.record.depends.is_empty() => {
                format!(
                    "{n} ({}, needs {})",
                    p.record.priority,
                    p.record.depends.join(", ")
                )
            }
            Some(p) => format!("{n} ({})", p.record.priority),
            None => n.clone(),
        })
        .collect();
    let shown = if shown.is_empty() {
        "(no plugin runs)".to_owned()
    } else {
        shown.join(" -> ")
    };
    writeln!(out, "   {event:28} {shown}")?;
    Ok(())
}

fn outcome(o: &StepOutcome) -> String {
    match o {
        StepOutcome::Continued => "continued".into(),
        StepOutcome::Halted => "halted".into(),
        StepOutcome::Wrapped => "wrapped".into(),
        StepOutcome::Failed { failure } => format!("failed ({})", failure.kind),
    }
}

fn steps(out: &mut impl Write, steps: &[TraceStep]) -> Result<()> {
    for s in steps {
        writeln!(
            out,
            "   {:12} {:10} {:>8.1} µs",
            s.plugin,
            outcome(&s.outcome),
            s.elapsed.as_secs_f64() * 1e6
        )?;
    }
    Ok(())
}

fn drain(rx: &mut Receiver<LifecycleEvent>) {
    while rx.try_recv().is_ok() {}
}

pub(crate) fn report(out: &mut impl Write, rx: &mut Receiver<LifecycleEvent>) -> Result<()> {
    while let Ok(ev) = rx.try_recv() {
        if let LifecycleEvent::StatusChanged {
            plugin,
            from,
            to,
            cause,
            ..
        } = ev
        {
            let why = match cause {
                Cause::Operator { op } => format!("operator: {op}"),
                Cause::DependencyDown { dependency } => {
                    format!("dependency `{dependency}` is not active")
                }
                Cause::DependenciesUp => "dependencies active again".into(),
                Cause::FailureThreshold { failures } => format!("{failures} failures in a row"),
                Cause::External => "changed by another process".into(),
            };
            writeln!(out, "   {plugin}: {from} -> {to} ({why})")?;
        }
    }
    Ok(())
}
