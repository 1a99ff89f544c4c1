//! The books of one fault run, shared by the single-node and the cluster fault suites: the
//! load profile, a row of the table (ledger, effects, recovery) with the checks that must hold,
//! and the table itself.

use std::fmt;
use std::time::{Duration, Instant};

use waybill_bench::loadgen::{Ledger, LoadgenArgs};

use super::downstream::DownstreamLedger;
use super::effects::Effects;
use super::probes::unavailable_answers;
use waybill_e2e::stack::{self, Stack};

/// How long and how hard each fault runs.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Length of the sending phase.
    pub load: Duration,
    /// Requests per second.
    pub rate: f64,
    /// When, into the sending phase, the fault is injected.
    pub warmup: Duration,
    /// How long an outage lasts.
    pub hold: Duration,
}

impl Profile {
    /// The CI form: a few seconds per fault.
    pub fn reduced() -> Profile {
        Profile {
            load: Duration::from_secs(8),
            rate: 150.0,
            warmup: Duration::from_millis(2500),
            hold: Duration::from_secs(3),
        }
    }

    /// `WAYBILL_FAULTS_FULL=1`: a minute of load per fault, 15 s outages.
    pub fn full() -> Profile {
        Profile {
            load: Duration::from_secs(60),
            rate: 400.0,
            warmup: Duration::from_secs(20),
            hold: Duration::from_secs(15),
        }
    }
}

/// One line of the table.
#[derive(Debug, Default)]
pub struct Row {
    pub fault: String,
    pub ledger: Option<Ledger>,
    pub effects: Option<Effects>,
    /// The downstream books (the downstream fault only).
    pub downstream: Option<DownstreamLedger>,
    pub recovery: Option<Duration>,
    /// `503`s the ingress answered (from its metrics; an ingress killed mid-run loses its own
    /// count, so the kill fault counts what it had answered before the kill).
    pub unavailable: Option<u64>,
    pub notes: Vec<String>,
    /// Checks that did not hold (the suite fails when any row has one).
    pub failures: Vec<String>,
}

impl Row {
    /// The row of the fault `name`, with nothing measured yet.
    pub fn new(name: &str) -> Row {
        Row {
            fault: name.to_owned(),
            ..Row::default()
        }
    }

    /// The value, or `None` and a failure saying what could not be done.
    pub fn record<T>(&mut self, result: anyhow::Result<T>, cannot: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.failures.push(format!("{cannot}: {error:#}"));
                None
            }
        }
    }

    /// Starts every process of the stack; when that fails, it is a failure, the logs are noted
    /// and the stack is removed.
    pub async fn started(&mut self, mut stack: Stack) -> Option<Stack> {
        if let Err(error) = stack.start_all().await {
            self.failures
                .push(format!("cannot start the stack: {error:#}"));
            let logs = stack.destroy_keeping_logs().await;
            self.notes.push(format!("logs in {}", logs.display()));
            return None;
        }
        Some(stack)
    }

    /// Runs the suite's load through the stack while `inject` breaks something, then takes in
    /// what both reported.
    pub async fn load_while(
        &mut self,
        stack: &mut Stack,
        profile: &Profile,
        inject: impl AsyncFnOnce(&mut Stack) -> anyhow::Result<Outcome>,
    ) {
        let settings = stack.settings.clone();
        let args = load_args(stack, profile);
        let (ledger, injected) =
            tokio::join!(waybill_bench::loadgen::run(&args, &settings), inject(stack));
        self.settle(stack, ledger, injected).await;
    }

    /// Takes in what the load and the injection of the fault reported: the ledger, the
    /// recovery, the `503`s, the notes and the failures.
    async fn settle(
        &mut self,
        stack: &Stack,
        ledger: anyhow::Result<Ledger>,
        injected: anyhow::Result<Outcome>,
    ) {
        match ledger {
            Ok(ledger) => self.ledger = Some(ledger),
            Err(error) => self.failures.push(format!("loadgen failed: {error:#}")),
        }
        match injected {
            Ok(outcome) => {
                self.recovery = outcome.recovery;
                let now = unavailable_answers(stack).await;
                // Less the 503s the suite's own probes got: the column is the couriers'.
                self.unavailable = now.map(|now| {
                    (now + outcome.unavailable_before_restart).saturating_sub(
                        super::effects::PROBE_UNAVAILABLE
                            .swap(0, std::sync::atomic::Ordering::Relaxed),
                    )
                });
                self.notes.extend(outcome.notes);
                self.failures.extend(outcome.failures);
            }
            Err(error) => self
                .failures
                .push(format!("injecting the fault failed: {error:#}")),
        }
    }

    /// Checks the stack's database for lost and duplicated effects (retrying while Postgres
    /// comes back), noting what it found.
    pub async fn check_effects(&mut self, stack: &Stack) {
        match super::effects::check(&stack.database_url()).await {
            Ok(effects) => {
                self.notes.push(format!(
                    "{} events in {} shipments",
                    effects.events, effects.shipments
                ));
                self.effects = Some(effects);
            }
            Err(error) => self
                .failures
                .push(format!("effects check failed: {error:#}")),
        }
    }

    /// Balances the books, keeps the logs of a failed fault (or all with
    /// `WAYBILL_FAULTS_KEEP_LOGS`), and removes the stack.
    pub async fn close(mut self, stack: Stack) -> Row {
        self.reconcile();
        let keep_logs = std::env::var_os("WAYBILL_FAULTS_KEEP_LOGS").is_some();
        if self.failures.is_empty() && !keep_logs {
            stack.destroy().await;
        } else {
            let logs = stack.destroy_keeping_logs().await;
            self.notes.push(format!("logs in {}", logs.display()));
        }
        self
    }

    pub fn requests(&self) -> u64 {
        self.ledger.as_ref().map_or(0, |l| l.requests.sent)
    }

    pub fn lost(&self) -> Option<u64> {
        self.ledger.as_ref()?.drain.as_ref().map(|d| d.lost)
    }

    /// Verifies the books: nothing lost, nothing doubled, no answer against its intent.
    pub fn reconcile(&mut self) {
        match &self.ledger {
            None => self.failures.push("no ledger".to_owned()),
            Some(ledger) => {
                let r = &ledger.requests;
                if r.unexpected > 0 {
                    self.failures.push(format!(
                        "{} answers contradicted their intent",
                        r.unexpected
                    ));
                }
                if r.server_errors + r.transport_errors > 0 {
                    self.failures.push(format!(
                        "{} requests still failed after every retry ({} 5xx, {} transport)",
                        r.server_errors + r.transport_errors,
                        r.server_errors,
                        r.transport_errors
                    ));
                }
                match &ledger.drain {
                    None => self.failures.push("no Postgres accounting".to_owned()),
                    Some(drain) if drain.expected_events == 0 => self
                        .failures
                        .push("nothing was accepted: the run proves nothing".to_owned()),
                    Some(drain) if drain.lost > 0 => self.failures.push(format!(
                        "{} accepted events are not in Postgres",
                        drain.lost
                    )),
                    Some(_) => {}
                }
            }
        }
        match &self.effects {
            None => self.failures.push("no effects check".to_owned()),
            Some(effects) if effects.duplicated() > 0 => self
                .failures
                .push(format!("duplicated effects: {effects:?}")),
            Some(_) => {}
        }
    }
}

/// The loadgen run for a stack: steady rate, duplicates and out-of-order scans mixed in, a few
/// invalid requests, and couriers that retry for as long as any outage here lasts.
fn load_args(stack: &Stack, profile: &Profile) -> LoadgenArgs {
    LoadgenArgs {
        ingress: Some(stack.ingress_url()),
        worker: Some(stack.worker_url(0)),
        sources: Vec::new(),
        rate: profile.rate,
        concurrency: 24,
        duration: profile.load,
        count: None,
        duplicates: 0.1,
        out_of_order: 0.3,
        invalid: 0.02,
        shipments_in_flight: 10,
        retries: 300,
        max_retry_delay: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(30),
        no_drain: false,
        json: false,
        quiet: true,
    }
}

/// What injecting a fault observed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub recovery: Option<Duration>,
    /// `503`s answered by an ingress that was then killed.
    pub unavailable_before_restart: u64,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn check(&mut self, holds: bool, what: impl Into<String>) {
        if !holds {
            self.failures.push(what.into());
        }
    }

    pub fn record<T>(&mut self, result: anyhow::Result<T>, doing: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.failures.push(format!("{doing}: {error:#}"));
                None
            }
        }
    }
}

/// The table.
pub struct Table<'a>(pub &'a [Row]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| fault | requests | accepted | retried | attempts | 503s | connection errors | lost | duplicated effects | recovery | notes |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
        for row in self.0 {
            let (accepted, retried, attempts) = row.ledger.as_ref().map_or((0, 0, 0), |l| {
                (l.requests.accepted, l.requests.retried, l.requests.attempts)
            });
            // Every attempt beyond the first was a retry after a 5xx or a connection error.
            let retries = attempts.saturating_sub(row.requests());
            let (unavailable, connection_errors) = match row.unavailable {
                Some(n) if row.ledger.is_some() => {
                    (n.to_string(), retries.saturating_sub(n).to_string())
                }
                _ => ("?".to_owned(), "?".to_owned()),
            };
            let lost = row.lost().map_or_else(|| "?".to_owned(), |n| n.to_string());
            let duplicated = row.effects.map_or_else(
                || "?".to_owned(),
                |e| {
                    let downstream = row.downstream.map_or(0, |d| d.duplicated());
                    (e.duplicated() as u64 + downstream).to_string()
                },
            );
            let recovery = row
                .recovery
                .map_or_else(|| "?".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
            let mut notes = row.notes.clone();
            notes.extend(
                row.failures
                    .iter()
                    .map(|failure| format!("FAILED: {failure}")),
            );
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.fault,
                row.requests(),
                accepted,
                retried,
                attempts,
                unavailable,
                connection_errors,
                lost,
                duplicated,
                recovery,
                notes.join("; ")
            )?;
        }
        Ok(())
    }
}

/// Prints the suite's table (and writes it to `table_file` in the temporary directory), then
/// fails naming every fault's failures, if any.
pub fn report(rows: &[Row], started: Instant, table_file: &str, suite: &str) {
    let table = Table(rows).to_string();
    println!("\n{table}");
    println!("suite took {:.0} s", started.elapsed().as_secs_f64());
    let _ = std::fs::write(std::env::temp_dir().join(table_file), &table);

    let failed: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.failures
                .iter()
                .map(move |f| format!("{}: {f}", row.fault))
        })
        .collect();
    assert!(failed.is_empty(), "{suite} found:\n{}", failed.join("\n"));
}

/// The faults of `all` that the environment variable `variable` names (all when it is unset),
/// failing when it names none or when the binaries the stacks run are missing.
pub fn select<F: Copy>(
    all: impl IntoIterator<Item = F>,
    name: impl Fn(F) -> &'static str,
    variable: &str,
) -> Vec<F> {
    let only = names(variable);
    let faults: Vec<F> = all
        .into_iter()
        .filter(|&fault| only.is_empty() || only.iter().any(|n| n == name(fault)))
        .collect();
    assert!(!faults.is_empty(), "{variable}={only:?} names no fault");
    if let Err(error) = stack::bin_dir() {
        panic!("{error:#}");
    }
    faults
}

/// Runs the faults one after the other, saying how long each took and whether it failed.
pub async fn run_each<F: Copy, R: Future<Output = Row>>(
    faults: Vec<F>,
    name: impl Fn(F) -> &'static str,
    mut run: impl FnMut(F) -> R,
) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for fault in faults {
        let began = Instant::now();
        let row = run(fault).await;
        eprintln!(
            "{}: {} in {:.0} s",
            name(fault),
            if row.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            began.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    rows
}

/// Whether the environment variable `name` is set to something other than empty or `0`.
pub fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The comma-separated names in the environment variable `name` (none when unset).
pub fn names(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}
