//! Sliding replay window over transport message counters.
//!
//! A bitmap ring in the manner of RFC 6479: counters up to [`WINDOW`] behind
//! the greatest one accepted are remembered individually, older ones are
//! refused. Advancing the window clears whole words, so the cost per packet is
//! constant. The window is only ever updated with counters whose message was
//! authenticated; [`ReplayWindow::check`] is a cheap pre-check that lets a
//! replayed packet be dropped before any decryption.

/// Counters at or above this are refused (WireGuard's REJECT_AFTER_MESSAGES:
/// 2^64 - 2^13 - 1, leaving room below the nonce limit).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

const WORD_BITS: u64 = 64;
const WORDS: usize = 128;
const TOTAL_BITS: u64 = WORDS as u64 * WORD_BITS;

/// How many counters behind the greatest accepted one are still accepted
/// once each: 8128, comfortably above the 2048 weft promises, so reordering
/// across a GSO batch or a multi-queue NIC does not cost packets.
pub const WINDOW: u64 = TOTAL_BITS - WORD_BITS;

/// Replay state of one receiving session.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One more than the greatest counter accepted so far (0: none yet).
    next: u64,
    bits: [u64; WORDS],
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            next: 0,
            bits: [0; WORDS],
        }
    }

    /// Whether `counter` could be accepted: not too old, not seen, not past
    /// the message limit. Does not change the window.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        let c = counter + 1;
        if c + WINDOW < self.next {
            return false;
        }
        if c > self.next {
            return true;
        }
        let (word, bit) = Self::position(c);
        self.bits[word] & bit == 0
    }

    /// Records an authenticated `counter`. Returns false (and changes
    /// nothing) if it is too old or was already recorded.
    pub fn mark(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        let c = counter + 1;
        if c > self.next {
            let current = self.next / WORD_BITS;
            let target = c / WORD_BITS;
            let advance = (target - current).min(WORDS as u64);
            for i in 1..=advance {
                self.bits[((current + i) % WORDS as u64) as usize] = 0;
            }
            self.next = c;
        }
        let (word, bit) = Self::position(c);
        self.bits[word] |= bit;
        true
    }

    /// One more than the greatest counter accepted so far.
    pub fn greatest_plus_one(&self) -> u64 {
        self.next
    }

    fn position(c: u64) -> (usize, u64) {
        (
            ((c / WORD_BITS) % WORDS as u64) as usize,
            1u64 << (c % WORD_BITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_counters_are_accepted_once() {
        let mut w = ReplayWindow::new();
        for c in 0..20_000 {
            assert!(w.mark(c), "{c}");
            assert!(!w.mark(c), "{c} twice");
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(5000));
        for c in (0..5000).rev() {
            assert!(w.mark(c), "{c}");
        }
        for c in 0..=5000 {
            assert!(!w.check(c));
        }
    }

    #[test]
    fn counters_older_than_the_window_are_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.mark(WINDOW + 100));
        assert!(!w.check(99));
        assert!(!w.mark(50));
        assert!(w.mark(101));
    }

    #[test]
    fn at_least_2048_behind_is_still_accepted() {
        let mut w = ReplayWindow::new();
        for start in [0u64, 63, 64, 1_000_003] {
            assert!(w.mark(start + 2048));
            assert!(w.mark(start));
            w = ReplayWindow::new();
        }
    }

    #[test]
    fn a_large_jump_clears_the_old_bits() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            w.mark(c);
        }
        let far = 10 * TOTAL_BITS + 7;
        assert!(w.mark(far));
        // Counters that map to the same bits as the old ones are new.
        for c in far - 50..far {
            assert!(w.mark(c), "{c}");
        }
    }

    #[test]
    fn counters_at_the_message_limit_are_refused() {
        let mut w = ReplayWindow::new();
        assert!(!w.mark(REJECT_AFTER_MESSAGES));
        assert!(!w.mark(u64::MAX));
        assert!(w.mark(REJECT_AFTER_MESSAGES - 1));
    }

    #[test]
    fn check_does_not_change_the_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check(7));
        assert!(w.check(7));
        assert!(w.mark(7));
        assert!(!w.check(7));
    }
}
