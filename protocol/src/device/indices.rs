//! The device's table of local session indices: which peer each index we
//! handed out belongs to.
//!
//! Every incoming transport message, response and cookie reply names one of
//! our indices, and [`Indices::owner`] is the one place it is looked up.
//! Indices are drawn from the device's seeded RNG and never repeat while
//! held. This table never holds keys and never decides when an index is
//! released: the peer's keys say which indices they gave up.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rand_chacha::rand_core::RngCore;

use crate::peer::PeerId;
use crate::DropReason;

/// Local indices in use, and their peers.
#[derive(Debug, Default)]
pub(crate) struct Indices(HashMap<u32, PeerId>);

impl Indices {
    /// A fresh index for `id`, drawn from `rng` until one is free.
    pub fn allocate(&mut self, id: PeerId, rng: &mut impl RngCore) -> u32 {
        loop {
            let i = rng.next_u32();
            if let Entry::Vacant(e) = self.0.entry(i) {
                e.insert(id);
                return i;
            }
        }
    }

    /// Frees `index`.
    pub fn release(&mut self, index: u32) {
        self.0.remove(&index);
    }

    /// Frees every index of `indices`.
    pub fn release_all(&mut self, indices: impl IntoIterator<Item = u32>) {
        for i in indices {
            self.0.remove(&i);
        }
    }

    /// The peer our index `receiver` belongs to.
    pub fn owner(&self, receiver: u32) -> Result<PeerId, DropReason> {
        self.0
            .get(&receiver)
            .copied()
            .ok_or(DropReason::UnknownIndex)
    }
}
