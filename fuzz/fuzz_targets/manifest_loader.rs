//! Any text through the manifest loader: it must not panic, and every error it reports must
//! have a position in the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(errors) = sluice_api::load_str("fuzz.yaml", text) {
        assert!(!errors.0.is_empty(), "an error result with no diagnostics");
        for diagnostic in &errors.0 {
            assert!(diagnostic.line >= 1, "no line in {diagnostic}");
        }
        drop(errors.to_string());
    }
});
