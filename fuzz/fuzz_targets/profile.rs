//! Fuzz target: the profile loader must never panic on arbitrary bytes; a profile it cannot
//! use is an error that names what is wrong. Runs UTF-8 check, TOML parse, typed
//! extraction and validation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = lomob::config::parse_bytes(data) {
        // Rendering the message is part of the path a user sees.
        let _ = e.to_string();
    }
});
