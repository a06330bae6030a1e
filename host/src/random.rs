//! Unguessable bytes: [`seed`] for a key made once (the process's
//! secret), [`fill`] for what is made per request (a digest nonce per
//! challenge, a dispatcher's `random` pick, the draw among SRV records of
//! one priority).
//!
//! `fill` draws from a ChaCha12 generator per thread, seeded from the OS
//! and seeded again after every 64 KiB it gives, as rand's `ThreadRng`
//! does: asking the OS each time cost a system call per registration
//! (`getrandom`, issue #15), where one 64-byte ChaCha12 block now serves
//! four nonces.
//!
//! Unlike `ThreadRng`, a seed the OS cannot give is not a panic: it then
//! comes from the clock and std's randomly keyed hasher, and the OS is
//! asked again at the next reseed.

use std::cell::RefCell;

use chacha20::rand_core::{Rng, SeedableRng};
use chacha20::ChaCha12Rng;

/// Bytes a generator gives before it is seeded again.
const RESEED_AFTER: usize = 64 << 10;

struct Generator {
    rng: ChaCha12Rng,
    given: usize,
}

thread_local! {
    static GENERATOR: RefCell<Option<Generator>> = const { RefCell::new(None) };
}

/// Fills `out` with unpredictable bytes.
pub fn fill(out: &mut [u8]) {
    let from_thread = GENERATOR.try_with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return false;
        };
        let generator = match &mut *slot {
            Some(g) if g.given < RESEED_AFTER => g,
            slot => slot.insert(Generator {
                rng: ChaCha12Rng::from_seed(seed()),
                given: 0,
            }),
        };
        generator.rng.fill_bytes(out);
        generator.given += out.len();
        true
    });
    if from_thread != Ok(true) {
        // The thread is exiting (its generator is gone): one of its own.
        ChaCha12Rng::from_seed(seed()).fill_bytes(out);
    }
}

/// A number from [`fill`].
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// 256 bits from the OS, else from the clock and std's hasher keys.
pub fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::fill(&mut seed).is_ok() {
        return seed;
    }
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // RandomState's keys come from the OS by another path (and differ
    // per thread); the clock makes each seed differ from the last.
    let state = std::collections::hash_map::RandomState::new();
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one((i, nanos)).to_le_bytes());
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successive_fills_differ_and_cover_every_byte_value() {
        let mut seen = [false; 256];
        let mut last = [0u8; 16];
        // Past one reseed: 64 KiB in 16-byte fills, and some more.
        for _ in 0..(RESEED_AFTER / 16 + 100) {
            let mut bytes = [0u8; 16];
            fill(&mut bytes);
            assert_ne!(bytes, last, "the same 16 bytes twice");
            for b in bytes {
                seen[b as usize] = true;
            }
            last = bytes;
        }
        assert!(seen.iter().all(|&s| s), "a byte value never given");
    }

    #[test]
    fn threads_get_different_streams() {
        let mine = {
            let mut b = [0u8; 32];
            fill(&mut b);
            b
        };
        let theirs = std::thread::spawn(|| {
            let mut b = [0u8; 32];
            fill(&mut b);
            b
        })
        .join()
        .expect("thread");
        assert_ne!(mine, theirs);
    }

    #[test]
    fn a_generator_is_seeded_again_after_64_kib() {
        std::thread::spawn(|| {
            let given = || GENERATOR.with(|c| c.borrow().as_ref().map(|g| g.given));
            let mut bytes = [0u8; 16];
            for _ in 0..RESEED_AFTER / 16 {
                fill(&mut bytes);
            }
            assert_eq!(given(), Some(RESEED_AFTER));
            fill(&mut bytes);
            assert_eq!(given(), Some(16), "not seeded again");
        })
        .join()
        .expect("thread");
    }
}
