//! Log lines are data, never markup. A value that came from a request — a path segment, a
//! header, a carrier code, an error quoting a payload — must not be able to end a log line,
//! start a forged one, move the cursor or colour an operator's terminal, in either format.
//!
//! Two layers, so no call site has to remember:
//!
//! * [`EscapedFields`] formats the fields of the human-readable format: a value that is not a
//!   plain word is quoted and escaped (`source="evil\nline"`, logfmt-style), so a value can
//!   never pose as another field either; the message keeps its words but has its control
//!   characters escaped. (The JSON format quotes every value by construction.)
//! * [`Escaping`] wraps the output: whatever a formatter produced, each event is one line —
//!   every control character (C0, DEL, C1), line or paragraph separator and bidi control that is
//!   not the event's final newline is written as an escape (`\u{1b}` in text, `\u001b` in JSON,
//!   which keeps the JSON valid).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

/// Whether `c` must not appear raw in a log line: control characters, the Unicode line and
/// paragraph separators, and the bidi controls that reorder how a line is displayed.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// How [`escape`] writes an escaped character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeStyle {
    /// Rust's `\u{1b}`, for the human-readable format.
    Text,
    /// JSON's `\u001b`, valid inside the JSON strings it can only appear in.
    Json,
}

/// `text` with every character [`needs_escape`] says must not appear raw written as an escape;
/// borrowed when there is none.
pub fn escape(text: &str, style: EscapeStyle) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            escaped.push(c);
            continue;
        }
        // Writing to a String cannot fail.
        let _ = match style {
            EscapeStyle::Text => write!(escaped, "\\u{{{:x}}}", u32::from(c)),
            EscapeStyle::Json => write!(escaped, "\\u{:04x}", u32::from(c)),
        };
    }
    Cow::Owned(escaped)
}

/// The field formatter of the human-readable format (see the module).
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = FieldVisitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct FieldVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl FieldVisitor<'_, '_> {
    fn write(&mut self, field: &Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(
                self.writer,
                "{separator}{}",
                escape(text, EscapeStyle::Text)
            )
        } else if is_plain(text) {
            write!(self.writer, "{separator}{}={text}", field.name())
        } else if is_string_literal(text) {
            // Already quoted (a `?`-recorded string): escaped, not quoted twice.
            write!(
                self.writer,
                "{separator}{}={}",
                field.name(),
                escape(text, EscapeStyle::Text)
            )
        } else {
            // Debug of a str quotes it and escapes quotes, backslashes and non-printables;
            // `escape` then catches what Debug prints as is (bidi controls).
            let quoted = format!("{text:?}");
            write!(
                self.writer,
                "{separator}{}={}",
                field.name(),
                escape(&quoted, EscapeStyle::Text)
            )
        };
    }
}

impl Visit for FieldVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// A value that reads the same quoted or not: printable ASCII without spaces, quotes,
/// backslashes or `=`.
fn is_plain(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
}

/// Whether `text` is one quoted string with every inner quote escaped, as `Debug` writes a
/// `str`: it cannot close early and pose as a second field.
fn is_string_literal(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let mut escaped = false;
    for c in inner.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            (false, _) => {}
        }
    }
    !escaped
}

/// A `MakeWriter` whose writers escape each event's text (see the module) before passing it on.
#[derive(Debug, Clone)]
pub struct Escaping<M> {
    inner: M,
    style: EscapeStyle,
}

impl<M> Escaping<M> {
    /// Wraps `inner`.
    pub fn new(inner: M, style: EscapeStyle) -> Escaping<M> {
        Escaping { inner, style }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Escaping<M> {
    type Writer = EscapingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter {
            inner: self.inner.make_writer(),
            style: self.style,
        }
    }
}

/// The writer of [`Escaping`]. The formatters write each event with one `write_all` of the
/// whole line, so every `write` is one event; only its final newline is kept raw.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    inner: W,
    style: EscapeStyle,
}

impl<W: io::Write> io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (line, newline) = match text.strip_suffix('\n') {
            Some(line) => (line, "\n"),
            None => (text.as_ref(), ""),
        };
        // The line and its newline go out in one write: another thread's event written to
        // the same (unbuffered) stderr between the two would join two events on one line.
        let mut escaped = escape(line, self.style).into_owned();
        escaped.push_str(newline);
        self.inner.write_all(escaped.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
