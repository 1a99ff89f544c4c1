//! The tag of an internally tagged JSON message (`{"type":"WebhookV1",…}`), read without
//! parsing the message. serde finds the tag of an internally tagged enum wherever it is by first
//! copying the whole message into its buffered form; a reader that already knows where the tag
//! is when the message came from a known writer reads it from the first bytes instead, then the
//! message straight into the tag's struct (docs/performance.md).

/// The value of `"type"` when it is the object's first key and a string without escapes, as
/// serde writes an internally tagged enum (`{"type":"X",…}`) and Postgres prints a `jsonb`
/// object whose other keys are all longer (`{"type": "X", …}`). `None` otherwise: the caller
/// then finds the tag by parsing.
pub fn leading_type(json: &[u8]) -> Option<&str> {
    let rest = json.strip_prefix(br#"{"type":"#)?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::leading_type;

    #[test]
    fn the_tag_is_read_only_where_a_known_writer_puts_it() {
        assert_eq!(
            leading_type(br#"{"type":"WebhookV1","id":"x"}"#),
            Some("WebhookV1")
        );
        assert_eq!(
            leading_type(br#"{"type": "shipment.status_changed", "version": 1}"#),
            Some("shipment.status_changed")
        );
        // Elsewhere, escaped, not a string, or not an object: left to a parse.
        assert_eq!(leading_type(br#"{"id":"x","type":"WebhookV1"}"#), None);
        assert_eq!(leading_type(br#"{ "type":"WebhookV1"}"#), None);
        assert_eq!(leading_type(br#"{"type":"Webhook\u0056\u0031"}"#), None);
        assert_eq!(leading_type(br#"{"type":7}"#), None);
        assert_eq!(leading_type(br#"{"type":"unterminated"#), None);
        assert_eq!(leading_type(b"[1]"), None);
    }
}
