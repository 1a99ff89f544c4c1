//! How the CLI writes (see `docs/cli.md`): stdout carries only a command's result — a table
//! with a header line, one JSON document (`--json`), or the one value a script captures (a new
//! key or secret, the ids acted on) — and everything else (confirmations, notes, progress,
//! logs at any `RUST_LOG`) goes to stderr.

use std::borrow::Cow;

use waybill_telemetry::escape::{EscapeStyle, escape};

/// A free-text table cell (a reason, a name, a URL, an error), with control characters,
/// line separators and bidi controls escaped: stored text must not break a row or drive the
/// terminal.
pub fn cell(text: &str) -> Cow<'_, str> {
    escape(text, EscapeStyle::Text)
}

/// Prints `value` as one pretty JSON document on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
