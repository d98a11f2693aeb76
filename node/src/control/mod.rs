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
pub(crate) mod behaviour;
mod credential;
mod event_loop;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use libp2p::gossipsub::IdentTopic;
use libp2p::identity::Keypair;
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroize;

pub use credential::MAX_CREDENTIAL_LEN;
pub use libp2p::gossipsub::MessageId;
pub use libp2p::{Multiaddr, PeerId};
pub use sync::MAX_SYNC_RECORDS;

/// How long a newly connected peer has to present a credential.
pub const CREDENTIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a rejected peer's connections are refused. Bounded, so a peer
/// refused for an expired certificate can come back once renewed.
pub const REJECTED_PEER_BLOCK: Duration = Duration::from_secs(600);

/// Capacity of the command channel (handle to task). A full queue drops
/// the command and counts it.
pub const COMMAND_CAPACITY: usize = 1024;
/// Capacity of the event channel (task to owner). A full queue drops the
/// event and counts it: the swarm never waits for its owner.
pub const EVENT_CAPACITY: usize = 1024;

/// The membership gate: given a peer's libp2p identity and the credential
/// it presented, whether it is a member. Called on the control task, so it
/// must be quick, must not block and must not panic.
pub type Gate = Arc<dyn Fn(&PeerId, &[u8]) -> bool + Send + Sync>;

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

/// What the control plane tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A record to validate. Answer with [`ControlHandle::report`]: it is
    /// forwarded to other members only once accepted.
    Message {
        /// Identifies the record in the report.
        message_id: MessageId,
        /// The member that created and signed it.
        source: PeerId,
        /// The member it came from; the report names it too.
        propagation_source: PeerId,
        /// The record.
        data: Vec<u8>,
    },
    /// A peer passed the gate and joined the records topic: from now on a
    /// publish reaches it. Emitted again, with the new credential, when the
    /// member presents a renewed one.
    MemberConnected {
        /// The member.
        peer: PeerId,
        /// The credential the gate accepted.
        credential: Vec<u8>,
    },
    /// A peer failed the gate; it has been disconnected and is blocked for
    /// [`REJECTED_PEER_BLOCK`]. If it had been announced as a member,
    /// [`ControlEvent::Disconnected`] follows.
    PeerRejected {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: RejectReason,
    },
    /// A member announced by [`ControlEvent::MemberConnected`] lost its last
    /// connection.
    Disconnected {
        /// The member.
        peer: PeerId,
    },
    /// Records a member pushed directly (`/weft/sync/1`), to validate like
    /// gossip records; they are not forwarded and need no report.
    Records {
        /// The member that pushed them.
        peer: PeerId,
        /// The records.
        records: Vec<Vec<u8>>,
    },
}

/// What the control plane dropped or failed at, for metrics. Shared by the
/// handle (commands it could not queue) and the task (events it could not
/// hand over, publishes gossipsub refused).
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Commands dropped because the control task's queue was full.
    pub commands_dropped: AtomicU64,
    /// Events dropped because the owner's queue was full.
    pub events_dropped: AtomicU64,
    /// Publishes gossipsub refused, by reason.
    pub publish_failed: Mutex<BTreeMap<&'static str, u64>>,
}

impl ControlCounters {
    fn publish_failed(&self, error: &PublishError) {
        if let Ok(mut m) = self.publish_failed.lock() {
            *m.entry(error.as_str()).or_default() += 1;
        }
    }
}

/// Why a peer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The gate refused the credential it presented.
    CredentialRefused,
    /// It presented none within [`CREDENTIAL_TIMEOUT`].
    NoCredential,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::CredentialRefused => "credential refused",
            RejectReason::NoCredential => "no credential presented in time",
        })
    }
}

/// The caller's verdict on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it to other members.
    Accept,
    /// Invalid (bad signature, forged, malformed): drop it and penalise the
    /// member it came from.
    Reject,
    /// Not worth forwarding (stale, duplicate), but no fault: drop it
    /// without penalty.
    Ignore,
}

/// A call on the handle failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The control task has stopped (its event receiver or every handle was
    /// dropped, or it failed).
    #[error("the control plane task has stopped")]
    Stopped,
    /// The address could not be dialled.
    #[error("cannot dial: {0}")]
    Dial(#[source] libp2p::swarm::DialError),
    /// A credential longer than [`MAX_CREDENTIAL_LEN`] was given.
    #[error("credential longer than {MAX_CREDENTIAL_LEN} bytes")]
    CredentialTooLong,
}

/// A publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No connected member has joined the records topic.
    #[error("no member to publish to")]
    NoMembers,
    /// The record is larger than a gossip frame allows.
    #[error("record too large for gossip")]
    TooLarge,
    /// The same record was published (or received) recently; message ids
    /// are the hash of the content.
    #[error("record already published")]
    Duplicate,
    /// Gossipsub refused it for another reason (signing, full queues).
    #[error("gossipsub refused the record: {0}")]
    Gossipsub(#[source] libp2p::gossipsub::PublishError),
    /// The control task has stopped.
    #[cfg(test)]
    #[error("the control plane task has stopped")]
    Stopped,
}

impl PublishError {
    /// A short name for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            PublishError::NoMembers => "no_members",
            PublishError::TooLarge => "too_large",
            PublishError::Duplicate => "duplicate",
            PublishError::Gossipsub(_) => "gossipsub",
            #[cfg(test)]
            PublishError::Stopped => "stopped",
        }
    }
}

/// A command could not be queued: the control task's queue is full (the
/// command was dropped and counted) or the task has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the control plane's command queue is full or closed")]
pub struct NotQueued;

/// Requests from the handle to the control task.
#[derive(Debug)]
// SetCredential and ListenAddrs serve the handle methods kept for what
// comes next (see there).
#[allow(dead_code)]
enum Command {
    Dial {
        address: Multiaddr,
        reply: Option<oneshot::Sender<Result<PeerId, ControlError>>>,
    },
    Publish {
        data: Vec<u8>,
        reply: Option<oneshot::Sender<Result<(), PublishError>>>,
    },
    Push {
        peer: PeerId,
        records: Vec<Vec<u8>>,
    },
    Report {
        message_id: MessageId,
        propagation_source: PeerId,
        verdict: Verdict,
    },
    ConnectedMembers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Disconnect {
        peer: PeerId,
    },
    SetCredential {
        credential: Vec<u8>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
}

/// The control plane's entry point.
#[derive(Debug)]
pub struct Control;

impl Control {
    /// Builds the swarm, listens on `/ip4/0.0.0.0/udp/{port}/quic-v1` (and
    /// `/ip6/::/…` where IPv6 is available), dials the bootstrap addresses,
    /// and spawns the task that owns it all on the current Tokio runtime.
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
        let ipv4_listener = swarm
            .listen_on(v4)
            .with_context(|| format!("cannot listen on UDP port {}", config.listen_port))?;
        let v6: Multiaddr = format!("/ip6/::/udp/{}/quic-v1", config.listen_port)
            .parse()
            .context("listen address")?;
        if let Err(e) = swarm.listen_on(v6) {
            tracing::info!(error = %e, "control plane: no IPv6 listener");
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
