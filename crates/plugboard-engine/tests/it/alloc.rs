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
