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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, StreamExt};
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
    /// Whether an unroutable message comes back as an error.
    pub(crate) mandatory: bool,
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
enum Woke {
    Received(Option<Request>),
    Sent(u64, Caller, Result<PublisherConfirm, lapin::Error>),
    ConfirmsWoken,
    Deadline,
}

/// The waker every confirm is polled with: it records that *some* confirm may have resolved and
/// wakes the driver, so that the (full) harvest runs once per wake-up, not on every loop turn.
#[derive(Default)]
struct ConfirmWake {
    woken: AtomicBool,
    driver: AtomicWaker,
}

impl Wake for ConfirmWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.driver.wake();
    }
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
    let confirm_wake = Arc::new(ConfirmWake::default());
    let mut driver = Driver {
        channel: Arc::new(channel),
        confirm_timeout,
        confirm_waker: Waker::from(confirm_wake.clone()),
        sending: FuturesUnordered::new(),
        started: BTreeMap::new(),
        next_sequence: 1,
        tracked: Vec::new(),
        returns: Vec::new(),
        early_returns: HashMap::new(),
        next_deadline: None,
        channel_failed: false,
        resolved_unanswered: 0,
        nacked_since: None,
    };
    let mut incoming_open = true;
    loop {
        if !incoming_open && driver.sending.is_empty() && driver.nobody_waits() {
            // Nobody is waiting any more; confirms still outstanding go with the channel.
            return;
        }
        let next_deadline = driver.next_deadline;
        let wake = tokio::select! {
            received = incoming.recv(), if incoming_open => Woke::Received(received),
            Some((sequence, caller, sent)) = driver.sending.next(), if !driver.sending.is_empty() => {
                Woke::Sent(sequence, caller, sent)
            }
            () = confirms_woken(&confirm_wake) => Woke::ConfirmsWoken,
            () = sleep_until_some(next_deadline), if next_deadline.is_some() => Woke::Deadline,
        };
        let mut settle = false;
        match wake {
            Woke::Received(None) => incoming_open = false,
            Woke::Received(Some(request)) => {
                driver.start(request);
                while let Ok(request) = incoming.try_recv() {
                    driver.start(request);
                }
            }
            Woke::Sent(sequence, caller, sent) => {
                let first_new = driver.tracked.len();
                driver.sent(sequence, caller, sent);
                // Take every other finished send now: one harvest for the lot.
                while let Some(Some((sequence, caller, sent))) =
                    driver.sending.next().now_or_never()
                {
                    driver.sent(sequence, caller, sent);
                }
                // A full harvest is needed only once something is seen resolved; new confirms
                // are polled once anyway, to register the waker.
                settle = driver.poll_new(first_new);
            }
            Woke::ConfirmsWoken => settle = true,
            Woke::Deadline => {}
        }
        if settle {
            driver.settle();
        }
        if driver.resolved_unanswered > 0 {
            driver.answer_resolved();
        }
        driver.expire(Instant::now());
        if std::mem::take(&mut driver.channel_failed) {
            on_channel_failure();
        }
    }
}

/// What a pass of answers did to the channel's run of nacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NackRun {
    /// No ack and no nack.
    Unchanged,
    /// Nacks and no ack.
    Nacked,
    /// At least one ack.
    Broken,
}

/// Resolves when a confirm was woken since the last check.
async fn confirms_woken(confirm_wake: &ConfirmWake) {
    poll_fn(|cx| {
        confirm_wake.driver.register(cx.waker());
        if confirm_wake.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

struct Driver {
    /// Shared with every send in flight (an `Arc` clone is cheaper than lapin's `Channel` clone).
    channel: Arc<Channel>,
    confirm_timeout: Duration,
    /// The one waker all confirms are polled with (see [`ConfirmWake`]).
    confirm_waker: Waker,
    /// Publishes being written to the channel.
    sending: FuturesUnordered<Sending>,
    /// The publishes in `sending`: sequence -> publish id.
    started: BTreeMap<u64, i64>,
    next_sequence: u64,
    /// Publishes sent, awaiting (or holding) their confirm.
    tracked: Vec<Tracked>,
    /// Returns harvested and not yet attributed.
    returns: Vec<Returned>,
    /// Returns naming a publish that was still being sent when they were harvested.
    early_returns: HashMap<i64, Returned>,
    /// The earliest deadline of a caller still waiting.
    next_deadline: Option<Instant>,
    /// Set when a publish or confirm failed because the channel or connection went away.
    channel_failed: bool,
    /// Entries resolved and not yet answered (held by their barrier).
    resolved_unanswered: usize,
    /// When the channel's unbroken run of nacks began (cleared by any ack).
    nacked_since: Option<Instant>,
}

impl Driver {
    fn nobody_waits(&self) -> bool {
        self.tracked
            .iter()
            .all(|entry| entry.caller.responder.is_none())
    }

    /// Step 1: starts sending a publish.
    fn start(&mut self, request: Request) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.started.insert(sequence, request.publish_id);
        self.sending
            .push(send(self.channel.clone(), sequence, request));
    }

    /// A publish finished sending: track its confirm, or report the failure.
    fn sent(
        &mut self,
        sequence: u64,
        caller: Caller,
        sent: Result<PublisherConfirm, lapin::Error>,
    ) {
        self.started.remove(&sequence);
        let early_return = self.early_returns.remove(&caller.publish_id);
        match sent {
            Ok(confirm) => {
                self.next_deadline = Some(
                    self.next_deadline
                        .map_or(caller.deadline, |d| d.min(caller.deadline)),
                );
                self.tracked.push(Tracked {
                    caller,
                    confirm: Some(confirm),
                    resolution: None,
                    barrier: 0,
                    returned: early_return,
                });
            }
            Err(error) => {
                answer(
                    caller,
                    Err(PublishError::lost("the publishing channel failed", error)),
                );
                self.channel_failed = true;
            }
        }
    }

    /// Step 2: harvest until a full pass finds nothing new, then attribute every harvested
    /// return to the publish it names.
    fn settle(&mut self) {
        let confirm_waker = self.confirm_waker.clone();
        let mut context = Context::from_waker(&confirm_waker);
        let highest_started = self.next_sequence - 1;
        while self.harvest(&mut context, highest_started, 0) {}
        for returned in std::mem::take(&mut self.returns) {
            let Some(publish_id) = returned.publish_id else {
                tracing::warn!(
                    reply_code = returned.reply_code,
                    "the broker returned a message without a publish id"
                );
                continue;
            };
            if let Some(entry) = self
                .tracked
                .iter_mut()
                .find(|entry| entry.caller.publish_id == publish_id)
            {
                entry.returned = Some(returned);
            } else if self.started.values().any(|id| *id == publish_id) {
                // Returned and confirmed before its own send finished: kept for when it does.
                self.early_returns.insert(publish_id, returned);
            } else {
                tracing::warn!(
                    publish_id,
                    reply_code = returned.reply_code,
                    "the broker returned a message this channel is not tracking"
                );
            }
        }
    }

    /// Polls the confirms tracked from index `first` on once (new ones: registers the waker).
    /// Returns whether any had already resolved.
    fn poll_new(&mut self, first: usize) -> bool {
        let confirm_waker = self.confirm_waker.clone();
        let mut context = Context::from_waker(&confirm_waker);
        let highest_started = self.next_sequence - 1;
        self.harvest(&mut context, highest_started, first)
    }

    /// One pass over the outstanding confirms from index `first` on. Returns whether any newly
    /// resolved.
    fn harvest(&mut self, context: &mut Context<'_>, highest_started: u64, first: usize) -> bool {
        let mut found = false;
        for entry in self.tracked.iter_mut().skip(first) {
            let Some(confirm) = entry.confirm.as_mut() else {
                continue;
            };
            let Poll::Ready(result) = Pin::new(confirm).poll(context) else {
                continue;
            };
            entry.confirm = None;
            entry.barrier = highest_started;
            self.resolved_unanswered += 1;
            found = true;
            entry.resolution = Some(match result {
                Ok(Confirmation::Ack(returned)) => {
                    self.returns.extend(returned.map(Returned::from));
                    Resolution::Ack
                }
                Ok(Confirmation::Nack(returned)) => {
                    self.returns.extend(returned.map(Returned::from));
                    Resolution::Nack
                }
                Ok(Confirmation::NotRequested) => Resolution::NotRequested,
                Err(error) => Resolution::Failed(error),
            });
        }
        found
    }

    /// Whether every publish on this channel has been nacked for twice the confirm timeout.
    /// A broker nacks a whole channel's publishes for good in some states (a quorum queue that
    /// lost its majority while the channel was new keeps rejecting it after the majority is
    /// back), so such a channel is given up like a failed one: the publisher reconnects, maybe
    /// to another node. A queue that refuses publishes because it is full costs a reconnection
    /// per such period, no more.
    fn nacked_too_long(&mut self, run: NackRun) -> bool {
        let now = Instant::now();
        match run {
            NackRun::Unchanged => {}
            NackRun::Broken => self.nacked_since = None,
            NackRun::Nacked => {
                let since = *self.nacked_since.get_or_insert(now);
                if now.duration_since(since) >= self.confirm_timeout * 2 {
                    tracing::warn!(
                        seconds = now.duration_since(since).as_secs(),
                        "every publish on a channel was nacked for twice the confirm timeout; reconnecting"
                    );
                    self.nacked_since = None;
                    return true;
                }
            }
        }
        false
    }

    /// Step 3: answers every caller whose confirm resolved and whose barrier is passed (no
    /// publish started before its observation is still being sent), and forgets those entries.
    fn answer_resolved(&mut self) {
        let oldest_still_sending = self.started.keys().next().copied();
        let mut channel_failed = false;
        let mut nack_run = NackRun::Unchanged;
        let mut answered = 0;
        let mut next_deadline: Option<Instant> = None;
        self.tracked.retain_mut(|entry| {
            if entry.resolution.is_none()
                || oldest_still_sending.is_some_and(|oldest| oldest <= entry.barrier)
            {
                if entry.caller.responder.is_some() {
                    next_deadline = Some(
                        next_deadline
                            .map_or(entry.caller.deadline, |d| d.min(entry.caller.deadline)),
                    );
                }
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
                (Some(Resolution::Ack), None) => {
                    nack_run = NackRun::Broken;
                    Ok(())
                }
                (Some(Resolution::Nack), None) => {
                    if nack_run == NackRun::Unchanged {
                        nack_run = NackRun::Nacked;
                    }
                    Err(PublishError::Nacked)
                }
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
            answered += 1;
            false
        });
        self.resolved_unanswered -= answered;
        self.channel_failed |= channel_failed || self.nacked_too_long(nack_run);
        self.next_deadline = next_deadline;
    }

    /// Answers callers whose deadline passed. Their entries stay until the confirm resolves (or
    /// the channel goes), so that a late return is still attributed and the in-flight permit
    /// still held.
    fn expire(&mut self, now: Instant) {
        if self.next_deadline.is_none_or(|deadline| deadline > now) {
            return;
        }
        let mut next_deadline: Option<Instant> = None;
        for entry in &mut self.tracked {
            if entry.caller.responder.is_none() {
                continue;
            }
            if entry.caller.deadline <= now {
                if let Some(responder) = entry.caller.responder.take() {
                    let _ = responder.send(Err(PublishError::Timeout {
                        after: self.confirm_timeout,
                    }));
                }
            } else {
                next_deadline = Some(
                    next_deadline.map_or(entry.caller.deadline, |d| d.min(entry.caller.deadline)),
                );
            }
        }
        self.next_deadline = next_deadline;
    }
}

/// Sends one publish on the channel (step 1).
fn send(channel: Arc<Channel>, sequence: u64, request: Request) -> Sending {
    let Request {
        publish_id,
        exchange,
        routing_key,
        body,
        properties,
        mandatory,
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
            // An unroutable message comes back as `basic.return`: an error, never a silent
            // drop (unless the caller published a copy with routing optional).
            mandatory,
            // Not supported by RabbitMQ (and not wanted: queues buffer for absent consumers).
            immediate: false,
        };
        let sent = channel
            .basic_publish(exchange, routing_key, options, &body, properties)
            .await;
        (sequence, caller, sent)
    })
}

fn answer(mut caller: Caller, outcome: Result<(), PublishError>) {
    if let Some(responder) = caller.responder.take() {
        let _ = responder.send(outcome);
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
