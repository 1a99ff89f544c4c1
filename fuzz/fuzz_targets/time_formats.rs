//! A strftime-style format from a profile and a time value from a payload (split at the first
//! NUL byte), read in a zone: any panic is a bug; errors and no-match are fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (format, value) = text.split_once('\0').unwrap_or((&text, "03/14/2024 2:05 PM"));
    for zone in ["UTC", "America/New_York", "+05:30"] {
        let _ = waybill_carriers::fuzzing::parse_time(format, zone, value);
    }
});
