//! One shard per thread for what every request updates.
//!
//! Two worker threads that update one atomic counter, or take one mutex, on every request pass
//! its cache line back and forth between their CPUs each time; with one shard per thread each
//! line stays with its CPU, and readers (`/metrics`, the log writer) visit every shard. Threads
//! are given shards in turn, so the runtime's worker threads, started together, get shards of
//! their own; a thread beyond [`SHARDS`] shares one, which costs only speed.

use std::sync::atomic::{AtomicUsize, Ordering};

/// More than the worker threads of the machines we run on.
pub const SHARDS: usize = 8;

/// `T` on cache lines of its own: 128 bytes, because CPUs fetch adjacent lines in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CacheLines<T>(pub T);

/// One `T` per shard.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: [CacheLines<T>; SHARDS],
}

impl<T> Sharded<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self {
            shards: std::array::from_fn(|_| CacheLines(make())),
        }
    }

    /// This thread's shard.
    pub fn local(&self) -> &T {
        let [first, ..] = &self.shards;
        // `this_thread` is always below `SHARDS`: the fallback is never taken.
        &self.shards.get(this_thread()).unwrap_or(first).0
    }

    /// Every shard, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|CacheLines(shard)| shard)
    }
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self::new(T::default)
    }
}

/// The shard of the calling thread, fixed for the thread's life.
pub fn this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = next_shard(&NEXT);
    }
    INDEX.with(|index| *index)
}

/// Shards in turn: any `SHARDS` threads that start one after another get one each.
fn next_shard(counter: &AtomicUsize) -> usize {
    counter.fetch_add(1, Ordering::Relaxed) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_thread_keeps_its_shard_and_threads_started_in_turn_get_their_own() {
        let first = this_thread();
        assert_eq!(this_thread(), first);
        assert!(first < SHARDS);
        // Other tests start threads too, so the turns are shown on a counter of their own.
        let counter = AtomicUsize::new(usize::MAX - 3); // wrapping around keeps them apart too
        let mut shards: Vec<usize> = (0..SHARDS).map(|_| next_shard(&counter)).collect();
        shards.sort_unstable();
        shards.dedup();
        assert_eq!(shards.len(), SHARDS);
    }

    #[test]
    fn counts_from_every_thread_add_up() {
        let counters = std::sync::Arc::new(Sharded::<AtomicU64>::default());
        let threads: Vec<_> = (0..2 * SHARDS)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.local().fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 2 * SHARDS as u64 * 1000);
        assert_eq!(std::mem::align_of::<CacheLines<AtomicU64>>(), 128);
    }
}
