//! The hot path allocates nothing of its own: counted by a global allocator that tallies
//! the allocations of the current thread only, so that other tests running in parallel do
//! not disturb the count.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use plugboard_core::{Context, Reply, from_fn};
use plugboard_engine::{Engine, OnFailure, Registration};

use crate::OnTest;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a const-initialised
// thread-local `Cell`, which neither allocates nor panics (`try_with` covers thread exit).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn chain_of(n: usize, policy: OnFailure) -> Engine {
    let e = Engine::builder()
        .reference_events(false)
        .on_failure(policy)
        .build();
    for i in 0..n {
        let name = format!("p{i}");
        // Plugins that change the state without allocating.
        e.register::<OnTest, _>(
            Registration::new(name.clone()).priority(i as u8),
            from_fn(move |mut s: OnTest, _: &Context<'_>| {
                s.secret
                    .truncate(s.secret.len().saturating_sub(usize::from(i % 2 == 0)));
                Reply::Continue(s)
            }),
        )
        .unwrap();
        e.start(name.as_str()).unwrap();
    }
    e
}

#[test]
fn a_native_typed_call_allocates_nothing() {
    let e = chain_of(10, OnFailure::Error);
    let hook = e.hook::<OnTest>().unwrap();
    let mut state = OnTest::new();
    state.secret = "x".repeat(64);
    state = hook.call(state).unwrap(); // warm up thread-locals
    let before = allocations();
    for _ in 0..1000 {
        state = hook.call(state).unwrap();
    }
    assert_eq!(allocations() - before, 0, "the hot path allocated");
    assert!(state.secret.is_empty());
}

#[test]
fn the_return_input_policy_costs_exactly_its_clone() {
    let e = chain_of(10, OnFailure::ReturnInput);
    let hook = e.hook::<OnTest>().unwrap();
    let mut state = OnTest::new();
    state.secret = "y".repeat(1000); // long enough never to run out in 100 calls
    state = hook.call(state).unwrap();
    let before = allocations();
    for _ in 0..100 {
        state = hook.call(state).unwrap();
    }
    // One clone of the input per call: the `secret` string (the trail is empty).
    assert_eq!(allocations() - before, 100);
}

plugboard_core::event! {
    /// A collecting event whose plugins answer with a number.
    pub struct OnCount("on_count", section = "test") {
        /// The number asked about.
        pub n: u64,
    }
}

impl plugboard_core::Collect for OnCount {
    type Output = u64;
}

#[test]
fn a_native_collection_allocates_only_its_results() {
    let e = Engine::builder().reference_events(false).build();
    for i in 0..10u64 {
        let name = format!("c{i}");
        struct Add(u64);
        impl plugboard_core::Collector<OnCount> for Add {
            fn collect(&self, input: &OnCount, _: &Context<'_>) -> plugboard_core::Contribute<u64> {
                plugboard_core::Contribute::Add(input.n + self.0)
            }
        }
        e.register_collector::<OnCount, _>(Registration::new(name.clone()), Add(i))
            .unwrap();
        e.start(name.as_str()).unwrap();
    }
    let hook = e.collector::<OnCount>().unwrap();
    let _ = hook.collect(OnCount { n: 1 }).unwrap(); // warm up thread-locals
    let before = allocations();
    for _ in 0..1000 {
        let found = hook.collect(OnCount { n: 1 }).unwrap();
        assert_eq!(found.results.len(), 10);
    }
    // One vector per call, reserved for the whole chain: never grown.
    assert_eq!(
        allocations() - before,
        1000,
        "a collection allocated more than its results"
    );
}

/// A wrapper with nothing to hand from one half to the other.
struct Pass;

impl plugboard_engine::Wrapper<OnTest> for Pass {
    type Token = ();

    fn before(&self, state: OnTest, _: &Context<'_>) -> (Reply<OnTest>, ()) {
        (Reply::Continue(state), ())
    }

    fn after(
        &self,
        outcome: plugboard_engine::Outcome<OnTest>,
        _: &mut (),
        _: &Context<'_>,
    ) -> plugboard_engine::After<OnTest> {
        plugboard_engine::After::Return(outcome)
    }
}

#[test]
fn a_wrapped_native_call_allocates_nothing() {
    let e = chain_of(10, OnFailure::Error);
    e.register_wrapper::<OnTest, _>(Registration::new("pass"), Pass)
        .unwrap();
    e.start("pass").unwrap();
    let hook = e.hook::<OnTest>().unwrap();
    let mut state = OnTest::new();
    state.secret = "x".repeat(64);
    state = hook.call(state).unwrap();
    let before = allocations();
    for _ in 0..1000 {
        state = hook.call(state).unwrap();
    }
    assert_eq!(allocations() - before, 0, "a wrapped call allocated");
}
