//! Invite issuance: an authority holder records a one-time token for a new
//! server.
//!
//! The token carries this member's join endpoints, its data-plane key (which
//! the joiner pins), the network id, a fresh 32-byte secret and the expiry;
//! the store keeps only a hash of the secret, flushed before the token is
//! returned. The daemon calls [`issue`] on a blocking thread of the services
//! runtime (never on the main task: it waits for the disk); `weft invite`
//! calls it itself when no daemon runs (`cli::invite`).

use anyhow::{anyhow, bail};
use rand_core::OsRng;
use weft_protocol::membership::InviteToken;
use weft_store::InviteRecord;

use super::{now_unix, Membership};

/// Issues a token: records the hash of its secret (flushed) and returns
/// its text.
pub fn issue(
    m: &Membership,
    name: Option<String>,
    ttl_secs: u64,
    noise_key: weft_protocol::PublicKey,
) -> anyhow::Result<String> {
    if m.authority().is_none() {
        bail!("this member holds no key of the current authority set, so it cannot invite");
    }
    if let Some(n) = &name {
        if !weft_protocol::membership::is_valid_name(n) {
            bail!("--name: {n:?} is not a valid member name (1-63 of a-z, 0-9 and '-')");
        }
    }
    let endpoints = m
        .endpoint_source(m.config.join_port)
        .current(weft_protocol::membership::invite::MAX_INVITE_ENDPOINTS);
    if endpoints.is_empty() {
        bail!("this host has no address a new server could reach; set mesh.advertise");
    }
    let now = now_unix();
    let token = InviteToken::generate(
        *m.info().id(),
        noise_key,
        endpoints,
        name.clone(),
        ttl_secs,
        now,
        &mut OsRng,
    )
    .map_err(|e| anyhow!("{e}"))?;
    m.store
        .invites()
        .add(
            &token.secret_hash(),
            &InviteRecord {
                name,
                expires_unix: token.expires_unix,
                used_unix: None,
                used_by: None,
            },
        )
        .map_err(|e| anyhow!("{e}"))?;
    Ok(token.to_text())
}
