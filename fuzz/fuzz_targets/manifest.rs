//! `plugboard.toml`: `Manifest::parse` on any text never panics; a manifest it accepts
//! prints (`to_toml`) to text that parses back to an equal manifest and prints the same
//! again; its errors display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_package::Manifest;

fuzz_target!(|text: &str| {
    let manifest = match Manifest::parse(text) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let printed = manifest.to_toml();
    let back = Manifest::parse(&printed)
        .unwrap_or_else(|e| panic!("to_toml's output does not parse: {e}\n{printed}"));
    assert_eq!(
        back, manifest,
        "to_toml → parse changed the manifest\n{printed}"
    );
    assert_eq!(back.to_toml(), printed, "to_toml is not a fixpoint");
    assert!(
        manifest.plugin_names().count() >= 1,
        "a manifest without hooks"
    );
});
