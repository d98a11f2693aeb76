//! NAT awareness: whether this node is behind a NAT, how long an idle
//! mapping of that NAT survives, and the persistent keepalive interval that
//! follows from it.
//!
//! [`NatMachine`] is a sans-IO sub-machine owned by the [`crate::Device`].
//! It learns the reflexive address of the node's main socket from what peers
//! report (pongs and binding acknowledgements) and compares it with the
//! local addresses the caller gave. Behind a NAT it runs binding-lifetime
//! trials in the spirit of RFC 5780 §4.6: each trial opens a fresh mapping
//! from its own probe socket, leaves it idle for a trial interval, then asks
//! a cooperating peer to send to it; arrival proves the lifetime is at least
//! that interval, absence proves it shorter. Trials run a few at a time at
//! geometrically spread intervals and narrow the bracket until it is tight.
//! The keepalive interval is half the longest idle time proven to survive.
//!
//! The machine never touches sessions or sockets: it says which trial
//! messages to send ([`NatAction`]) and is told what came back. It never
//! reads a clock; every input takes `now`. `BindingTable` is the other
//! side of trials, kept by a node that helps others run theirs. Which
//! reflexive addresses the node may announce as its own is
//! [`reflexive`]'s rule, fed here with every member's report.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::noise::PublicKey;
use crate::peer::PeerId;

pub mod reflexive;

pub use reflexive::{OwnEndpoints, ReflexiveReports};

/// Keepalive interval behind a NAT before any trial has passed. Short
/// enough for NATs that forget mappings after 5 s (seen on carrier-grade
/// NATs and busy home routers); it costs about 40 B/s per peer for the
/// tens of seconds the first trials take.
pub const START_INTERVAL: Duration = Duration::from_secs(2);
/// The shortest mapping lifetime searched for; below it the keepalive stays
/// at half of it.
pub const SEARCH_FLOOR: Duration = Duration::from_secs(2);
/// The longest mapping lifetime searched for (RFC 4787 REQ-5 asks NATs for
/// at least 2 min; longer lifetimes are not worth proving).
pub const SEARCH_CEILING: Duration = Duration::from_secs(300);
/// The keepalive interval is the proven lifetime divided by this: one lost
/// keepalive still leaves the mapping alive.
pub const SAFETY_DIVISOR: u32 = 2;
/// The longest keepalive interval used, whatever the lifetime.
pub const MAX_INTERVAL: Duration = Duration::from_secs(120);
/// The shortest keepalive interval used.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Trials running at once (each holds one probe socket).
pub const PARALLEL_TRIALS: usize = 3;
/// The search stops once the failed bound is within this factor of the
/// proven one.
pub const NARROW_RATIO: f64 = 1.25;
/// A finished search is repeated after this long: NATs change.
pub const REMEASURE_AFTER: Duration = Duration::from_secs(45 * 60);
/// Least time to wait for a trial's acknowledgement or binding ping; three
/// round trips when that is longer.
pub const TRIAL_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest back-off between trial batches whose opens went unanswered.
pub const MAX_TRIAL_BACKOFF: Duration = Duration::from_secs(600);

/// How a peer's persistent keepalive is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keepalive {
    /// No persistent keepalive.
    Off,
    /// A keepalive after this much silence, whatever the NAT.
    Fixed(Duration),
    /// None when this node is not behind a NAT; behind one, the interval
    /// the [`NatMachine`] chose, with pings whose pongs prove the mapping.
    #[default]
    Auto,
}

/// A probe socket the caller owns, named by a number never reused: a new
/// number means a new socket (and so a fresh NAT mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeSocket(pub u32);

/// A trial message the device must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatAction {
    /// Send a binding open from `socket` to `helper`.
    Open {
        /// The cooperating peer.
        helper: PeerId,
        /// The probe socket to send from.
        socket: ProbeSocket,
        /// The trial.
        trial: u32,
        /// A secret the acknowledgement and the binding ping echo.
        nonce: u64,
    },
    /// Send a binding check over the main path to `helper`.
    Check {
        /// The cooperating peer.
        helper: PeerId,
        /// The trial.
        trial: u32,
    },
}

/// What the node knows about its NAT, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatStatus {
    /// Whether the node is behind a NAT; `None` until a peer reported the
    /// reflexive address.
    pub behind: Option<bool>,
    /// The main socket's address as the last reporting peer saw it.
    pub reflexive: Option<SocketAddr>,
    /// The longest idle time a mapping was proven to survive.
    pub lifetime_at_least: Option<Duration>,
    /// The shortest idle time a mapping was seen not to survive.
    pub lifetime_below: Option<Duration>,
    /// The persistent keepalive interval for `Auto` peers (`None`: off).
    pub keepalive_interval: Option<Duration>,
    /// Trials concluded (passed or failed).
    pub trials: u64,
    /// Whether a search is in progress.
    pub searching: bool,
}

#[derive(Debug, Clone, Copy)]
enum TrialState {
    /// The open went out; the acknowledgement is due by the deadline.
    Opening { deadline: Instant },
    /// The mapping is idle until `check_at`.
    Idle { check_at: Instant },
    /// The check went out; the binding ping is due by the deadline.
    Checking { deadline: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Trial {
    id: u32,
    helper: PeerId,
    socket: ProbeSocket,
    nonce: u64,
    idle: Duration,
    state: TrialState,
}

/// The NAT sub-machine. See the module documentation.
#[derive(Debug)]
pub struct NatMachine {
    rng: ChaCha20Rng,
    local: Vec<IpAddr>,
    local_port: Option<u16>,
    behind: Option<bool>,
    reflexive: Option<SocketAddr>,
    /// Every member's latest report of the reflexive address, by member.
    reports: ReflexiveReports,
    /// Longest idle time proven to survive.
    proven: Option<Duration>,
    /// Shortest idle time seen to fail.
    failed: Option<Duration>,
    /// A lifetime from gossip or the store, used until a trial contradicts
    /// it, and tried first.
    hint: Option<Duration>,
    hint_tried: bool,
    trials: Vec<Trial>,
    next_trial_id: u32,
    next_socket: u32,
    /// When the next batch of trials may start (`None`: no search due).
    search_at: Option<Instant>,
    searching: bool,
    /// Consecutive trials whose open went unanswered.
    unanswered: u32,
    actions: Vec<NatAction>,
    changed: bool,
    concluded: u64,
    last_interval: Option<Duration>,
}

impl NatMachine {
    /// A machine that knows nothing yet; `seed` makes its nonces (on a
    /// stream of its own, so the device may share the seed).
    pub fn new(seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        rng.set_stream(0x6e6174);
        Self {
            rng,
            local: Vec::new(),
            local_port: None,
            behind: None,
            reflexive: None,
            reports: ReflexiveReports::default(),
            proven: None,
            failed: None,
            hint: None,
            hint_tried: false,
            trials: Vec::new(),
            next_trial_id: 1,
            next_socket: 0,
            search_at: None,
            searching: false,
            unanswered: 0,
            actions: Vec::new(),
            changed: false,
            concluded: 0,
            last_interval: None,
        }
    }

    /// The node's own addresses and the main socket's port: a reflexive
    /// address among them means no NAT. New addresses (the node moved)
    /// void every report: where it was seen says nothing of where it is.
    pub fn set_local_addresses(&mut self, ips: Vec<IpAddr>, port: u16) {
        if self.local != ips || self.local_port != Some(port) {
            self.reports.clear();
        }
        self.local = ips;
        self.local_port = Some(port);
    }

    /// Member `reporter` says it sees the main socket at `observed` (a
    /// pong, a binding acknowledgement or a gossiped path observation).
    /// Its own address is no reflexive one: such a report only withdraws
    /// the member's earlier word.
    pub fn report(&mut self, reporter: PublicKey, observed: SocketAddr, now: Instant) {
        if self.is_local(observed) {
            self.reports.withdraw(&reporter);
        } else {
            self.reports.report(reporter, observed, now);
        }
    }

    /// The members' reports of the reflexive address.
    pub fn reports(&self) -> &ReflexiveReports {
        &self.reports
    }

    /// A mapping lifetime learned elsewhere (gossip from nodes behind the
    /// same public address, or this node's store): the keepalive starts
    /// from it, and the first trial verifies it.
    pub fn set_hint(&mut self, lifetime: Duration) {
        let lifetime = lifetime.clamp(SEARCH_FLOOR, SEARCH_CEILING);
        if self.failed.is_some_and(|f| f <= lifetime) || self.proven.is_some() {
            return;
        }
        self.hint = Some(lifetime);
        self.hint_tried = false;
        self.note_interval();
    }

    /// Whether `observed` is this node's own main socket address (no NAT
    /// between the observer and us).
    pub fn is_local(&self, observed: SocketAddr) -> bool {
        self.local.contains(&observed.ip()) && self.local_port.is_none_or(|p| p == observed.port())
    }

    /// A peer reports the address it sees the main socket at.
    pub fn on_reflexive(&mut self, now: Instant, observed: SocketAddr) {
        let behind = !self.is_local(observed);
        if self.reflexive != Some(observed) || self.behind != Some(behind) {
            self.changed = true;
        }
        self.reflexive = Some(observed);
        if self.behind != Some(behind) {
            self.behind = Some(behind);
            if behind {
                self.search_at = Some(now);
            } else {
                self.trials.clear();
                self.search_at = None;
                self.searching = false;
            }
        }
        self.note_interval();
    }

    /// The keepalive interval for `Auto` peers: `None` when not behind a NAT
    /// (or not known to be).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        if self.behind != Some(true) {
            return None;
        }
        // A hint stands until a trial contradicts it (`fail` drops it), so a
        // remeasurement's first short passes do not lower the interval.
        let basis = match (self.proven, self.hint) {
            (Some(p), Some(h)) => Some(p.max(h)),
            (p, h) => p.or(h),
        };
        let interval = match (basis, self.failed) {
            (Some(l), _) => l / SAFETY_DIVISOR,
            (None, Some(f)) => START_INTERVAL.min(f / SAFETY_DIVISOR),
            (None, None) => START_INTERVAL,
        };
        Some(interval.clamp(MIN_INTERVAL, MAX_INTERVAL))
    }

    /// A snapshot for status and metrics.
    pub fn status(&self) -> NatStatus {
        NatStatus {
            behind: self.behind,
            reflexive: self.reflexive,
            lifetime_at_least: self.proven,
            lifetime_below: self.failed,
            keepalive_interval: self.keepalive_interval(),
            trials: self.concluded,
            searching: self.searching,
        }
    }

    /// Whether the status changed since the last call.
    pub fn poll_change(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The probe sockets live trials use; others may be closed.
    pub fn probe_sockets(&self) -> impl Iterator<Item = ProbeSocket> + '_ {
        self.trials.iter().map(|t| t.socket)
    }

    /// The trial using `socket`, with its helper and nonce.
    pub fn trial_on(&self, socket: ProbeSocket) -> Option<(u32, PeerId, u64)> {
        self.trials
            .iter()
            .find(|t| t.socket == socket)
            .map(|t| (t.id, t.helper, t.nonce))
    }

    /// The next trial message to send.
    pub fn poll_action(&mut self) -> Option<NatAction> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }

    /// When [`NatMachine::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let trials = self.trials.iter().map(|t| match t.state {
            TrialState::Opening { deadline } | TrialState::Checking { deadline } => deadline,
            TrialState::Idle { check_at } => check_at,
        });
        trials.chain(self.search_at).min()
    }

    /// Runs due trial steps. `helper` is the peer to run new trials with
    /// (a live session, low RTT) and its round-trip time; without one, no
    /// batch starts.
    pub fn handle_timeout(&mut self, now: Instant, helper: Option<(PeerId, Duration)>) {
        let wait = helper.map_or(TRIAL_REPLY_TIMEOUT, |(_, rtt)| {
            (rtt * 3).max(TRIAL_REPLY_TIMEOUT)
        });
        let mut i = 0;
        while i < self.trials.len() {
            let t = self.trials[i];
            match t.state {
                TrialState::Opening { deadline } if deadline <= now => {
                    // Nothing is learned about the lifetime; the peer may
                    // not cooperate, so batches back off.
                    self.trials.remove(i);
                    self.unanswered = self.unanswered.saturating_add(1);
                    self.next_batch(now);
                    continue;
                }
                TrialState::Idle { check_at } if check_at <= now => {
                    self.trials[i].state = TrialState::Checking {
                        deadline: now + wait,
                    };
                    self.actions.push(NatAction::Check {
                        helper: t.helper,
                        trial: t.id,
                    });
                }
                TrialState::Checking { deadline } if deadline <= now => {
                    // Absence proves a shorter lifetime. A lost check or ping
                    // reads the same, which errs on the short side.
                    self.fail(now, t.idle);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        if self.trials.is_empty() && self.search_at.is_some_and(|t| t <= now) {
            self.plan(now, helper, wait);
        }
    }

    /// A binding acknowledgement for `trial` arrived on its probe socket.
    pub fn on_ack(&mut self, now: Instant, trial: u32, nonce: u64) -> bool {
        let Some(t) = self
            .trials
            .iter_mut()
            .find(|t| t.id == trial && t.nonce == nonce)
        else {
            return false;
        };
        if let TrialState::Opening { .. } = t.state {
            // The idle time counts from the last packet the mapping saw in
            // either direction, so the proof never overstates it.
            t.state = TrialState::Idle {
                check_at: now + t.idle,
            };
            self.unanswered = 0;
        }
        true
    }

    /// A binding ping for `trial` arrived on its probe socket: the mapping
    /// survived its idle interval.
    pub fn on_binding_ping(&mut self, now: Instant, trial: u32, nonce: u64) -> bool {
        let Some(t) = self
            .trials
            .iter()
            .find(|t| t.id == trial && t.nonce == nonce)
            .copied()
        else {
            return false;
        };
        if !matches!(t.state, TrialState::Checking { .. }) {
            return false;
        }
        self.pass(now, t.idle);
        true
    }

    /// Keepalives went unanswered: the mapping is gone. The proven bounds
    /// are doubted and a new search starts at once; the old lifetime stays
    /// the keepalive's basis as a hint, tried first, and dropped if that
    /// trial fails.
    pub fn on_mapping_lost(&mut self, now: Instant) {
        if self.behind != Some(true) {
            return;
        }
        self.hint = self.proven.or(self.hint);
        self.hint_tried = false;
        self.proven = None;
        self.failed = None;
        self.trials.clear();
        self.actions.clear();
        self.search_at = Some(now);
        self.changed = true;
        self.note_interval();
    }

    fn pass(&mut self, now: Instant, idle: Duration) {
        self.concluded += 1;
        self.proven = Some(self.proven.map_or(idle, |p| p.max(idle)));
        if self.failed.is_some_and(|f| f <= idle) {
            // A pass is proof; an earlier failure at or below it was loss.
            self.failed = None;
        }
        // Shorter trials can only pass too.
        self.trials.retain(|t| t.idle > idle);
        self.changed = true;
        self.note_interval();
        self.next_batch(now);
    }

    fn fail(&mut self, now: Instant, idle: Duration) {
        self.concluded += 1;
        self.failed = Some(self.failed.map_or(idle, |f| f.min(idle)));
        if self.hint.is_some_and(|h| h >= idle) {
            self.hint = None;
        }
        if self.proven.is_some_and(|p| p >= idle) {
            // A lossy path or a changed NAT: keep the shorter, safe answer.
            self.proven = None;
        }
        // Longer trials can only fail too.
        self.trials.retain(|t| t.idle < idle);
        self.changed = true;
        self.note_interval();
        self.next_batch(now);
    }

    fn note_interval(&mut self) {
        let now = self.keepalive_interval();
        if now != self.last_interval {
            self.last_interval = now;
            self.changed = true;
        }
    }

    /// Starts the next batch of trials, or ends the search when the bracket
    /// is narrow.
    fn plan(&mut self, now: Instant, helper: Option<(PeerId, Duration)>, wait: Duration) {
        if self.behind != Some(true) {
            self.search_at = None;
            return;
        }
        let Some((helper, _)) = helper else {
            // No peer to run trials with yet: look again shortly.
            self.search_at = Some(now + TRIAL_REPLY_TIMEOUT);
            return;
        };
        if !self.searching {
            // A new search measures from scratch; the keepalive keeps the
            // last proven lifetime as its basis until a trial contradicts it.
            self.hint = self.proven.or(self.hint);
            self.hint_tried = false;
            self.proven = None;
            self.failed = None;
            self.searching = true;
            self.changed = true;
        }
        let lo = self.proven.unwrap_or(SEARCH_FLOOR).max(SEARCH_FLOOR);
        let hi = self.failed.unwrap_or(SEARCH_CEILING).min(SEARCH_CEILING);
        let mut points = Vec::with_capacity(PARALLEL_TRIALS);
        if let Some(h) = self
            .hint
            .filter(|h| !self.hint_tried && *h >= lo && *h < hi)
        {
            self.hint_tried = true;
            points.push(h);
            points.extend(spread(h, hi, PARALLEL_TRIALS - 1));
        } else if hi.as_secs_f64() / lo.as_secs_f64() > NARROW_RATIO {
            points.extend(spread(lo, hi, PARALLEL_TRIALS));
        }
        if points.is_empty() {
            self.searching = false;
            self.search_at = Some(now + REMEASURE_AFTER);
            self.changed = true;
            return;
        }
        self.search_at = None;
        for idle in points {
            let trial = self.next_trial_id;
            self.next_trial_id = self.next_trial_id.wrapping_add(1).max(1);
            let socket = ProbeSocket(self.next_socket);
            self.next_socket = self.next_socket.wrapping_add(1);
            let nonce = self.rng.next_u64();
            self.trials.push(Trial {
                id: trial,
                helper,
                socket,
                nonce,
                idle,
                state: TrialState::Opening {
                    deadline: now + wait,
                },
            });
            self.actions.push(NatAction::Open {
                helper,
                socket,
                trial,
                nonce,
            });
        }
    }

    /// After trials ended: the next batch is due now, or after a back-off
    /// when opens went unanswered (a peer that does not cooperate).
    fn next_batch(&mut self, now: Instant) {
        if !self.trials.is_empty() || !self.searching {
            return;
        }
        let batches = self.unanswered / PARALLEL_TRIALS as u32;
        let wait = if batches == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1u64 << batches.min(10)).min(MAX_TRIAL_BACKOFF)
        };
        self.search_at = Some(now + wait);
    }
}

/// Binding table entries a helper keeps, in all.
pub const BINDING_TABLE_LIMIT: usize = 64;
/// Binding table entries per peer.
pub const BINDING_TABLE_PER_PEER: usize = 4;

/// A trial another node runs with us: where its probe socket is.
#[derive(Debug, Clone, Copy)]
struct Binding {
    peer: PeerId,
    trial: u32,
    nonce: u64,
    probe: SocketAddr,
    expires: Instant,
}

/// The helper's side of other nodes' trials: the probe sockets seen in
/// their authenticated binding opens, so that each open is answered once
/// with one binding ping when its check arrives. Bounded in all and per
/// peer; entries expire.
#[derive(Debug, Default)]
pub(crate) struct BindingTable(Vec<Binding>);

impl BindingTable {
    /// Remembers the open of `trial` from `peer`'s probe socket at `probe`
    /// (replacing an earlier open of the same trial), making room if full.
    pub fn open(&mut self, peer: PeerId, trial: u32, nonce: u64, probe: SocketAddr, now: Instant) {
        let table = &mut self.0;
        table.retain(|b| b.expires > now && !(b.peer == peer && b.trial == trial));
        if table.iter().filter(|b| b.peer == peer).count() >= BINDING_TABLE_PER_PEER
            || table.len() >= BINDING_TABLE_LIMIT
        {
            // Full: the oldest entry of this peer (or of anyone) goes.
            let oldest = table.iter().position(|b| b.peer == peer).unwrap_or(0);
            table.remove(oldest);
        }
        table.push(Binding {
            peer,
            trial,
            nonce,
            probe,
            // The longest trial plus time for its check.
            expires: now + SEARCH_CEILING + Duration::from_secs(60),
        });
    }

    /// The check of `trial` from `peer` arrived: the open's nonce and probe
    /// socket, if held. The entry goes, so nothing here can be turned into
    /// a stream toward an address.
    pub fn check(&mut self, peer: PeerId, trial: u32, now: Instant) -> Option<(u64, SocketAddr)> {
        self.0.retain(|b| b.expires > now);
        let i = self
            .0
            .iter()
            .position(|b| b.peer == peer && b.trial == trial)?;
        let b = self.0.remove(i);
        Some((b.nonce, b.probe))
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// `n` points spread geometrically strictly inside `(lo, hi)`, rounded to
/// milliseconds.
fn spread(lo: Duration, hi: Duration, n: usize) -> Vec<Duration> {
    let (lo_s, hi_s) = (lo.as_secs_f64(), hi.as_secs_f64());
    let ratio = hi_s / lo_s;
    (1..=n)
        .map(|j| {
            let s = lo_s * ratio.powf(j as f64 / (n + 1) as f64);
            Duration::from_millis((s * 1000.0).round() as u64)
        })
        .filter(|d| *d > lo && *d < hi)
        .collect()
}

#[cfg(test)]
mod tests;
