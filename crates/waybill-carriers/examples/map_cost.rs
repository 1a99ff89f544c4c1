//! What mapping one webhook body costs: maps a built-in profile's sample `N` times and prints
//! the time per mapping. Run under `valgrind --tool=callgrind` to count instructions instead,
//! which do not move with the rest of the machine (docs/performance.md):
//!
//! ```sh
//! cargo build --release -p waybill-carriers --example map_cost
//! target/release/examples/map_cost starshipit crates/waybill-carriers/profiles/starshipit/captured-real.json 100000
//! ```

use std::time::Instant;

use chrono::Utc;
use waybill_carriers::ProfileRegistry;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: map_cost <built-in profile> <body file> [times]";
    let name = args.next().ok_or(usage)?;
    let body = std::fs::read(args.next().ok_or(usage)?)?;
    let times: u32 = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let registry = ProfileRegistry::builtin();
    let profile = registry
        .get(&name)
        .ok_or_else(|| format!("no built-in profile `{name}`"))?;
    let received_at = Utc::now();
    let mut events = 0;
    let started = Instant::now();
    for _ in 0..times {
        events += profile.map_stored_body(&body, received_at)?.events.len();
    }
    let took = started.elapsed();
    println!(
        "{name}: {times} mappings, {events} events, {:.2} us a mapping",
        took.as_secs_f64() * 1e6 / f64::from(times)
    );
    Ok(())
}
