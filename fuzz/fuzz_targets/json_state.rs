//! JSON states, on both paths a JSON state takes: as a WebAssembly plugin's reply on the
//! JSON wire (`Wire::Json`, bytes → typed state) and as a call by name
//! (`Engine::trace_json`: a JSON value → typed state → a JSON plugin → JSON). The first
//! byte picks one of the 32 reference events (and, in its high bits, the call's
//! `return_input` and `private` options); the rest is the JSON. Never a panic; a decoded
//! state re-encodes to a fixpoint, survives the binary layout (binary events) and decodes
//! in place as afresh; a call refuses exactly the states that do not decode and otherwise
//! returns the decoded state, the private keys put back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_core::wire::Wire;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let event = selector % 32;
    let binary = plugboard_fuzz::BINARY_EVENTS.len() as u8;
    if event < binary {
        plugboard_fuzz::check_binary_event(event, Wire::Json, Some(Wire::Binary), bytes);
    } else {
        plugboard_fuzz::check_payload(bytes);
    }
    // What the admin API hands the engine: the body's `state`, already parsed as JSON.
    if let Ok(state) = serde_json::from_slice::<serde_json::Value>(bytes) {
        plugboard_fuzz::check_call_event(event, &state, selector / 32);
    }
});
