//! Hostile peers on weft's control plane, each a plain libp2p node on QUIC with an Ed25519
//! identity, run on a thread inside a test's namespace with its own single-threaded Tokio
//! runtime. They judge nothing: the scenario does.
//!
//! - [`Intrusion`]: an outsider (gossipsub with signed messages, nothing else). It dials one
//!   member, publishes what the scenario hands it until the member hangs up, then dials once
//!   more to see whether it is let back in, and reports what it saw and when. It never speaks
//!   `/weft/credential/1`, so it never presents a credential.
//! - [`MemberFlood`]: a member gone bad. It holds a real identity and certificate (a directory
//!   `weft join` wrote), presents the certificate on `/weft/credential/1` like any member, and
//!   once admitted publishes what the scenario hands it at a fixed rate for a fixed time.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{ConnectionError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder};

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

/// A member flooding the control plane with records.
#[derive(Debug, Clone)]
pub struct MemberFlood {
    /// The member it dials: its control-plane address, `/ip4/…/udp/…/quic-v1`.
    pub target: Multiaddr,
    /// The records topic.
    pub topic: String,
    /// The Ed25519 secret of the member's identity (`identity.key`), which is its libp2p
    /// identity: records it signs with the same key name it as their origin.
    pub identity_secret: [u8; 32],
    /// The member's certificate as weft encodes it (`node.cert`, base64-decoded), presented on
    /// `/weft/credential/1`.
    pub credential: Vec<u8>,
    /// Publishes a second.
    pub per_second: u32,
    /// How long it publishes, from its admission.
    pub duration: Duration,
    /// How long it waits for its connection, and then for the member's credential.
    pub patience: Duration,
}

/// What the flooding member saw.
#[derive(Debug)]
pub struct FloodReport {
    /// Its libp2p identity.
    pub peer_id: PeerId,
    /// When the member answered the credential exchange, counted from the connection.
    pub admitted_after: Duration,
    /// Publishes attempted.
    pub attempted: usize,
    /// Publishes gossipsub sent on.
    pub sent: usize,
    /// Publishes gossipsub refused, by its reason.
    pub refused: BTreeMap<String, usize>,
    /// How long it flooded.
    pub flooded_for: Duration,
    /// When (counted from the connection) and how the member closed the connection, if it did.
    pub closed: Option<(Duration, String)>,
}

/// The credential exchange's protocol name, as weft speaks it.
const CREDENTIAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/weft/credential/1");

/// A flooding member's behaviours: the credential exchange and gossipsub.
#[derive(NetworkBehaviour)]
struct MemberBehaviour {
    credential: request_response::Behaviour<CredentialCodec>,
    gossipsub: gossipsub::Behaviour,
}

/// weft's credential framing: a two-byte big-endian length and that many bytes, each way.
#[derive(Debug, Clone, Copy, Default)]
struct CredentialCodec;

async fn read_framed<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let mut bytes = vec![0; usize::from(u16::from_be_bytes(len))];
    io.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn write_framed<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "credential too long"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

impl request_response::Codec for CredentialCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_framed(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        c: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &c).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        c: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_framed(io, &c).await
    }
}

impl MemberFlood {
    /// Runs the flood from inside `ns`; `payload(i)` gives the bytes of the `i`-th publish.
    /// Panics if the member does not connect or answer the credential within the patience.
    pub fn run(&self, ns: &Netns, payload: impl FnMut(usize) -> Vec<u8> + Send) -> FloodReport {
        ns.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread Tokio runtime");
            runtime.block_on(self.drive(payload))
        })
    }

    async fn drive(&self, mut payload: impl FnMut(usize) -> Vec<u8>) -> FloodReport {
        let keypair = Keypair::ed25519_from_bytes(self.identity_secret)
            .expect("any 32 bytes are an Ed25519 secret");
        let peer_id = keypair.public().to_peer_id();
        let topic = IdentTopic::new(self.topic.clone());
        let mut swarm = build_member_swarm(keypair, &topic);
        swarm
            .dial(self.target.clone())
            .unwrap_or_else(|e| panic!("flooder: cannot dial {}: {e}", self.target));

        // Connect, present the credential, and wait for the member's answer to it.
        let mut connected = None;
        let admitted = tokio::time::timeout(self.patience, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        connected.get_or_insert(Instant::now());
                        swarm
                            .behaviour_mut()
                            .credential
                            .send_request(&peer_id, self.credential.clone());
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("flooder: dialling {} failed: {error}", self.target)
                    }
                    SwarmEvent::Behaviour(MemberBehaviourEvent::Credential(
                        request_response::Event::Message { peer, message, .. },
                    )) => match message {
                        request_response::Message::Request { channel, .. } => {
                            let _ = swarm
                                .behaviour_mut()
                                .credential
                                .send_response(channel, self.credential.clone());
                        }
                        request_response::Message::Response { .. } => return peer,
                    },
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "flooder: no credential exchange with {} within {:?}",
                self.target, self.patience
            )
        });
        let connected = connected.expect("a connection came before the credential");
        let admitted_after = connected.elapsed();

        // The member's gate ran when it answered; a moment for its admission to reach
        // gossipsub's scores before the first record.
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut closed = None;
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    if let Some(c) = closed_by(&event, admitted, connected) {
                        closed = Some(c);
                        break;
                    }
                }
                () = tokio::time::sleep_until(settle) => break,
            }
        }

        let every = Duration::from_secs(1) / self.per_second.max(1);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let end = tokio::time::Instant::now() + self.duration;
        let total = (self.duration.as_secs_f64() * f64::from(self.per_second)).round() as usize;
        let (mut attempted, mut sent) = (0, 0);
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        while closed.is_none() && attempted < total {
            tokio::select! {
                event = swarm.select_next_some() => {
                    closed = closed_by(&event, admitted, connected);
                    if let SwarmEvent::Behaviour(MemberBehaviourEvent::Credential(
                        request_response::Event::Message {
                            message: request_response::Message::Request { channel, .. },
                            ..
                        },
                    )) = event
                    {
                        let _ = swarm
                            .behaviour_mut()
                            .credential
                            .send_response(channel, self.credential.clone());
                    }
                }
                _ = ticks.tick() => {
                    let data = payload(attempted);
                    attempted += 1;
                    match swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
                        Ok(_) => sent += 1,
                        Err(e) => *refused.entry(e.to_string()).or_default() += 1,
                    }
                }
                () = tokio::time::sleep_until(end + Duration::from_secs(5)) => break,
            }
        }
        let flooded_for = started.elapsed();
        // Let the last records leave before the runtime ends.
        let drain = tokio::time::Instant::now() + Duration::from_secs(1);
        while closed.is_none() {
            tokio::select! {
                event = swarm.select_next_some() => closed = closed_by(&event, admitted, connected),
                () = tokio::time::sleep_until(drain) => break,
            }
        }
        FloodReport {
            peer_id,
            admitted_after,
            attempted,
            sent,
            refused,
            flooded_for,
            closed,
        }
    }
}

/// When and how the member closed its last connection, if `event` says so.
fn closed_by(
    event: &SwarmEvent<MemberBehaviourEvent>,
    target: PeerId,
    connected: Instant,
) -> Option<(Duration, String)> {
    match event {
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            cause,
            ..
        } if *peer_id == target => Some((
            connected.elapsed(),
            cause
                .as_ref()
                .map_or("closed without an error".to_owned(), |e| e.to_string()),
        )),
        _ => None,
    }
}

/// A swarm with the credential exchange and gossipsub on QUIC, subscribed to `topic`.
fn build_member_swarm(keypair: Keypair, topic: &IdentTopic) -> Swarm<MemberBehaviour> {
    let mut gossipsub = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(keypair.clone()),
        gossipsub::Config::default(),
    )
    .unwrap_or_else(|e| panic!("flooder: gossipsub: {e}"));
    gossipsub
        .subscribe(topic)
        .unwrap_or_else(|e| panic!("flooder: cannot subscribe: {e}"));
    let credential = request_response::Behaviour::new(
        [(CREDENTIAL_PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default(),
    );
    let Ok(builder) = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| MemberBehaviour {
            credential,
            gossipsub,
        });
    builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}
