//! The control task: it owns the swarm and the admission table, and is the
//! only code that touches either.
//!
//! Each turn waits for the first of: a swarm event, a command from a
//! handle, or the admission table's next deadline; handles it to the end,
//! then waits again. It never waits for its owner: events go out with
//! `try_send`, and one that does not fit is dropped and counted (a record
//! dropped that way is reported `Ignore` at once, so gossipsub neither
//! forwards nor keeps it). It ends when every handle or the event receiver
//! is gone. It never judges a credential or a record itself: the gate and
//! the caller's reports do.

use std::collections::HashMap;
use std::future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::request_response::{self, Message as CredentialMessage, Message as SyncMessage};
use libp2p::swarm::{
    dial_opts::DialOpts, ConnectionDenied, ConnectionId, DialError, ListenError, SwarmEvent,
};
use libp2p::{allow_block_list, connection_limits};
use libp2p::{core::transport::ListenerId, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::admission::{Admission, Presented};
use super::api::{
    Admit, Command, ControlCounters, ControlError, ControlEvent, Gate, PublishError, RejectReason,
    Verdict, CREDENTIAL_TIMEOUT, REJECTED_PEER_BLOCK, SILENT_PEER_BLOCK,
};
use super::behaviour::{Behaviour, BehaviourEvent, MEMBER_SCORE, PENDING_SCORE};
use super::exchange::{Exchange, Handled};
use super::nomination::{MAX_PENDING_NOMINATIONS, NOMINATION_TIMEOUT};
use super::origin_rate::OriginRate;
use super::renewal::{MAX_PENDING_RENEWALS, RENEWAL_TIMEOUT};

/// The event receiver was dropped: time to stop.
struct Closed;

/// Where the task's outputs go.
pub(super) struct Outputs {
    /// Events for the owner (bounded; never waited on).
    pub(super) events: mpsc::Sender<ControlEvent>,
    /// The connected members, as a value the owner reads when it likes.
    pub(super) members: watch::Sender<Vec<PeerId>>,
    /// Drops and failures.
    pub(super) counters: Arc<ControlCounters>,
}

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    credential: Vec<u8>,
    gate: Gate,
    admission: Admission,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ControlEvent>,
    members: watch::Sender<Vec<PeerId>>,
    counters: Arc<ControlCounters>,
    /// Records a peer pushed before it passed the gate: handed over once it
    /// does (its push can overtake its credential). One push per pending
    /// peer, so bounded by the connections.
    held: HashMap<PeerId, Vec<Vec<u8>>>,
    /// Each origin's budget of records.
    origin_rate: OriginRate,
    /// Dials waiting for their connection.
    dials: HashMap<ConnectionId, Option<oneshot::Sender<Result<PeerId, ControlError>>>>,
    /// The IPv4 listener, until it reports an address (or closes).
    quiet_listener: Option<ListenerId>,
    listen_addrs: Vec<Multiaddr>,
    /// `listen_addrs` calls waiting for the IPv4 listener.
    addr_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    /// Certificate renewals, both ways.
    renewals: Exchange,
    /// Authority nominations, both ways.
    nominations: Exchange,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        topic: IdentTopic,
        credential: Vec<u8>,
        gate: Gate,
        ipv4_listener: ListenerId,
        commands: mpsc::Receiver<Command>,
        outputs: Outputs,
    ) -> Self {
        Self {
            swarm,
            topic,
            credential,
            gate,
            admission: Admission::new(CREDENTIAL_TIMEOUT, REJECTED_PEER_BLOCK, SILENT_PEER_BLOCK),
            commands,
            events: outputs.events,
            members: outputs.members,
            counters: outputs.counters,
            held: HashMap::new(),
            origin_rate: OriginRate::default(),
            dials: HashMap::new(),
            quiet_listener: Some(ipv4_listener),
            listen_addrs: Vec::new(),
            addr_waiters: Vec::new(),
            renewals: Exchange::new(
                "renewal",
                MAX_PENDING_RENEWALS,
                RENEWAL_TIMEOUT,
                ControlError::Renewal,
            ),
            nominations: Exchange::new(
                "nomination",
                MAX_PENDING_NOMINATIONS,
                NOMINATION_TIMEOUT,
                ControlError::Nomination,
            ),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let deadline = self.admission.next_timeout();
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => future::pending().await,
                }
            };
            let turn = tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.on_command(command);
                        Ok(())
                    }
                    None => Err(Closed),
                },
                () = timer => self.on_timeout().await,
                () = self.events.closed() => Err(Closed),
            };
            if turn.is_err() {
                break;
            }
        }
        info!("control plane stopped");
    }

    /// Hands `event` to the owner without waiting; a full queue drops it
    /// and counts it (a dropped record is reported `Ignore`).
    fn emit(&mut self, event: ControlEvent) -> Result<(), Closed> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Closed),
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
                if let ControlEvent::Message {
                    message_id,
                    propagation_source,
                    ..
                } = event
                {
                    self.validated(&message_id, &propagation_source, MessageAcceptance::Ignore);
                }
                debug!("control plane: owner busy, event dropped");
                Ok(())
            }
        }
    }

    /// Tells gossipsub the verdict on a record it holds (forward it, drop
    /// it, or drop it and penalise the peer it came from). Returns whether
    /// gossipsub still held it.
    fn validated(
        &mut self,
        message_id: &MessageId,
        propagation_source: &PeerId,
        acceptance: MessageAcceptance,
    ) -> bool {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, propagation_source, acceptance)
    }

    /// Publishes the connected members for the owner to read.
    fn members_changed(&mut self) {
        let members: Vec<PeerId> = self.admission.members().collect();
        self.members.send_replace(members);
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) -> Result<(), Closed> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                return self.on_gossipsub(event).await
            }
            SwarmEvent::Behaviour(BehaviourEvent::Credential(event)) => {
                return self.on_credential(event).await
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => return self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Renewal(event)) => return self.on_renewal(event),
            SwarmEvent::Behaviour(BehaviourEvent::Nomination(event)) => {
                return self.on_nomination(event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blocked(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                if let Some(Some(reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "control plane: connected, awaiting credential");
                    // Before gossipsub handles anything from it (the swarm
                    // reports the connection before any of its traffic), put
                    // the peer below the graylist until it passes the gate.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer_id, PENDING_SCORE);
                    self.admission
                        .handle_connected(peer_id, Instant::now().into_std());
                    self.swarm
                        .behaviour_mut()
                        .credential
                        .send_request(&peer_id, self.credential.clone());
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.held.remove(&peer_id);
                if self.admission.handle_closed(&peer_id) {
                    info!(peer = %peer_id, "control plane: member disconnected");
                    self.emit(ControlEvent::Disconnected { peer: peer_id })?;
                }
                self.members_changed();
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                send_back_addr,
                ..
            } => {
                let reason = refusal(&cause);
                debug!(address = %send_back_addr, reason, "control plane: connection refused");
                self.counters.connection_refused(reason);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let DialError::Denied { cause } = &error {
                    self.counters.connection_refused(refusal(cause));
                }
                debug!(peer = ?peer_id, %error, "control plane: dial failed");
                if let Some(Some(reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(ControlError::Dial(error)));
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                info!(%address, "control plane: listening");
                self.listen_addrs.push(address);
                self.listener_reported(listener_id);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Err(error) = reason {
                    warn!(%error, "control plane: listener closed");
                }
                self.listener_reported(listener_id);
            }
            other => trace!(event = ?other, "control plane: swarm event"),
        }
        Ok(())
    }

    async fn on_gossipsub(&mut self, event: gossipsub::Event) -> Result<(), Closed> {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                // Gossipsub already drops a pending peer's traffic (its score
                // is below the graylist); this holds even if that changes.
                let source = message.source.filter(|_| {
                    self.admission.is_member(&propagation_source)
                        && message.topic == self.topic.hash()
                });
                let Some(source) = source else {
                    debug!(peer = %propagation_source, "control plane: record from a non-member rejected");
                    self.validated(&message_id, &propagation_source, MessageAcceptance::Reject);
                    return Ok(());
                };
                if !self.origin_rate.allow(source, Instant::now().into_std()) {
                    self.counters
                        .records_over_rate
                        .fetch_add(1, Ordering::Relaxed);
                    // Straight from the flooding member: score it down. Passed
                    // on by another member, whose budget for that origin may
                    // differ from ours: drop it without blame.
                    let verdict = if propagation_source == source {
                        MessageAcceptance::Reject
                    } else {
                        MessageAcceptance::Ignore
                    };
                    trace!(%source, peer = %propagation_source, "control plane: record over its origin's budget");
                    self.validated(&message_id, &propagation_source, verdict);
                    return Ok(());
                }
                trace!(%source, peer = %propagation_source, id = %message_id, "control plane: record received");
                self.emit(ControlEvent::Message {
                    message_id,
                    source,
                    propagation_source,
                    data: message.data,
                })?;
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                if let Some(credential) = self.admission.handle_subscribed(peer_id) {
                    self.announce(peer_id, credential).await?;
                }
            }
            other => trace!(event = ?other, "control plane: gossipsub event"),
        }
        Ok(())
    }

    async fn on_credential(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), Closed> {
        let request_response::Event::Message { peer, message, .. } = event else {
            // Failed or unanswered exchanges need no handling: a peer that
            // never presents a credential meets its deadline.
            trace!(event = ?event, "control plane: credential exchange event");
            return Ok(());
        };
        let credential = match message {
            CredentialMessage::Request {
                request, channel, ..
            } => {
                let ours = self.credential.clone();
                // Fails only if the connection is already gone.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .credential
                    .send_response(channel, ours);
                request
            }
            CredentialMessage::Response { response, .. } => response,
        };
        let verdict = (self.gate)(&peer, &credential);
        if verdict == Admit::RenewalOnly && self.admission.handle_renewal_only(peer) {
            // It stays pending: no records either way, a renewal may be
            // asked for, and a renewed credential admits it before its
            // deadline; if none comes, it is disconnected without a block.
            debug!(%peer, "control plane: expired credential; renewal only");
            return Ok(());
        }
        let accepted = verdict == Admit::Member;
        let now = Instant::now().into_std();
        match self
            .admission
            .handle_credential(peer, &credential, accepted, now)
        {
            Presented::Admitted { announce } | Presented::Renewed { announce } => {
                debug!(%peer, "control plane: credential accepted");
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .set_application_score(&peer, MEMBER_SCORE);
                if let Some(credential) = announce {
                    self.announce(peer, credential).await?;
                }
                if let Some(records) = self.held.remove(&peer) {
                    self.emit(ControlEvent::Records { peer, records })?;
                }
                self.members_changed();
            }
            Presented::Rejected => {
                self.reject(peer, RejectReason::CredentialRefused).await?;
            }
            Presented::Unchanged | Presented::Ignored => {}
        }
        Ok(())
    }

    async fn announce(&mut self, peer: PeerId, credential: Vec<u8>) -> Result<(), Closed> {
        info!(%peer, "control plane: member connected");
        self.emit(ControlEvent::MemberConnected { peer, credential })
    }

    /// A push of records from a peer, or the answer to ours.
    fn on_sync(&mut self, event: request_response::Event<Vec<Vec<u8>>, ()>) -> Result<(), Closed> {
        let request_response::Event::Message { peer, message, .. } = event else {
            trace!(event = ?event, "control plane: sync exchange event");
            return Ok(());
        };
        let SyncMessage::Request {
            request, channel, ..
        } = message
        else {
            return Ok(());
        };
        // Fails only if the connection is already gone.
        let _ = self.swarm.behaviour_mut().sync.send_response(channel, ());
        if self.admission.is_member(&peer) {
            debug!(%peer, records = request.len(), "control plane: records pushed");
            self.emit(ControlEvent::Records {
                peer,
                records: request,
            })?;
        } else if self.admission.is_pending(&peer) {
            self.held.insert(peer, request);
        }
        Ok(())
    }

    /// A renewal request from a peer, the answer to ours, or a failure.
    fn on_renewal(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), Closed> {
        // Members, and peers that have not been judged yet or may only
        // renew: the request itself proves who may renew.
        let admission = &self.admission;
        let may_ask = |peer: &PeerId| admission.is_member(peer) || admission.is_pending(peer);
        match self.renewals.on_event(event, may_ask) {
            Handled::Request { peer, id, request } => {
                self.emit(ControlEvent::RenewalRequest { peer, id, request })?
            }
            Handled::TurnedAway => {
                self.counters
                    .renewals_turned_away
                    .fetch_add(1, Ordering::Relaxed);
            }
            Handled::Nothing => {}
        }
        Ok(())
    }

    /// A nomination from a member, the answer to ours, or a failure.
    fn on_nomination(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Result<(), Closed> {
        let admission = &self.admission;
        match self
            .nominations
            .on_event(event, |peer| admission.is_member(peer))
        {
            Handled::Request { peer, id, request } => {
                self.emit(ControlEvent::NominationRequest { peer, id, request })?
            }
            Handled::TurnedAway => {
                self.counters
                    .nominations_turned_away
                    .fetch_add(1, Ordering::Relaxed);
            }
            Handled::Nothing => {}
        }
        Ok(())
    }

    /// Blocks `peer` (closing its connections) and tells the caller. The
    /// admission table has already marked it rejected.
    async fn reject(&mut self, peer: PeerId, reason: RejectReason) -> Result<(), Closed> {
        warn!(%peer, %reason, "control plane: peer rejected");
        self.held.remove(&peer);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        for early in self.admission.take_evicted() {
            self.swarm.behaviour_mut().blocked.unblock_peer(early);
        }
        // Its score may have reached the member level through a renewed
        // credential; graylist it again for whatever it still sends.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, PENDING_SCORE);
        self.emit(ControlEvent::PeerRejected { peer, reason })?;
        self.members_changed();
        Ok(())
    }

    async fn on_timeout(&mut self) -> Result<(), Closed> {
        let expired = self.admission.handle_timeout(Instant::now().into_std());
        for peer in expired.unblocked {
            debug!(%peer, "control plane: block ended");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        for peer in expired.silent {
            self.reject(peer, RejectReason::NoCredential).await?;
        }
        for peer in expired.lapsed {
            debug!(%peer, "control plane: renewal-only peer's time is up");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        Ok(())
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { address, reply } => {
                let options = DialOpts::from(address);
                let connection_id = options.connection_id();
                match self.swarm.dial(options) {
                    Ok(()) => {
                        // Only dials with a waiting caller are remembered.
                        if reply.is_some() {
                            self.dials.insert(connection_id, reply);
                        }
                    }
                    Err(error) => {
                        debug!(%error, "control plane: cannot dial");
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(ControlError::Dial(error)));
                        }
                    }
                }
            }
            Command::Publish { data, reply } => {
                let topic = self.topic.clone();
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic, data)
                    .map(drop)
                    .map_err(|error| match error {
                        gossipsub::PublishError::NoPeersSubscribedToTopic => {
                            PublishError::NoMembers
                        }
                        gossipsub::PublishError::MessageTooLarge => PublishError::TooLarge,
                        gossipsub::PublishError::Duplicate => PublishError::Duplicate,
                        other => PublishError::Gossipsub(other),
                    });
                if let Err(e) = &result {
                    self.counters.publish_failed(e);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Command::Push { peer, records } => {
                if self.admission.is_member(&peer) {
                    self.swarm.behaviour_mut().sync.send_request(&peer, records);
                }
            }
            Command::Report {
                message_id,
                propagation_source,
                verdict,
            } => {
                let acceptance = match verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Reject => MessageAcceptance::Reject,
                    Verdict::Ignore => MessageAcceptance::Ignore,
                };
                let known = self.validated(&message_id, &propagation_source, acceptance);
                if !known {
                    debug!(id = %message_id, "control plane: verdict on a record no longer cached");
                }
            }
            Command::ConnectedMembers { reply } => {
                let _ = reply.send(self.admission.members().collect());
            }
            Command::Disconnect { peer } => {
                // Membership ends when the connection-closed event arrives.
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::SetCredential { credential } => {
                self.credential = credential;
                let peers: Vec<PeerId> = self.admission.not_rejected().collect();
                for peer in peers {
                    self.swarm
                        .behaviour_mut()
                        .credential
                        .send_request(&peer, self.credential.clone());
                }
            }
            Command::Renew {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .renewal
                    .send_request(&peer, request);
                self.renewals.sent(id, reply);
            }
            Command::AnswerRenewal { id, response } => {
                if let Some(channel) = self.renewals.answer(id) {
                    // Fails only if the connection is already gone.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .renewal
                        .send_response(channel, response);
                }
            }
            Command::Nominate {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .nomination
                    .send_request(&peer, request);
                self.nominations.sent(id, reply);
            }
            Command::AnswerNomination { id, response } => {
                if let Some(channel) = self.nominations.answer(id) {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .nomination
                        .send_response(channel, response);
                }
            }
            Command::ListenAddrs { reply } => {
                if self.quiet_listener.is_none() {
                    let _ = reply.send(self.listen_addrs.clone());
                } else {
                    self.addr_waiters.push(reply);
                }
            }
        }
    }

    /// `listener` reported an address or closed: if it is the IPv4
    /// listener, answer the waiting `listen_addrs` calls. (The IPv6 one is
    /// best effort: with IPv6 off it may never report.)
    fn listener_reported(&mut self, listener: ListenerId) {
        if self.quiet_listener == Some(listener) {
            self.quiet_listener = None;
            for waiter in self.addr_waiters.drain(..) {
                let _ = waiter.send(self.listen_addrs.clone());
            }
        }
    }
}

/// Why the swarm refused a connection, as a metric label.
fn refusal(cause: &ConnectionDenied) -> &'static str {
    if cause
        .downcast_ref::<connection_limits::Exceeded>()
        .is_some()
    {
        "limit"
    } else if cause.downcast_ref::<allow_block_list::Blocked>().is_some() {
        "blocked"
    } else {
        "other"
    }
}
