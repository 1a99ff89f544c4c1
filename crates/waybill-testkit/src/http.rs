//! Local HTTP stand-ins on 127.0.0.1: [`Receiver`], a subscriber's endpoint answering from a
//! script, and [`FakeCourier`], a courier's tracking API answering from a function. Both record
//! every request they get.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Serves `router` on a fresh port of 127.0.0.1 until the process ends; returns its address.
pub async fn serve(router: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// A request a stand-in got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path and query.
    pub uri: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header's value, empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Verifies the signature with the `standardwebhooks` crate (not Waybill's signer).
    pub fn verify(&self, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
        standardwebhooks::Webhook::new(secret)?.verify(&self.body, &self.headers)
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, no body.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// Wait, then this status.
    Slow(Duration, u16),
    /// This status with a JSON body and, if given, a `Retry-After` header.
    Json {
        status: u16,
        body: Vec<u8>,
        retry_after: Option<String>,
    },
}

impl Reply {
    async fn respond(self) -> Response {
        let status = |code: u16| StatusCode::from_u16(code).expect("a valid status");
        match self {
            Reply::Status(code) => status(code).into_response(),
            Reply::RetryAfter(code, after) => {
                (status(code), [("retry-after", after)]).into_response()
            }
            Reply::Slow(wait, code) => {
                // The stand-in is slow on purpose: the time must pass.
                tokio::time::sleep(wait).await;
                status(code).into_response()
            }
            Reply::Json {
                status: code,
                body,
                retry_after,
            } => {
                let mut response =
                    (status(code), [("content-type", "application/json")], body).into_response();
                if let Some(after) = retry_after {
                    let value = after.parse().expect("a valid Retry-After value");
                    response.headers_mut().insert("retry-after", value);
                }
                response
            }
        }
    }
}

/// Chooses the reply to a request, given how many earlier requests had the same URI.
type Responder = Box<dyn FnMut(&Received, usize) -> Reply + Send>;

/// What every stand-in shares: the requests so far, how many are in flight, the responder.
struct Recorder {
    received: Mutex<Vec<Received>>,
    responder: Mutex<Responder>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Starts a server on 127.0.0.1 answering with `responder`; returns its base URL.
async fn start(responder: Responder) -> (String, Arc<Recorder>) {
    let recorder = Arc::new(Recorder {
        received: Mutex::new(Vec::new()),
        responder: Mutex::new(responder),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let router = axum::Router::new()
        .fallback(record)
        .with_state(Arc::clone(&recorder));
    let addr = serve(router).await.expect("bind a local stand-in");
    (format!("http://{addr}"), recorder)
}

async fn record(
    State(recorder): State<Arc<Recorder>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_in_flight = recorder.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    recorder
        .max_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    let request = Received {
        uri: uri.to_string(),
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    };
    let earlier = {
        let mut received = recorder.received.lock().unwrap();
        let earlier = received.iter().filter(|r| r.uri == request.uri).count();
        received.push(request.clone());
        earlier
    };
    let reply = (recorder.responder.lock().unwrap())(&request, earlier);
    let response = reply.respond().await;
    recorder.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

impl Recorder {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A subscriber's endpoint: answers `script` in order, then a default reply; records every
/// request (at its arrival) and the most requests it ever had in flight at once.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    recorder: Arc<Recorder>,
    default: Arc<Mutex<Reply>>,
}

impl Receiver {
    /// A receiver answering `script` in order, then 200.
    pub async fn start(script: Vec<Reply>) -> Receiver {
        Receiver::start_with_default(script, Reply::Status(200)).await
    }

    /// A receiver answering `script` in order, then `default` forever.
    pub async fn start_with_default(script: Vec<Reply>, default: Reply) -> Receiver {
        let mut script = VecDeque::from(script);
        let default = Arc::new(Mutex::new(default));
        let fallback = Arc::clone(&default);
        let (base, recorder) = start(Box::new(move |_, _| {
            script
                .pop_front()
                .unwrap_or_else(|| fallback.lock().unwrap().clone())
        }))
        .await;
        Receiver {
            base,
            recorder,
            default,
        }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// From now on, answer `reply` when the script is used up.
    pub fn answer_from_now_on(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.recorder.received()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.recorder.received.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.recorder.max_in_flight.load(Ordering::SeqCst)
    }
}

/// What a fake courier answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<String>,
}

impl Answer {
    /// 200 with this JSON body.
    pub fn ok(body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            body,
            retry_after: None,
        }
    }

    /// This status with a small JSON error body.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            body: br#"{"error":"x"}"#.to_vec(),
            retry_after: None,
        }
    }
}

/// Answers `uri` given how many earlier requests had the same URI.
type CourierResponder = Box<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// A courier's tracking API: answers with `responder(uri, n)`, where n counts earlier requests
/// with the same URI; records every request.
#[derive(Clone)]
pub struct FakeCourier {
    pub url: String,
    recorder: Arc<Recorder>,
    responder: Arc<Mutex<CourierResponder>>,
}

impl FakeCourier {
    pub async fn start(responder: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Self {
        let responder: Arc<Mutex<CourierResponder>> = Arc::new(Mutex::new(Box::new(responder)));
        let answering = Arc::clone(&responder);
        let (url, recorder) = start(Box::new(move |request, earlier| {
            let answer = (answering.lock().unwrap())(&request.uri, earlier);
            Reply::Json {
                status: answer.status,
                body: answer.body,
                retry_after: answer.retry_after,
            }
        }))
        .await;
        FakeCourier {
            url,
            recorder,
            responder,
        }
    }

    /// Changes the answers from now on.
    pub fn respond(&self, responder: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<Received> {
        self.recorder.received()
    }
}
