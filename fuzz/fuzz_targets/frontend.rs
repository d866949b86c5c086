//! Feeds arbitrary bytes to the front end: loading must never panic, and every diagnostic must point
//! inside the input and render.
#![no_main]

use ciliumc_compiler::frontend::{LoadOptions, load_str, render_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for strict in [false, true] {
        let result = load_str(&text, "fuzz.yaml", &LoadOptions { strict, ..LoadOptions::default() });
        for d in &result.diagnostics {
            assert!(d.span.start <= d.span.end && d.span.end <= text.len());
            let _ = render_text(d, &text);
        }
        for o in &result.objects {
            // Every loaded object serializes (the CLI's JSON output) and loads back to the same value.
            let json = serde_json::to_string(&o.object).expect("typed objects always serialize");
            let back = load_str(&json, "back.json", &LoadOptions::default());
            assert_eq!(back.objects.len(), 1, "{json}");
            assert_eq!(back.objects[0].object, o.object, "{json}");
        }
    }
});
