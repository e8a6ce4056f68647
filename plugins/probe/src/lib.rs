//! Probe: measures the floor of a wasm step for the benchmarks. On `echo` it returns the
//! state's bytes untouched; on any other event it is a pass-through plugin (the typed
//! reference state in, the same state out) run exactly as `export_plugin!` runs one.

use std::cell::RefCell;

use plugboard_pdk::bindings::exports::plugboard::plugin::guest::{Guest, Reply, Wire};
use plugboard_pdk::reference::OnUserAfterSaveFailure;
use plugboard_pdk::{Plugin, ViaInPlace as _};

struct Probe;

struct PassThrough;

impl Plugin for PassThrough {
    type State = OnUserAfterSaveFailure;

    fn call(
        &self,
        _event: &str,
        state: Self::State,
    ) -> Result<plugboard_pdk::Reply<Self::State>, String> {
        Ok(plugboard_pdk::Reply::Continue(state))
    }
}

thread_local! {
    static LAST: RefCell<Option<OnUserAfterSaveFailure>> = const { RefCell::new(None) };
}

impl Guest for Probe {
    fn initial(_: String) -> Result<(), String> {
        Ok(())
    }

    fn layout(_: String) -> Option<u64> {
        use plugboard_pdk::Event;
        OnUserAfterSaveFailure::binary_layout()
    }

    fn call(event: String, wire: Wire, state: Vec<u8>) -> Result<Reply, String> {
        if event == "echo" {
            return Ok(Reply::Continue(state));
        }
        // As `export_plugin!` does: the borrow picks the in-place path when there is one.
        #[allow(clippy::needless_borrow)]
        let reuse = (&plugboard_pdk::Reuse::<OnUserAfterSaveFailure>::new()).reuse();
        let mut last = LAST.with(|l| l.borrow_mut().take());
        let reply = plugboard_pdk::__call(&PassThrough, &event, wire, state, reuse, &mut last);
        LAST.with(|l| *l.borrow_mut() = last);
        reply
    }

    fn lifecycle(_: String, _: String) -> Result<(), String> {
        Ok(())
    }

    fn health() -> Result<(), String> {
        Ok(())
    }
}

// Every PDK component exports the wrapper interface; the probe is not one.
impl plugboard_pdk::bindings::exports::plugboard::plugin::wrapper::Guest for Probe {
    fn before(
        _: String,
        _: String,
    ) -> Result<plugboard_pdk::bindings::exports::plugboard::plugin::wrapper::Opened, String> {
        Err(plugboard_pdk::__not_a_wrapper())
    }

    fn after(
        _: String,
        _: plugboard_pdk::bindings::exports::plugboard::plugin::wrapper::Outcome,
        _: Vec<u8>,
    ) -> Result<plugboard_pdk::bindings::exports::plugboard::plugin::wrapper::Closing, String> {
        Err(plugboard_pdk::__not_a_wrapper())
    }
}

plugboard_pdk::bindings::export_guest!(Probe with_types_in plugboard_pdk::bindings);
