//! A signed-content template (verification) and a body, split at the first NUL byte: parsing
//! and rendering never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let template = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let _ = waybill_carriers::fuzzing::render_template(&template, body);
});
