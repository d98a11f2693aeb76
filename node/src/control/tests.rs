//! Scenario tests for the control plane: real swarms on QUIC over the
//! loopback interface, in one process.
//!
//! Members are [`Control`]s. Intruders are bare swarms built from the same
//! behaviour and driven by the test itself, so that they can misbehave on
//! purpose (publish before presenting a credential, never present one) and
//! watch their own connection close. Every wait is bounded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use libp2p::Swarm;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::api::{RejectReason, CREDENTIAL_TIMEOUT};
use super::behaviour::{build_swarm, Behaviour, BehaviourEvent};
use super::*;

const TOPIC: &str = "weft/00112233/records";
/// Bound on any wait for something that should happen (a silent peer is
/// closed only after the credential deadline).
const WAIT: Duration = CREDENTIAL_TIMEOUT.saturating_add(Duration::from_secs(5));
/// How long we watch for something that must not happen.
const QUIET: Duration = Duration::from_secs(2);

type Events = mpsc::Receiver<ControlEvent>;

/// A member whose gate admits exactly the credential `b"member"`.
fn spawn_member(seed: u8) -> (ControlHandle, Events) {
    spawn_with_gate(
        seed,
        Arc::new(|_, credential| (credential == b"member").into()),
    )
}

/// A node presenting `b"member"` and judging others with `gate`.
fn spawn_with_gate(seed: u8, gate: Gate) -> (ControlHandle, Events) {
    Control::spawn(
        ControlConfig {
            identity_secret: [seed; 32],
            listen_port: 0,
            topic: TOPIC.into(),
            credential: b"member".to_vec(),
            bootstrap: Vec::new(),
        },
        gate,
    )
    .unwrap()
}

/// `node`'s address on 127.0.0.1: its IPv4 listener is on 0.0.0.0, so any
/// IPv4 address it reports gives the port.
async fn loopback(node: &ControlHandle) -> Multiaddr {
    let addrs = bounded(node.listen_addrs()).await.unwrap();
    let port = addrs
        .iter()
        .find(|a| matches!(a.iter().next(), Some(Protocol::Ip4(_))))
        .and_then(|a| {
            a.iter().find_map(|p| match p {
                Protocol::Udp(port) => Some(port),
                _ => None,
            })
        })
        .expect("an IPv4 listen address");
    format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
        .parse()
        .unwrap()
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    timeout(WAIT, future).await.expect("timed out")
}

/// The next event that `pick` selects, skipping other membership events.
/// A record is never skipped: one that `pick` does not select fails the
/// test.
async fn next_matching<T>(
    events: &mut Events,
    mut pick: impl FnMut(&ControlEvent) -> Option<T>,
) -> T {
    bounded(async {
        loop {
            let event = events.recv().await.expect("control task alive");
            if let Some(found) = pick(&event) {
                return found;
            }
            if let ControlEvent::Message { data, .. } = event {
                panic!("unexpected record {:?}", String::from_utf8_lossy(&data));
            }
        }
    })
    .await
}

async fn member_connected(events: &mut Events, expected: PeerId) {
    let credential = member_credential(events, expected).await;
    assert_eq!(credential, b"member");
}

/// The credential in the next MemberConnected for `expected`.
async fn member_credential(events: &mut Events, expected: PeerId) -> Vec<u8> {
    next_matching(events, |e| match e {
        ControlEvent::MemberConnected { peer, credential } if *peer == expected => {
            Some(credential.clone())
        }
        _ => None,
    })
    .await
}

async fn disconnected(events: &mut Events, expected: PeerId) {
    next_matching(events, |e| match e {
        ControlEvent::Disconnected { peer } if *peer == expected => Some(()),
        _ => None,
    })
    .await
}

/// The next record: (id, source, propagation source, data).
async fn message(events: &mut Events) -> (MessageId, PeerId, PeerId, Vec<u8>) {
    next_matching(events, |e| match e {
        ControlEvent::Message {
            message_id,
            source,
            propagation_source,
            data,
        } => Some((
            message_id.clone(),
            *source,
            *propagation_source,
            data.clone(),
        )),
        _ => None,
    })
    .await
}

/// Fails if a record arrives within [`QUIET`].
async fn no_message(events: &mut Events) {
    let found = timeout(QUIET, async {
        loop {
            match events.recv().await {
                Some(ControlEvent::Message { data, .. }) => return data,
                Some(_) => {}
                None => std::future::pending().await,
            }
        }
    })
    .await;
    if let Ok(data) = found {
        panic!("unexpected record {:?}", String::from_utf8_lossy(&data));
    }
}

async fn rejected(events: &mut Events, expected: PeerId) -> RejectReason {
    next_matching(events, |e| match e {
        ControlEvent::PeerRejected { peer, reason } if *peer == expected => Some(*reason),
        _ => None,
    })
    .await
}

/// A bare swarm with the control plane's behaviours and no gate.
fn intruder(seed: u8) -> Swarm<Behaviour> {
    let keypair = Keypair::ed25519_from_bytes([seed; 32]).unwrap();
    build_swarm(keypair, &IdentTopic::new(TOPIC)).unwrap()
}

/// Members a, b and c (identity seeds in that order), a and c connected to
/// b, each told of its connections.
async fn around_b(seeds: [u8; 3]) -> [(ControlHandle, Events); 3] {
    let [(a, mut a_events), (b, mut b_events), (c, mut c_events)] = seeds.map(spawn_member);
    let b_addr = loopback(&b).await;
    bounded(a.dial(b_addr.clone())).await.unwrap();
    bounded(c.dial(b_addr)).await.unwrap();
    member_connected(&mut a_events, b.peer_id()).await;
    member_connected(&mut c_events, b.peer_id()).await;
    member_connected(&mut b_events, a.peer_id()).await;
    member_connected(&mut b_events, c.peer_id()).await;
    [(a, a_events), (b, b_events), (c, c_events)]
}

/// Drives `swarm` until `pick` selects an event.
async fn drive<T>(
    swarm: &mut Swarm<Behaviour>,
    mut pick: impl FnMut(&mut Swarm<Behaviour>, SwarmEvent<BehaviourEvent>) -> Option<T>,
) -> T {
    bounded(async {
        loop {
            let event = swarm.select_next_some().await;
            if let Some(found) = pick(swarm, event) {
                return found;
            }
        }
    })
    .await
}

#[tokio::test]
async fn two_members_exchange_a_published_record() {
    let (a, mut a_events) = spawn_member(1);
    let (b, mut b_events) = spawn_member(2);

    let b_addr = loopback(&b).await;
    assert_eq!(bounded(a.dial(b_addr)).await.unwrap(), b.peer_id());
    member_connected(&mut a_events, b.peer_id()).await;
    member_connected(&mut b_events, a.peer_id()).await;
    assert_eq!(a.connected_members().await.unwrap(), vec![b.peer_id()]);
    assert_eq!(b.connected_members().await.unwrap(), vec![a.peer_id()]);

    a.publish(b"endpoint announcement".to_vec()).await.unwrap();
    let (id, source, via, data) = message(&mut b_events).await;
    assert_eq!((source, via), (a.peer_id(), a.peer_id()));
    assert_eq!(data, b"endpoint announcement");
    b.report(id, via, Verdict::Accept).await.unwrap();

    // Message ids are content hashes: the same record again is a duplicate.
    assert!(matches!(
        a.publish(b"endpoint announcement".to_vec()).await,
        Err(PublishError::Duplicate)
    ));
}

#[tokio::test]
async fn three_members_forward_only_accepted_messages() {
    let [(a, _a_events), (b, mut b_events), (_c, mut c_events)] = around_b([3, 4, 5]).await;

    a.publish(b"accepted record".to_vec()).await.unwrap();
    let (id, source, via, _) = message(&mut b_events).await;
    assert_eq!(source, a.peer_id());
    b.report(id, via, Verdict::Accept).await.unwrap();
    let (_, source, via, data) = message(&mut c_events).await;
    assert_eq!((source, via), (a.peer_id(), b.peer_id()));
    assert_eq!(data, b"accepted record");

    a.publish(b"forged record".to_vec()).await.unwrap();
    let (id, _, via, data) = message(&mut b_events).await;
    assert_eq!(data, b"forged record");
    b.report(id, via, Verdict::Reject).await.unwrap();
    no_message(&mut c_events).await;
}

#[tokio::test]
async fn a_peer_without_a_valid_credential_is_disconnected_and_its_messages_ignored() {
    let (a, mut a_events) = spawn_member(6);
    let mut x = intruder(7);
    let x_id = *x.local_peer_id();
    x.dial(loopback(&a).await).unwrap();

    // Publish as soon as A's subscription is known: A still has X pending.
    drive(&mut x, |_, event| match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
            peer_id,
            ..
        })) if peer_id == a.peer_id() => Some(()),
        _ => None,
    })
    .await;
    let topic = IdentTopic::new(TOPIC);
    x.behaviour_mut()
        .gossipsub
        .publish(topic.clone(), b"record before credential".to_vec())
        .expect("A is subscribed");

    x.behaviour_mut()
        .credential
        .send_request(&a.peer_id(), b"intruder".to_vec());
    let started = Instant::now();
    drive(&mut x, |x, event| match event {
        // A answered before judging us: try again while still connected
        // (whether the connection lasts long enough for this is a race).
        SwarmEvent::Behaviour(BehaviourEvent::Credential(request_response::Event::Message {
            message: request_response::Message::Response { .. },
            ..
        })) => {
            let _ = x
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), b"record after credential".to_vec());
            None
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } if peer_id == a.peer_id() => Some(()),
        _ => None,
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed promptly"
    );
    assert_eq!(
        rejected(&mut a_events, x_id).await,
        RejectReason::CredentialRefused
    );
    no_message(&mut a_events).await;
    assert!(a.connected_members().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_peer_that_presents_no_credential_is_disconnected_at_the_deadline() {
    let (a, mut a_events) = spawn_member(8);
    let mut x = intruder(9);
    let x_id = *x.local_peer_id();
    x.dial(loopback(&a).await).unwrap();

    let connected = drive(&mut x, |_, event| match event {
        SwarmEvent::ConnectionEstablished { .. } => Some(Instant::now()),
        _ => None,
    })
    .await;
    // Answer nothing, ask nothing; A's request goes unanswered.
    drive(&mut x, |_, event| match event {
        SwarmEvent::ConnectionClosed {
            num_established: 0, ..
        } => Some(()),
        _ => None,
    })
    .await;
    let lived = connected.elapsed();
    assert!(
        lived >= CREDENTIAL_TIMEOUT - Duration::from_millis(500)
            && lived < CREDENTIAL_TIMEOUT + Duration::from_secs(2),
        "closed after {lived:?}"
    );
    assert_eq!(
        rejected(&mut a_events, x_id).await,
        RejectReason::NoCredential
    );
    assert!(a.connected_members().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_member_disconnected_on_request_is_reported_gone_on_both_sides() {
    let (a, mut a_events) = spawn_member(10);
    let (b, mut b_events) = spawn_member(11);
    bounded(a.dial(loopback(&b).await)).await.unwrap();
    member_connected(&mut a_events, b.peer_id()).await;
    member_connected(&mut b_events, a.peer_id()).await;

    a.disconnect(b.peer_id()).await.unwrap();
    disconnected(&mut a_events, b.peer_id()).await;
    disconnected(&mut b_events, a.peer_id()).await;
    assert!(a.connected_members().await.unwrap().is_empty());
    assert!(matches!(
        a.publish(b"nobody listens".to_vec()).await,
        Err(PublishError::NoMembers)
    ));
}

#[tokio::test]
async fn a_renewed_credential_is_presented_at_once_and_a_refused_one_ends_membership() {
    // A admits any credential starting with "member".
    let (a, mut a_events) = spawn_with_gate(12, Arc::new(|_, c| c.starts_with(b"member").into()));
    let (b, mut b_events) = spawn_member(13);
    bounded(b.dial(loopback(&a).await)).await.unwrap();
    member_connected(&mut a_events, b.peer_id()).await;
    member_connected(&mut b_events, a.peer_id()).await;

    b.set_credential(b"member, renewed".to_vec()).await.unwrap();
    assert_eq!(
        member_credential(&mut a_events, b.peer_id()).await,
        b"member, renewed"
    );

    b.set_credential(b"revoked".to_vec()).await.unwrap();
    assert_eq!(
        rejected(&mut a_events, b.peer_id()).await,
        RejectReason::CredentialRefused
    );
    disconnected(&mut a_events, b.peer_id()).await;
    disconnected(&mut b_events, a.peer_id()).await;
    assert!(matches!(
        b.set_credential(vec![0; MAX_CREDENTIAL_LEN + 1]).await,
        Err(ControlError::CredentialTooLong)
    ));
}

#[tokio::test]
async fn a_member_pushes_records_directly_and_they_arrive_whole() {
    let (a, mut a_events) = spawn_member(21);
    let (b, mut b_events) = spawn_member(22);
    bounded(a.dial(loopback(&b).await)).await.unwrap();
    member_connected(&mut a_events, b.peer_id()).await;
    member_connected(&mut b_events, a.peer_id()).await;

    let records: Vec<Vec<u8>> = (0..300u32)
        .map(|i| format!("announcement {i}").into_bytes())
        .collect();
    a.try_push(b.peer_id(), records.clone()).unwrap();
    let (from, got) = next_matching(&mut b_events, |e| match e {
        ControlEvent::Records { peer, records } => Some((*peer, records.clone())),
        _ => None,
    })
    .await;
    assert_eq!(from, a.peer_id());
    assert_eq!(got, records);
}

/// The freeze of a whole fleet came from this: the control task waited for
/// room in the event queue while its owner waited for the control task.
/// Now an owner that does not read costs dropped, counted events, and the
/// control task keeps answering.
#[tokio::test]
async fn an_owner_that_stops_reading_never_stalls_the_control_task() {
    let (b, mut b_events) = spawn_member(24);
    let b_addr = loopback(&b).await;
    // Several members, since each origin's records are limited to a budget
    // smaller than b's event queue.
    let mut floods = Vec::new();
    for seed in [23, 25, 26, 27, 28, 29] {
        let (a, mut a_events) = spawn_member(seed);
        bounded(a.dial(b_addr.clone())).await.unwrap();
        member_connected(&mut a_events, b.peer_id()).await;
        member_connected(&mut b_events, a.peer_id()).await;
        floods.push((a, a_events));
    }

    // b's owner reads nothing from here on. They flood b with more records
    // than b's event queue holds (bounded: each sends its budget).
    for i in 0..origin_rate::BURST as usize {
        for (n, (a, _)) in floods.iter().enumerate() {
            // Distinct records (message ids are content hashes). A full
            // command queue only drops: the pause lets the tasks drain.
            let _ = a.try_publish(format!("record {n}.{i}").into_bytes());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let started = Instant::now();
    let dropped = bounded(async {
        loop {
            let n = b.counters().events_dropped.load(Ordering::Relaxed);
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The task still answers a command at once, and still knows them all.
    let addrs = bounded(b.listen_addrs()).await.unwrap();
    assert!(!addrs.is_empty());
    assert_eq!(b.members().len(), floods.len());
    println!(
        "control: {dropped} events dropped and counted after {:.1} s; the task still answers",
        started.elapsed().as_secs_f64()
    );
    // What was queued is still there for the owner, in order, and the
    // queue never grew past its bound.
    let mut queued = 0;
    while b_events.try_recv().is_ok() {
        queued += 1;
    }
    assert!(queued <= EVENT_CAPACITY, "{queued} events queued");
}

#[tokio::test]
async fn one_peer_holds_at_most_three_connections() {
    let (a, _a_events) = spawn_member(10);
    let address = loopback(&a).await;
    // Five swarms with one identity: to A they are one peer dialling five
    // times (each swarm's own limits see one connection).
    let mut copies: Vec<Swarm<Behaviour>> = (0..5).map(|_| intruder(11)).collect();
    for copy in &mut copies {
        copy.dial(address.clone()).unwrap();
    }
    let refused = || {
        let counts = a.counters().connections_refused.lock().unwrap();
        counts.get("limit").copied().unwrap_or(0)
    };
    bounded(async {
        while refused() < 2 {
            for copy in &mut copies {
                // Let each copy make progress without waiting on any one.
                let _ = timeout(Duration::from_millis(20), copy.select_next_some()).await;
            }
        }
    })
    .await;
    assert_eq!(refused(), 2, "three of the five connections stay");
}

#[tokio::test]
async fn a_member_flooding_records_is_cut_to_its_budget_and_the_others_still_publish() {
    let [(a, _a_events), (b, mut b_events), (_c, mut c_events)] = around_b([12, 13, 14]).await;

    // A publishes 1,000 distinct records.
    let flood = 1_000;
    let started = Instant::now();
    let mut queued = 0;
    while queued < flood {
        if a.try_publish(format!("record {queued}").into_bytes())
            .is_ok()
        {
            queued += 1;
        } else {
            tokio::task::yield_now().await;
        }
    }
    // B takes what arrives until the flood has been quiet for a while.
    let mut handed_on = 0;
    while let Ok(Some(event)) = timeout(Duration::from_secs(2), b_events.recv()).await {
        if let ControlEvent::Message {
            message_id,
            propagation_source,
            ..
        } = event
        {
            handed_on += 1;
            b.report(message_id, propagation_source, Verdict::Accept)
                .await
                .unwrap();
        }
    }
    let elapsed = started.elapsed();
    let over = b.counters().records_over_rate.load(Ordering::Relaxed);
    let budget = origin_rate::BURST as usize
        + (elapsed.as_millis() / origin_rate::REFILL.as_millis()) as usize;
    println!("flood of {flood}: {handed_on} handed on, {over} over budget, in {elapsed:?}");
    assert!(
        handed_on <= budget,
        "{handed_on} records handed on, budget {budget}"
    );
    // Three records over budget straight from their origin are three invalid
    // messages: B graylists A, and gossipsub drops the rest unseen.
    assert!(over >= 1, "nothing counted over budget");

    // B's own records still reach the other member, C (past the share of
    // A's records B passed on).
    b.publish(b"after the flood".to_vec()).await.unwrap();
    loop {
        let (_, source, _, data) = message(&mut c_events).await;
        if source == b.peer_id() {
            assert_eq!(data, b"after the flood");
            break;
        }
    }
}
