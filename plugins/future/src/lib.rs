//! Future: implements a contract version the host does not know (0.9.0), so that the
//! host's tests can show it is refused with a clear error.

wit_bindgen::generate!({
    inline: "
        package plugboard:plugin@0.9.0;
        interface guest {
            call: func(event: string, state: list<u8>) -> result<list<u8>, string>;
        }
        world plugin { export guest; }
    ",
});

struct Future;

impl exports::plugboard::plugin::guest::Guest for Future {
    fn call(_event: String, state: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(state)
    }
}

export!(Future);
