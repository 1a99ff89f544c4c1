//! Arbitrary bytes as a JWKS document fetched from a key server.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = waybill_carriers::fuzzing::parse_jwks(data);
});
