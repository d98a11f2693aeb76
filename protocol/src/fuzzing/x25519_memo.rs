//! X25519 with its results remembered, for fuzzing only: the harness
//! targets' cost is almost all Curve25519 scalar multiplications, and
//! nearly all of those repeat from one input to the next.
//!
//! Every input starts from the same devices with the same seeds, so the
//! handshake that builds a [`super::Target`], the rekeys that the
//! fuzzer's clock steps trigger and the handshakes the peer runs to seal
//! [`super::SEALED`] records draw the same static and ephemeral keys input
//! after input. X25519 is a pure function of its two arguments; this
//! module computes each pair once per thread and looks it up afterwards,
//! so the Noise layer sees exactly the bytes it would have computed and
//! the device's random stream is consumed exactly as before (a remembered
//! value changes speed, never a result, and a crash reproduces with or
//! without it).
//!
//! Off unless [`enable`] was called on the thread: only the fuzz target
//! bodies turn it on. [`crate::noise`] asks [`dh`] for its Diffie-Hellman
//! object and [`public_key`] for a static key's public half; with the memo
//! off both answer `None` and the normal path runs. Private keys stay in
//! the tables for the life of the thread: acceptable in a fuzzing process
//! whose keys are fixed test keys, and the reason nothing here is compiled
//! without the `fuzzing` feature or `cfg(test)`.

use std::cell::RefCell;
use std::collections::HashMap;

use snow::params::DHChoice;
use snow::types::{Dh, Random};

use crate::wire::KEY_LEN;

/// Entries per table; a full table is emptied and refilled, which keeps
/// memory bounded (about 100 bytes an entry) while the keys that every
/// input uses come straight back.
const CAPACITY: usize = 1 << 16;

type Key = [u8; KEY_LEN];

#[derive(Default)]
struct Memo {
    /// Private key to public key.
    public: HashMap<Key, Key>,
    /// (private key, peer's public key) to shared secret.
    shared: HashMap<(Key, Key), Key>,
    hits: u64,
    misses: u64,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// Remembers X25519 results on this thread from now on. Idempotent.
pub fn enable() {
    MEMO.with(|m| {
        m.borrow_mut().get_or_insert_with(Memo::default);
    });
}

/// Lookups answered from memory and computed, on this thread so far
/// (`None` while the memo is off).
pub fn counts() -> Option<(u64, u64)> {
    MEMO.with(|m| m.borrow().as_ref().map(|m| (m.hits, m.misses)))
}

/// The X25519 base-point multiplication of `private`, clamped: what
/// `x25519_dalek::PublicKey::from` and snow's own X25519 compute. `None`
/// with the memo off.
pub fn public_key(private: &Key) -> Option<Key> {
    with_memo(|m| {
        if let Some(p) = m.public.get(private) {
            m.hits += 1;
            return *p;
        }
        m.misses += 1;
        let public = x25519_dalek::x25519(*private, x25519_dalek::X25519_BASEPOINT_BYTES);
        if m.public.len() >= CAPACITY {
            m.public.clear();
        }
        m.public.insert(*private, public);
        public
    })
}

fn shared(private: &Key, public: &Key) -> Key {
    with_memo(|m| {
        if let Some(s) = m.shared.get(&(*private, *public)) {
            m.hits += 1;
            return *s;
        }
        m.misses += 1;
        let s = x25519_dalek::x25519(*private, *public);
        if m.shared.len() >= CAPACITY {
            m.shared.clear();
        }
        m.shared.insert((*private, *public), s);
        s
    })
    .unwrap_or_else(|| x25519_dalek::x25519(*private, *public))
}

fn with_memo<T>(f: impl FnOnce(&mut Memo) -> T) -> Option<T> {
    MEMO.with(|m| m.borrow_mut().as_mut().map(f))
}

/// snow's Diffie-Hellman object for `choice`, remembering results, if the
/// memo is on and `choice` is X25519.
pub fn dh(choice: &DHChoice) -> Option<Box<dyn Dh>> {
    let on = MEMO.with(|m| m.borrow().is_some());
    (on && matches!(choice, DHChoice::Curve25519)).then(|| Box::<MemoDh>::default() as Box<dyn Dh>)
}

/// snow's `Dh25519`, field for field and call for call (the same bytes
/// drawn from the RNG, the same results, no check snow does not make),
/// with the scalar multiplications looked up.
#[derive(Default)]
struct MemoDh {
    private: Key,
    public: Key,
}

impl MemoDh {
    fn set_private(&mut self, private: Key) {
        self.private = private;
        self.public = public_key(&private)
            .unwrap_or_else(|| x25519_dalek::x25519(private, x25519_dalek::X25519_BASEPOINT_BYTES));
    }
}

impl Dh for MemoDh {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        // As snow: a short key is zero-padded (a long one panics).
        let mut key = [0u8; KEY_LEN];
        key[..privkey.len()].copy_from_slice(privkey);
        self.set_private(key);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut key = [0u8; KEY_LEN];
        rng.try_fill_bytes(&mut key)?;
        self.set_private(key);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        assert!(
            pubkey.len() >= KEY_LEN,
            "invalid public key length passed into dh function"
        );
        let mut public = [0u8; KEY_LEN];
        public.copy_from_slice(&pubkey[..KEY_LEN]);
        out[..KEY_LEN].copy_from_slice(&shared(&self.private, &public));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use snow::resolvers::{CryptoResolver, DefaultResolver};

    use super::*;

    struct Stream(ChaCha20Rng);

    impl Random for Stream {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            self.0.fill_bytes(dest);
            Ok(())
        }
    }

    fn snow_dh() -> Box<dyn Dh> {
        DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .expect("snow's X25519")
    }

    #[test]
    fn remembered_x25519_gives_snows_bytes_and_draws_the_same_randomness() {
        enable();
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        // Random points, and the low-order and non-canonical ones snow
        // passes through unchecked (zero and p + 1 among them).
        let mut points: Vec<Key> = vec![[0; 32], [1; 32], [0xff; 32]];
        let mut p_plus_one = [0xff; 32];
        p_plus_one[0] = 0xee;
        p_plus_one[31] = 0x7f;
        points.push(p_plus_one);
        for _ in 0..6 {
            let mut p = [0u8; 32];
            rng.fill_bytes(&mut p);
            points.push(p);
        }
        for round in 0..2 {
            let (mut ours, mut theirs) = (MemoDh::default(), snow_dh());
            let seed = [round; 32];
            ours.generate(&mut Stream(ChaCha20Rng::from_seed(seed)))
                .unwrap();
            theirs
                .generate(&mut Stream(ChaCha20Rng::from_seed(seed)))
                .unwrap();
            assert_eq!(ours.privkey(), theirs.privkey());
            assert_eq!(ours.pubkey(), theirs.pubkey());
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            ours.set(&key);
            theirs.set(&key);
            assert_eq!(ours.pubkey(), theirs.pubkey());
            for p in &points {
                let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
                ours.dh(p, &mut a).unwrap();
                theirs.dh(p, &mut b).unwrap();
                assert_eq!(a, b, "shared secret with {p:02x?}");
            }
            // Asked again, each comes from memory, still snow's bytes.
            let (hits, _) = counts().expect("on");
            for p in &points {
                let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
                ours.dh(p, &mut a).unwrap();
                theirs.dh(p, &mut b).unwrap();
                assert_eq!(a, b, "remembered shared secret with {p:02x?}");
            }
            assert_eq!(counts().expect("on").0, hits + points.len() as u64);
        }
    }

    #[test]
    fn the_memo_is_off_until_enabled_on_the_thread() {
        std::thread::spawn(|| {
            let key = crate::StaticSecret::from_bytes([7; 32]);
            assert!(dh(&DHChoice::Curve25519).is_none());
            assert!(public_key(&[7; 32]).is_none());
            assert_eq!(counts(), None);
            let computed = key.public_key();
            enable();
            assert!(dh(&DHChoice::Curve25519).is_some());
            assert_eq!(key.public_key(), computed);
            assert_eq!(key.public_key(), computed);
            assert_eq!(counts(), Some((1, 1)));
        })
        .join()
        .unwrap();
    }
}
