//! Path-MTU discovery for one edge (a peer at one endpoint), by probing.
//!
//! The kernel learns a path MTU only from ICMP, which firewalls often drop;
//! then the first full-size packets vanish and a transfer hangs. So each edge
//! measures its own MTU, in the spirit of RFC 8899 (Packetization Layer PMTU
//! Discovery): authenticated probe datagrams of chosen sizes, sent with DF,
//! that the peer acknowledges. Sizes here are outer IP packet sizes (what a
//! router's MTU limits), from a floor to the local interface MTU.
//!
//! The search keeps `confirmed` (largest size acknowledged) and `upper`
//! (largest size not yet ruled out). Each round probes several sizes spread
//! over `(confirmed, upper]` at once, plus a *control* probe of a size known
//! to pass, so a round converges in one timeout instead of one probe per
//! round trip, and a round in which nothing at all came back (the peer or the
//! path is down) proves nothing and changes nothing. A size is given up only
//! after at least [`MIN_LOSSES`] probes of it were lost and none arrived; when
//! the edge shows random loss, more copies are required, enough that random
//! loss alone would give up a fitting size less than once in a thousand. An
//! acknowledgement that arrives after its probe was declared lost still
//! counts. An edge can also *resume* at a size this node confirmed itself on
//! an earlier run ([`Pmtud::resume`]): that size alone is probed (with the
//! control), like a validation, and once acknowledged it is in use at once,
//! with no search above it until the raise timer; if it is given up, a normal
//! search runs below it. After convergence, the confirmed size is re-validated every second
//! while the edge carries traffic (a black hole is detected within a few
//! seconds), and a raise is attempted every [`RAISE_INTERVAL`]; an idle edge
//! sends no probes at all.
//!
//! An ICMP "fragmentation needed" / "packet too big" is only a hint (RFC 8899
//! §4.6): anyone who can send a packet to this node can forge one quoting
//! the edge's UDP flow, and one announcing the IPv4 floor would otherwise
//! shrink a working edge to 576 bytes. A hint below the size in use starts
//! a round at once that probes the size in use and the hinted size (with
//! the control); the size in use is given up only if its own probes are
//! lost, exactly as a validation gives it up, so a true hint lowers the
//! edge within a few probe timeouts and a forged one changes nothing.
//!
//! The state is carried by the [`Pmtud`]'s phase: a round of probes being
//! sent and resolved, a settled size waiting for its next validation or
//! raise, or a silent path waiting to be tried again. A probe is in flight
//! only once the device says it left ([`Pmtud::poll_probe`] names the next
//! one, [`Pmtud::probe_sent`] commits it), so a probe the device could not
//! send is never counted sent, nor lost.
//!
//! This module only decides; the device sends the probes and routes the
//! acknowledgements. It never reads the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Fewest losses of one size, with no acknowledgement, before it is given up.
pub const MIN_LOSSES: u8 = 3;
/// Most copies of one size per round, however lossy the edge.
pub const MAX_COPIES: u8 = 10;
/// Sizes probed at once in one search round (besides the control probe).
pub const SIZES_PER_ROUND: u16 = 6;
/// Copies of the control probe per search round.
pub const CONTROL_COPIES: u8 = 2;
/// Smallest probe timeout: probes wait at least this long for their
/// acknowledgement, whatever the measured round-trip time.
pub const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(10);
/// Probe timeout before any round-trip time is known.
pub const INITIAL_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// Re-validation interval while the edge carries traffic. A path MTU
/// decrease is noticed within this plus three probe timeouts.
pub const VALIDATE_ACTIVE: Duration = Duration::from_secs(1);
/// How long after its last data packet an edge counts as active.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// Interval between attempts to raise a PMTU below the local MTU, while the
/// edge carries traffic (RFC 8899 §5.1.1's PMTU_RAISE_TIMER, shortened from
/// 600 s: weft's probes are separate datagrams that cost the inner traffic
/// nothing when lost, and one attempt costs a few dozen probes).
pub const RAISE_INTERVAL: Duration = Duration::from_secs(30);
/// The first raise attempt after an edge's search converged.
pub const FIRST_RAISE: Duration = Duration::from_secs(2);
/// Wait before retrying a round in which nothing was acknowledged.
pub const RETRY_SILENT: Duration = Duration::from_secs(1);
/// After an ICMP hint started probing, further hints are ignored for this
/// long: a flood of forged ones costs at most one hint round (three probes)
/// per interval, and a true decrease they hide is still found by the next
/// validation, [`VALIDATE_ACTIVE`] at most later.
pub const HINT_HOLDOFF: Duration = Duration::from_millis(250);
/// Target chance that random loss alone makes a fitting size be given up.
const FALSE_GIVE_UP: f64 = 1e-3;
/// Lost probe ids remembered so a late acknowledgement still counts.
const LATE_ACKS: usize = 64;

/// Sizes and bounds of an edge's search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmtuLimits {
    /// Smallest size ever probed or reported.
    pub floor: u16,
    /// Size used until one is confirmed.
    pub base: u16,
    /// The local interface MTU toward the endpoint: nothing larger is sent.
    pub max: u16,
}

/// Counters of one edge's discovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PmtuStats {
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes declared lost.
    pub probes_lost: u64,
    /// Bytes of probes sent (outer IP sizes).
    pub probe_bytes: u64,
    /// Times the size in use changed.
    pub changes: u64,
    /// ICMP "too big" hints below the size in use that started probing.
    pub hints: u64,
    /// Of those, the ones after which the size in use still passed.
    pub hints_refuted: u64,
}

/// The next probe to send: what [`Pmtud::poll_probe`] names and
/// [`Pmtud::probe_sent`] commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextProbe {
    /// The probe id to put in the probe.
    pub id: u32,
    /// The outer size of the probe datagram.
    pub size: u16,
}

/// What an edge is doing; each phase carries what only it needs.
#[derive(Debug, Clone)]
enum Phase {
    /// A round of probes is queued or in flight: a search, a validation of
    /// the size in use, or the check of a stored size.
    Probing(Round),
    /// Settled on the size in use, validated at `validated`; the next
    /// validation or raise is due at `next` (`None`: the edge is idle and
    /// waits for data, [`Pmtud::on_active`]).
    Complete {
        validated: Instant,
        next: Option<Instant>,
    },
    /// Nothing came back in the last round: the peer or the path is down.
    /// Probing starts again at `retry`, with the stored size if `resume`.
    Silent { retry: Instant, resume: Option<u16> },
}

/// One round: every size it probes, and the probes still to send.
#[derive(Debug, Clone)]
struct Round {
    /// A size this node confirmed itself on an earlier run, probed alone:
    /// in use as soon as it is acknowledged.
    resume: Option<u16>,
    entries: Vec<Entry>,
    /// Losses of a size, with no acknowledgement, that give it up.
    required: u8,
    /// Sizes of the probes not yet sent, in order.
    to_send: VecDeque<u16>,
    /// The size in use when an ICMP hint joined this round: the round
    /// settles whether it still passes.
    hinted: Option<u16>,
}

impl Round {
    fn new(resume: Option<u16>, required: u8) -> Self {
        Self {
            resume,
            entries: Vec::new(),
            required,
            to_send: VecDeque::new(),
            hinted: None,
        }
    }

    /// Whether the round probes `size`.
    fn probes(&self, size: u16) -> bool {
        self.entries.iter().any(|e| e.size == size)
    }

    /// An ICMP hint says `hint` passes but `in_use` does not: probe both
    /// (one copy each, escalated like any other size if lost), unless the
    /// round already does. The round's outcome decides, not the hint.
    fn add_hint(&mut self, in_use: u16, hint: u16) {
        for size in [in_use, hint] {
            if !self.probes(size) {
                self.probe(size, 1);
            }
        }
        self.hinted = Some(in_use);
    }

    /// Adds `size` to the round and queues `copies` probes of it.
    fn probe(&mut self, size: u16, copies: u8) {
        self.entries.push(Entry {
            size,
            queued: copies,
            lost: 0,
            counted: 0,
            counted_sent: 0,
            acked: false,
        });
        for _ in 0..copies {
            self.to_send.push_back(size);
        }
    }

    /// The control probe: the floor, which passes whenever anything does.
    /// It tells a dead path from a black hole, and its losses measure the
    /// edge's random loss without bias.
    fn add_control(&mut self, floor: u16, copies: u8) {
        if !self.probes(floor) {
            self.probe(floor, copies);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u16,
    queued: u8,
    lost: u8,
    /// Losses and sends already counted in the loss estimate (control only).
    counted: u8,
    counted_sent: u8,
    acked: bool,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: u32,
    size: u16,
    sent: Instant,
}

/// Probes that left, whatever round they belong to.
#[derive(Debug, Clone)]
struct Probes {
    next_id: u32,
    in_flight: Vec<InFlight>,
    /// Ids (and sizes) of probes declared lost, so a late acknowledgement
    /// still counts.
    lost: VecDeque<(u32, u16)>,
}

impl Probes {
    /// The size of probe `id`, in flight or recently lost.
    fn size(&self, id: u32) -> Option<u16> {
        self.in_flight
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.size)
            .or_else(|| self.lost.iter().find(|(i, _)| *i == id).map(|(_, s)| *s))
    }
}

/// RFC 6298 smoothed round-trip time.
#[derive(Debug, Clone, Copy, Default)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl Rtt {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + r) / 8);
            }
        }
    }

    fn timeout(&self) -> Duration {
        match self.srtt {
            None => INITIAL_PROBE_TIMEOUT,
            Some(s) => (s + self.rttvar * 4).max(MIN_PROBE_TIMEOUT),
        }
    }
}

/// The edge's random round-trip loss, from probes of sizes that pass.
#[derive(Debug, Clone, Copy, Default)]
struct Loss {
    sent: u32,
    lost: u32,
}

impl Loss {
    fn count(&mut self, sent: u32, lost: u32) {
        self.sent += sent;
        self.lost += lost;
        // Forget slowly, so the estimate follows a path whose loss changes.
        if self.sent > 1000 {
            self.sent /= 2;
            self.lost /= 2;
        }
    }

    /// Copies of each size a round sends: at least [`MIN_LOSSES`], more on
    /// a lossy edge so a fitting size is rarely given up by chance.
    fn copies(&self) -> u8 {
        // A cautious estimate: before much is known, assume one probe in
        // four may be lost (a prior of 1 loss in 4 probes).
        let loss = f64::from(self.lost + 1) / f64::from(self.sent + 4);
        let n = (FALSE_GIVE_UP.ln() / loss.min(0.9).ln()).ceil();
        (n as u8).clamp(MIN_LOSSES, MAX_COPIES)
    }
}

/// The discovery state of one edge.
#[derive(Debug, Clone)]
pub struct Pmtud {
    limits: PmtuLimits,
    /// The largest size acknowledged and not ruled out since.
    confirmed: Option<u16>,
    /// The largest size not ruled out.
    upper: u16,
    in_use: u16,
    phase: Phase,
    probes: Probes,
    rtt: Rtt,
    loss: Loss,
    /// When data was last sent on the edge.
    last_active: Option<Instant>,
    /// When to search above the size in use next (RFC 8899's
    /// PMTU_RAISE_TIMER), and how many raises were scheduled so far.
    next_raise: Option<Instant>,
    raises: u32,
    /// Rounds in a row in which nothing was acknowledged.
    silent_rounds: u32,
    /// ICMP hints are ignored until then ([`HINT_HOLDOFF`]).
    hints_after: Option<Instant>,
    changed: bool,
    stats: PmtuStats,
}

impl Pmtud {
    /// Starts discovery on a new edge: the first round goes out at once.
    /// `prior` is a size believed to pass (a stored or gossiped value); it
    /// is probed first but used only once acknowledged.
    pub fn new(
        limits: PmtuLimits,
        initial_rtt: Option<Duration>,
        prior: Option<u16>,
        now: Instant,
    ) -> Self {
        let mut s = Self::idle(limits, initial_rtt);
        s.start_round(now, prior);
        s
    }

    /// Starts discovery on an edge at `stored`, a size this node itself
    /// confirmed toward the same endpoint on an earlier run: only that size
    /// is probed (one copy, more only if it goes unanswered, with the floor
    /// as control), and on its acknowledgement the edge is complete at that
    /// size, with the next raise attempt [`RAISE_INTERVAL`] later. If it is
    /// given up, a normal search runs below it. A stored size outside the
    /// limits starts a normal search.
    pub fn resume(
        limits: PmtuLimits,
        initial_rtt: Option<Duration>,
        stored: u16,
        now: Instant,
    ) -> Self {
        let mut s = Self::idle(limits, initial_rtt);
        if (s.limits.floor..=s.limits.max).contains(&stored) {
            s.start_resume(stored);
        } else {
            s.start_round(now, None);
        }
        s
    }

    /// An edge with nothing sent yet (and an empty round, replaced at once).
    fn idle(limits: PmtuLimits, initial_rtt: Option<Duration>) -> Self {
        let limits = PmtuLimits {
            floor: limits.floor.min(limits.max),
            base: limits.base.clamp(limits.floor.min(limits.max), limits.max),
            max: limits.max,
        };
        let mut rtt = Rtt::default();
        if let Some(r) = initial_rtt {
            rtt.sample(r);
        }
        Self {
            limits,
            confirmed: None,
            upper: limits.max,
            in_use: limits.base,
            phase: Phase::Probing(Round::new(None, MIN_LOSSES)),
            probes: Probes {
                next_id: 1,
                in_flight: Vec::new(),
                lost: VecDeque::new(),
            },
            rtt,
            loss: Loss::default(),
            last_active: None,
            next_raise: None,
            raises: 0,
            silent_rounds: 0,
            hints_after: None,
            changed: false,
            stats: PmtuStats::default(),
        }
    }

    /// The size in use: the one the last search settled on (the base until
    /// a search has), lowered at once when a search rules it out.
    pub fn current(&self) -> u16 {
        self.in_use
    }

    /// The largest size acknowledged, if any.
    pub fn confirmed(&self) -> Option<u16> {
        self.confirmed
    }

    /// Whether the search has converged.
    pub fn is_complete(&self) -> bool {
        matches!(self.phase, Phase::Complete { .. })
    }

    /// The local MTU toward the endpoint.
    pub fn limits(&self) -> PmtuLimits {
        self.limits
    }

    /// Counters.
    pub fn stats(&self) -> PmtuStats {
        self.stats
    }

    /// Smoothed round-trip time of the probes, if measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt.srtt
    }

    /// Returns the new size in use if it changed since the last call.
    pub fn poll_change(&mut self) -> Option<u16> {
        std::mem::take(&mut self.changed).then_some(self.in_use)
    }

    /// The probe to send next, if one is due. Nothing changes until the
    /// device has sent it and says so with [`Pmtud::probe_sent`]; a probe
    /// it cannot send stays the next one.
    pub fn poll_probe(&self) -> Option<NextProbe> {
        let Phase::Probing(round) = &self.phase else {
            return None;
        };
        Some(NextProbe {
            id: self.probes.next_id,
            size: *round.to_send.front()?,
        })
    }

    /// The device sent `probe`, the one [`Pmtud::poll_probe`] named, at
    /// `now`: it is in flight from now on. Any other is ignored.
    pub fn probe_sent(&mut self, probe: NextProbe, now: Instant) {
        if self.poll_probe() != Some(probe) {
            return;
        }
        if let Phase::Probing(round) = &mut self.phase {
            round.to_send.pop_front();
        }
        self.probes.next_id = probe.id.wrapping_add(1).max(1);
        self.probes.in_flight.push(InFlight {
            id: probe.id,
            size: probe.size,
            sent: now,
        });
        self.stats.probes_sent += 1;
        self.stats.probe_bytes += u64::from(probe.size);
    }

    /// The size of probe `id` if it is in flight or was recently declared
    /// lost (so the device can check the acknowledged length).
    pub fn probe_size(&self, id: u32) -> Option<u16> {
        self.probes.size(id)
    }

    /// Data was sent on the edge: it is active, so validate often.
    pub fn on_active(&mut self, now: Instant) {
        let was_idle = self
            .last_active
            .is_none_or(|t| now.saturating_duration_since(t) >= ACTIVE_WINDOW);
        self.last_active = Some(now);
        if let Phase::Complete { validated, next } = &mut self.phase {
            if was_idle {
                let due = (*validated + VALIDATE_ACTIVE).max(now);
                *next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
    }

    /// Probe `id` was acknowledged.
    pub fn on_ack(&mut self, id: u32, now: Instant) {
        let probes = &mut self.probes;
        let size = if let Some(i) = probes.in_flight.iter().position(|p| p.id == id) {
            let p = probes.in_flight.swap_remove(i);
            self.rtt.sample(now.saturating_duration_since(p.sent));
            p.size
        } else if let Some(i) = probes.lost.iter().position(|(i, _)| *i == id) {
            // Late, but it arrived: the size passes after all.
            let (_, size) = probes.lost.remove(i).unwrap_or_default();
            self.upper = self.upper.max(size);
            size
        } else {
            return;
        };
        self.silent_rounds = 0;
        if self.confirmed.is_none_or(|c| size > c) {
            // Used once the search settles, so routes and events change
            // once per search rather than once per acknowledgement.
            self.confirmed = Some(size);
        }
        if let Phase::Probing(round) = &mut self.phase {
            if let Some(e) = round.entries.iter_mut().find(|e| e.size == size) {
                e.acked = true;
            }
            if round.resume == Some(size) {
                // The size this edge used before passes again: use it now,
                // and look above it only at the regular raise interval.
                self.upper = size;
                self.raises = self.raises.max(1);
                self.complete(now);
                return;
            }
        }
        self.maybe_end_round(now);
    }

    /// An ICMP "too big" (or a local EMSGSIZE) says nothing above `mtu`
    /// passes. Anyone can forge one, so it is a hint only (RFC 8899 §4.6):
    /// if `mtu` is below the size in use, the size in use and `mtu` are
    /// probed at once, and the size in use is given up only if its probes
    /// are lost. Nothing changes until they are. Ignored within
    /// [`HINT_HOLDOFF`] of the last hint, and while the path answers
    /// nothing at all (the silent retry probes it anyway). Returns whether
    /// it started probing.
    pub fn on_too_big(&mut self, mtu: u16, now: Instant) -> bool {
        let hint = mtu.max(self.limits.floor);
        let in_use = self.in_use;
        if hint >= in_use || self.hints_after.is_some_and(|t| now < t) {
            return false;
        }
        match &mut self.phase {
            Phase::Silent { .. } => return false,
            // A search or validation under way takes the two sizes in.
            Phase::Probing(round) => round.add_hint(in_use, hint),
            Phase::Complete { .. } => {
                let mut round = Round::new(None, self.loss.copies());
                round.add_hint(in_use, hint);
                round.add_control(self.limits.floor, 1);
                self.phase = Phase::Probing(round);
            }
        }
        self.hints_after = Some(now + HINT_HOLDOFF);
        self.stats.hints += 1;
        true
    }

    /// Nothing above `max` can pass (the local interface says so): the
    /// search restarts below it at once, using no size above it.
    fn lower_max(&mut self, max: u16, now: Instant) {
        let max = max.max(self.limits.floor);
        if max >= self.upper && self.confirmed.is_none_or(|c| c <= max) {
            return;
        }
        self.upper = max;
        if self.confirmed.is_some_and(|c| c > max) {
            self.confirmed = None;
        }
        self.recompute();
        self.start_round(now, None);
    }

    /// The local interface MTU toward the endpoint changed.
    pub fn set_max(&mut self, max: u16, now: Instant) {
        if max == self.limits.max {
            return;
        }
        self.limits.max = max;
        self.limits.floor = self.limits.floor.min(max);
        self.limits.base = self.limits.base.min(max);
        if max < self.in_use {
            self.lower_max(max, now);
        } else {
            self.upper = max;
            self.start_round(now, None);
        }
    }

    /// When [`Pmtud::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.rtt.timeout();
        let probe = self.probes.in_flight.iter().map(|p| p.sent + timeout).min();
        let scheduled = match self.phase {
            Phase::Probing(_) => None,
            Phase::Complete { next, .. } => next,
            Phase::Silent { retry, .. } => Some(retry),
        };
        match (probe, scheduled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Declares late probes lost and runs due validation or raise attempts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.rtt.timeout();
        let mut i = 0;
        while i < self.probes.in_flight.len() {
            let p = self.probes.in_flight[i];
            if p.sent + timeout > now {
                i += 1;
                continue;
            }
            self.probes.in_flight.swap_remove(i);
            self.stats.probes_lost += 1;
            if self.probes.lost.len() == LATE_ACKS {
                self.probes.lost.pop_front();
            }
            self.probes.lost.push_back((p.id, p.size));
            if let Phase::Probing(round) = &mut self.phase {
                if let Some(e) = round.entries.iter_mut().find(|e| e.size == p.size) {
                    e.lost += 1;
                }
            }
        }
        self.maybe_end_round(now);
        match &mut self.phase {
            Phase::Complete { next, .. } if next.is_some_and(|n| n <= now) => {
                *next = None;
                self.validate_or_raise(now);
            }
            Phase::Silent { retry, resume } if *retry <= now => match *resume {
                Some(stored) => self.start_resume(stored),
                None => self.start_round(now, None),
            },
            _ => {}
        }
    }

    /// The size to use: the confirmed one once it reaches the base (or the
    /// base is ruled out), else the base while it may still pass.
    fn recompute(&mut self) {
        let base = self.limits.base;
        let size = match self.confirmed {
            Some(c) if c >= base || self.upper < base => c,
            _ => base.min(self.upper),
        };
        self.set_in_use(size);
    }

    fn set_in_use(&mut self, size: u16) {
        if size != self.in_use {
            self.in_use = size;
            self.changed = true;
            self.stats.changes += 1;
        }
    }

    /// Probes the stored size alone, as a validation does: one copy first,
    /// escalating only if it is lost, with the floor as control.
    fn start_resume(&mut self, stored: u16) {
        let mut round = Round::new(Some(stored), self.loss.copies());
        round.probe(stored, 1);
        if stored > self.limits.floor {
            round.add_control(self.limits.floor, 1);
        }
        self.phase = Phase::Probing(round);
    }

    /// A search round: sizes spread over `(confirmed, upper]` plus a
    /// control, or `prior` and one byte more if it lies there; the search
    /// is complete when nothing is left between.
    fn start_round(&mut self, now: Instant, prior: Option<u16>) {
        let lo = self
            .confirmed
            .map_or(self.limits.floor.saturating_sub(1), |c| c);
        if lo >= self.upper {
            self.complete(now);
            return;
        }
        let mut round = Round::new(None, self.loss.copies());
        if let Some(p) = prior.filter(|&p| p > lo && p <= self.upper) {
            // A prior is checked exactly: it passes and one byte more does
            // not. Either outcome narrows the search to nothing or to a
            // normal search from there.
            round.probe(p, 1);
            if p < self.upper {
                round.probe(p + 1, 1);
            }
        } else {
            let span = self.upper - lo;
            let mut sizes: Vec<u16> = (1..=SIZES_PER_ROUND)
                .map(|j| {
                    let step = u32::from(span) * u32::from(j);
                    lo + step.div_ceil(u32::from(SIZES_PER_ROUND)) as u16
                })
                .collect();
            sizes.dedup();
            // One copy each first; only sizes that go unanswered get the rest.
            for size in sizes {
                round.probe(size, 1);
            }
        }
        round.add_control(self.limits.floor, CONTROL_COPIES);
        self.phase = Phase::Probing(round);
    }

    /// Re-validates the confirmed size, one copy first (escalating only if
    /// it is lost), with the floor as control.
    fn start_validation(&mut self, now: Instant) {
        let Some(c) = self.confirmed else {
            self.start_round(now, None);
            return;
        };
        let mut round = Round::new(None, self.loss.copies());
        round.probe(c, 1);
        if c > self.limits.floor {
            round.add_control(self.limits.floor, 1);
        }
        self.phase = Phase::Probing(round);
    }

    /// Ends the round once every probe of it is resolved: escalates the
    /// sizes still unanswered, or backs off if nothing came back, or
    /// narrows the search and starts the next round.
    fn maybe_end_round(&mut self, now: Instant) {
        let Phase::Probing(round) = &mut self.phase else {
            return;
        };
        if !round.to_send.is_empty() {
            return;
        }
        let in_flight = &self.probes.in_flight;
        let open = |size: u16| in_flight.iter().any(|p| p.size == size);
        if round.entries.iter().any(|e| !e.acked && open(e.size)) {
            return;
        }
        // The control's losses measure random loss, once the round shows
        // the path is alive; a lossy edge needs more copies before a size
        // is given up.
        let best = round
            .entries
            .iter()
            .filter(|e| e.acked)
            .map(|e| e.size)
            .max();
        let floor = self.limits.floor;
        let (mut sent, mut lost) = (0, 0);
        if best.is_some() {
            for e in round.entries.iter_mut().filter(|e| e.size == floor) {
                sent += u32::from(e.queued - e.counted_sent);
                lost += u32::from(e.lost - e.counted);
                e.counted_sent = e.queued;
                e.counted = e.lost;
            }
        }
        self.loss.count(sent, lost);
        round.required = round.required.max(self.loss.copies());
        // Escalate: a lost size gets more copies before it is given up.
        let required = round.required;
        let mut escalated = false;
        for e in &mut round.entries {
            let unresolved = best.is_none_or(|b| e.size > b);
            if unresolved && !e.acked && e.lost < required && e.queued < required {
                for _ in e.queued..required {
                    round.to_send.push_back(e.size);
                }
                e.queued = required;
                escalated = true;
            }
        }
        if escalated {
            return;
        }
        if best.is_none() {
            // Nothing came back at all: the peer or the path is down, which
            // says nothing about sizes. Try again later, backing off while
            // the peer stays silent: 1 s, 2 s, … 64 s.
            let backoff = RETRY_SILENT * (1 << self.silent_rounds.min(6));
            self.silent_rounds += 1;
            self.phase = Phase::Silent {
                retry: now + backoff,
                resume: round.resume,
            };
            return;
        }
        if let Some(hinted) = round.hinted {
            if round.entries.iter().any(|e| e.size == hinted && e.acked) {
                // The size in use passes after all: the hint was stale or
                // forged, and nothing changes.
                self.stats.hints_refuted += 1;
            }
        }
        // Sizes that went unanswered are ruled out. (A stored size given up
        // while the path answers no longer passes: a normal search runs
        // below it.)
        let confirmed = self.confirmed.unwrap_or(0);
        let mut black_hole = false;
        for e in round.entries.iter().filter(|e| !e.acked) {
            if e.size > confirmed && e.size <= self.upper {
                self.upper = e.size - 1;
            }
            if Some(e.size) == self.confirmed {
                black_hole = true;
            }
        }
        if black_hole {
            // The size we were using stopped passing while smaller ones
            // pass: fall back to the largest size still known to pass.
            let fallen = self.confirmed.unwrap_or(self.limits.base);
            let still = round
                .entries
                .iter()
                .filter(|e| e.acked && e.size < fallen)
                .map(|e| e.size)
                .max();
            self.upper = fallen - 1;
            self.confirmed = still;
            self.recompute();
        }
        if self.in_use > self.upper {
            // The size in use is ruled out: stop using it now, not at the
            // end of the search.
            self.recompute();
        }
        self.start_round(now, None);
    }

    /// The search settled: the size in use is the one found; validations
    /// and raises follow while the edge carries data.
    fn complete(&mut self, now: Instant) {
        self.recompute();
        let active = self
            .last_active
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW);
        if self.in_use < self.limits.max && self.next_raise.is_none() {
            // The first raise comes soon: it re-checks, at little cost, any
            // size that random loss made the search give up.
            let first = self.raises == 0;
            self.raises += 1;
            self.next_raise = Some(now + if first { FIRST_RAISE } else { RAISE_INTERVAL });
        }
        // An idle edge sends nothing: it is validated again as soon as it
        // carries data ([`Pmtud::on_active`]).
        let next = active.then(|| {
            let validate = now + VALIDATE_ACTIVE;
            self.next_raise.map_or(validate, |r| validate.min(r))
        });
        self.phase = Phase::Complete {
            validated: now,
            next,
        };
    }

    /// A complete edge's validation or raise is due: run it if the edge
    /// carries data (an idle one waits for [`Pmtud::on_active`]).
    fn validate_or_raise(&mut self, now: Instant) {
        let active = self
            .last_active
            .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW);
        if !active {
            return;
        }
        if self.next_raise.is_some_and(|r| r <= now) {
            self.next_raise = None;
            if self.in_use < self.limits.max {
                self.upper = self.limits.max;
                self.start_round(now, None);
                return;
            }
        }
        self.start_validation(now);
    }
}

#[cfg(test)]
mod tests;
