//! Where a phase's CPU went: the CPU time of the load generator, the ingress, the worker,
//! RabbitMQ and Postgres, read from `/proc` before and after the phase and divided by the
//! phase's units (messages, requests, events).
//!
//! This is what explains a ratio to a ceiling on a small machine: every process of the run
//! shares the same cores, so a figure is bounded by the CPU each unit costs all of them
//! together. Linux only; elsewhere every reading is zero and the table says so.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::procfs::{machine_seconds, process_seconds, processes};

/// CPU seconds used so far, by component, and the machine's busy and total time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuReading {
    /// This process: the load generator or the raw clients.
    pub bench: f64,
    /// The ingress child.
    pub ingress: f64,
    /// The worker child.
    pub worker: f64,
    /// Every `beam.smp` process (RabbitMQ).
    pub broker: f64,
    /// Every `postgres` process, with the backends that exited.
    pub database: f64,
    /// The machine's busy time over all cores.
    pub busy: f64,
    /// The machine's busy plus idle time over all cores.
    pub total: f64,
}

impl CpuReading {
    /// Reads the counters now; `ingress` and `worker` are the children's process ids.
    pub fn now(ingress: Option<u32>, worker: Option<u32>) -> CpuReading {
        CpuReading::with_workers(ingress, worker.as_slice())
    }

    /// [`CpuReading::now`] with several worker processes, whose time is added up as `worker`.
    pub fn with_workers(ingress: Option<u32>, workers: &[u32]) -> CpuReading {
        let mut reading = CpuReading {
            bench: process_seconds(std::process::id(), false),
            ingress: ingress.map_or(0.0, |pid| process_seconds(pid, false)),
            worker: workers.iter().map(|pid| process_seconds(*pid, false)).sum(),
            ..CpuReading::default()
        };
        for (pid, name) in processes() {
            match name.as_str() {
                "beam.smp" => reading.broker += process_seconds(pid, true),
                // The postmaster's children's time holds the backends that have exited.
                "postgres" => reading.database += process_seconds(pid, true),
                _ => {}
            }
        }
        (reading.busy, reading.total) = machine_seconds();
        reading
    }

    /// This reading with `seconds` of Postgres' time counted as the load generator's (the
    /// accounting's lookups, which are the benchmark's work, not the measured process's).
    #[must_use]
    pub fn with_accounting(mut self, seconds: f64) -> CpuReading {
        let seconds = seconds.clamp(0.0, self.database);
        self.database -= seconds;
        self.bench += seconds;
        self
    }

    /// What was spent between `earlier` and this reading.
    #[must_use]
    pub fn since(&self, earlier: &CpuReading) -> CpuReading {
        let d = |now: f64, then: f64| (now - then).max(0.0);
        CpuReading {
            bench: d(self.bench, earlier.bench),
            ingress: d(self.ingress, earlier.ingress),
            worker: d(self.worker, earlier.worker),
            broker: d(self.broker, earlier.broker),
            database: d(self.database, earlier.database),
            busy: d(self.busy, earlier.busy),
            total: d(self.total, earlier.total),
        }
    }
}

/// One phase's CPU per unit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseCpu {
    /// The phase, as the table names it.
    pub phase: &'static str,
    /// What a unit is (`message`, `request`, `event`).
    pub unit: &'static str,
    /// CPU microseconds per unit, by component.
    pub per_unit_us: BTreeMap<&'static str, f64>,
    /// The share of the machine left idle during the phase.
    pub idle_share: f64,
}

/// The components in the order the table prints them.
pub const COMPONENTS: [&str; 6] = ["bench", "ingress", "worker", "broker", "database", "other"];

impl PhaseCpu {
    /// `spent` over `units` units of work.
    pub fn new(phase: &'static str, unit: &'static str, spent: &CpuReading, units: f64) -> Self {
        let units = units.max(1.0);
        let named = spent.bench + spent.ingress + spent.worker + spent.broker + spent.database;
        let values = [
            spent.bench,
            spent.ingress,
            spent.worker,
            spent.broker,
            spent.database,
            (spent.busy - named).max(0.0),
        ];
        PhaseCpu {
            phase,
            unit,
            per_unit_us: COMPONENTS
                .iter()
                .zip(values)
                .map(|(name, seconds)| (*name, seconds * 1e6 / units))
                .collect(),
            idle_share: if spent.total > 0.0 {
                1.0 - spent.busy / spent.total
            } else {
                0.0
            },
        }
    }

    /// All components together, µs per unit.
    pub fn total_us(&self) -> f64 {
        self.per_unit_us.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accounting's seconds move from Postgres' column to the load generator's, never more
    /// than Postgres spent, and the machine's totals do not change.
    #[test]
    fn the_accounting_is_counted_as_the_load_generators() {
        let spent = CpuReading {
            bench: 1.0,
            worker: 4.0,
            database: 2.0,
            busy: 8.0,
            total: 10.0,
            ..CpuReading::default()
        };
        let moved = spent.with_accounting(0.5);
        assert_eq!((moved.bench, moved.database), (1.5, 1.5));
        assert_eq!((moved.worker, moved.busy, moved.total), (4.0, 8.0, 10.0));
        let capped = spent.with_accounting(5.0);
        assert_eq!((capped.bench, capped.database), (3.0, 0.0));
    }

    #[test]
    fn this_process_is_seen_spending_cpu() {
        let before = CpuReading::now(None, None);
        let mut x = 0u64;
        // Spin until this process has been on a CPU for 300 ms of wall time *as the kernel
        // counts it*, or 20 s have passed: on a loaded machine 300 ms of wall time may give
        // the process far less CPU, and the test is about reading /proc, not about the load.
        let started = std::time::Instant::now();
        let mut spent = CpuReading::default();
        while started.elapsed() < std::time::Duration::from_secs(20) && spent.bench < 0.3 {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            spent = CpuReading::now(None, None).since(&before);
        }
        std::hint::black_box(x);
        // Ticks are 10 ms: what was spun must show as this process's CPU time.
        assert!(spent.bench >= 0.1, "spent {spent:?}");
        assert!(spent.busy >= spent.bench - 0.02, "spent {spent:?}");
        // Both are differences of large tick counts in floating point: allow its rounding.
        assert!(spent.total >= spent.busy - 1e-6, "spent {spent:?}");
    }

    #[test]
    fn per_unit_figures_divide_by_units_and_leave_the_rest_to_other() {
        let spent = CpuReading {
            bench: 1.0,
            ingress: 2.0,
            broker: 3.0,
            busy: 7.0,
            total: 10.0,
            ..CpuReading::default()
        };
        let phase = PhaseCpu::new("p", "request", &spent, 100_000.0);
        assert_eq!(phase.per_unit_us["bench"], 10.0);
        assert_eq!(phase.per_unit_us["ingress"], 20.0);
        assert_eq!(phase.per_unit_us["broker"], 30.0);
        assert_eq!(phase.per_unit_us["other"], 10.0);
        assert_eq!(phase.total_us(), 70.0);
        assert!((phase.idle_share - 0.3).abs() < 1e-9);
    }
}
