//! Probe: measures the floor of a wasm step for the benchmarks. On `echo` it returns the
//! state's bytes untouched; on any other event it decodes the typed reference state in the
//! wire it was given and encodes it back unchanged.

use plugboard_pdk::bindings::exports::plugboard::plugin::guest::{Guest, Reply, Wire};
use plugboard_pdk::reference::OnUserAfterSaveFailure;

struct Probe;

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
        let wire = match wire {
            Wire::Json => plugboard_pdk::Wire::Json,
            Wire::Binary => plugboard_pdk::Wire::Binary,
        };
        let s: OnUserAfterSaveFailure = wire.decode(&state).map_err(|e| e.to_string())?;
        Ok(Reply::Continue(
            wire.encode_sized(&s, state.len() + 64)
                .map_err(|e| e.to_string())?,
        ))
    }

    fn lifecycle(_: String, _: String) -> Result<(), String> {
        Ok(())
    }

    fn health() -> Result<(), String> {
        Ok(())
    }
}

plugboard_pdk::bindings::export_guest!(Probe with_types_in plugboard_pdk::bindings);
