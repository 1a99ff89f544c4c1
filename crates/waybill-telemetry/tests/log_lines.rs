//! Log injection, in both formats: values carrying newlines, carriage returns, escape
//! sequences, NUL, C1 controls, line separators and bidi overrides — as plain, `%` and `?`
//! fields, in messages and in span fields — give exactly one line per event, no raw control
//! byte, no field a value could forge, and (in JSON) the values back byte for byte.

use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;
use waybill_telemetry::LogFormat;

/// Everything the layer wrote, one chunk per `write`.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<Vec<u8>>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// Each write, as text.
    fn writes(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|chunk| String::from_utf8(chunk.clone()).expect("the log is UTF-8"))
            .collect()
    }

    /// Everything written.
    fn text(&self) -> String {
        self.writes().concat()
    }
}

const HOSTILE: [&str; 8] = [
    "evil\nINFO forged line",
    "carriage\rreturn",
    "escape \u{1b}[31mred\u{1b}[0m",
    "nul\0byte",
    "next line\u{85}C1",
    "separator\u{2028}here",
    "bidi \u{202E}desrever",
    "a\" forged=\"field",
];

/// Logs one event per hostile value in every way a call site might, inside a span that carries
/// one too; returns what was written and how many events were logged.
fn log_everything(format: LogFormat) -> (Buffer, usize) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::registry().with(waybill_telemetry::log_layer(
        format,
        move || writer.clone(),
        false,
    ));
    let mut events = 0;
    tracing::subscriber::with_default(subscriber, || {
        for value in HOSTILE {
            let span = tracing::info_span!("request", path = value);
            let _entered = span.enter();
            tracing::info!(source = value, "plain field");
            tracing::info!(source = %value, "display field");
            tracing::info!(source = ?value, "debug field");
            tracing::warn!("message quoting {value}");
            events += 4;
        }
    });
    (buffer, events)
}

fn assert_one_clean_line_per_event(output: &str, events: usize) {
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), events, "one line per event:\n{output}");
    for line in &lines {
        let forbidden: Vec<char> = line
            .chars()
            .filter(|&c| waybill_telemetry::escape::needs_escape(c))
            .collect();
        assert!(forbidden.is_empty(), "raw {forbidden:?} in {line:?}");
        assert!(!line.starts_with("INFO forged"), "{line}");
    }
    assert!(output.ends_with('\n'));
}

#[test]
fn text_lines_escape_and_quote_every_value() {
    let (buffer, events) = log_everything(LogFormat::Pretty);
    let output = buffer.text();
    assert_one_clean_line_per_event(&output, events);
    // A message is free text (call sites put request data in fields, not in messages); a
    // field's value can never pose as another field.
    for line in output
        .lines()
        .filter(|line| !line.contains("message quoting"))
    {
        assert!(
            !line.contains(" forged=\"field"),
            "a value posed as a field: {line}"
        );
    }
    assert!(
        output.contains(r#"source="evil\nINFO forged line""#),
        "{output}"
    );
    assert!(output.contains(r"escape \u{1b}[31mred"), "{output}");
    assert!(output.contains(r"bidi \u{202e}desrever"), "{output}");
    assert!(
        output.contains("source=\"a\\\" forged=\\\"field\""),
        "{output}"
    );
}

#[test]
fn json_lines_escape_every_value_and_keep_it_intact() {
    let (buffer, events) = log_everything(LogFormat::Json);
    let output = buffer.text();
    assert_one_clean_line_per_event(&output, events);
    let mut plain_values = Vec::new();
    for line in output.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        if event["message"] == "plain field" {
            plain_values.push(event["source"].as_str().expect("a string").to_owned());
        }
    }
    assert_eq!(
        plain_values, HOSTILE,
        "JSON keeps every value, escaped, intact"
    );
}

/// Threads share one unbuffered stderr: an event split over two writes (the line, then its
/// newline) could have another thread's event land between them, joining two events on one
/// line. Every event must reach the writer as one write of the whole line.
#[test]
fn every_event_is_one_write_of_a_whole_line_in_both_formats() {
    for format in [LogFormat::Json, LogFormat::Pretty] {
        let (buffer, events) = log_everything(format);
        let chunks = buffer.writes();
        assert_eq!(chunks.len(), events, "{format:?}: {chunks:?}");
        for chunk in &chunks {
            assert!(
                chunk.ends_with('\n') && chunk.matches('\n').count() == 1,
                "{format:?}: not one whole line: {chunk:?}"
            );
        }
    }
}
