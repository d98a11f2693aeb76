//! The network's authority set on a running member: the chain it adopted,
//! which of its keys this member holds, and the changes a holder makes.
//!
//! At start the chain comes from the store and is verified from the
//! network's anchor again (a damaged or forged one on disk is refused and
//! the anchor alone trusted until gossip brings the chain). A network
//! created before authority sets existed gets its first version from the
//! holder of the anchor key at its next start. A chain that reaches the
//! node later (gossip, a push from a member it connects to) is adopted by
//! the rule of `Authorities::compare`; the keys it trusts replace the
//! network's issuers at once, also in the control plane's gate.
//!
//! A holder changes the set (`weft authority add` and `remove`) by
//! signing the next version; a member another holder nominates generates
//! its authority key here, writes it with mode 0600 beside its identity
//! key, and signs with it once a version holding it arrives. Nothing here
//! waits on the network: the caller publishes, and the key is written on a
//! blocking thread.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};
use weft_protocol::membership::{
    Adoption, Authorities, AuthorityChain, IdentityKey, IdentitySecret, NetworkInfo, Nomination,
    NominationAnswer, NominationRefusal, RecordBody, SetChange, SetError, SignedRecord,
};
use weft_store::{Store, Stripe};

use super::gossip::Gossip;
use super::{now_unix, read_identity, write_identity, Membership, MeshConfig};
use crate::admin::Response;
use crate::control::{ControlError, ControlHandle, Verdict};

/// Serialises nominations: each may write the key file.
static NOMINATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The chain a member adopted, and what it verified to.
#[derive(Debug, Clone)]
pub struct Held {
    /// The chain, if the member has one (a network's members all have one
    /// once its first holder started with this version of weft).
    pub chain: Option<AuthorityChain>,
    /// Its versions, or the anchor alone without a chain.
    pub verified: Authorities,
}

/// Loads the stored chain, or starts one (version 1, the anchor alone) on
/// the holder of the anchor key of a network that has none yet.
pub fn load(
    store: &Store,
    info: &NetworkInfo,
    config: &MeshConfig,
    key: Option<&IdentitySecret>,
) -> anyhow::Result<Held> {
    let stored = match store.authorities().get() {
        Ok(bytes) => bytes,
        Err(e) => {
            warn!(error = %e, "stored authority set unreadable; trusting the anchor alone");
            None
        }
    };
    if let Some(bytes) = stored {
        let checked = AuthorityChain::from_bytes(&bytes).and_then(|chain| {
            let verified = chain.verify(info.id(), info.authority())?;
            Ok(Held {
                chain: Some(chain),
                verified,
            })
        });
        match checked {
            Ok(held) => return Ok(held),
            Err(e) => {
                warn!(error = %e, "stored authority set refused; trusting the anchor alone");
            }
        }
    }
    match key.filter(|k| k.identity() == *info.authority()) {
        Some(anchor) => {
            let chain = AuthorityChain::genesis(
                *info.id(),
                &config.name,
                anchor,
                config.certificate_lifetime_secs(),
                now_unix(),
            )
            .map_err(|e| anyhow!("cannot start the authority set: {e}"))?;
            let verified = chain
                .verify(info.id(), info.authority())
                .map_err(|e| anyhow!("the new authority set does not verify: {e}"))?;
            store
                .authorities()
                .put(&chain.to_bytes())
                .map_err(|e| anyhow!("cannot store the authority set: {e}"))?;
            info!("authority set started: version 1 holds this member's anchor key");
            Ok(Held {
                chain: Some(chain),
                verified,
            })
        }
        None => Ok(Held {
            chain: None,
            verified: Authorities::anchor_only(*info.id(), *info.authority()),
        }),
    }
}

/// What became of a chain offered to the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Considered {
    /// Adopted: the set is now at `version`.
    Adopted {
        /// The version adopted.
        version: u64,
    },
    /// The chain the member holds already.
    Same,
    /// A fork that loses to the chain held; kept ours.
    Kept,
    /// Refused: an older version, a fork signed by a removed key, or a
    /// chain that does not verify from the anchor.
    Refused(&'static str),
}

impl Membership {
    /// The authority chain adopted and its versions.
    pub fn authorities(&self) -> Held {
        match self.authorities.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// This member's authority key, while it is in the current set.
    pub fn authority(&self) -> Option<IdentitySecret> {
        let key = match self.authority_key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }?;
        let held = self.authorities.read().ok()?;
        held.verified
            .current()
            .holder(&key.identity())
            .is_some()
            .then_some(key)
    }

    /// The share of the IPv4 prefix this holder allocates from: every
    /// n-th host address for n holders, by its place in the current set
    /// (all of them while it holds no key of the set).
    pub fn address_stripe(&self, key: &IdentitySecret) -> Stripe {
        let held = self.authorities();
        let holders = &held.verified.current().holders;
        let me = key.identity();
        match holders.iter().position(|h| h.key == me) {
            Some(index) => Stripe {
                index: index as u32,
                count: holders.len() as u32,
            },
            None => Stripe::ALL,
        }
    }

    /// How long the certificates this member issues are valid: the
    /// current set's lifetime, or the configured one without a chain.
    pub fn certificate_lifetime_secs(&self) -> u64 {
        let held = self.authorities();
        match held.chain {
            Some(_) => held.verified.current().certificate_lifetime_secs,
            None => self.config.certificate_lifetime_secs(),
        }
    }

    /// Offers `chain` (from gossip, a push or a join answer): adopted if
    /// it verifies from the anchor and wins by `Authorities::compare`.
    /// The caller stores an adopted chain.
    pub fn consider_authorities(&self, chain: AuthorityChain) -> Considered {
        let info = self.info();
        let verified = match chain.verify(info.id(), info.authority()) {
            Ok(v) => v,
            Err(_) => return Considered::Refused("bad_authority_set"),
        };
        let Ok(mut held) = self.authorities.write() else {
            return Considered::Kept;
        };
        match held.verified.compare(&verified) {
            Adoption::Same => Considered::Same,
            Adoption::LosingFork => Considered::Kept,
            Adoption::Older => Considered::Refused("authority_older"),
            Adoption::RetiredSigner => Considered::Refused("authority_retired_signer"),
            Adoption::Extends | Adoption::WinningFork => {
                let version = verified.version();
                let issuers = verified.issuers();
                *held = Held {
                    chain: Some(chain),
                    verified,
                };
                drop(held);
                if let Ok(mut n) = self.network.write() {
                    n.set_issuers(issuers);
                }
                Considered::Adopted { version }
            }
        }
    }

    /// Signs the next version with `change` and adopts it; returns the
    /// new chain for the caller to store and publish.
    pub fn change_authorities(&self, change: SetChange) -> anyhow::Result<AuthorityChain> {
        let signer = self.authority().ok_or_else(|| {
            anyhow!("this member holds no key of the current authority set, so it cannot change it")
        })?;
        let held = self.authorities();
        let chain = held
            .chain
            .as_ref()
            .ok_or_else(|| anyhow!("this member has no authority set yet"))?;
        let next = chain
            .extend(&held.verified, change, &signer, now_unix())
            .map_err(|e| match e {
                SetError::Empty => anyhow!("an authority set may not become empty"),
                SetError::Duplicate => anyhow!("that member or key is already in the set"),
                SetError::NoSuchHolder => anyhow!("no authority holder has that name"),
                other => anyhow!("{other}"),
            })?;
        match self.consider_authorities(next.clone()) {
            Considered::Adopted { .. } => Ok(next),
            other => Err(anyhow!("the new authority set was not adopted: {other:?}")),
        }
    }

    /// Answers a nomination from member `asker`: checks it, then
    /// generates this member's authority key (or keeps the one it already
    /// has, for a repeated nomination) and writes it. Blocking: it
    /// fsyncs; never on the main task.
    pub fn accept_nomination(&self, asker: &str, request: &[u8]) -> NominationAnswer {
        let Some(nomination) = Nomination::from_bytes(request) else {
            return NominationAnswer::Refused(NominationRefusal::Malformed);
        };
        let held = self.authorities();
        if let Err(refusal) =
            nomination.check(self.info().id(), &held.verified, asker, &self.config.name)
        {
            return NominationAnswer::Refused(refusal);
        }
        // One nomination at a time writes the key file; the key slot is
        // locked only to read and to swap, never across the fsync (the
        // main task reads it to sign).
        let _one_at_a_time = NOMINATING.lock();
        let current = match self.authority_key.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        // A key this member has and that no version holds yet (an earlier
        // nomination whose answer was lost) is offered again; one that
        // was in the set and left is never taken back.
        let reusable = current.filter(|k| {
            held.verified
                .versions()
                .iter()
                .all(|v| v.holder(&k.identity()).is_none())
        });
        if let Some(key) = reusable {
            return NominationAnswer::Key(key.identity());
        }
        let key = IdentitySecret::generate(&mut OsRng);
        let path = self.config.authority_key_path();
        if let Err(e) = write_key(&path, &key) {
            warn!(error = %e, "cannot write a new authority key");
            return NominationAnswer::Refused(NominationRefusal::Failed);
        }
        info!(asker, key_file = %path.display(), "nominated as an authority holder: key generated");
        let public = key.identity();
        match self.authority_key.write() {
            Ok(mut slot) => *slot = Some(key),
            Err(poisoned) => *poisoned.into_inner() = Some(key),
        }
        NominationAnswer::Key(public)
    }
}

/// Writes `key` to `path` (mode 0600) so that a crash leaves the old file
/// or the new one: written beside it, then renamed over it.
fn write_key(path: &Path, key: &IdentitySecret) -> anyhow::Result<()> {
    super::replace_file(path, |tmp| write_identity(tmp, key))?;
    // Read back: what signs later is what is on disk.
    let back = read_identity(path, "authority key")?;
    if back.identity() != key.identity() {
        anyhow::bail!("{} does not hold the key just written", path.display());
    }
    Ok(())
}

/// The set as `weft authority list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorityList {
    /// The current version (0: the anchor alone, no chain yet).
    pub version: u64,
    /// The hash of the chain's last version, hex.
    pub head: String,
    /// How long certificates are valid, in seconds.
    pub certificate_lifetime_secs: u64,
    /// The holders, in the order they were added.
    pub holders: Vec<HolderEntry>,
    /// The chain's encoding, standard base64 (empty without a chain).
    pub chain: String,
}

/// One holder in [`AuthorityList`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HolderEntry {
    /// The holder's member name.
    pub name: String,
    /// Its authority key, hex.
    pub key: String,
    /// When the key entered the set (unix time).
    pub since_unix: u64,
}

impl AuthorityList {
    /// The set `held` shows.
    pub fn of(held: &Held) -> Self {
        let current = held.verified.current();
        AuthorityList {
            version: current.version,
            head: held
                .verified
                .head()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            certificate_lifetime_secs: current.certificate_lifetime_secs,
            holders: current
                .holders
                .iter()
                .map(|h| HolderEntry {
                    name: h.name.clone(),
                    key: h.key.to_hex(),
                    since_unix: h.since_unix,
                })
                .collect(),
            chain: held
                .chain
                .as_ref()
                .map(|c| {
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c.to_bytes())
                })
                .unwrap_or_default(),
        }
    }
}

/// A nominated member's answer, back on the main task from the task that
/// asked: the main task signs the version that adds its key.
#[derive(Debug)]
pub struct Nominated {
    /// The member nominated.
    pub name: String,
    /// Its new authority key, or why there is none.
    pub answer: Result<IdentityKey, String>,
    /// Where the admin request that started it is answered.
    pub reply: oneshot::Sender<Response>,
}

impl Gossip {
    /// A verified record's authority chain: adopted and stored if it wins,
    /// and the verdict for gossipsub (an older version or a fork signed by
    /// a removed key scores its sender down, like any invalid record).
    pub(super) fn take_authorities(&mut self, m: &Membership, chain: AuthorityChain) -> Verdict {
        match m.consider_authorities(chain.clone()) {
            Considered::Adopted { version } => {
                let holders = m.authorities().verified.current().holders.len();
                info!(version, holders, "authority set adopted");
                self.store_authorities(&chain, None);
                Verdict::Accept
            }
            Considered::Same => Verdict::Accept,
            // The fork that wins travels too; this one goes no further.
            Considered::Kept => Verdict::Ignore,
            Considered::Refused(reason) => {
                *self.rejected.entry(reason).or_default() += 1;
                warn!(reason, "authority set refused");
                Verdict::Reject
            }
        }
    }

    /// Stores `chain` (flushed) on the store writer; `reply` hears how
    /// that went.
    pub(super) fn store_authorities(
        &self,
        chain: &AuthorityChain,
        reply: Option<oneshot::Sender<anyhow::Result<()>>>,
    ) {
        let bytes = chain.to_bytes();
        let queued = self.writer().submit(move |m| {
            let stored = m.store.authorities().put(&bytes);
            let failed = stored.as_ref().err().map(|e| anyhow!("{e}"));
            m.counters.store("authorities", stored);
            if let Some(reply) = reply {
                let _ = reply.send(failed.map_or(Ok(()), Err));
            }
        });
        if !queued {
            warn!("authority set not stored: the store writer is full");
        }
    }

    /// Signs `change` into the next version, adopts it, and stores and
    /// publishes it; `reply` is answered once it is stored.
    pub fn change_authorities(
        &mut self,
        m: &Membership,
        change: SetChange,
        reply: oneshot::Sender<Response>,
        services: &tokio::runtime::Handle,
    ) {
        let what = match &change {
            SetChange::Add { name, .. } => format!("{name} is an authority holder"),
            SetChange::Remove { name } => format!("{name} is no longer an authority holder"),
            SetChange::Lifetime { secs } => format!("certificates are now issued for {secs} s"),
        };
        let chain = match m.change_authorities(change) {
            Ok(chain) => chain,
            Err(e) => {
                let _ = reply.send(Response::Error(format!("{e:#}")));
                return;
            }
        };
        let version = chain.len();
        info!(version, "{what}");
        let (stored_tx, stored) = oneshot::channel();
        self.store_authorities(&chain, Some(stored_tx));
        let seq = self.next_seq();
        let record = SignedRecord::sign(&m.identity, seq, RecordBody::AuthoritySet(chain));
        let published = self.control().try_publish(record.to_bytes()).is_ok();
        if published {
            *self.published.entry("authority_set").or_default() += 1;
        }
        services.spawn(async move {
            let response = match stored.await {
                Ok(Ok(())) if published => {
                    Response::Done(format!("{what}; authority set version {version}"))
                }
                Ok(Ok(())) => Response::Done(format!(
                    "{what}; authority set version {version} (stored; not published: \
                     members learn it when they next connect)"
                )),
                Ok(Err(e)) => Response::Error(format!(
                    "{what} in force here, but the authority set was not stored: {e}"
                )),
                Err(_) => Response::Error("the store writer stopped".into()),
            };
            let _ = reply.send(response);
        });
    }

    /// A nomination from member `peer`: answered from a blocking thread
    /// (the key is written and fsynced there).
    pub(super) fn nominated(
        &mut self,
        m: &Arc<Membership>,
        peer: libp2p::PeerId,
        id: u64,
        request: Vec<u8>,
        services: &tokio::runtime::Handle,
    ) {
        let asker = self
            .members
            .iter()
            .find(|x| super::members::peer_id_of(&x.cert.identity).as_ref() == Some(&peer))
            .map(|x| x.cert.name.clone())
            .unwrap_or_default();
        let (m, handle) = (m.clone(), self.control().clone());
        services.spawn_blocking(move || {
            let answer = m.accept_nomination(&asker, &request);
            if let NominationAnswer::Refused(why) = &answer {
                warn!(asker, reason = why.as_str(), "nomination refused");
            }
            let _ = handle.try_answer_nomination(id, answer.to_bytes());
        });
    }
}

/// The identity of the member named `name` in the store, if its
/// certificate verifies.
fn stored_member_named(m: &Membership, name: &str) -> Option<IdentityKey> {
    let stored = m.store.members().list().ok()?;
    stored
        .iter()
        .filter(|(_, r)| r.name == name)
        .find_map(|(_, r)| m.verified(r))
        .map(|cert| cert.identity)
}

/// How long `weft authority add` keeps asking a member that is not
/// connected yet (a server invited a moment ago) before it gives up.
pub const NOMINATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks member `peer` (named `name`) to become a holder, on a task of its
/// own, and hands its answer to the main task through `done`. A request
/// that reaches nobody (the member not connected yet) is sent again every
/// half second for up to [`NOMINATION_PATIENCE`]; an answer, a refusal
/// included, ends it.
pub fn nominate(
    handle: ControlHandle,
    m: Arc<Membership>,
    name: String,
    known: Option<IdentityKey>,
    reply: oneshot::Sender<Response>,
    done: mpsc::Sender<Nominated>,
    services: &tokio::runtime::Handle,
) {
    let request = Nomination {
        network: *m.info().id(),
        version: m.authorities().verified.version(),
    }
    .to_bytes();
    services.spawn(async move {
        let identity = match known {
            Some(identity) => Some(identity),
            None => {
                let (m, name) = (m.clone(), name.clone());
                tokio::task::spawn_blocking(move || stored_member_named(&m, &name))
                    .await
                    .ok()
                    .flatten()
            }
        };
        let Some(peer) = identity.and_then(|i| super::members::peer_id_of(&i)) else {
            let _ = reply.send(Response::Error(format!("no member is named {name:?}")));
            return;
        };
        let give_up = tokio::time::Instant::now() + NOMINATION_PATIENCE;
        let answer = loop {
            match handle.nominate(peer, request.clone()).await {
                Ok(bytes) => {
                    break match NominationAnswer::from_bytes(&bytes) {
                        Some(NominationAnswer::Key(key)) => Ok(key),
                        Some(NominationAnswer::Refused(why)) => {
                            Err(format!("{name} refused: {why}"))
                        }
                        None => Err(format!("{name} sent an answer that does not decode")),
                    }
                }
                Err(ControlError::Nomination(_)) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => break Err(format!("{name} did not answer: {e}")),
            }
        };
        let nominated = Nominated {
            name,
            answer,
            reply,
        };
        if let Err(mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n)) =
            done.try_send(nominated)
        {
            let _ = n
                .reply
                .send(Response::Error("the daemon is busy; try again".into()));
        }
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    /// A member directory `weft init` made, removed on drop.
    struct Network {
        dir: PathBuf,
    }

    impl Network {
        fn init(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "weft-authorities-{tag}-{}-{}",
                std::process::id(),
                now_unix()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            crate::cli::init::run("a", "100.64.0.0/24", "lab", "1h", &dir).unwrap();
            Network { dir }
        }

        fn open(&self) -> Membership {
            let config = crate::config::Config::load(&self.dir.join("weft.toml")).unwrap();
            Membership::open(&config.mesh.unwrap()).unwrap()
        }
    }

    impl Drop for Network {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn key(n: u8) -> IdentityKey {
        IdentitySecret::from_bytes([n; 32]).identity()
    }

    #[test]
    fn a_new_network_holds_version_1_with_its_first_member_who_signs_with_it() {
        let net = Network::init("genesis");
        let m = net.open();
        let held = m.authorities();
        assert!(held.chain.is_some());
        assert_eq!(held.verified.version(), 1);
        assert_eq!(held.verified.current().holders[0].name, "a");
        assert_eq!(held.verified.current().certificate_lifetime_secs, 3600);
        assert_eq!(m.certificate_lifetime_secs(), 3600);
        assert!(m.authority().is_some());
        // Stored: a restart holds the same chain.
        let head = held.verified.head();
        m.store.close().unwrap();
        assert_eq!(net.open().authorities().verified.head(), head);
    }

    #[test]
    fn a_holder_that_removed_itself_signs_nothing_and_older_or_retired_forks_are_refused() {
        let net = Network::init("rotate");
        let m = net.open();
        let v1 = m.authorities().chain.unwrap();
        let first = m.authority().unwrap();
        m.change_authorities(SetChange::Add {
            name: "b".into(),
            key: key(2),
        })
        .unwrap();
        let v2 = m.authorities().chain.unwrap();
        // Two holders share the prefix: a allocates every second address
        // from the first, b every second from the second.
        assert_eq!(m.address_stripe(&first), Stripe { index: 0, count: 2 });
        let b = IdentitySecret::from_bytes([2; 32]);
        assert_eq!(m.address_stripe(&b), Stripe { index: 1, count: 2 });
        m.change_authorities(SetChange::Remove { name: "a".into() })
            .unwrap();
        assert_eq!(m.authorities().verified.version(), 3);
        assert!(m.authority().is_none(), "a removed key still signs");
        assert!(m
            .change_authorities(SetChange::Remove { name: "b".into() })
            .is_err());
        // Replayed: version 1 and 2 again.
        assert_eq!(
            m.consider_authorities(v1),
            Considered::Refused("authority_older")
        );
        assert_eq!(
            m.consider_authorities(v2.clone()),
            Considered::Refused("authority_older")
        );
        // The removed key forks from version 2 and makes the fork longer.
        let at2 = v2.verify(m.info().id(), m.info().authority()).unwrap();
        let f3 = v2
            .extend(
                &at2,
                SetChange::Remove { name: "b".into() },
                &first,
                now_unix(),
            )
            .unwrap();
        let at3 = f3.verify(m.info().id(), m.info().authority()).unwrap();
        let f4 = f3
            .extend(
                &at3,
                SetChange::Add {
                    name: "mallory".into(),
                    key: key(9),
                },
                &first,
                now_unix(),
            )
            .unwrap();
        assert_eq!(
            m.consider_authorities(f4),
            Considered::Refused("authority_retired_signer")
        );
        assert_eq!(m.authorities().verified.version(), 3);
        // The trusted keys follow the set: the removed key is retired.
        let info = m.info();
        let retired = info.issuers().iter().find(|i| i.key == first.identity());
        assert!(retired.is_some_and(|i| i.retired_unix.is_some()));
    }

    #[test]
    fn a_nominated_member_writes_its_key_0600_and_answers_a_repeated_nomination_alike() {
        let net = Network::init("nominate");
        let m = net.open();
        // "a" hands the set to "b" and leaves it; "b" then nominates "a"
        // back, which gets a key of its own (the retired one is replaced).
        m.change_authorities(SetChange::Add {
            name: "b".into(),
            key: key(2),
        })
        .unwrap();
        m.change_authorities(SetChange::Remove { name: "a".into() })
            .unwrap();
        let nomination = Nomination {
            network: *m.info().id(),
            version: 3,
        }
        .to_bytes();
        let NominationAnswer::Key(first) = m.accept_nomination("b", &nomination) else {
            panic!("refused");
        };
        let NominationAnswer::Key(again) = m.accept_nomination("b", &nomination) else {
            panic!("refused");
        };
        assert_eq!(first, again);
        let path = m.config.authority_key_path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            read_identity(&path, "authority key").unwrap().identity(),
            first
        );
        // Not a holder's word: refused.
        assert_eq!(
            m.accept_nomination("c", &nomination),
            NominationAnswer::Refused(NominationRefusal::NotAHolder)
        );
        // Once a version holds it, the member signs with it.
        assert!(m.authority().is_none());
        m.consider_authorities({
            let held = m.authorities();
            let chain = held.chain.unwrap();
            let b = IdentitySecret::from_bytes([2; 32]);
            chain
                .extend(
                    &held.verified,
                    SetChange::Add {
                        name: "a".into(),
                        key: first,
                    },
                    &b,
                    now_unix(),
                )
                .unwrap()
        });
        assert_eq!(m.authority().map(|k| k.identity()), Some(first));
    }
}
