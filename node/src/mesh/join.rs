//! The inviter's join listener: the daemon side of `weft join`.
//!
//! Serves joins on TCP, one task per connection on the services runtime,
//! running the exchange of `weft_protocol::join`: the joiner proves the
//! invite with its secret; the listener redeems the invite in the store
//! (once, flushed), allocates an address (flushed), signs a certificate,
//! stores the member (flushed) and answers with it, the network's public
//! data and its own signed announcement, then tells the main task about the
//! new member through a bounded queue. It never touches protocol state and
//! never waits on the main task. The joiner's side is `cli::join`.
//!
//! The port is open to anyone, so nothing a sender does may cost more than
//! a bounded share of the node: [`JoinGate`] caps the exchanges in progress
//! (in all and per source address) and the attempts a source may start per
//! minute, from a table of bounded size; every read has a deadline; an
//! `accept` that fails (out of file descriptors) backs off instead of
//! spinning; store work runs on a blocking thread, never on the runtime
//! that serves the control plane, the admin socket and the metrics.
//!
//! A join is idempotent for its joiner: if the answer is lost, the joiner
//! that redeemed the invite (same identity and Noise key, same secret) gets
//! its certificate again until the invite's expiry; anyone else is refused
//! "already used".

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rand_core::OsRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use weft_protocol::join::{
    take_frame, JoinGrant, JoinRefusal, JoinRequest, JoinResponder, JoinResponse, MAX_FRAME,
};
use weft_protocol::membership::{
    Authority, Certificate, IdentityKey, InviteToken, SignedCertificate,
};
use weft_protocol::StaticSecret;
use weft_store::{AllocError, InviteError, InviteRecord, MemberRecord, Stripe};

use crate::bucket::TokenBucket;
use crate::host::{Ipv6, Step, StepError};

use super::{now_unix, Membership, NetworkWire};

/// How long one join exchange may take, on either side.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the listener waits for the joiner's first message; a joiner
/// sends it right after connecting.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Join exchanges in progress at once, from all sources. Each holds a
/// socket: the cap keeps the node's file descriptors for its own work.
pub const MAX_EXCHANGES: usize = 32;
/// Join exchanges in progress at once from one source address.
pub const MAX_EXCHANGES_PER_SOURCE: usize = 2;
/// Join attempts a source address may start in a burst; then one more per
/// [`ATTEMPT_REFILL`].
pub const ATTEMPT_BURST: u32 = 10;
/// How often a source address earns one more attempt.
pub const ATTEMPT_REFILL: Duration = Duration::from_secs(6);
/// Source addresses remembered for the attempt limit; past this, the one
/// heard from longest ago is forgotten.
pub const MAX_SOURCES: usize = 4096;
/// Longest pause after a failed `accept` (doubling from 5 ms).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why the gate turned a connection away (a label of
/// `weft_invites_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    /// [`MAX_EXCHANGES`] in progress.
    Busy,
    /// [`MAX_EXCHANGES_PER_SOURCE`] in progress from this address.
    SourceBusy,
    /// The address spent its attempts.
    RateLimited,
}

impl Turned {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Turned::Busy => "busy",
            Turned::SourceBusy => "source_busy",
            Turned::RateLimited => "rate_limited",
        }
    }
}

/// One source address: its exchanges in progress and its attempt bucket.
#[derive(Debug, Clone, Copy)]
struct Source {
    active: usize,
    attempts: TokenBucket,
}

/// Which connections the listener serves: a sans-IO table of exchanges in
/// progress and attempt buckets per source address, bounded in size.
#[derive(Debug, Default)]
pub struct JoinGate {
    sources: HashMap<IpAddr, Source>,
    active: usize,
}

impl JoinGate {
    /// Admits a connection from `ip` at `now` (then [`JoinGate::release`]
    /// it when done), or says why not.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Turned> {
        let ip = ip.to_canonical();
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            self.forget_oldest_idle();
        }
        let source = self.sources.entry(ip).or_insert(Source {
            active: 0,
            attempts: TokenBucket::full(ATTEMPT_BURST, now),
        });
        source.attempts.refill(ATTEMPT_BURST, ATTEMPT_REFILL, now);
        if self.active >= MAX_EXCHANGES {
            return Err(Turned::Busy);
        }
        if source.active >= MAX_EXCHANGES_PER_SOURCE {
            return Err(Turned::SourceBusy);
        }
        if !source.attempts.take() {
            return Err(Turned::RateLimited);
        }
        source.active += 1;
        self.active += 1;
        Ok(())
    }

    /// An exchange admitted from `ip` ended.
    pub fn release(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(source) = self.sources.get_mut(&ip) {
            source.active = source.active.saturating_sub(1);
            self.active = self.active.saturating_sub(1);
        }
    }

    /// Forgets the source with no exchange in progress heard from longest
    /// ago (one with exchanges in progress is never forgotten: at most
    /// [`MAX_EXCHANGES`] of them exist).
    fn forget_oldest_idle(&mut self) {
        let oldest = self
            .sources
            .iter()
            .filter(|(_, s)| s.active == 0)
            .min_by_key(|(_, s)| s.attempts.last_refill())
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.sources.remove(&ip);
        }
    }
}

/// Releases an admitted exchange when dropped, however it ends.
struct Admission {
    gate: Arc<Mutex<JoinGate>>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .release(self.ip);
    }
}

/// Reads one framed join message from `stream`.
pub async fn read_frame(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((msg, _)) = take_frame(&buf).map_err(|e| anyhow!("{e}"))? {
            return Ok(msg.to_vec());
        }
        anyhow::ensure!(buf.len() <= MAX_FRAME + 2, "join message too large");
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "the connection closed mid-message");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A member admitted by the join listener, for the daemon to add as a peer.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Its certificate.
    pub certificate: Certificate,
}

/// Connections waiting for `accept`, as most servers ask of `listen`.
const BACKLOG: i32 = 1024;

/// The join port's listening socket: `[::]:port` dual-stack (whatever
/// `net.ipv6.bindv6only` says), or `0.0.0.0:port` on a host without IPv6.
/// A refusal names the step and its errno ([`StepError`]). Must be called
/// inside a tokio runtime.
fn bind_listener(port: u16, ipv6: Ipv6) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let any: IpAddr = if ipv6.usable() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let addr = SocketAddr::new(any, port);
    let bound = (|| {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        // A restarted node takes its port back while old connections
        // linger in TIME_WAIT, as tokio's own bind does.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        TcpListener::from_std(socket.into())
    })();
    bound.map_err(|e| StepError::new(Step::ListenJoin { addr }, e).into())
}

/// Serves joins on `port` until the daemon exits.
pub async fn listen(
    port: u16,
    noise: StaticSecret,
    membership: Arc<Membership>,
    data_endpoints: Vec<SocketAddr>,
    admitted: mpsc::Sender<Admitted>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = bind_listener(port, crate::host::ipv6())?;
    let gate = Arc::new(Mutex::new(JoinGate::default()));
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) => {
                    // Out of file descriptors, most likely: the pending
                    // connection stays queued, so retrying at once spins.
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), ACCEPT_BACKOFF_MAX);
                    if backoff == ACCEPT_BACKOFF_MAX {
                        warn!(error = %e, "join listener cannot accept; retrying each second");
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let admitted_here = gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(from.ip(), Instant::now());
            if let Err(turned) = admitted_here {
                membership.counters.refused(turned.as_str());
                debug!(%from, reason = turned.as_str(), "join connection turned away");
                drop(stream);
                continue;
            }
            let admission = Admission {
                gate: gate.clone(),
                ip: from.ip(),
            };
            let (noise, membership, endpoints, admitted) = (
                noise.clone(),
                membership.clone(),
                data_endpoints.clone(),
                admitted.clone(),
            );
            tokio::spawn(async move {
                let _admission = admission;
                match tokio::time::timeout(
                    JOIN_TIMEOUT,
                    serve(stream, &noise, membership, &endpoints, &admitted),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(%from, error = %format!("{e:#}"), "join failed"),
                    Err(_) => warn!(%from, "join timed out"),
                }
            });
        }
    }))
}

async fn serve(
    mut stream: TcpStream,
    noise: &StaticSecret,
    m: Arc<Membership>,
    endpoints: &[SocketAddr],
    admitted: &mpsc::Sender<Admitted>,
) -> anyhow::Result<()> {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| {
            anyhow!(
                "no join message within {}s",
                FIRST_MESSAGE_TIMEOUT.as_secs()
            )
        })??;
    let responder = JoinResponder::accept(noise, &first, &mut OsRng).map_err(|e| anyhow!("{e}"))?;
    // Store reads, writes and fsyncs: on a blocking thread, so the runtime
    // this task shares with the control plane and the admin socket never
    // waits on the disk.
    let decided = {
        let (m, request, endpoints) = (m.clone(), responder.request.clone(), endpoints.to_vec());
        tokio::task::spawn_blocking(move || decide(&m, &request, &endpoints))
            .await
            .map_err(|e| anyhow!("join decision failed: {e}"))?
    };
    let (response, cert) = match decided {
        Ok((grant, cert)) => {
            m.counters.invites_used.fetch_add(1, Ordering::Relaxed);
            (JoinResponse::Accepted(grant), Some(cert))
        }
        Err(refusal) => {
            m.counters.refused(refusal.as_str());
            warn!(reason = %refusal, "join refused");
            (JoinResponse::Refused(refusal), None)
        }
    };
    let frame = responder.respond(&response).map_err(|e| anyhow!("{e}"))?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    if let Some(certificate) = cert {
        info!(name = %certificate.name, ipv4 = %certificate.ipv4, "member joined");
        let _ = admitted.send(Admitted { certificate }).await;
    }
    Ok(())
}

/// The overlay IPv4 addresses of every member this holder knows of other
/// than `joiner`: its own and those in stored member certificates. The
/// allocation table holds only the addresses this holder handed out itself;
/// a holder that joined later, or one whose predecessor signed most
/// certificates, must not hand out an address a member already holds.
fn held_addresses(
    m: &Membership,
    members: &[([u8; 32], MemberRecord)],
    joiner: &[u8; 32],
) -> Vec<u32> {
    let info = m.info();
    let mut held = Vec::new();
    if let Ok(own) = m.certificate().verify_signed(&info) {
        held.push(u32::from(own.ipv4));
    }
    for (id, record) in members {
        if id == joiner {
            continue;
        }
        // A certificate signed by a key of the set or a retired one; expired
        // or revoked members keep their address out of reuse as well.
        if let Ok(cert) =
            SignedCertificate::from_bytes(&record.certificate).and_then(|c| c.verify_signed(&info))
        {
            held.push(u32::from(cert.ipv4));
        }
    }
    held
}

/// Redeems the invite, allocates an address and signs the certificate.
fn decide(
    m: &Membership,
    req: &JoinRequest,
    endpoints: &[SocketAddr],
) -> Result<(JoinGrant, Certificate), JoinRefusal> {
    if req.network != m.info().id().0 {
        return Err(JoinRefusal::WrongNetwork);
    }
    let authority = m.authority().ok_or(JoinRefusal::Unknown)?;
    let now = now_unix();
    let hash = InviteToken::hash_secret(&req.secret);
    // Check the name before spending the invite.
    let invite = m
        .store
        .invites()
        .get(&hash)
        .map_err(|_| JoinRefusal::Unknown)?
        .ok_or(JoinRefusal::Unknown)?;
    // A revoked identity never comes back, whatever the token (an unreadable
    // answer from the store counts as revoked).
    if m.store
        .revocations()
        .is_revoked(&req.identity)
        .unwrap_or(true)
    {
        return Err(JoinRefusal::Revoked);
    }
    // Say what is wrong with the invite itself before anything else.
    if invite.used_unix.is_some() {
        return redeliver(m, req, &invite, endpoints, now);
    }
    if now >= invite.expires_unix {
        return Err(JoinRefusal::Expired);
    }
    let name = invite
        .name
        .clone()
        .or_else(|| req.name.clone())
        .ok_or(JoinRefusal::BadName)?;
    // An unreadable member list counts as the name being taken.
    let members = m.store.members().list().map_err(|_| JoinRefusal::BadName)?;
    let taken = members
        .iter()
        .any(|(id, r)| r.name == name && *id != req.identity);
    if !weft_protocol::membership::is_valid_name(&name) || taken {
        return Err(JoinRefusal::BadName);
    }
    let held = held_addresses(m, &members, &req.identity);
    m.store
        .invites()
        .redeem(&hash, &req.identity, now)
        .map_err(|e| match e {
            InviteError::AlreadyUsed { .. } => JoinRefusal::AlreadyUsed,
            InviteError::Expired { .. } => JoinRefusal::Expired,
            _ => JoinRefusal::Unknown,
        })?;
    let prefix = m.info().ipv4();
    let allocate = |stripe| {
        m.store.allocations().allocate_in(
            u32::from(prefix.network_address()),
            prefix.netmask(),
            &req.identity,
            &held,
            stripe,
        )
    };
    // This holder's share of the prefix first, so that two holders admitting
    // joiners at once do not give out the same address; any free one once
    // its share is full.
    let ipv4 = match allocate(m.address_stripe(&authority)) {
        Err(AllocError::Exhausted) => allocate(Stripe::ALL),
        other => other,
    }
    .map_err(|_| JoinRefusal::NoAddress)?;
    let serial = now;
    let cert = Certificate {
        network: *m.info().id(),
        name: name.clone(),
        identity: IdentityKey(req.identity),
        noise_key: weft_protocol::PublicKey(req.noise_key),
        ipv4,
        ipv6: m.info().allocate_v6(ipv4),
        serial,
        // Verifiers allow five minutes of clock skew on the start.
        not_before: now,
        not_after: now + m.certificate_lifetime_secs(),
    };
    let signed = Authority::issue(&cert, &authority);
    m.counters.store(
        "members",
        m.store.members().put(
            &req.identity,
            &MemberRecord {
                name,
                certificate: signed.to_bytes(),
                serial,
                expires_unix: cert.not_after,
                updated_unix: now,
            },
        ),
    );
    // The joiner will hold this certificate: the record of it must survive
    // a crash of ours, as the redeemed invite and the allocation do.
    if let Err(e) = m.store.flush() {
        warn!(error = %e, "admitted member not flushed to the store");
    }
    let grant = grant(m, req, signed.to_bytes(), endpoints, now);
    Ok((grant, cert))
}

/// The answer to a joiner that redeemed this invite already and did not
/// get it (same identity, same Noise key): the certificate it was issued,
/// while the invite has not expired. Anyone else: already used.
fn redeliver(
    m: &Membership,
    req: &JoinRequest,
    invite: &InviteRecord,
    endpoints: &[SocketAddr],
    now: u64,
) -> Result<(JoinGrant, Certificate), JoinRefusal> {
    if invite.used_by != Some(req.identity) || now >= invite.expires_unix {
        return Err(JoinRefusal::AlreadyUsed);
    }
    if m.store
        .revocations()
        .is_revoked(&req.identity)
        .unwrap_or(true)
    {
        return Err(JoinRefusal::AlreadyUsed);
    }
    let record = m
        .store
        .members()
        .get(&req.identity)
        .ok()
        .flatten()
        .ok_or(JoinRefusal::AlreadyUsed)?;
    let cert = SignedCertificate::from_bytes(&record.certificate)
        .and_then(|signed| signed.verify(&m.info(), now))
        .map_err(|_| JoinRefusal::AlreadyUsed)?;
    if cert.noise_key.0 != req.noise_key {
        return Err(JoinRefusal::AlreadyUsed);
    }
    info!(name = %cert.name, "join answered again for the member that redeemed the invite");
    Ok((grant(m, req, record.certificate, endpoints, now), cert))
}

/// The grant for the joiner `req` holding `certificate`: the network, our
/// announcement, and the other members with the endpoints we reach them at.
fn grant(
    m: &Membership,
    req: &JoinRequest,
    certificate: Vec<u8>,
    endpoints: &[SocketAddr],
    now: u64,
) -> JoinGrant {
    let me = m.identity.identity();
    let members = m
        .store
        .members()
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|(id, _)| *id != req.identity && *id != me.0)
        .filter(|(id, _)| !m.store.revocations().is_revoked(id).unwrap_or(true))
        .map(|(id, record)| {
            let endpoints = m
                .store
                .paths()
                .get(&me.0, &id)
                .ok()
                .flatten()
                .map(|p| vec![p.endpoint])
                .unwrap_or_default();
            (record.certificate, endpoints)
        })
        .collect();
    JoinGrant {
        certificate,
        network: postcard::to_stdvec(&NetworkWire::from_info(
            &m.info(),
            m.authorities().chain.as_ref(),
        ))
        .unwrap_or_default(),
        bootstrap: vec![m.announcement(now, endpoints.to_vec()).to_bytes()],
        control_addresses: Vec::new(),
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test]
    async fn the_join_port_takes_ipv4_joiners_on_either_kind_of_host() {
        for ipv6 in [
            Ipv6::Enabled,
            Ipv6::Disabled {
                setting: "net.ipv6.conf.all.disable_ipv6=1",
            },
        ] {
            let listener = bind_listener(0, ipv6).unwrap();
            let local = listener.local_addr().unwrap();
            assert_eq!(local.is_ipv6(), ipv6.usable(), "{ipv6:?}: {local}");
            let to = SocketAddr::from(([127, 0, 0, 1], local.port()));
            let (connected, accepted) = tokio::join!(TcpStream::connect(to), listener.accept());
            connected.unwrap();
            let (_, from) = accepted.unwrap();
            assert_eq!(from.ip().to_canonical(), to.ip(), "{ipv6:?}");
        }
    }

    #[tokio::test]
    async fn a_join_port_in_use_is_reported_as_the_join_listener_and_eaddrinuse() {
        let held = bind_listener(0, Ipv6::Enabled).unwrap();
        let port = held.local_addr().unwrap().port();
        let told = format!("{:#}", bind_listener(port, Ipv6::Enabled).unwrap_err());
        assert!(
            told.starts_with(&format!(
                "listening for joins on TCP [::]:{port}: EADDRINUSE"
            )) && told.contains("mesh.join_port"),
            "{told}"
        );
    }

    #[test]
    fn a_source_holds_at_most_two_exchanges_however_it_writes_its_address() {
        let (mut gate, now) = (JoinGate::default(), Instant::now());
        assert_eq!(gate.admit(ip(7), now), Ok(()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(gate.admit(mapped, now), Ok(()));
        assert_eq!(gate.admit(ip(7), now), Err(Turned::SourceBusy));
        assert_eq!(gate.admit(ip(8), now), Ok(()), "another source is served");
        gate.release(mapped);
        assert_eq!(gate.admit(ip(7), now), Ok(()));
    }

    #[test]
    fn exchanges_in_all_are_capped() {
        let (mut gate, now) = (JoinGate::default(), Instant::now());
        for i in 0..MAX_EXCHANGES {
            assert_eq!(
                gate.admit(IpAddr::from([198, 51, 100, i as u8]), now),
                Ok(())
            );
        }
        assert_eq!(gate.admit(ip(1), now), Err(Turned::Busy));
        gate.release(IpAddr::from([198, 51, 100, 0]));
        assert_eq!(gate.admit(ip(1), now), Ok(()));
    }

    #[test]
    fn a_source_spends_its_burst_then_earns_one_attempt_per_refill() {
        let (mut gate, now) = (JoinGate::default(), Instant::now());
        for _ in 0..ATTEMPT_BURST {
            assert_eq!(gate.admit(ip(9), now), Ok(()));
            gate.release(ip(9));
        }
        assert_eq!(gate.admit(ip(9), now), Err(Turned::RateLimited));
        let later = now + ATTEMPT_REFILL;
        assert_eq!(gate.admit(ip(9), later), Ok(()));
        gate.release(ip(9));
        assert_eq!(gate.admit(ip(9), later), Err(Turned::RateLimited));
    }

    #[test]
    fn the_source_table_stays_bounded_and_keeps_sources_with_exchanges() {
        let (mut gate, now) = (JoinGate::default(), Instant::now());
        assert_eq!(gate.admit(ip(1), now), Ok(()), "held open throughout");
        for i in 0..(MAX_SOURCES as u32 + 500) {
            let source = IpAddr::from((0xc633_0000u32 + i).to_be_bytes());
            let at = now + Duration::from_millis(u64::from(i));
            if gate.admit(source, at).is_ok() {
                gate.release(source);
            }
        }
        assert!(gate.sources.len() <= MAX_SOURCES);
        assert_eq!(gate.sources[&ip(1)].active, 1);
    }

    /// A network made by `weft init` in a directory of its own, removed
    /// when dropped.
    struct Network {
        dir: std::path::PathBuf,
        m: Option<Membership>,
    }

    impl Network {
        fn new(name: &str) -> Network {
            let dir = std::env::temp_dir().join(format!("weft-join-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            crate::cli::init::run("alpha", "100.64.0.0/16", "test", "30d", &dir).unwrap();
            let config = crate::config::Config::load(&dir.join("weft.toml")).unwrap();
            let m = Membership::open(config.mesh.as_ref().unwrap()).unwrap();
            Network { dir, m: Some(m) }
        }

        fn m(&self) -> &Membership {
            self.m.as_ref().expect("open until dropped")
        }

        /// Records an invite for `secret`, valid for an hour.
        fn invite(&self, secret: [u8; 32]) {
            let record = InviteRecord {
                name: None,
                expires_unix: now_unix() + 3600,
                used_unix: None,
                used_by: None,
            };
            let hash = InviteToken::hash_secret(&secret);
            self.m().store.invites().add(&hash, &record).unwrap();
        }

        fn request(&self, secret: [u8; 32], who: u8, name: &str) -> JoinRequest {
            JoinRequest {
                network: self.m().info().id().0,
                secret,
                name: Some(name.to_owned()),
                identity: [who; 32],
                noise_key: [who ^ 0xff; 32],
            }
        }
    }

    impl Drop for Network {
        fn drop(&mut self) {
            drop(self.m.take());
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_lost_answer_is_given_again_to_its_joiner_and_to_nobody_else() {
        let net = Network::new("again");
        net.invite([1; 32]);
        let beta = net.request([1; 32], 7, "beta");
        let (first, _) = decide(net.m(), &beta, &[]).expect("first join");
        let (again, cert) = decide(net.m(), &beta, &[]).expect("the same joiner again");
        assert_eq!(again.certificate, first.certificate, "the same certificate");
        assert_eq!(cert.name, "beta");

        let other = net.request([1; 32], 8, "gamma");
        assert_eq!(
            decide(net.m(), &other, &[]).err(),
            Some(JoinRefusal::AlreadyUsed)
        );
        let mut new_keys = beta.clone();
        new_keys.noise_key = [0x42; 32];
        assert_eq!(
            decide(net.m(), &new_keys, &[]).err(),
            Some(JoinRefusal::AlreadyUsed),
            "same identity, other Noise key"
        );
    }

    #[test]
    fn a_holder_that_allocated_nothing_itself_hands_out_no_address_a_member_holds() {
        let net = Network::new("held");
        net.invite([1; 32]);
        let (_, beta) = decide(net.m(), &net.request([1; 32], 7, "beta"), &[]).unwrap();
        // A second authority holder: it knows the members (gossip wrote
        // their certificates) but its allocation table never saw them.
        let allocations = net.m().store.allocations();
        let own = net.m().identity.identity();
        assert!(allocations.release(&own.0).unwrap().is_some());
        assert_eq!(allocations.release(&[7; 32]).unwrap(), Some(beta.ipv4));
        net.invite([2; 32]);
        let (_, gamma) = decide(net.m(), &net.request([2; 32], 8, "gamma"), &[]).unwrap();
        let alpha = net
            .m()
            .certificate()
            .verify_signed(&net.m().info())
            .unwrap();
        assert_ne!(gamma.ipv4, alpha.ipv4, "the holder's own address");
        assert_ne!(gamma.ipv4, beta.ipv4, "a member's address");
        assert_eq!(gamma.ipv4, std::net::Ipv4Addr::new(100, 64, 0, 3));
    }

    #[test]
    fn a_revoked_identity_is_refused_whatever_token_it_presents() {
        let net = Network::new("revoked");
        net.invite([1; 32]);
        let beta = net.request([1; 32], 7, "beta");
        decide(net.m(), &beta, &[]).expect("first join");
        let revocation = weft_store::RevocationRecord {
            serial: 1,
            revoked_unix: now_unix(),
            signed: Vec::new(),
        };
        net.m()
            .store
            .revocations()
            .revoke(&[7; 32], &revocation)
            .unwrap();

        assert_eq!(
            decide(net.m(), &beta, &[]).err(),
            Some(JoinRefusal::Revoked)
        );
        net.invite([2; 32]);
        let fresh = net.request([2; 32], 7, "beta2");
        assert_eq!(
            decide(net.m(), &fresh, &[]).err(),
            Some(JoinRefusal::Revoked)
        );
        let unused = net
            .m()
            .store
            .invites()
            .get(&InviteToken::hash_secret(&[2; 32]));
        assert_eq!(
            unused.unwrap().unwrap().used_unix,
            None,
            "the new token is not spent"
        );
    }
}
