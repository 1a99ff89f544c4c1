//! A small OTLP/HTTP trace receiver on 127.0.0.1, standing in for an OpenTelemetry collector:
//! processes under test export to it (`OTEL_EXPORTER_OTLP_ENDPOINT` = [`OtlpReceiver::endpoint`])
//! and tests read back every span they sent, decoded with the OpenTelemetry project's own
//! protobuf definitions (`opentelemetry-proto`), never with the exporter's code.
//!
//! It takes `POST /v1/traces` with an uncompressed `application/x-protobuf` body, what OTLP/HTTP
//! exporters send by default; a compressed, JSON or undecodable body is refused (400 or 415), so
//! a mismatch fails a test instead of passing quietly.
//! Self-contained: it depends on no other part of the test harness.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One exported span, flattened: ids in lowercase hex, attribute values as text.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The exporting process's `service.name` resource attribute.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// The W3C trace flags the exporter recorded (bit 0: sampled).
    pub flags: u32,
    /// The span's attributes, in the order sent.
    pub attributes: Vec<(String, String)>,
    /// The span's events (log lines inside it): name and attributes.
    pub events: Vec<ReceivedEvent>,
    /// The span's links to other spans.
    pub links: Vec<ReceivedLink>,
    /// Start time, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End time, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
}

/// An event of a [`ReceivedSpan`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    /// The event's name (a log line's message).
    pub name: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
}

/// A link of a [`ReceivedSpan`] to another span.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLink {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The link's attributes.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the span is a root (no parent).
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// Every text the span carries in attributes, events and links (keys and values), for
    /// searching it for data that must not be there.
    pub fn texts(&self) -> Vec<&str> {
        let mut texts = vec![self.name.as_str()];
        let pairs = self
            .attributes
            .iter()
            .chain(self.events.iter().flat_map(|event| &event.attributes))
            .chain(self.links.iter().flat_map(|link| &link.attributes));
        for (key, value) in pairs {
            texts.push(key);
            texts.push(value);
        }
        texts.extend(self.events.iter().map(|event| event.name.as_str()));
        texts
    }
}

/// The receiver: every span exported to it, in arrival order.
#[derive(Clone)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<u64>>,
}

impl OtlpReceiver {
    /// Starts a receiver on a fresh port of 127.0.0.1; it serves until the process ends.
    pub async fn start() -> anyhow::Result<OtlpReceiver> {
        let spans: Arc<Mutex<Vec<ReceivedSpan>>> = Arc::default();
        let requests: Arc<Mutex<u64>> = Arc::default();
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export))
            .with_state((Arc::clone(&spans), Arc::clone(&requests)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the OTLP receiver")?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(OtlpReceiver {
            addr,
            spans,
            requests,
        })
    }

    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT` (exporters append `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.spans).clone()
    }

    /// How many export requests arrived (each may hold many spans).
    pub fn requests(&self) -> u64 {
        *lock(&self.requests)
    }

    /// Forgets every span received so far.
    pub fn clear(&self) {
        lock(&self.spans).clear();
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        lock(&self.spans)
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// Waits up to `within` until `done` holds for the spans received; returns them either way.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

type Shared = (Arc<Mutex<Vec<ReceivedSpan>>>, Arc<Mutex<u64>>);

async fn export(
    State((spans, requests)): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only application/x-protobuf is accepted",
        )
            .into_response();
    }
    if headers.contains_key(header::CONTENT_ENCODING) {
        return (
            StatusCode::BAD_REQUEST,
            "compressed bodies are not accepted",
        )
            .into_response();
    }
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("undecodable: {error}")).into_response();
        }
    };
    let received = flatten(request);
    lock(&spans).extend(received);
    *lock(&requests) += 1;
    let answer = ExportTraceServiceResponse {
        partial_success: None,
    };
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        answer.encode_to_vec(),
    )
        .into_response()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    flags: span.flags,
                    attributes: pairs(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|event| ReceivedEvent {
                            name: event.name.clone(),
                            attributes: pairs(&event.attributes),
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|link| ReceivedLink {
                            trace_id: hex(&link.trace_id),
                            span_id: hex(&link.span_id),
                            attributes: pairs(&link.attributes),
                        })
                        .collect(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
    }
    out
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// An attribute value as text (arrays and maps flattened), so tests can search every value.
fn text(value: Option<&AnyValue>) -> String {
    let Some(value) = value.and_then(|any| any.value.as_ref()) else {
        return String::new();
    };
    match value {
        any_value::Value::StringValue(text) => text.clone(),
        any_value::Value::BoolValue(flag) => flag.to_string(),
        any_value::Value::IntValue(number) => number.to_string(),
        any_value::Value::DoubleValue(number) => number.to_string(),
        any_value::Value::BytesValue(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        any_value::Value::ArrayValue(array) => array
            .values
            .iter()
            .map(|item| text(Some(item)))
            .collect::<Vec<_>>()
            .join(", "),
        any_value::Value::KvlistValue(list) => list
            .values
            .iter()
            .map(|kv| format!("{}={}", kv.key, text(kv.value.as_ref())))
            .collect::<Vec<_>>()
            .join(", "),
        any_value::Value::StringValueStrindex(index) => index.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    if bytes.iter().all(|byte| *byte == 0) {
        return String::new();
    }
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The spans of one trace as an indented tree, children under their parent (by start time),
/// each line `name [service]` with its links (`⇢ name`, or the linked ids when the linked span
/// is not among `known`). A span whose parent was not received is shown as a root marked
/// `(parent not received)`.
pub fn render_tree(trace: &[ReceivedSpan], known: &[ReceivedSpan]) -> String {
    let ids: HashSet<&str> = trace.iter().map(|span| span.span_id.as_str()).collect();
    let names: HashMap<&str, &str> = known
        .iter()
        .map(|span| (span.span_id.as_str(), span.name.as_str()))
        .collect();
    let mut children: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    let mut roots = Vec::new();
    for span in trace {
        if ids.contains(span.parent_span_id.as_str()) {
            children
                .entry(span.parent_span_id.as_str())
                .or_default()
                .push(span);
        } else {
            roots.push(span);
        }
    }
    roots.sort_by_key(|span| span.start_unix_nano);
    for list in children.values_mut() {
        list.sort_by_key(|span| span.start_unix_nano);
    }
    let mut out = String::new();
    for root in roots {
        write_node(&mut out, root, 0, &children, &names);
    }
    out
}

fn write_node(
    out: &mut String,
    span: &ReceivedSpan,
    depth: usize,
    children: &BTreeMap<&str, Vec<&ReceivedSpan>>,
    names: &HashMap<&str, &str>,
) {
    let orphan = if depth == 0 && !span.is_root() {
        " (parent not received)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{}{} [{}]{orphan}",
        "  ".repeat(depth),
        span.name,
        span.service
    );
    for link in &span.links {
        let target = names.get(link.span_id.as_str()).map_or_else(
            || format!("{}/{}", link.trace_id, link.span_id),
            |name| (*name).to_owned(),
        );
        let _ = writeln!(out, "{}  ⇢ link to {target}", "  ".repeat(depth));
    }
    for child in children.get(span.span_id.as_str()).into_iter().flatten() {
        write_node(out, child, depth + 1, children, names);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};

    use super::*;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let root = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            name: "root".to_owned(),
            attributes: vec![string("carrier", "acme")],
            ..Default::default()
        };
        let child = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![1; 8],
            name: "child".to_owned(),
            events: vec![span::Event {
                name: "something happened".to_owned(),
                attributes: vec![string("error", "boom")],
                ..Default::default()
            }],
            links: vec![span::Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![3; 8],
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", "svc")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![root, child],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[tokio::test]
    async fn decodes_what_an_exporter_posts_and_refuses_what_it_cannot_read() {
        let receiver = OtlpReceiver::start().await.expect("start");
        let http = raw_post(
            &receiver,
            "application/x-protobuf",
            request().encode_to_vec(),
        );
        assert_eq!(http.await, 200);
        let spans = receiver.spans();
        assert_eq!(spans.len(), 2);
        let child = spans.iter().find(|s| s.name == "child").expect("child");
        assert_eq!(child.service, "svc");
        assert_eq!(child.trace_id, "ab".repeat(16));
        assert_eq!(child.parent_span_id, "01".repeat(8));
        assert_eq!(child.links[0].span_id, "03".repeat(8));
        assert!(child.texts().contains(&"boom"));
        assert!(spans.iter().any(|s| s.name == "root" && s.is_root()));
        let tree = render_tree(&receiver.trace(&"ab".repeat(16)), &spans);
        assert_eq!(
            tree,
            format!(
                "root [svc]\n  child [svc]\n    ⇢ link to {}/{}\n",
                "cd".repeat(16),
                "03".repeat(8)
            )
        );
        assert_eq!(
            raw_post(&receiver, "application/x-protobuf", b"\xff\xff".to_vec()).await,
            400
        );
        assert_eq!(
            raw_post(&receiver, "application/json", b"{}".to_vec()).await,
            415
        );
        assert_eq!(receiver.spans().len(), 2, "refused bodies add nothing");
    }

    /// A bare HTTP/1.1 POST over a TCP stream (the harness library has no HTTP client).
    async fn raw_post(receiver: &OtlpReceiver, content_type: &str, body: Vec<u8>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(receiver.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            receiver.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(&body).await.expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }
}
