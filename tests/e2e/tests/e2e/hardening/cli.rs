//! The CLI's output discipline, against the real `waybill` binary with `RUST_LOG=trace`: every
//! subcommand (but the load tools) writes exactly its documented result on stdout — a table
//! with its header, one JSON document with `--json`, the one value a script captures, or
//! nothing — and every log line, note and confirmation on stderr.

use std::process::Output;

use serde_json::Value;

use waybill_e2e::stack::{Stack, bin_dir};

/// Runs `waybill args…` against the stack's configuration at `RUST_LOG=trace`.
fn waybill(stack: &Stack, args: &[&str]) -> Output {
    std::process::Command::new(bin_dir().expect("binaries").join("waybill"))
        .args(args)
        .env("WAYBILL_CONFIG", stack.log_dir().join("waybill.toml"))
        .env("RUST_LOG", "trace")
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("WAYBILL_BUS_PREFIX")
        .output()
        .expect("run waybill")
}

/// Runs a command that must succeed; returns its stdout, checked to hold no log line.
fn stdout_of(stack: &Stack, args: &[&str]) -> String {
    let output = waybill(stack, args);
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "waybill {args:?} failed:\n{stderr}"
    );
    for line in stdout.lines() {
        assert!(
            !is_log_line(line),
            "waybill {args:?} wrote a log line on stdout: {line:?}"
        );
    }
    stdout
}

/// A line of the log format: a timestamp, then a level.
fn is_log_line(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let stamp = words.next().unwrap_or_default();
    let level = words.next().unwrap_or_default();
    stamp.len() >= 20
        && stamp.as_bytes()[4] == b'-'
        && matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR")
}

fn json_of(stack: &Stack, args: &[&str]) -> Value {
    let stdout = stdout_of(stack, args);
    serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!("waybill {args:?}: stdout is not one JSON document ({error}):\n{stdout}")
    })
}

fn nothing_from(stack: &Stack, args: &[&str]) {
    let stdout = stdout_of(stack, args);
    assert!(
        stdout.is_empty(),
        "waybill {args:?} printed on stdout:\n{stdout}"
    );
}

/// A table: its header line (starting with `header`), then `rows` lines.
fn table_of(stack: &Stack, args: &[&str], header: &str, rows: usize) -> Vec<String> {
    let stdout = stdout_of(stack, args);
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert!(
        lines.first().is_some_and(|line| line.starts_with(header)),
        "waybill {args:?}: no header {header:?}:\n{stdout}"
    );
    assert_eq!(lines.len(), rows + 1, "waybill {args:?}:\n{stdout}");
    lines
}

/// One line that is the whole stdout, matching `valid`.
fn value_of(stack: &Stack, args: &[&str], valid: impl Fn(&str) -> bool) -> String {
    let stdout = stdout_of(stack, args);
    let value = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(
        !value.contains('\n') && valid(value),
        "waybill {args:?}: not one value:\n{stdout}"
    );
    value.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn every_subcommand_prints_only_its_result_on_stdout_whatever_rust_log_says() {
    let stack = Stack::create_with(
        "cli",
        0,
        "warn",
        "[fanout]\nallowed_hosts = [\"127.0.0.1\"]\n",
    )
    .await
    .expect("create the stack");
    // The logs go somewhere: stderr, at the level asked for.
    let migrate = waybill(&stack, &["migrate"]);
    assert!(migrate.status.success() && migrate.stdout.is_empty());
    let logged = String::from_utf8_lossy(&migrate.stderr);
    assert!(
        logged
            .lines()
            .any(|line| is_log_line(line) && line.contains(" DEBUG ")),
        "RUST_LOG=trace reached stderr:\n{logged}"
    );
    nothing_from(&stack, &["topology"]);

    let config = json_of(&stack, &["config", "--json"]);
    assert_eq!(
        config["sources"].as_array().map(Vec::len),
        Some(5),
        "{config}"
    );
    let lines = stdout_of(&stack, &["config"]);
    assert!(
        lines.starts_with("profiles: ") && lines.lines().count() == 6,
        "{lines}"
    );

    keys(&stack);
    shipments(&stack);
    cohorts(&stack);
    subscriptions(&stack);
    deliveries_and_dead_letters(&stack);
    stack.destroy().await;
}

fn keys(stack: &Stack) {
    let key = value_of(
        stack,
        &[
            "keys",
            "create",
            "--scope",
            "shipments:read",
            "--name",
            "cli",
        ],
        |v| waybill_core::access::ApiKey::parse(v).is_ok(),
    );
    let listed = json_of(stack, &["keys", "list", "--json"]);
    let prefix = listed[0]["prefix"].as_str().expect("a prefix").to_owned();
    assert!(key.starts_with(&prefix), "{listed}");
    table_of(stack, &["keys", "list"], "prefix", 1);
    nothing_from(stack, &["keys", "publish"]);
    nothing_from(stack, &["keys", "revoke", &prefix]);
}

fn shipments(stack: &Stack) {
    nothing_from(
        stack,
        &[
            "shipments",
            "register",
            "acme",
            "CLI0001",
            "--order-number",
            "O-1",
        ],
    );
    let shown = json_of(stack, &["shipments", "show", "acme", "CLI0001"]);
    assert_eq!(shown["tracking_number"], "CLI0001", "{shown}");
    assert_eq!(shown["order_number"], "O-1", "{shown}");
}

/// After [`shipments`]: its one shipment is this month's.
fn cohorts(stack: &Stack) {
    let listed = json_of(stack, &["cohorts", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|row| row["partition"].as_str())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "initial, this month, next month, default: {listed}"
    );
    assert_eq!(
        (names[0], names[3]),
        ("tracking_events_initial", "tracking_events_default")
    );
    let this_month = chrono::Utc::now().format("%Y-%m").to_string();
    assert_eq!(listed[1]["cohort"], this_month.as_str(), "{listed}");
    assert_eq!(listed[1]["shipments"], 1, "{listed}");
    assert!(listed[3]["shipments"].is_null(), "{listed}");
    assert!(
        listed
            .as_array()
            .is_some_and(|rows| rows.iter().all(|row| row["forgotten_from"].is_null())),
        "no retention is configured: {listed}"
    );
    let table = table_of(stack, &["cohorts"], "partition", 4);
    assert!(
        table[1].contains("never (no database.shipment_retention)"),
        "{table:?}"
    );
}

fn subscriptions(stack: &Stack) {
    let url = "http://127.0.0.1:9/hook";
    value_of(stack, &["subscriptions", "add", "--url", url], |v| {
        v.starts_with("whsec_")
    });
    let added = json_of(stack, &["subscriptions", "add", "--url", url, "--json"]);
    assert!(
        added["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_")),
        "{added}"
    );
    let id = added["id"].as_i64().expect("an id").to_string();
    let listed = json_of(stack, &["subscriptions", "list", "--json"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert!(
        !listed.to_string().contains("whsec_"),
        "list shows no secret: {listed}"
    );
    table_of(stack, &["subscriptions", "list"], "   ID", 2);
    nothing_from(stack, &["subscriptions", "disable", &id]);
    nothing_from(stack, &["subscriptions", "enable", &id]);
    value_of(stack, &["subscriptions", "rotate-secret", &id], |v| {
        v.starts_with("whsec_")
    });
    nothing_from(stack, &["subscriptions", "remove", &id]);
}

fn deliveries_and_dead_letters(stack: &Stack) {
    assert_eq!(
        json_of(stack, &["deliveries", "dead", "--json"]),
        Value::Array(vec![])
    );
    table_of(stack, &["deliveries", "dead"], "      ID", 0);
    nothing_from(stack, &["deliveries", "replay", "--subscription", "1"]);
    assert_eq!(
        json_of(stack, &["deadletters", "list", "--json"]),
        Value::Array(vec![])
    );
    table_of(stack, &["deadletters", "list"], "ID", 0);
    nothing_from(stack, &["deadletters", "replay", "--all"]);
    nothing_from(stack, &["deadletters", "purge", "--all"]);
    let missing = waybill(stack, &["deadletters", "show", "no-such-id", "--json"]);
    assert!(!missing.status.success() && missing.stdout.is_empty());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no dead letter"));
}
