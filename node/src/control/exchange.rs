//! The bookkeeping of a request-response exchange whose requests the
//! owner answers (certificate renewal, authority nomination): inbound
//! requests handed over and waiting for the owner's answer, bounded and
//! forgotten after the exchange's deadline, and our own requests waiting
//! for the peer's answer.
//!
//! It holds response channels and reply senders only; who may ask, and
//! what the requests mean, are the event loop's and the mesh's business.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use tokio::sync::oneshot;
use tracing::{debug, trace};

use super::api::ControlError;

/// What one event of the exchange comes to.
pub(super) enum Handled {
    /// A request to hand to the owner, to be answered with `id`.
    Request {
        peer: PeerId,
        id: u64,
        request: Vec<u8>,
    },
    /// A request turned away unread (the asker may not ask, or too many
    /// wait): its stream is closed, and the asker tries elsewhere or later.
    TurnedAway,
    /// Nothing for the owner (an answer to one of ours went to its caller).
    Nothing,
}

/// One exchange's pending requests, both ways.
pub(super) struct Exchange {
    name: &'static str,
    max_pending: usize,
    timeout: Duration,
    /// How a failed request of ours is reported.
    failed: fn(String) -> ControlError,
    /// Requests handed to the owner and not answered yet, oldest first,
    /// with when each arrived (at most `max_pending`).
    inbound: VecDeque<(u64, Instant, ResponseChannel<Vec<u8>>)>,
    next_id: u64,
    /// Our requests waiting for their answer.
    outbound: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, ControlError>>>,
}

impl Exchange {
    /// An exchange named `name` (for logs) that keeps at most
    /// `max_pending` inbound requests, each for at most `timeout`.
    pub(super) fn new(
        name: &'static str,
        max_pending: usize,
        timeout: Duration,
        failed: fn(String) -> ControlError,
    ) -> Self {
        Self {
            name,
            max_pending,
            timeout,
            failed,
            inbound: VecDeque::new(),
            next_id: 0,
            outbound: HashMap::new(),
        }
    }

    /// Handles one event of the exchange; `may_ask` says whether a peer
    /// may send requests.
    pub(super) fn on_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
        may_ask: impl Fn(&PeerId) -> bool,
    ) -> Handled {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let now = Instant::now();
                let timeout = self.timeout;
                self.inbound
                    .retain(|(_, at, _)| now.duration_since(*at) < timeout);
                let allowed = may_ask(&peer);
                if !allowed || self.inbound.len() >= self.max_pending {
                    // Dropping the channel closes the stream.
                    debug!(%peer, allowed, exchange = self.name, "control plane: request turned away");
                    return Handled::TurnedAway;
                }
                let id = self.next_id;
                self.next_id += 1;
                self.inbound.push_back((id, now, channel));
                Handled::Request { peer, id, request }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                Handled::Nothing
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err((self.failed)(error.to_string())));
                }
                Handled::Nothing
            }
            other => {
                trace!(event = ?other, exchange = self.name, "control plane: exchange event");
                Handled::Nothing
            }
        }
    }

    /// Remembers our request `id`, answered through `reply`.
    pub(super) fn sent(
        &mut self,
        id: OutboundRequestId,
        reply: oneshot::Sender<Result<Vec<u8>, ControlError>>,
    ) {
        self.outbound.insert(id, reply);
    }

    /// The channel to answer inbound request `id` on, if it still waits.
    pub(super) fn answer(&mut self, id: u64) -> Option<ResponseChannel<Vec<u8>>> {
        let at = self.inbound.iter().position(|(i, _, _)| *i == id)?;
        self.inbound.remove(at).map(|(_, _, channel)| channel)
    }
}
