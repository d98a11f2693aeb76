//! What the control task and its owner say to each other: the events it
//! hands over, the commands the handle queues, verdicts, errors, drop
//! counters, the bounds of both queues and of a credential.
//!
//! Plain types only: the task (`event_loop.rs`), the handle (`mod.rs`) and
//! the credential exchange import them from here, and this file imports
//! none of them, so the control plane's files never import each other in a
//! circle. It never does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::gossipsub::MessageId;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

/// Largest credential sent or accepted. A weft certificate is a few
/// hundred bytes; anything longer is refused before it reaches the gate.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// How long a newly connected peer has to present a credential: a round
/// trip and one signature check, with room for a host whose CPU is
/// saturated (a fleet restarting on few cores took over 5 s).
pub const CREDENTIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a peer whose credential was refused has its connections
/// refused. Bounded, so a peer refused for an expired certificate can come
/// back once renewed.
pub const REJECTED_PEER_BLOCK: Duration = Duration::from_secs(600);

/// How long a peer that presented no credential in time has its
/// connections refused: long enough that a silent peer cannot hold a
/// pending slot in a loop, short enough that an honest member that was
/// only slow is back within a neighbour redial or two.
pub const SILENT_PEER_BLOCK: Duration = Duration::from_secs(15);

/// Capacity of the command channel (handle to task). A full queue drops
/// the command and counts it.
pub const COMMAND_CAPACITY: usize = 1024;
/// Capacity of the event channel (task to owner). A full queue drops the
/// event and counts it: the swarm never waits for its owner.
pub const EVENT_CAPACITY: usize = 1024;

/// The membership gate: given a peer's libp2p identity and the credential
/// it presented, whether it is a member. Called on the control task, so it
/// must be quick, must not block and must not panic.
pub type Gate = Arc<dyn Fn(&PeerId, &[u8]) -> Admit + Send + Sync>;

/// The gate's verdict on a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A member: it joins the records topic.
    Member,
    /// Not a member now, but one that may renew its certificate (it has
    /// expired recently): it stays pending, gets no record, may ask for a
    /// renewal and present the renewed credential before its deadline;
    /// otherwise it is held off only as a silent peer is.
    RenewalOnly,
    /// Refused: disconnected and blocked for [`REJECTED_PEER_BLOCK`].
    Refused,
}

impl From<bool> for Admit {
    fn from(member: bool) -> Self {
        if member {
            Admit::Member
        } else {
            Admit::Refused
        }
    }
}

/// What the control plane tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    /// A record to validate. Answer with
    /// [`ControlHandle::report`](super::ControlHandle::report): it is
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
    /// A member (or a peer whose certificate may be renewed) asks for a
    /// new certificate (`/weft/renew/1`). Answer with
    /// [`ControlHandle::try_answer_renewal`](super::ControlHandle::try_answer_renewal)
    /// and this `id`; unanswered requests are dropped after the renewal
    /// timeout.
    RenewalRequest {
        /// The peer that asked; QUIC proved its identity.
        peer: PeerId,
        /// Names the request in the answer.
        id: u64,
        /// The request.
        request: Vec<u8>,
    },
    /// A member asks this one to become an authority holder
    /// (`/weft/authority/1`). Answer with
    /// [`ControlHandle::try_answer_nomination`](super::ControlHandle::try_answer_nomination)
    /// and this `id`.
    NominationRequest {
        /// The member that asked; QUIC proved its identity.
        peer: PeerId,
        /// Names the request in the answer.
        id: u64,
        /// The request.
        request: Vec<u8>,
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
    /// Records dropped because their origin sent more than its budget.
    pub records_over_rate: AtomicU64,
    /// Renewal requests turned away unread: from a peer neither a member
    /// nor allowed to renew, or beyond the requests already waiting.
    pub renewals_turned_away: AtomicU64,
    /// Nominations turned away unread: from a peer that is not a member,
    /// or beyond the nominations already waiting.
    pub nominations_turned_away: AtomicU64,
    /// Connections refused before any behaviour spent on them, by reason
    /// (`limit`: over a connection limit; `blocked`: a blocked peer).
    pub connections_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl ControlCounters {
    pub(super) fn connection_refused(&self, reason: &'static str) {
        if let Ok(mut m) = self.connections_refused.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub(super) fn publish_failed(&self, error: &PublishError) {
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
    /// A renewal request got no answer: the peer is not connected, refused
    /// the stream, closed it, or did not answer in time.
    #[error("renewal request failed: {0}")]
    Renewal(String),
    /// A nomination got no answer, for the same reasons.
    #[error("nomination failed: {0}")]
    Nomination(String),
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
pub(super) enum Command {
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
    Renew {
        peer: PeerId,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, ControlError>>,
    },
    AnswerRenewal {
        id: u64,
        response: Vec<u8>,
    },
    Nominate {
        peer: PeerId,
        request: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, ControlError>>,
    },
    AnswerNomination {
        id: u64,
        response: Vec<u8>,
    },
}
