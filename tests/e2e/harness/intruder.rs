//! An intruder on weft's control plane: a plain libp2p node (QUIC and gossipsub with signed
//! messages, nothing else) with an Ed25519 identity of its own, run on a thread inside a test's
//! namespace with its own single-threaded Tokio runtime. It dials one member, publishes what the
//! scenario hands it until the member hangs up, then dials once more to see whether it is let
//! back in, and reports what it saw and when. It never speaks `/weft/credential/1`, so it never
//! presents a credential, and it judges nothing: the scenario does.

use std::time::{Duration, Instant};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::swarm::{ConnectionError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder};

use super::Netns;

/// What the intruder does.
#[derive(Debug, Clone)]
pub struct Intrusion {
    /// The member's control-plane address, `/ip4/…/udp/…/quic-v1`.
    pub target: Multiaddr,
    /// The gossipsub topic it subscribes to and publishes on.
    pub topic: String,
    /// The Ed25519 secret of its libp2p identity, so that records the scenario signs with the
    /// same key name this peer as their origin.
    pub identity_secret: [u8; 32],
    /// Time between publishes.
    pub publish_every: Duration,
    /// How long it waits for its first connection to come up, and then for it to be closed.
    pub patience: Duration,
    /// How long its second connection may stay up before it counts as let back in.
    pub redial_patience: Duration,
}

/// What the intruder saw.
#[derive(Debug)]
pub struct IntrusionReport {
    /// Its libp2p identity.
    pub peer_id: PeerId,
    /// How long its first dial took to connect.
    pub connect_took: Duration,
    /// When the member's subscription to the topic arrived, counted from the connection.
    pub target_subscribed: Option<Duration>,
    /// Each publish by payload index: `Ok` once gossipsub sent it to the member, otherwise
    /// gossipsub's refusal (e.g. before the member's subscription arrived).
    pub publishes: Vec<Result<(), String>>,
    /// When (counted from the connection) and how its first connection was closed, if it was
    /// within the patience.
    pub closed: Option<(Duration, String)>,
    /// What came of the second dial.
    pub redial: Redial,
}

/// The second dial, made once the first connection was closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Redial {
    /// Not made: the first connection was never closed.
    NotTried,
    /// The dial failed, or its connection was closed, `after` the dial.
    Refused {
        after: Duration,
        /// Whether the connection had come up before it was closed.
        established: bool,
        how: String,
    },
    /// Its connection was still up after the redial patience.
    LetIn,
}

impl Intrusion {
    /// Runs the intrusion from inside `ns`; `payload(i)` gives the bytes of the `i`-th publish.
    /// Panics if the first dial cannot connect within the patience.
    pub fn run(&self, ns: &Netns, payload: impl FnMut(usize) -> Vec<u8> + Send) -> IntrusionReport {
        ns.run(|| {
            // Made on the namespace's thread, so the QUIC socket it opens lives there.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread Tokio runtime");
            runtime.block_on(self.drive(payload))
        })
    }

    async fn drive(&self, mut payload: impl FnMut(usize) -> Vec<u8>) -> IntrusionReport {
        let keypair = Keypair::ed25519_from_bytes(self.identity_secret)
            .expect("any 32 bytes are an Ed25519 secret");
        let peer_id = keypair.public().to_peer_id();
        let topic = IdentTopic::new(self.topic.clone());
        let mut swarm = build_swarm(keypair, &topic);

        let dialled = Instant::now();
        swarm
            .dial(self.target.clone())
            .unwrap_or_else(|e| panic!("intruder: cannot dial {}: {e}", self.target));
        let connecting = tokio::time::timeout(self.patience, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        return Err(error.to_string())
                    }
                    _ => {}
                }
            }
        });
        let target = match connecting.await {
            Ok(Ok(target)) => target,
            Ok(Err(error)) => panic!("intruder: dialling {} failed: {error}", self.target),
            Err(_) => panic!(
                "intruder: no connection to {} within {:?}",
                self.target, self.patience
            ),
        };
        let connect_took = dialled.elapsed();

        let connected = Instant::now();
        let deadline = tokio::time::Instant::from_std(connected + self.patience);
        let mut next_publish = tokio::time::Instant::now();
        let mut target_subscribed = None;
        let mut publishes = Vec::new();
        let closed = loop {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. })
                        if peer_id == target =>
                    {
                        target_subscribed.get_or_insert(connected.elapsed());
                    }
                    SwarmEvent::ConnectionClosed { peer_id, num_established: 0, cause, .. }
                        if peer_id == target =>
                    {
                        break Some((connected.elapsed(), describe(cause)));
                    }
                    _ => {}
                },
                () = tokio::time::sleep_until(next_publish) => {
                    let data = payload(publishes.len());
                    let sent = swarm
                        .behaviour_mut()
                        .publish(topic.clone(), data)
                        .map(drop)
                        .map_err(|e| e.to_string());
                    publishes.push(sent);
                    next_publish += self.publish_every;
                }
                () = tokio::time::sleep_until(deadline) => break None,
            }
        };

        let redial = if closed.is_some() {
            self.redial(&mut swarm, target).await
        } else {
            Redial::NotTried
        };
        IntrusionReport {
            peer_id,
            connect_took,
            target_subscribed,
            publishes,
            closed,
            redial,
        }
    }

    /// Dials the member again and waits for that connection to be refused or closed.
    async fn redial(&self, swarm: &mut Swarm<gossipsub::Behaviour>, target: PeerId) -> Redial {
        let dialled = Instant::now();
        if let Err(e) = swarm.dial(self.target.clone()) {
            panic!("intruder: cannot dial {} again: {e}", self.target);
        }
        let mut established = false;
        let refused = tokio::time::timeout(self.redial_patience, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == target => {
                        established = true;
                    }
                    SwarmEvent::ConnectionClosed { peer_id, cause, .. } if peer_id == target => {
                        return describe(cause);
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => return error.to_string(),
                    _ => {}
                }
            }
        })
        .await;
        match refused {
            Ok(how) => Redial::Refused {
                after: dialled.elapsed(),
                established,
                how,
            },
            Err(_) => Redial::LetIn,
        }
    }
}

/// Why a connection closed, as the swarm reported it.
fn describe(cause: Option<ConnectionError>) -> String {
    cause.map_or("closed without an error".to_owned(), |e| e.to_string())
}

/// A swarm with nothing but gossipsub on QUIC, subscribed to `topic`.
fn build_swarm(keypair: Keypair, topic: &IdentTopic) -> Swarm<gossipsub::Behaviour> {
    let mut gossipsub = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(keypair.clone()),
        gossipsub::Config::default(),
    )
    .unwrap_or_else(|e| panic!("intruder: gossipsub: {e}"));
    gossipsub
        .subscribe(topic)
        .unwrap_or_else(|e| panic!("intruder: cannot subscribe: {e}"));
    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| gossipsub);
    // Only the member may end the connection: the swarm's own idle timeout must not.
    builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}
