//! Certificate renewal on a running member: this member's own renewals,
//! and, on authority holders, the answers to other members' requests.
//!
//! A member renews when a third of its certificate's lifetime remains
//! (spread by a random twelfth, `weft_protocol::membership::renewal`), or
//! at once when `weft renew` asks. One attempt runs at a time, as a task on
//! the services runtime: it asks members in turn over `/weft/renew/1`
//! (those known to hold an authority key first, [`ASKED_PER_ATTEMPT`] at
//! most) until one renews, checks the certificate it gets
//! (same identity, Noise key, name and addresses; valid now), writes it
//! atomically over the certificate file and hands it back. The main task
//! polls for the outcome ([`Renewal::poll`]) and never waits for it;
//! failures retry with capped exponential backoff, starting from the next
//! holder. While this member's certificate has expired it says so at WARN
//! once a minute.
//!
//! The holder's side ([`answer`]) checks a request with
//! `RenewalRequest::check` against the identity QUIC proved, signs the
//! renewed certificate with the holder's authority key, and counts the
//! outcome. This file never touches the device and never blocks the main
//! task: the file write runs on the blocking pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand_core::{OsRng, RngCore};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};
use weft_protocol::membership::renewal::{self, RenewalRequest, RenewalResponse};
use weft_protocol::membership::{
    Authority, Certificate, IdentityKey, NetworkInfo, RenewalRefusal, SignedCertificate,
};

use super::members::peer_id_of;
use super::{now_unix, write_certificate, Membership};
use crate::control::ControlHandle;

/// Members one attempt asks, at most, in order: those known to hold an
/// authority key first, then connected members, then the rest. A member
/// that holds none answers at once; one that cannot be reached costs up
/// to the renewal timeout, so an attempt gives up after
/// [`UNREACHABLE_PER_ATTEMPT`] of those.
pub const ASKED_PER_ATTEMPT: usize = 16;
/// Unreachable holders one attempt tolerates.
pub const UNREACHABLE_PER_ATTEMPT: usize = 3;
/// How often the main task looks for the outcome of an attempt in flight.
pub const POLL_EVERY: Duration = Duration::from_millis(10);
/// How often an expired certificate is reported at WARN.
pub const EXPIRED_WARN_EVERY: Duration = Duration::from_secs(60);

/// An authority holder to ask: its control-plane identity and, when this
/// node is not connected to it, where to dial it.
#[derive(Debug, Clone)]
pub struct Holder {
    /// The holder's member name.
    pub name: String,
    /// Its control-plane identity.
    pub peer: PeerId,
    /// Its control-plane address, if known.
    pub address: Option<Multiaddr>,
}

/// How an attempt ended.
// One value per attempt, moved once through a oneshot: its size is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// A new certificate, checked and written to the certificate file.
    Renewed {
        /// The certificate.
        certificate: SignedCertificate,
        /// The holder that issued it.
        holder: Holder,
        /// Members that answered they hold no authority key.
        not_holders: Vec<PeerId>,
    },
    /// No holder renewed it: the last reason (a metric label), and the
    /// members that answered they hold no authority key.
    Failed(&'static str, Vec<PeerId>),
}

/// This member's renewal state. See the module documentation.
#[derive(Debug)]
pub struct Renewal {
    /// When to renew next (unix time).
    due_unix: u64,
    /// Failed attempts in a row.
    failures: u32,
    /// Rotates which holder an attempt starts with.
    cursor: usize,
    in_flight: Option<oneshot::Receiver<Outcome>>,
    /// When to look for the outcome of the attempt in flight next.
    poll_at: Instant,
    /// When the attempt in flight started.
    attempt_started: Instant,
    /// Callers of `weft renew` waiting for the outcome.
    waiting: Vec<oneshot::Sender<Result<String, String>>>,
    last_expired_warning: Option<Instant>,
    services: tokio::runtime::Handle,
    /// Attempts by result (`ok`, or the reason of failure), for metrics.
    pub results: BTreeMap<&'static str, u64>,
    /// Renewals this node answered as a holder, by result.
    pub answered: BTreeMap<&'static str, u64>,
    /// The latency of the last renewal.
    pub last_took: Option<Duration>,
    /// The holder that renewed last: asked first next time.
    last_holder: Option<PeerId>,
    /// Members that said they hold no authority key: asked last.
    not_holders: std::collections::HashSet<PeerId>,
}

impl Renewal {
    /// The schedule for `cert`, on the current Tokio runtime (the
    /// services runtime).
    pub fn new(cert: &Certificate) -> Self {
        Renewal {
            due_unix: due(cert),
            failures: 0,
            cursor: 0,
            in_flight: None,
            poll_at: Instant::now(),
            attempt_started: Instant::now(),
            waiting: Vec::new(),
            last_expired_warning: None,
            services: tokio::runtime::Handle::current(),
            results: BTreeMap::new(),
            answered: BTreeMap::new(),
            last_took: None,
            last_holder: None,
            not_holders: Default::default(),
        }
    }

    /// When the main task must next call [`Renewal::poll`].
    pub fn next_deadline(&self, now: Instant) -> Instant {
        if self.in_flight.is_some() {
            return self.poll_at;
        }
        let wait = self.due_unix.saturating_sub(now_unix());
        // The unix deadline is re-read against the wall clock at least
        // every minute, so a clock that steps does not strand it.
        now + Duration::from_secs(wait.min(60))
    }

    /// Renews as soon as possible (`weft renew`); `reply` hears the
    /// outcome.
    pub fn force(&mut self, reply: oneshot::Sender<Result<String, String>>) {
        self.due_unix = 0;
        self.waiting.push(reply);
    }

    /// Starts an attempt when one is due, collects one that finished, and
    /// warns about an expired certificate. Returns a certificate that is
    /// now in force: the caller presents and announces it.
    pub fn poll(
        &mut self,
        m: &Membership,
        control: &ControlHandle,
        holders: impl FnOnce() -> Vec<Holder>,
    ) -> Option<SignedCertificate> {
        let now = Instant::now();
        let current = m.certificate();
        if let Ok(cert) = current.verify_signed(&m.info()) {
            if now_unix() >= cert.not_after
                && self
                    .last_expired_warning
                    .is_none_or(|t| now.duration_since(t) >= EXPIRED_WARN_EVERY)
            {
                self.last_expired_warning = Some(now);
                warn!(
                    expired_unix = cert.not_after,
                    "this member's certificate has expired: other members refuse it until an \
                     authority holder renews it (retrying)"
                );
            }
        }
        if let Some(rx) = &mut self.in_flight {
            match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    self.poll_at = now + POLL_EVERY;
                    return None;
                }
                Ok(outcome) => {
                    self.in_flight = None;
                    return self.finished(outcome, &current, &m.info());
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    self.in_flight = None;
                    return self.finished(
                        Outcome::Failed("internal", Vec::new()),
                        &current,
                        &m.info(),
                    );
                }
            }
        }
        if now_unix() < self.due_unix {
            return None;
        }
        if let Some(authority) = &m.authority() {
            // A holder renews its own certificate itself.
            let Ok(old) = current.verify_signed(&m.info()) else {
                return self.finished(
                    Outcome::Failed("own_certificate_invalid", Vec::new()),
                    &current,
                    &m.info(),
                );
            };
            let new = renewal::renewed_certificate(&old, m.certificate_lifetime_secs(), now_unix());
            let signed = Authority::issue(&new, authority);
            let holder = Holder {
                name: m.config.name.clone(),
                peer: control.peer_id(),
                address: None,
            };
            let path = m.config.certificate_file.clone();
            let (tx, rx) = oneshot::channel();
            self.in_flight = Some(rx);
            self.poll_at = now + POLL_EVERY;
            self.attempt_started = now;
            self.services.spawn_blocking(move || {
                let outcome = match write_certificate(&path, &signed) {
                    Ok(()) => Outcome::Renewed {
                        certificate: signed,
                        holder,
                        not_holders: Vec::new(),
                    },
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "renewal: cannot write the renewed certificate");
                        Outcome::Failed("write_failed", Vec::new())
                    }
                };
                let _ = tx.send(outcome);
            });
            return None;
        }
        let mut holders = holders();
        if holders.is_empty() {
            return self.finished(
                Outcome::Failed("no_authority", Vec::new()),
                &current,
                &m.info(),
            );
        }
        // After a failure, start one further along; then the holder that
        // answered last time, then members not known to hold no key.
        let start = self.cursor % holders.len();
        holders.rotate_left(start);
        holders.sort_by_key(|h| {
            (
                Some(h.peer) != self.last_holder,
                self.not_holders.contains(&h.peer),
            )
        });
        holders.truncate(ASKED_PER_ATTEMPT);
        let (tx, rx) = oneshot::channel();
        self.in_flight = Some(rx);
        self.poll_at = now + POLL_EVERY;
        self.attempt_started = now;
        let job = Attempt {
            control: control.clone(),
            holders,
            request: RenewalRequest {
                certificate: current,
            }
            .to_bytes(),
            info: m.info(),
            path: m.config.certificate_file.clone(),
            services: self.services.clone(),
        };
        debug!("renewing this member's certificate");
        self.services.spawn(async move {
            let _ = tx.send(job.run().await);
        });
        None
    }

    fn finished(
        &mut self,
        outcome: Outcome,
        current: &SignedCertificate,
        info: &NetworkInfo,
    ) -> Option<SignedCertificate> {
        match outcome {
            Outcome::Renewed {
                certificate,
                holder,
                not_holders,
            } => {
                // From the request to the certificate in force (now).
                let took = self.attempt_started.elapsed();
                self.not_holders.extend(not_holders);
                self.last_holder = Some(holder.peer);
                let holder = holder.name;
                *self.results.entry("ok").or_default() += 1;
                self.failures = 0;
                self.last_took = Some(took);
                self.last_expired_warning = None;
                let cert = certificate.verify_signed(info).ok()?;
                self.due_unix = due(&cert);
                info!(
                    serial = cert.serial,
                    not_after = cert.not_after,
                    %holder,
                    took_ms = took.as_millis() as u64,
                    "certificate renewed"
                );
                for w in self.waiting.drain(..) {
                    let _ = w.send(Ok(format!(
                        "renewed by {holder}: serial {}, valid until {} (unix time)",
                        cert.serial, cert.not_after
                    )));
                }
                Some(certificate)
            }
            Outcome::Failed(reason, not_holders) => {
                self.not_holders.extend(not_holders);
                *self.results.entry(reason).or_default() += 1;
                self.failures = self.failures.saturating_add(1);
                self.cursor = self.cursor.wrapping_add(1);
                let lifetime = current
                    .verify_signed(info)
                    .map(|c| c.not_after.saturating_sub(c.not_before))
                    .unwrap_or(renewal::RETRY_CAP_SECS);
                let delay = renewal::retry_delay(self.failures, lifetime);
                self.due_unix = now_unix().saturating_add(delay);
                warn!(
                    reason,
                    failures = self.failures,
                    retry_in_s = delay,
                    "certificate renewal failed"
                );
                for w in self.waiting.drain(..) {
                    let _ = w.send(Err(format!("renewal failed: {reason}")));
                }
                None
            }
        }
    }
}

/// When `cert` is due for renewal, with a fresh random spread.
fn due(cert: &Certificate) -> u64 {
    let jitter = (OsRng.next_u32() as f64) / (u32::MAX as f64);
    renewal::renew_at(cert.not_before, cert.not_after, jitter)
}

/// One attempt, run as a task of its own.
struct Attempt {
    control: ControlHandle,
    holders: Vec<Holder>,
    request: Vec<u8>,
    info: NetworkInfo,
    path: PathBuf,
    services: tokio::runtime::Handle,
}

impl Attempt {
    async fn run(self) -> Outcome {
        let Some(old) = RenewalRequest::from_bytes(&self.request)
            .and_then(|r| r.certificate.verify_signed(&self.info).ok())
        else {
            return Outcome::Failed("own_certificate_invalid", Vec::new());
        };
        let mut last = "no_authority";
        let mut unreachable = 0;
        let mut not_holders = Vec::new();
        for holder in &self.holders {
            if unreachable >= UNREACHABLE_PER_ATTEMPT {
                break;
            }
            if !self.control.members().contains(&holder.peer) {
                if let Some(address) = &holder.address {
                    if let Err(e) = self.control.connect(address.clone()).await {
                        debug!(holder = %holder.name, error = %e, "renewal: cannot reach member");
                        unreachable += 1;
                        last = "unreachable";
                        continue;
                    }
                }
            }
            let answer = match self.control.renew(holder.peer, self.request.clone()).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    debug!(holder = %holder.name, error = %e, "renewal: no answer");
                    unreachable += 1;
                    last = "unreachable";
                    continue;
                }
            };
            let signed = match RenewalResponse::from_bytes(&answer) {
                Some(RenewalResponse::Renewed(signed)) => signed,
                Some(RenewalResponse::Refused(RenewalRefusal::NotAnAuthority)) => {
                    not_holders.push(holder.peer);
                    continue;
                }
                Some(RenewalResponse::Refused(why)) => {
                    debug!(holder = %holder.name, reason = why.as_str(), "renewal refused");
                    last = refusal_label(why);
                    continue;
                }
                None => {
                    last = "malformed_answer";
                    continue;
                }
            };
            match signed.verify(&self.info, now_unix()) {
                Ok(new) if same_member(&old, &new) && new.serial > old.serial => {}
                _ => {
                    warn!(holder = %holder.name, "renewal: the certificate received is not a valid renewal of ours");
                    last = "bad_certificate";
                    continue;
                }
            }
            let path = self.path.clone();
            let to_write = signed.clone();
            let written = self
                .services
                .spawn_blocking(move || write_certificate(&path, &to_write))
                .await;
            match written {
                Ok(Ok(())) => {
                    return Outcome::Renewed {
                        certificate: signed,
                        holder: holder.clone(),
                        not_holders,
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %format!("{e:#}"), "renewal: cannot write the renewed certificate");
                    return Outcome::Failed("write_failed", not_holders);
                }
                Err(_) => return Outcome::Failed("write_failed", not_holders),
            }
        }
        Outcome::Failed(last, not_holders)
    }
}

/// Whether `new` keeps what a renewal must keep of `old`.
fn same_member(old: &Certificate, new: &Certificate) -> bool {
    old.network == new.network
        && old.identity == new.identity
        && old.noise_key == new.noise_key
        && old.name == new.name
        && old.ipv4 == new.ipv4
        && old.ipv6 == new.ipv6
}

fn refusal_label(why: RenewalRefusal) -> &'static str {
    match why {
        RenewalRefusal::NotAnAuthority => "not_an_authority",
        RenewalRefusal::Revoked => "revoked",
        RenewalRefusal::Busy => "busy",
        _ => "refused",
    }
}

/// A holder's answer to renewal request `request` from control-plane
/// peer `peer`: checked, and signed with the authority key for
/// `lifetime_secs`. Returns the answer to send and a result label.
pub fn answer(
    m: &Membership,
    revoked: &dyn Fn(&IdentityKey) -> bool,
    peer: &PeerId,
    request: &[u8],
    lifetime_secs: u64,
) -> (RenewalResponse, &'static str) {
    let refused = |why: RenewalRefusal| (RenewalResponse::Refused(why), why.as_str());
    let Some(authority) = &m.authority() else {
        return refused(RenewalRefusal::NotAnAuthority);
    };
    let Some(request) = RenewalRequest::from_bytes(request) else {
        return refused(RenewalRefusal::Malformed);
    };
    // The identity QUIC proved: the certificate's own if its key is the
    // peer's, and otherwise none that `check` could accept.
    let requester = request
        .certificate
        .verify_signed(&m.info())
        .ok()
        .map(|c| c.identity)
        .filter(|id| peer_id_of(id).as_ref() == Some(peer))
        .unwrap_or(IdentityKey([0; 32]));
    let now = now_unix();
    match request.check(&requester, &m.info(), revoked, now) {
        Ok(old) => {
            let new = renewal::renewed_certificate(&old, lifetime_secs, now);
            if new.check(&m.info(), now).is_err() {
                return refused(RenewalRefusal::Failed);
            }
            info!(member = %new.name, serial = new.serial, "renewed a member's certificate");
            (
                RenewalResponse::Renewed(Authority::issue(&new, authority)),
                "ok",
            )
        }
        Err(why) => {
            warn!(%peer, reason = why.as_str(), "renewal request refused");
            refused(why)
        }
    }
}
