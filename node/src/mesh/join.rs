//! `weft join TOKEN` on a new server, and the inviter's join listener.
//!
//! The joiner generates its keys, connects to the inviter's join endpoints
//! from the token (TCP), and runs the exchange of `weft_protocol::join`: the
//! inviter's key is pinned by the token, the secret proves the invite. The
//! inviter redeems the invite in its store (once, flushed), allocates an
//! address (flushed), signs a certificate, stores the member (flushed) and answers with it, the network's public
//! data and its own signed announcement. The joiner checks all of it before
//! writing a single file, and writes its directory under a temporary name
//! renamed into place at the end, so a failed join leaves nothing behind.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rand_core::OsRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};
use weft_protocol::join::{
    take_frame, JoinGrant, JoinInitiator, JoinRefusal, JoinRequest, JoinResponder, JoinResponse,
    MAX_FRAME,
};
use weft_protocol::membership::{
    Authority, Certificate, IdentityKey, IdentitySecret, InviteToken, RecordBody,
    SignedCertificate, Validator,
};
use weft_protocol::StaticSecret;
use weft_store::{InviteError, MemberRecord, PathRecord, Store};

use super::init::{
    finish, refuse_non_empty, staging_dir, write_member_files, MemberFiles, CERT_LIFETIME_SECS,
    CLOCK_SKEW_SECS,
};
use super::{now_unix, Membership, NetworkWire};
use crate::keys;

/// How long one join exchange may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

async fn read_frame(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
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

/// Serves joins on `port` until the daemon exits.
pub async fn listen(
    port: u16,
    noise: StaticSecret,
    membership: Arc<Membership>,
    data_endpoints: Vec<SocketAddr>,
    admitted: mpsc::Sender<Admitted>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = match TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
            .await
            .with_context(|| {
                format!("cannot listen for joins on TCP port {port} (mesh.join_port)")
            })?,
    };
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, from)) = listener.accept().await else {
                continue;
            };
            let (noise, membership, endpoints, admitted) = (
                noise.clone(),
                membership.clone(),
                data_endpoints.clone(),
                admitted.clone(),
            );
            tokio::spawn(async move {
                match tokio::time::timeout(
                    JOIN_TIMEOUT,
                    serve(stream, &noise, &membership, &endpoints, &admitted),
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
    m: &Membership,
    endpoints: &[SocketAddr],
    admitted: &mpsc::Sender<Admitted>,
) -> anyhow::Result<()> {
    let first = read_frame(&mut stream).await?;
    let responder = JoinResponder::accept(noise, &first, &mut OsRng).map_err(|e| anyhow!("{e}"))?;
    let (response, cert) = match decide(m, &responder.request, endpoints) {
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

/// Redeems the invite, allocates an address and signs the certificate.
fn decide(
    m: &Membership,
    req: &JoinRequest,
    endpoints: &[SocketAddr],
) -> Result<(JoinGrant, Certificate), JoinRefusal> {
    if req.network != m.info.id().0 {
        return Err(JoinRefusal::WrongNetwork);
    }
    let authority = m.authority.as_ref().ok_or(JoinRefusal::Unknown)?;
    let now = now_unix();
    let hash = InviteToken::hash_secret(&req.secret);
    // Check the name before spending the invite.
    let invite = m
        .store
        .invites()
        .get(&hash)
        .map_err(|_| JoinRefusal::Unknown)?
        .ok_or(JoinRefusal::Unknown)?;
    // Say what is wrong with the invite itself before anything else.
    if invite.used_unix.is_some() {
        return Err(JoinRefusal::AlreadyUsed);
    }
    if now >= invite.expires_unix {
        return Err(JoinRefusal::Expired);
    }
    let name = invite
        .name
        .clone()
        .or_else(|| req.name.clone())
        .ok_or(JoinRefusal::BadName)?;
    let taken = m
        .store
        .members()
        .list()
        .map(|l| {
            l.iter()
                .any(|(id, r)| r.name == name && *id != req.identity)
        })
        .unwrap_or(true);
    if !weft_protocol::membership::is_valid_name(&name) || taken {
        return Err(JoinRefusal::BadName);
    }
    m.store
        .invites()
        .redeem(&hash, &req.identity, now)
        .map_err(|e| match e {
            InviteError::AlreadyUsed { .. } => JoinRefusal::AlreadyUsed,
            InviteError::Expired { .. } => JoinRefusal::Expired,
            _ => JoinRefusal::Unknown,
        })?;
    let prefix = m.info.ipv4();
    let ipv4 = m
        .store
        .allocations()
        .allocate(
            u32::from(prefix.network_address()),
            prefix.netmask(),
            &req.identity,
            &[],
        )
        .map_err(|_| JoinRefusal::NoAddress)?;
    let serial = now;
    let cert = Certificate {
        network: *m.info.id(),
        name: name.clone(),
        identity: IdentityKey(req.identity),
        noise_key: weft_protocol::PublicKey(req.noise_key),
        ipv4,
        ipv6: m.info.allocate_v6(ipv4),
        serial,
        not_before: now.saturating_sub(CLOCK_SKEW_SECS),
        not_after: now + CERT_LIFETIME_SECS,
    };
    let signed = Authority::issue(&cert, authority);
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
    let grant = JoinGrant {
        certificate: signed.to_bytes(),
        network: postcard::to_stdvec(&NetworkWire::from_info(&m.info)).unwrap_or_default(),
        bootstrap: vec![m.announcement(now, endpoints.to_vec()).to_bytes()],
        control_addresses: Vec::new(),
        members,
    };
    Ok((grant, cert))
}

/// `weft join TOKEN [--name NAME] --dir DIR`.
pub fn run(token_text: &str, name: Option<String>, dir: &Path) -> anyhow::Result<()> {
    let now = now_unix();
    let token = InviteToken::parse(token_text, now).map_err(|e| anyhow!("invite token: {e}"))?;
    // Before the exchange, so an unusable directory does not spend the invite.
    refuse_non_empty(dir)?;
    let noise = keys::generate()?;
    let identity = IdentitySecret::generate(&mut OsRng);
    let request = JoinRequest {
        network: token.network.0,
        secret: token.secret,
        name,
        identity: identity.identity().0,
        noise_key: noise.public_key().0,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let response = runtime.block_on(exchange(&token, &noise, &request))?;
    let grant = match response {
        JoinResponse::Accepted(grant) => grant,
        JoinResponse::Refused(reason) => bail!("the inviter refused: {reason}"),
    };
    let wire: NetworkWire = postcard::from_bytes(&grant.network)
        .map_err(|_| anyhow!("the inviter sent a malformed network description"))?;
    let info = wire.to_info()?;
    if *info.id() != token.network {
        bail!("the inviter answered for another network");
    }
    let signed = SignedCertificate::from_bytes(&grant.certificate)
        .map_err(|e| anyhow!("certificate: {e}"))?;
    let cert = signed
        .verify(&info, now)
        .map_err(|e| anyhow!("certificate: {e}"))?;
    if cert.identity != identity.identity() || cert.noise_key != noise.public_key() {
        bail!("the inviter's certificate is not for this server's keys");
    }
    // Bootstrap announcements: checked like any gossip before use.
    let mut validator = Validator::new();
    validator.set_allow_loopback(true);
    let mut bootstrap = Vec::new();
    for bytes in &grant.bootstrap {
        if let Ok(record) = validator.validate(bytes, &info, &|_| false, now) {
            if let RecordBody::Announcement(a) = &record.body {
                if let Ok(peer) = a.certificate.verify(&info, now) {
                    bootstrap.push((peer, a.certificate.to_bytes(), a.endpoints.clone()));
                }
            }
        }
    }
    // Other members, vouched for by the authority's signature on each
    // certificate; their endpoints are the inviter's hints.
    for (bytes, endpoints) in &grant.members {
        let Ok(signed) = SignedCertificate::from_bytes(bytes) else {
            continue;
        };
        if let Ok(peer) = signed.verify(&info, now) {
            if peer.identity != cert.identity
                && !bootstrap
                    .iter()
                    .any(|(c, _, _)| c.identity == peer.identity)
            {
                bootstrap.push((peer, bytes.clone(), endpoints.clone()));
            }
        }
    }
    let staging = staging_dir(dir)?;
    let written = (|| {
        let store = Store::open(&staging.join("state")).map_err(|e| anyhow!("{e}"))?;
        for certificate in std::iter::once((cert.clone(), grant.certificate.clone(), Vec::new()))
            .chain(bootstrap.iter().cloned())
        {
            let (c, bytes, endpoints) = certificate;
            store
                .members()
                .put(
                    c.identity.as_bytes(),
                    &MemberRecord {
                        name: c.name.clone(),
                        certificate: bytes,
                        serial: c.serial,
                        expires_unix: c.not_after,
                        updated_unix: now,
                    },
                )
                .map_err(|e| anyhow!("{e}"))?;
            if let Some(endpoint) = endpoints.first() {
                store
                    .paths()
                    .put(
                        identity.identity().as_bytes(),
                        c.identity.as_bytes(),
                        &PathRecord {
                            endpoint: *endpoint,
                            pmtu: 0,
                            rtt_us: 0,
                            nat: None,
                            measured_unix: now,
                            own: false,
                        },
                    )
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        store.close().map_err(|e| anyhow!("{e}"))?;
        write_member_files(&MemberFiles {
            dir: &staging,
            name: &cert.name,
            info: &info,
            noise: &noise,
            identity: &identity,
            authority: None,
            certificate: &signed,
            ipv4: cert.ipv4,
        })
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    finish(&staging, dir)?;
    println!(
        "joined network {} ({}) as {} at {} and {}",
        info.name(),
        info.id(),
        cert.name,
        cert.ipv4,
        cert.ipv6
    );
    println!(
        "run it with: weft up --config {}",
        dir.join("weft.toml").display()
    );
    Ok(())
}

async fn exchange(
    token: &InviteToken,
    noise: &StaticSecret,
    request: &JoinRequest,
) -> anyhow::Result<JoinResponse> {
    let mut last = anyhow!("the token names no endpoint");
    for endpoint in &token.inviter_endpoints {
        let attempt = async {
            let mut stream = TcpStream::connect(endpoint).await?;
            let (initiator, frame) =
                JoinInitiator::start(noise, &token.inviter_noise_key, request, &mut OsRng)
                    .map_err(|e| anyhow!("{e}"))?;
            stream.write_all(&frame).await?;
            let reply = read_frame(&mut stream).await?;
            initiator.finish(&reply).map_err(|e| anyhow!("{e}"))
        };
        match tokio::time::timeout(JOIN_TIMEOUT, attempt).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => last = e.context(format!("inviter at {endpoint}")),
            Err(_) => {
                last = anyhow!(
                    "inviter at {endpoint} did not answer within {}s",
                    JOIN_TIMEOUT.as_secs()
                )
            }
        }
    }
    Err(last)
}
