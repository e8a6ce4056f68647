//! The binary layout of states (`plugboard_core::wire`, postcard), as the host decodes a
//! WebAssembly plugin's reply: the first byte picks one of the 12 binary reference events,
//! the rest is the reply. Bytes are refused or decoded, never a panic; a decoded state
//! re-encodes to a fixpoint (decode → encode → decode gives the same state), survives
//! the JSON layout, and decodes in place into another state exactly as it decodes afresh.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_core::wire::Wire;

fuzz_target!(|data: &[u8]| {
    let Some((&event, bytes)) = data.split_first() else {
        return;
    };
    plugboard_fuzz::check_binary_event(event, Wire::Binary, Some(Wire::Json), bytes);
});
