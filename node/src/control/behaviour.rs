//! The control plane's libp2p behaviour and swarm: gossipsub for records,
//! the credential exchange, the direct record push, certificate renewal,
//! the block list for rejected peers and the connection limits, on QUIC.
//!
//! This file owns every tuning number of gossipsub (mesh sizes, heartbeat,
//! peer-scoring weights and thresholds) and of the connection limits, and
//! why each has its value. It builds the swarm and nothing more: it never
//! drives it.

use std::time::Duration;

use anyhow::{anyhow, Context};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, MessageId, PeerScoreParams, PeerScoreThresholds,
    TopicScoreParams, ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{allow_block_list, connection_limits, Swarm, SwarmBuilder};
use sha2::{Digest, Sha256};

use super::{credential, nomination, renewal, sync};

/// The swarm's behaviours. Polled in field order: the block list first, so
/// a blocked peer is closed before the others act on it, then the limits,
/// which refuse a connection before any other behaviour spends on it.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) credential: credential::Behaviour,
    pub(super) sync: sync::Behaviour,
    pub(super) renewal: renewal::Behaviour,
    pub(super) nomination: nomination::Behaviour,
    pub(super) gossipsub: gossipsub::Behaviour,
}

/// Most connections being set up at once, each way. Anyone who can reach
/// the control port can start handshakes; a member dials a few neighbours
/// at a time and is dialled by about as many.
pub const MAX_PENDING: u32 = 64;
/// Most established connections. A member keeps a bounded set of control
/// neighbours (about two per doubling of the fleet, both ways: under 64
/// at 10,000 members); the rest is room for joins and redials.
pub const MAX_ESTABLISHED: u32 = 256;
/// Most established connections with one peer: two members dialling each
/// other at once hold two, and a restarted member's new one overlaps its
/// dead one until the idle timeout.
pub const MAX_PER_PEER: u32 = 3;

/// The connection limits above.
fn limits() -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING))
        .with_max_pending_outgoing(Some(MAX_PENDING))
        .with_max_established(Some(MAX_ESTABLISHED))
        .with_max_established_per_peer(Some(MAX_PER_PEER))
}

/// Gossipsub heartbeat: mesh upkeep, gossip emission and score decay.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Largest gossip frame (record plus signature and framing). Records are
/// well under a kilobyte; this is gossipsub's default, stated here.
const MAX_TRANSMIT_SIZE: usize = 64 * 1024;

/// Application score (P5) of a peer that has not passed the gate yet: far
/// below [`GRAYLIST_THRESHOLD`], so gossipsub drops its RPCs whole (after
/// noting its subscriptions), never grafts it, publishes or gossips to it.
pub(super) const PENDING_SCORE: f64 = -1000.0;
/// Application score of a member: neutral.
pub(super) const MEMBER_SCORE: f64 = 0.0;

/// Weight of one invalid (rejected) message, squared per count (P4): one
/// costs 10, two 40, three 90 (graylisted).
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;
/// The invalid-message count falls to a tenth over this time.
const INVALID_MESSAGE_MEMORY: Duration = Duration::from_secs(600);

/// Below this, we stop gossiping message ids to a peer (two invalid
/// messages).
const GOSSIP_THRESHOLD: f64 = -20.0;
/// Below this, we stop publishing to it.
const PUBLISH_THRESHOLD: f64 = -50.0;
/// Below this, everything it sends is dropped (three invalid messages).
const GRAYLIST_THRESHOLD: f64 = -80.0;

// A pending peer is graylisted; one invalid record does not silence a
// member, three do.
const _: () = assert!(PENDING_SCORE < GRAYLIST_THRESHOLD);
const _: () = assert!(INVALID_MESSAGE_WEIGHT >= GOSSIP_THRESHOLD);
const _: () = assert!(9.0 * INVALID_MESSAGE_WEIGHT < GRAYLIST_THRESHOLD);

/// Builds the swarm for `keypair`, subscribed to `topic`.
pub(super) fn build_swarm(
    keypair: Keypair,
    topic: &IdentTopic,
) -> anyhow::Result<Swarm<Behaviour>> {
    let mut gossipsub = gossipsub::Behaviour::new(
        // Every record is signed by its libp2p origin, and Strict validation
        // drops unsigned or badly signed ones before the caller sees them.
        MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config()?,
    )
    .map_err(|e| anyhow!("gossipsub: {e}"))?;
    gossipsub
        .with_peer_score(score_params(topic), score_thresholds())
        .map_err(|e| anyhow!("gossipsub peer scoring: {e}"))?;
    gossipsub
        .subscribe(topic)
        .context("cannot subscribe to the records topic")?;
    let behaviour = Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits()),
        credential: credential::behaviour(),
        sync: sync::behaviour(),
        renewal: renewal::behaviour(),
        nomination: nomination::behaviour(),
        gossipsub,
    };
    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut c| {
            // A member that moves leaves its old connections dead; they
            // must die quickly everywhere so the member's new connections
            // are the ones gossip uses (see `mesh::gossip`).
            c.max_idle_timeout = QUIC_IDLE_TIMEOUT_MS;
            c.keep_alive_interval = Duration::from_millis(u64::from(QUIC_IDLE_TIMEOUT_MS) / 4);
            c
        })
        .with_behaviour(|_| behaviour);
    // Members' connections stay up while gossipsub holds its streams open;
    // this only bounds how long an otherwise idle connection lingers.
    Ok(builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// QUIC idle timeout of control connections, in milliseconds.
pub const QUIC_IDLE_TIMEOUT_MS: u32 = 4_000;

fn gossipsub_config() -> anyhow::Result<gossipsub::Config> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        // The caller judges every record and reports Accept before it is
        // forwarded.
        .validate_messages()
        // One id per record content: the same record from two origins, or
        // republished, is one message.
        .message_id_fn(|message| MessageId::new(&Sha256::digest(&message.data)))
        .heartbeat_interval(HEARTBEAT)
        // Small networks: a node with a single neighbour still has a mesh,
        // and it grafts its second neighbour as soon as it has one.
        .mesh_n_low(2)
        .mesh_n(4)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        // A node's own records go to every subscribed member it is
        // connected to, not only its mesh.
        .flood_publish(true)
        .max_transmit_size(MAX_TRANSMIT_SIZE)
        .build()
        .map_err(|e| anyhow!("gossipsub configuration: {e}"))
}

/// Peer scoring: only misbehaviour counts. Time in mesh and first
/// deliveries (P1, P2) would let a member bank credit against invalid
/// records; mesh delivery rates (P3) would punish members for a quiet
/// network; IP colocation (P6) is off because members are authenticated and
/// several may share a NAT (and tests share 127.0.0.1).
fn score_params(topic: &IdentTopic) -> PeerScoreParams {
    let records = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(INVALID_MESSAGE_MEMORY),
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    params.topics.insert(topic.hash(), records);
    params
}

fn score_thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: GOSSIP_THRESHOLD,
        publish_threshold: PUBLISH_THRESHOLD,
        graylist_threshold: GRAYLIST_THRESHOLD,
        // Peer exchange is off; scores never reach positive territory.
        accept_px_threshold: 0.0,
        opportunistic_graft_threshold: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gossipsub_configuration_and_scoring_are_valid() {
        gossipsub_config().unwrap();
        let topic = IdentTopic::new("weft/test/records");
        score_params(&topic).validate().unwrap();
        score_thresholds().validate().unwrap();
    }
}
