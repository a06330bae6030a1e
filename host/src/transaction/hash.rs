//! The hash of every table keyed by what peers send (transaction keys,
//! shards by Call-ID) and of the ids the proxy derives from requests:
//! foldhash, keyed with a random seed per process, instead of std's
//! SipHash-1-3 (three times its cost on these short keys, ~3% of a call).
//! The random seed keeps it HashDoS-safe in the way std's `RandomState`
//! is: which keys collide cannot be known from outside the process.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

/// A randomly seeded foldhash `BuildHasher`, for a table of its own.
pub type KeyedState = foldhash::fast::RandomState;

/// A `HashMap` with [`KeyedState`].
pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;

/// A hash of `value` that is the same everywhere in this process (every
/// thread, every table) and unknown outside it: for a Call-ID's shard,
/// a request's loop hash, the ids of stateless forwards and replies.
pub fn process_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    process_state().hash_one(value)
}

/// A hasher of [`process_hash`]'s kind, to feed several values.
pub fn process_hasher() -> foldhash::fast::FoldHasher<'static> {
    process_state().build_hasher()
}

fn process_state() -> &'static KeyedState {
    static STATE: OnceLock<KeyedState> = OnceLock::new();
    STATE.get_or_init(KeyedState::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_hash_is_stable_within_the_process() {
        assert_eq!(process_hash("call-1@h"), process_hash("call-1@h"));
        assert_ne!(process_hash("call-1@h"), process_hash("call-2@h"));
        let a = std::thread::spawn(|| process_hash(&(Some("x"), 3u32)))
            .join()
            .expect("thread");
        assert_eq!(a, process_hash(&(Some("x"), 3u32)));
    }
}
