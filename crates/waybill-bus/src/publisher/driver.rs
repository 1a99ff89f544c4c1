//! One task per pooled channel: it sends that channel's publishes and pairs each with its broker
//! confirm — and with its `basic.return`.
//!
//! # Why not simply await lapin's confirm future in each caller
//!
//! With `mandatory`, RabbitMQ sends `basic.return` for an unroutable message and then its
//! `basic.ack`, and it coalesces acks (`multiple: true`). lapin 4.12 attaches a returned message
//! to *whichever* confirm it resolves first after the return arrived: when one ack covers several
//! publishes that is the first tag in `HashMap` order, not necessarily the returned publish. A
//! caller awaiting its own confirm then sometimes sees a plain ack for an unroutable message (and
//! would answer 200 for a message no queue holds) while a neighbour sees a stranger's return.
//! Measured with plain lapin, 4000 pipelined publishes of which 800 unroutable: 4–5 of each kind
//! of mistake per run.
//!
//! # How this task gets it right
//!
//! Each message carries a publish id header, and this task owns every publish and confirm of its
//! channel:
//!
//! 1. It sends publishes itself (many in flight at once), numbering them in the order it starts
//!    them, so no confirm exists that it does not own.
//! 2. It polls every outstanding confirm, repeating full passes until a pass finds nothing newly
//!    resolved, and reads the publish id out of every returned message, marking *that* publish
//!    as returned — or, when that publish is still being sent, keeping the return until it is.
//! 3. It answers the caller of a resolved publish only once every publish it had *started* when
//!    it saw that confirm resolved has finished sending (and so has been through step 2).
//!
//! This is exact, not a heuristic. A return is taken by the first confirm lapin resolves after
//! the return arrived, which is at or before the returned publish's own confirm (the broker sends
//! the return first). That holder's publish was started before our observation, so by step 3 it
//! is owned and polled; a full pass after the observation sees it resolved (resolution happened
//! before), so its return has been attributed before the answer goes out.
//!
//! Note that a confirm (and a return) can arrive before lapin's `basic_publish` future has even
//! returned the confirm future — the broker can be faster than the frame-write handshake between
//! lapin's IO thread and this task. Both the barrier of step 3 and the kept returns of step 2
//! exist for that case; the pipelining test catches either one missing within a few runs.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::PublishError;
use crate::headers::{PUBLISH_ID_HEADER, as_integer};

/// One publish asked of the channel's task.
pub(crate) struct Request {
    /// The id stamped in the message's [`PUBLISH_ID_HEADER`] (already in `properties`).
    pub(crate) publish_id: i64,
    /// The exchange, as sent.
    pub(crate) exchange: ShortString,
    /// The routing key, as sent.
    pub(crate) routing_key: ShortString,
    /// The body.
    pub(crate) body: Vec<u8>,
    /// The properties, headers included.
    pub(crate) properties: BasicProperties,
    /// When the caller stops waiting.
    pub(crate) deadline: Instant,
    /// Where the outcome goes.
    pub(crate) responder: oneshot::Sender<Result<(), PublishError>>,
    /// Held until the confirm resolves, so the publisher's in-flight bound counts this publish.
    pub(crate) permit: OwnedSemaphorePermit,
}

/// How a confirm resolved.
enum Resolution {
    Ack,
    Nack,
    NotRequested,
    Failed(lapin::Error),
}

/// A returned (unroutable) message, reduced to what attribution needs.
struct Returned {
    publish_id: Option<i64>,
    reply_code: u16,
    reply_text: String,
}

/// What a caller gets told, and what it holds meanwhile.
struct Caller {
    publish_id: i64,
    exchange: ShortString,
    routing_key: ShortString,
    deadline: Instant,
    responder: Option<oneshot::Sender<Result<(), PublishError>>>,
    _permit: OwnedSemaphorePermit,
}

/// A publish that was sent and awaits its confirm.
struct Tracked {
    caller: Caller,
    confirm: Option<PublisherConfirm>,
    resolution: Option<Resolution>,
    /// The highest publish sequence started when the resolution was observed (step 3).
    barrier: u64,
    returned: Option<Returned>,
}

type Sending =
    Pin<Box<dyn Future<Output = (u64, Caller, Result<PublisherConfirm, lapin::Error>)> + Send>>;

// A short-lived value on the driver's stack, never stored: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Received(Option<Request>),
    Sent(u64, Caller, Result<PublisherConfirm, lapin::Error>),
    Resolved,
    Deadline,
}

/// Runs until `incoming` is closed (the link was dropped) and every caller has been answered.
/// `on_channel_failure` is called when the channel or connection fails under a publish, so that
/// the publisher reconnects.
pub(crate) async fn drive(
    channel: Channel,
    mut incoming: mpsc::UnboundedReceiver<Request>,
    confirm_timeout: Duration,
    on_channel_failure: impl Fn(),
) {
    let mut sending: FuturesUnordered<Sending> = FuturesUnordered::new();
    // Publishes being sent: sequence -> publish id.
    let mut started: BTreeMap<u64, i64> = BTreeMap::new();
    // Returns naming a publish that was still being sent when they were harvested.
    let mut early_returns: HashMap<i64, Returned> = HashMap::new();
    let mut next_sequence: u64 = 1;
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut returns: Vec<Returned> = Vec::new();
    let mut incoming_open = true;
    loop {
        if !incoming_open
            && sending.is_empty()
            && tracked.iter().all(|entry| entry.caller.responder.is_none())
        {
            // Nobody is waiting any more; confirms still outstanding go with the channel.
            return;
        }
        let next_deadline = tracked
            .iter()
            .filter(|entry| entry.caller.responder.is_some())
            .map(|entry| entry.caller.deadline)
            .min();
        let highest_started = next_sequence - 1;
        let wake = tokio::select! {
            received = incoming.recv(), if incoming_open => Wake::Received(received),
            Some((sequence, caller, sent)) = sending.next(), if !sending.is_empty() => Wake::Sent(sequence, caller, sent),
            () = poll_fn(|cx| {
                if harvest(&mut tracked, cx, &mut returns, highest_started) { Poll::Ready(()) } else { Poll::Pending }
            }) => Wake::Resolved,
            () = sleep_until_some(next_deadline), if next_deadline.is_some() => Wake::Deadline,
        };
        match wake {
            Wake::Received(None) => incoming_open = false,
            Wake::Received(Some(request)) => {
                let mut request = Some(request);
                while let Some(next) = request.take().or_else(|| incoming.try_recv().ok()) {
                    let sequence = next_sequence;
                    next_sequence += 1;
                    started.insert(sequence, next.publish_id);
                    sending.push(send(channel.clone(), sequence, next));
                }
            }
            Wake::Sent(sequence, caller, sent) => {
                started.remove(&sequence);
                match sent {
                    Ok(confirm) => tracked.push(Tracked {
                        returned: early_returns.remove(&caller.publish_id),
                        caller,
                        confirm: Some(confirm),
                        resolution: None,
                        barrier: 0,
                    }),
                    Err(error) => {
                        early_returns.remove(&caller.publish_id);
                        answer(
                            caller,
                            Err(PublishError::lost("the publishing channel failed", error)),
                        );
                        on_channel_failure();
                    }
                }
            }
            Wake::Resolved | Wake::Deadline => {}
        }
        settle(
            &mut tracked,
            &mut returns,
            next_sequence - 1,
            &started,
            &mut early_returns,
        );
        if answer_resolved(&mut tracked, started.keys().next().copied()) {
            on_channel_failure();
        }
        expire(&mut tracked, Instant::now(), confirm_timeout);
    }
}

/// Sends one publish on the channel (step 1).
fn send(channel: Channel, sequence: u64, request: Request) -> Sending {
    let Request {
        publish_id,
        exchange,
        routing_key,
        body,
        properties,
        deadline,
        responder,
        permit,
    } = request;
    let caller = Caller {
        publish_id,
        exchange: exchange.clone(),
        routing_key: routing_key.clone(),
        deadline,
        responder: Some(responder),
        _permit: permit,
    };
    Box::pin(async move {
        let options = BasicPublishOptions {
            // An unroutable message comes back as `basic.return`: an error, never a silent drop.
            mandatory: true,
            // Not supported by RabbitMQ (and not wanted: queues buffer for absent consumers).
            immediate: false,
        };
        let sent = channel
            .basic_publish(exchange, routing_key, options, &body, properties)
            .await;
        (sequence, caller, sent)
    })
}

/// Step 2: harvest until a full pass finds nothing new, then attribute every harvested return
/// to the publish it names.
fn settle(
    tracked: &mut [Tracked],
    returns: &mut Vec<Returned>,
    highest_started: u64,
    started: &BTreeMap<u64, i64>,
    early_returns: &mut HashMap<i64, Returned>,
) {
    let mut context = Context::from_waker(Waker::noop());
    while harvest(tracked, &mut context, returns, highest_started) {}
    for returned in returns.drain(..) {
        let Some(publish_id) = returned.publish_id else {
            tracing::warn!(
                reply_code = returned.reply_code,
                "the broker returned a message without a publish id"
            );
            continue;
        };
        if let Some(entry) = tracked
            .iter_mut()
            .find(|entry| entry.caller.publish_id == publish_id)
        {
            entry.returned = Some(returned);
        } else if started.values().any(|id| *id == publish_id) {
            // Returned and confirmed before its own send finished: kept for when it does.
            early_returns.insert(publish_id, returned);
        } else {
            tracing::warn!(
                publish_id,
                reply_code = returned.reply_code,
                "the broker returned a message this channel is not tracking"
            );
        }
    }
}

/// One pass over every outstanding confirm. Returns whether any newly resolved.
fn harvest(
    tracked: &mut [Tracked],
    context: &mut Context<'_>,
    returns: &mut Vec<Returned>,
    highest_started: u64,
) -> bool {
    let mut found = false;
    for entry in tracked.iter_mut() {
        let Some(confirm) = entry.confirm.as_mut() else {
            continue;
        };
        let Poll::Ready(result) = Pin::new(confirm).poll(context) else {
            continue;
        };
        entry.confirm = None;
        entry.barrier = highest_started;
        found = true;
        entry.resolution = Some(match result {
            Ok(Confirmation::Ack(returned)) => {
                returns.extend(returned.map(Returned::from));
                Resolution::Ack
            }
            Ok(Confirmation::Nack(returned)) => {
                returns.extend(returned.map(Returned::from));
                Resolution::Nack
            }
            Ok(Confirmation::NotRequested) => Resolution::NotRequested,
            Err(error) => Resolution::Failed(error),
        });
    }
    found
}

/// Step 3: answers every caller whose confirm resolved and whose barrier is passed (no publish
/// started before its observation is still being sent), and forgets those entries. Returns true
/// when a confirm failed because the channel or connection went away.
fn answer_resolved(tracked: &mut Vec<Tracked>, oldest_still_sending: Option<u64>) -> bool {
    let mut channel_failed = false;
    tracked.retain_mut(|entry| {
        if entry.resolution.is_none()
            || oldest_still_sending.is_some_and(|oldest| oldest <= entry.barrier)
        {
            return true;
        }
        let outcome = match (entry.resolution.take(), entry.returned.take()) {
            (Some(Resolution::Failed(error)), _) => {
                channel_failed = true;
                Err(PublishError::lost(
                    "the channel or connection closed before the confirm",
                    error,
                ))
            }
            (_, Some(returned)) => Err(PublishError::Unroutable {
                exchange: entry.caller.exchange.to_string(),
                routing_key: entry.caller.routing_key.to_string(),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text,
            }),
            (Some(Resolution::Ack), None) => Ok(()),
            (Some(Resolution::Nack), None) => Err(PublishError::Nacked),
            (Some(Resolution::NotRequested) | None, None) => {
                channel_failed = true;
                Err(PublishError::unavailable(
                    "the channel is not in confirm mode",
                ))
            }
        };
        if let Some(responder) = entry.caller.responder.take() {
            // The caller may have given up (its request was dropped); nothing to do then.
            let _ = responder.send(outcome);
        }
        false
    });
    channel_failed
}

fn answer(mut caller: Caller, outcome: Result<(), PublishError>) {
    if let Some(responder) = caller.responder.take() {
        let _ = responder.send(outcome);
    }
}

/// Answers callers whose deadline passed. Their entries stay until the confirm resolves (or the
/// channel goes), so that a late return is still attributed and the in-flight permit still held.
fn expire(tracked: &mut [Tracked], now: Instant, confirm_timeout: Duration) {
    for entry in tracked
        .iter_mut()
        .filter(|entry| entry.caller.deadline <= now)
    {
        if let Some(responder) = entry.caller.responder.take() {
            let _ = responder.send(Err(PublishError::Timeout {
                after: confirm_timeout,
            }));
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl From<BasicReturnMessage> for Returned {
    fn from(message: BasicReturnMessage) -> Self {
        let publish_id = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(PUBLISH_ID_HEADER))
            .and_then(as_integer);
        Returned {
            publish_id,
            reply_code: message.reply_code,
            reply_text: message.reply_text.to_string(),
        }
    }
}
