//! Arbitrary bytes as an XML webhook body: a document or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = waybill_carriers::fuzzing::parse_xml(data);
});
