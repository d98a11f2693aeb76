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

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rand_core::OsRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};
use weft_protocol::join::{
    take_frame, JoinGrant, JoinRefusal, JoinRequest, JoinResponder, JoinResponse, MAX_FRAME,
};
use weft_protocol::membership::{Authority, Certificate, IdentityKey, InviteToken};
use weft_protocol::StaticSecret;
use weft_store::{InviteError, MemberRecord};

use super::{now_unix, Membership, NetworkWire, CERT_LIFETIME_SECS, CLOCK_SKEW_SECS};

/// How long one join exchange may take, on either side.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

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
