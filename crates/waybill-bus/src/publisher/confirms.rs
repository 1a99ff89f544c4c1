//! Pairs every publish on one channel with its broker confirm, and with its `basic.return`.
//!
//! # Why not simply await lapin's confirm future in each caller
//!
//! With `mandatory`, RabbitMQ sends `basic.return` for an unroutable message and then its
//! `basic.ack`, and it coalesces acks (`multiple: true`). lapin 4.12 attaches a returned message
//! to *whichever* confirm it resolves first after the return arrived: when one ack covers several
//! publishes, that is the first tag in `HashMap` order, not necessarily the returned publish. A
//! caller awaiting its own confirm could then see a plain ack for an unroutable message (and
//! answer 200 for a message no queue holds), while a neighbour sees someone else's return.
//!
//! So the publisher stamps each message with a publish id header, and one task per channel
//! owns all of that channel's confirm futures:
//!
//! 1. it polls every outstanding confirm, repeating full passes until a pass finds no newly
//!    resolved confirm;
//! 2. it reads the publish id out of every returned message harvested and marks *that* publish
//!    as returned;
//! 3. only then does it answer the callers whose confirm resolved.
//!
//! This is exact, not a heuristic: a return is taken by the first confirm lapin resolves after
//! the return arrived, which is at or before the returned publish's own confirm (the broker
//! sends the return before that ack). Once step 1 has seen a confirm resolved, a later full pass
//! sees every confirm resolved before it, so the holder of any return that concerns it has been
//! harvested by the end of step 1.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapin::message::BasicReturnMessage;
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::PublishError;
use crate::headers::{PUBLISH_ID_HEADER, as_integer};

/// One publish handed to the tracker after `basic.publish` was written.
pub(crate) struct Pending {
    /// The id stamped in the message's [`PUBLISH_ID_HEADER`].
    pub(crate) publish_id: i64,
    /// For the error message of an unroutable publish.
    pub(crate) exchange: String,
    /// For the error message of an unroutable publish.
    pub(crate) routing_key: String,
    /// lapin's confirm future for this publish.
    pub(crate) confirm: PublisherConfirm,
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

struct Tracked {
    publish_id: i64,
    exchange: String,
    routing_key: String,
    confirm: Option<PublisherConfirm>,
    resolution: Option<Resolution>,
    returned: Option<Returned>,
    deadline: Instant,
    responder: Option<oneshot::Sender<Result<(), PublishError>>>,
    _permit: OwnedSemaphorePermit,
}

enum Wake {
    Received(Option<Pending>),
    Resolved,
    Deadline,
}

/// Runs until `incoming` is closed (the channel's link was dropped) and every caller has been
/// answered. `on_channel_failure` is called when a confirm fails because the channel or the
/// connection went away, so that the publisher reconnects.
pub(crate) async fn track(
    mut incoming: mpsc::UnboundedReceiver<Pending>,
    confirm_timeout: Duration,
    on_channel_failure: impl Fn(),
) {
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut returns: Vec<Returned> = Vec::new();
    let mut incoming_open = true;
    loop {
        if !incoming_open && tracked.iter().all(|entry| entry.responder.is_none()) {
            // Nobody is waiting any more; confirms still outstanding are dropped with the channel.
            return;
        }
        let next_deadline = tracked
            .iter()
            .filter(|entry| entry.responder.is_some())
            .map(|entry| entry.deadline)
            .min();
        let wake = tokio::select! {
            biased;
            received = incoming.recv(), if incoming_open => Wake::Received(received),
            () = poll_fn(|cx| if harvest(&mut tracked, cx, &mut returns) { Poll::Ready(()) } else { Poll::Pending }) => Wake::Resolved,
            () = sleep_until_some(next_deadline), if next_deadline.is_some() => Wake::Deadline,
        };
        match wake {
            Wake::Received(Some(pending)) => {
                tracked.push(Tracked::from(pending));
                while let Ok(pending) = incoming.try_recv() {
                    tracked.push(Tracked::from(pending));
                }
            }
            Wake::Received(None) => incoming_open = false,
            Wake::Resolved | Wake::Deadline => {}
        }
        settle(&mut tracked, &mut returns);
        if answer_resolved(&mut tracked) {
            on_channel_failure();
        }
        expire(&mut tracked, Instant::now(), confirm_timeout);
    }
}

/// Step 1 and 2 of the module documentation: harvest until a full pass finds nothing new, then
/// attribute every harvested return to the publish it names.
fn settle(tracked: &mut [Tracked], returns: &mut Vec<Returned>) {
    let mut context = Context::from_waker(Waker::noop());
    while harvest(tracked, &mut context, returns) {}
    for returned in returns.drain(..) {
        let owner = returned
            .publish_id
            .and_then(|id| tracked.iter_mut().find(|entry| entry.publish_id == id));
        match owner {
            Some(entry) => entry.returned = Some(returned),
            None => tracing::warn!(
                publish_id = ?returned.publish_id,
                reply_code = returned.reply_code,
                "the broker returned a message this channel is not tracking (its caller had already timed out)"
            ),
        }
    }
}

/// One pass over every outstanding confirm. Returns whether any newly resolved.
fn harvest(
    tracked: &mut [Tracked],
    context: &mut Context<'_>,
    returns: &mut Vec<Returned>,
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

/// Step 3: answers every caller whose confirm resolved and forgets those entries. Returns true
/// when a confirm failed because the channel or connection went away.
fn answer_resolved(tracked: &mut Vec<Tracked>) -> bool {
    let mut channel_failed = false;
    tracked.retain_mut(|entry| {
        let Some(resolution) = entry.resolution.take() else {
            return true;
        };
        let outcome = match (resolution, entry.returned.take()) {
            (Resolution::Failed(error), _) => {
                channel_failed = true;
                Err(PublishError::lost(
                    "the channel or connection closed before the confirm",
                    error,
                ))
            }
            (_, Some(returned)) => Err(PublishError::Unroutable {
                exchange: std::mem::take(&mut entry.exchange),
                routing_key: std::mem::take(&mut entry.routing_key),
                reply_code: returned.reply_code,
                reply_text: returned.reply_text,
            }),
            (Resolution::Ack, None) => Ok(()),
            (Resolution::Nack, None) => Err(PublishError::Nacked),
            (Resolution::NotRequested, None) => {
                channel_failed = true;
                Err(PublishError::unavailable(
                    "the channel is not in confirm mode",
                ))
            }
        };
        if let Some(responder) = entry.responder.take() {
            // The caller may have given up (its request was dropped); nothing to do then.
            let _ = responder.send(outcome);
        }
        false
    });
    channel_failed
}

/// Answers callers whose deadline passed. Their entries stay until the confirm resolves (or the
/// channel goes), so that a late return is still attributed and the in-flight permit still held.
fn expire(tracked: &mut [Tracked], now: Instant, confirm_timeout: Duration) {
    for entry in tracked.iter_mut().filter(|entry| entry.deadline <= now) {
        if let Some(responder) = entry.responder.take() {
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

impl From<Pending> for Tracked {
    fn from(pending: Pending) -> Self {
        Tracked {
            publish_id: pending.publish_id,
            exchange: pending.exchange,
            routing_key: pending.routing_key,
            confirm: Some(pending.confirm),
            resolution: None,
            returned: None,
            deadline: pending.deadline,
            responder: Some(pending.responder),
            _permit: pending.permit,
        }
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
