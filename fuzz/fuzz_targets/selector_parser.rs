//! Any text: the selector parser must not panic, and a selector it accepts must survive a
//! round trip through its canonical form (the set identity other crates rely on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_selector::Selector;

fuzz_target!(|text: &str| {
    match Selector::parse(text) {
        Ok(selector) => {
            let canonical = selector.canonical();
            let reparsed = Selector::parse(&canonical).unwrap_or_else(|error| {
                panic!("canonical form {canonical:?} of {text:?} does not parse: {error}")
            });
            assert_eq!(
                reparsed, selector,
                "canonical form {canonical:?} of {text:?} changed meaning"
            );
        }
        // Rendering the error for users must not panic either.
        Err(error) => drop(error.render(text)),
    }
});
