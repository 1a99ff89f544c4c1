//! What a caller hands to the [`crate::Publisher`].

use std::collections::BTreeMap;

/// One message to publish. Every message is published persistent (`delivery_mode` 2) and with
/// `content_type: application/json`; by default `mandatory` (an unroutable message is an
/// error, never a silent drop).
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The exchange (`""` is the default exchange, which routes by queue name).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The body (JSON by convention; never logged).
    pub body: Vec<u8>,
    /// The `message_id` property (an envelope id, an outbox id), for deduplication downstream.
    pub message_id: Option<String>,
    /// String headers, e.g. W3C `traceparent`. Names are at most 255 bytes.
    pub headers: BTreeMap<String, String>,
    /// Whether an unroutable message is returned as an error (`true`, the default) or
    /// dropped by the broker and confirmed (see [`OutboundMessage::routing_optional`]).
    pub mandatory: bool,
}

impl OutboundMessage {
    /// A message without id or headers.
    pub fn new(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        OutboundMessage {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body: body.into(),
            message_id: None,
            headers: BTreeMap::new(),
            mandatory: true,
        }
    }

    /// Publishes without `mandatory`: if no queue is bound for the routing key, the broker
    /// drops the message and confirms it. Only for a copy of a message that is published
    /// mandatory elsewhere, such as the per-tenant copy of a change.
    #[must_use]
    pub fn routing_optional(mut self) -> Self {
        self.mandatory = false;
        self
    }

    /// Sets the `message_id` property.
    #[must_use]
    pub fn with_message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    /// Adds a string header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Adds a string header when there is a value (e.g. an optional `traceparent`).
    #[must_use]
    pub fn with_optional_header(
        self,
        name: impl Into<String>,
        value: Option<impl Into<String>>,
    ) -> Self {
        match value {
            Some(value) => self.with_header(name, value),
            None => self,
        }
    }
}

impl std::fmt::Debug for OutboundMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the body: it may carry personal data.
        debug_fields!(f, self, "OutboundMessage" {
            exchange, routing_key,
            body_len = self.body.len(),
            message_id, headers, mandatory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_body_length_never_the_body() {
        let message = OutboundMessage::new("x", "y", b"secret".to_vec()).with_message_id("m-1");
        let shown = format!("{message:?}");
        assert!(
            shown.starts_with(
                r#"OutboundMessage { exchange: "x", routing_key: "y", body_len: 6, message_id: Some("m-1")"#
            ),
            "{shown}"
        );
        assert!(!shown.contains("secret"), "{shown}");
    }
}
