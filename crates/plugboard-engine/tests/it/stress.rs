//! Calls racing lifecycle changes: every result is the output of one whole chain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plugboard_engine::Target;

use crate::{OnTest, engine, started};

#[test]
fn callers_see_whole_chains_while_plugins_toggle() {
    let e = engine();
    started(&e, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
    let with_b: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let without_b: Vec<String> = ["a", "c", "d"].map(String::from).to_vec();
    let without_bd: Vec<String> = ["a", "c"].map(String::from).to_vec();
    let without_d: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let valid = Arc::new([with_b, without_b, without_bd, without_d]);
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));

    let callers: Vec<_> = (0..3)
        .map(|_| {
            let hook = e.hook::<OnTest>().unwrap();
            let (done, calls, valid) = (done.clone(), calls.clone(), valid.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let out = hook.call(OnTest::new()).unwrap();
                    assert!(valid.contains(&out.trail), "torn chain: {:?}", out.trail);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Toggle for at least 600 ms, and then until both sides have done enough work,
    // however long that takes on this machine (in a fixed time a busy one does fewer). A
    // caller that ended early saw a torn chain: stop at once. The deadline only guards
    // against a hang.
    let racing = Instant::now() + Duration::from_millis(600);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut toggles = 0;
    while (Instant::now() < racing || toggles <= 100 || calls.load(Ordering::Relaxed) <= 1000)
        && !callers.iter().any(|c| c.is_finished())
    {
        assert!(
            Instant::now() < deadline,
            "stalled: {toggles} toggles, {} calls",
            calls.load(Ordering::Relaxed)
        );
        e.stop("b").unwrap();
        e.stop(Target::Plugin("d")).unwrap();
        e.enable("b").unwrap();
        e.enable("d").unwrap();
        toggles += 4;
    }
    done.store(true, Ordering::Relaxed);
    for c in callers {
        c.join()
            .expect("caller thread panicked: see the torn chain above");
    }
    assert!(toggles > 100, "only {toggles} toggles");
    assert!(calls.load(Ordering::Relaxed) > 1000);
}
