//! Arbitrary bytes as an `application/x-www-form-urlencoded` webhook body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = waybill_carriers::fuzzing::parse_form(data);
});
