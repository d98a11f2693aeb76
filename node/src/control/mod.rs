//! The control plane's transport: weft nodes gossip signed records
//! (endpoint announcements, path observations, revocations) to each other
//! over libp2p gossipsub, on QUIC, on a UDP port of their own beside the
//! data-plane port.
//!
//! Only network members may stay connected. Right after a connection is
//! up, both sides present a credential (a certificate bound to their libp2p
//! identity) over `/weft/credential/1`; the caller's gate judges it. A
//! refused or silent peer is disconnected and blocked for a while, and until
//! a peer has passed the gate gossipsub drops everything it sends (beyond
//! noting its subscriptions) and sends it no record. Every record the swarm
//! delivers is handed to the caller, who validates it and
//! [reports](ControlHandle::report) a verdict; only accepted records are
//! forwarded, and rejected ones cost their sender peer score.
//!
//! When two members connect, each also pushes the other the records a
//! newcomer needs over `/weft/sync/1` (`sync.rs`); those arrive as
//! [`ControlEvent::Records`].
//!
//! One task owns the swarm (`event_loop.rs`); the rest of the program talks
//! to it through a cloneable [`ControlHandle`], and hears from it on a
//! channel of [`ControlEvent`]s. Neither side ever waits for the other: the
//! handle's `try_*` calls put a command in a bounded queue and return at
//! once, and the task hands events over with `try_send`. A full queue drops
//! what did not fit and counts it ([`ControlCounters`]); everything the
//! control plane carries is sent again later (announcements are periodic,
//! pushes repeat on the next connection), so a drop delays, never loses for
//! good. The connected members are a value ([`ControlHandle::members`]),
//! not a stream of events that could be lost. This module never judges
//! credentials or records itself: that is weft's membership logic, passed
//! in.

mod admission;
mod api;
pub(crate) mod behaviour;
mod credential;
mod event_loop;
mod exchange;
mod nomination;
mod origin_rate;
mod renewal;
mod sync;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use libp2p::gossipsub::IdentTopic;
use libp2p::identity::Keypair;
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroize;

use crate::host::{Step, StepError};
use api::Command;
pub use api::PublishError;
pub use api::{
    Admit, ControlCounters, ControlError, ControlEvent, Gate, NotQueued, Verdict, COMMAND_CAPACITY,
    EVENT_CAPACITY, MAX_CREDENTIAL_LEN,
};
pub use libp2p::gossipsub::MessageId;
pub use libp2p::{Multiaddr, PeerId};
pub use renewal::MAX_RENEWAL_LEN;
pub use sync::MAX_SYNC_RECORDS;

/// What the control plane needs to start.
pub struct ControlConfig {
    /// The node's Ed25519 identity secret key; the libp2p identity (and so
    /// the [`PeerId`]) is derived from it.
    pub identity_secret: [u8; 32],
    /// UDP port for QUIC on every IPv4 and IPv6 address; 0 picks one (then
    /// IPv4 and IPv6 may get different ports).
    pub listen_port: u16,
    /// The gossipsub topic records travel on, e.g.
    /// `weft/<network-id-hex>/records`.
    pub topic: String,
    /// Our credential, presented to every peer; at most
    /// [`MAX_CREDENTIAL_LEN`] bytes.
    pub credential: Vec<u8>,
    /// Addresses dialled at start.
    pub bootstrap: Vec<Multiaddr>,
}

impl fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConfig")
            .field("identity_secret", &"<redacted>")
            .field("listen_port", &self.listen_port)
            .field("topic", &self.topic)
            .field(
                "credential",
                &format_args!("{} bytes", self.credential.len()),
            )
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

/// The control plane's entry point.
#[derive(Debug)]
pub struct Control;

impl Control {
    /// Builds the swarm, listens on `/ip4/0.0.0.0/udp/{port}/quic-v1` (and
    /// `/ip6/::/…` where the host has IPv6, [`crate::host::ipv6`]), dials
    /// the bootstrap addresses, and spawns the task that owns it all on the
    /// current Tokio runtime.
    ///
    /// The task runs until every handle or the event receiver is dropped.
    pub fn spawn(
        mut config: ControlConfig,
        gate: Gate,
    ) -> anyhow::Result<(ControlHandle, mpsc::Receiver<ControlEvent>)> {
        if config.credential.len() > MAX_CREDENTIAL_LEN {
            return Err(ControlError::CredentialTooLong.into());
        }
        let mut secret = config.identity_secret;
        config.identity_secret.zeroize();
        // Zeroizes `secret` whether or not it is a valid key.
        let keypair = Keypair::ed25519_from_bytes(&mut secret)
            .context("invalid control plane identity key")?;
        let peer_id = keypair.public().to_peer_id();
        let topic = IdentTopic::new(config.topic.clone());
        let mut swarm = behaviour::build_swarm(keypair, &topic)?;

        let v4: Multiaddr = format!("/ip4/0.0.0.0/udp/{}/quic-v1", config.listen_port)
            .parse()
            .context("listen address")?;
        let ipv4_listener = swarm.listen_on(v4).map_err(|e| {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.listen_port));
            StepError::from_chain(Step::ListenControl { addr }, &e)
        })?;
        // On a host without IPv6 there is no IPv6 listener to open; the
        // daemon says so once at start.
        if crate::host::ipv6().usable() {
            let v6: Multiaddr = format!("/ip6/::/udp/{}/quic-v1", config.listen_port)
                .parse()
                .context("listen address")?;
            if let Err(e) = swarm.listen_on(v6) {
                let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, config.listen_port));
                let e = StepError::from_chain(Step::ListenControl { addr }, &e);
                tracing::warn!(error = %e, "control plane: no IPv6 listener");
            }
        }
        for address in &config.bootstrap {
            if let Err(e) = swarm.dial(address.clone()) {
                tracing::warn!(%address, error = %e, "control plane: cannot dial bootstrap peer");
            }
        }

        let (command_tx, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let events_weak = event_tx.downgrade();
        let (members_tx, members_rx) = watch::channel(Vec::new());
        let counters = Arc::new(ControlCounters::default());
        let event_loop = event_loop::EventLoop::new(
            swarm,
            topic,
            config.credential,
            gate,
            ipv4_listener,
            command_rx,
            event_loop::Outputs {
                events: event_tx,
                members: members_tx,
                counters: counters.clone(),
            },
        );
        tokio::spawn(event_loop.run());
        tracing::info!(%peer_id, "control plane started");
        Ok((
            ControlHandle {
                peer_id,
                commands: command_tx,
                events: events_weak,
                members: members_rx,
                counters,
            },
            event_rx,
        ))
    }
}

/// Talks to the control task. Cheap to clone. The `try_*` calls queue a
/// command and return at once (for the daemon's main task, which must
/// never wait); the `async` ones wait for the task's answer (for tests and
/// one-shot callers).
#[derive(Debug, Clone)]
pub struct ControlHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    /// The event channel, held weakly: only to report its length.
    events: mpsc::WeakSender<ControlEvent>,
    members: watch::Receiver<Vec<PeerId>>,
    counters: Arc<ControlCounters>,
}

impl ControlHandle {
    /// Our libp2p identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// What the control plane dropped or failed at.
    pub fn counters(&self) -> &ControlCounters {
        &self.counters
    }

    /// The lengths of the command and event queues, for the watchdog.
    pub fn queue_probes(&self) -> Vec<crate::watchdog::Probe> {
        let events = self.events.clone();
        vec![
            crate::watchdog::channel_probe("control_commands", &self.commands),
            (
                "control_events",
                Box::new(move || {
                    events
                        .upgrade()
                        .map_or(0, |t| (t.max_capacity() - t.capacity()) as u64)
                }),
            ),
        ]
    }

    /// The members connected now (passed the gate, joined the topic).
    pub fn members(&self) -> Vec<PeerId> {
        self.members.borrow().clone()
    }

    /// Queues `command` without waiting; a full queue drops and counts it.
    fn try_command(&self, command: Command) -> Result<(), NotQueued> {
        self.commands.try_send(command).map_err(|e| {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                self.counters
                    .commands_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
            NotQueued
        })
    }

    /// Queues a dial of `address` (with or without a `/p2p/<peer-id>`
    /// suffix). Whether it worked shows in [`ControlHandle::members`].
    pub fn try_dial(&self, address: Multiaddr) -> Result<(), NotQueued> {
        self.try_command(Command::Dial {
            address,
            reply: None,
        })
    }

    /// Queues `data` for publishing to every connected member; gossipsub's
    /// refusals are counted in [`ControlCounters::publish_failed`].
    pub fn try_publish(&self, data: Vec<u8>) -> Result<(), NotQueued> {
        self.try_command(Command::Publish { data, reply: None })
    }

    /// Queues `data` for publishing like [`ControlHandle::try_publish`],
    /// and returns where gossipsub's answer arrives (a revocation's issuer
    /// reports whether it went out).
    pub fn try_publish_reported(
        &self,
        data: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<(), PublishError>>, NotQueued> {
        let (reply, answer) = oneshot::channel();
        self.try_command(Command::Publish {
            data,
            reply: Some(reply),
        })?;
        Ok(answer)
    }

    /// Queues a direct push of `records` to `peer` (`/weft/sync/1`).
    pub fn try_push(&self, peer: PeerId, records: Vec<Vec<u8>>) -> Result<(), NotQueued> {
        self.try_command(Command::Push { peer, records })
    }

    /// Queues the verdict on a [`ControlEvent::Message`]. Call it once per
    /// message, soon: gossipsub keeps unvalidated records only a few
    /// heartbeats.
    pub fn try_report(
        &self,
        message_id: MessageId,
        propagation_source: PeerId,
        verdict: Verdict,
    ) -> Result<(), NotQueued> {
        self.try_command(Command::Report {
            message_id,
            propagation_source,
            verdict,
        })
    }

    /// Queues closing every connection to `peer`.
    pub fn try_disconnect(&self, peer: PeerId) -> Result<(), NotQueued> {
        self.try_command(Command::Disconnect { peer })
    }

    /// Queues the answer to [`ControlEvent::RenewalRequest`] `id`.
    pub fn try_answer_renewal(&self, id: u64, response: Vec<u8>) -> Result<(), NotQueued> {
        self.try_command(Command::AnswerRenewal { id, response })
    }

    /// Queues the answer to [`ControlEvent::NominationRequest`] `id`.
    pub fn try_answer_nomination(&self, id: u64, response: Vec<u8>) -> Result<(), NotQueued> {
        self.try_command(Command::AnswerNomination { id, response })
    }

    /// Asks member `peer` to become an authority holder
    /// (`/weft/authority/1`) and waits for its answer, at most
    /// [`NOMINATION_TIMEOUT`](nomination::NOMINATION_TIMEOUT) once sent.
    /// For a task of its own: the main task never waits on this.
    pub async fn nominate(&self, peer: PeerId, request: Vec<u8>) -> Result<Vec<u8>, ControlError> {
        if request.len() > MAX_RENEWAL_LEN {
            return Err(ControlError::Nomination("request too long".into()));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Nominate {
            peer,
            request,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Queues replacing our credential (after a renewal) and presenting it
    /// at once to every connected peer.
    pub fn try_set_credential(&self, credential: Vec<u8>) -> Result<(), NotQueued> {
        self.try_command(Command::SetCredential { credential })
    }

    /// Asks `peer` for a certificate renewal (`/weft/renew/1`) and waits
    /// for its answer, at most [`RENEWAL_TIMEOUT`] once sent. Dials the
    /// peer first if the swarm knows an address for it. For a task of its
    /// own: the main task never waits on this.
    pub async fn renew(&self, peer: PeerId, request: Vec<u8>) -> Result<Vec<u8>, ControlError> {
        if request.len() > MAX_RENEWAL_LEN {
            return Err(ControlError::Renewal("request too long".into()));
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Renew {
            peer,
            request,
            reply,
        })
        .await?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    /// Dials `address` and returns the peer once the connection is up.
    pub async fn connect(&self, address: Multiaddr) -> Result<PeerId, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial {
            address,
            reply: Some(reply),
        })
        .await?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    #[cfg(test)]
    /// Dials `address` (with or without a `/p2p/<peer-id>` suffix) and
    /// returns the peer once the connection is up. Membership is decided
    /// afterwards and reported as an event.
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Dial {
            address,
            reply: Some(reply),
        })
        .await?;
        answer.await.map_err(|_| ControlError::Stopped)?
    }

    #[cfg(test)]
    /// Signs `data` and sends it to every connected member on the topic.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), PublishError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                data,
                reply: Some(reply),
            })
            .await
            .map_err(|_| PublishError::Stopped)?;
        answer.await.map_err(|_| PublishError::Stopped)?
    }

    #[cfg(test)]
    /// Reports the verdict on a [`ControlEvent::Message`]. Call it once per
    /// message, soon: gossipsub keeps unvalidated records only a few
    /// heartbeats.
    pub async fn report(
        &self,
        message_id: MessageId,
        propagation_source: PeerId,
        verdict: Verdict,
    ) -> Result<(), ControlError> {
        self.send(Command::Report {
            message_id,
            propagation_source,
            verdict,
        })
        .await
    }

    #[cfg(test)]
    /// The peers connected now that passed the gate.
    pub async fn connected_members(&self) -> Result<Vec<PeerId>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ConnectedMembers { reply }).await?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    #[cfg(test)]
    /// Closes every connection to `peer` (it may come back and face the gate
    /// again; refuse it there, e.g. once its certificate is revoked).
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), ControlError> {
        self.send(Command::Disconnect { peer }).await
    }

    // Kept for certificate renewal and `weft status`, which come next.
    #[allow(dead_code)]
    /// Replaces our credential, e.g. after renewal, and presents it at once
    /// to every connected peer.
    pub async fn set_credential(&self, credential: Vec<u8>) -> Result<(), ControlError> {
        if credential.len() > MAX_CREDENTIAL_LEN {
            return Err(ControlError::CredentialTooLong);
        }
        self.send(Command::SetCredential { credential }).await
    }

    // Kept for certificate renewal and `weft status`, which come next.
    #[allow(dead_code)]
    /// The addresses we listen on, as known once the IPv4 listener has
    /// reported its first one (others may follow a moment later; all IPv4
    /// ones share a port, and so do all IPv6 ones).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        answer.await.map_err(|_| ControlError::Stopped)
    }

    async fn send(&self, command: Command) -> Result<(), ControlError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| ControlError::Stopped)
    }
}
