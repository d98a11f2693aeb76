//! `weft join TOKEN` on a new server: the joiner's side of the join
//! exchange (the inviter's is `mesh::join`).
//!
//! The joiner generates its keys, connects to the inviter's join endpoints
//! from the token (TCP), and runs the exchange of `weft_protocol::join`: the
//! inviter's key is pinned by the token, the secret proves the invite. It
//! checks everything the inviter answers before writing a single file, and
//! writes its directory under a temporary name renamed into place at the
//! end (`member_dir`), so a failed join leaves nothing behind. It runs
//! before any daemon exists on this server and never talks to one.
//!
//! An exchange that fails on the way (no answer, a connection cut) is tried
//! again with the same keys: the inviter answers a joiner that redeemed the
//! invite already with the same certificate, so an answer lost in transit
//! does not spend the invite for nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rand_core::OsRng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_protocol::join::{JoinInitiator, JoinRequest, JoinResponse};
use weft_protocol::membership::{IdentitySecret, InviteToken, RecordBody, SignedCertificate};
use weft_protocol::StaticSecret;
use weft_store::{MemberRecord, PathRecord, Store};

use super::member_dir::{finish, refuse_non_empty, staging_dir, write_member_files, MemberFiles};
use crate::keys;
use crate::mesh::join::{read_frame, JOIN_TIMEOUT};
use crate::mesh::{now_unix, NetworkWire};

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
    let mut validator = crate::mesh::gossip::record_validator();
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
        // The authority set `to_info` verified: the new member trusts the
        // keys it names from its first start.
        if let Some(chain) = wire.chain()? {
            store
                .authorities()
                .put(&chain.to_bytes())
                .map_err(|e| anyhow!("{e}"))?;
        }
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
            // The first endpoint this host can reach: no IPv6 one on a
            // host without IPv6.
            if let Some(endpoint) = endpoints.iter().find(|e| reachable(e)) {
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
            final_dir: dir,
            name: &cert.name,
            info: &info,
            noise: &noise,
            identity: &identity,
            authority: None,
            certificate: &signed,
            ipv4: cert.ipv4,
            certificate_lifetime: None,
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
    super::note_ipv4_only();
    Ok(())
}

/// Whether this host can send to `endpoint`: not to IPv6 without IPv6.
fn reachable(endpoint: &SocketAddr) -> bool {
    endpoint.is_ipv4() || crate::host::ipv6().usable()
}

/// Rounds over the inviter's endpoints before giving up, and the pause
/// before each round after the first.
const ROUNDS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// Runs the exchange with the first of the inviter's endpoints that
/// answers, in up to [`ROUNDS`] rounds.
async fn exchange(
    token: &InviteToken,
    noise: &StaticSecret,
    request: &JoinRequest,
) -> anyhow::Result<JoinResponse> {
    let mut last = anyhow!("the token names no endpoint");
    for (round, pause) in ROUNDS.into_iter().enumerate() {
        if round > 0 {
            eprintln!(
                "weft join: {last:#}; trying again in {}s with the same keys",
                pause.as_secs()
            );
            tokio::time::sleep(pause).await;
        }
        match exchange_once(token, noise, request).await {
            Ok(response) => return Ok(response),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One exchange with each of the inviter's endpoints in turn.
async fn exchange_once(
    token: &InviteToken,
    noise: &StaticSecret,
    request: &JoinRequest,
) -> anyhow::Result<JoinResponse> {
    let mut last = anyhow!("the token names no endpoint");
    if !token.inviter_endpoints.iter().any(reachable) {
        if let Some(why) = crate::host::ipv6().why_not() {
            bail!("the token names only IPv6 endpoints of the inviter, and {why}");
        }
    }
    for endpoint in token.inviter_endpoints.iter().filter(|e| reachable(e)) {
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
