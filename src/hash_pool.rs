//! A fixed set of threads that do all argon2 work, behind a bounded queue.
//!
//! argon2id is memory-bandwidth bound: running more hashes than cores at once only adds latency
//! and memory (19 MiB each). So exactly `threads` hashes run at a time, at most `queue` wait, and
//! a request beyond that is refused at once ([`PoolError::Overloaded`] → 503 + Retry-After)
//! instead of piling up. Dedicated threads also keep memory bounded: each reuses its own
//! allocator arena, where hashing on the shared blocking pool spread 19 MiB buffers over dozens
//! of threads and arenas (we measured 1.7 GiB RSS under a login storm; BENCHMARKS.md).
//! The caller blocks until its job is done, so it must itself be off the async reactor.

use crate::password::{HashError, Hasher, Password, Verification};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

type Job = Box<dyn FnOnce(&Hasher) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the hashing queue is full")]
    Overloaded,
    #[error("the hashing threads have stopped")]
    Stopped,
    #[error(transparent)]
    Hash(#[from] HashError),
}

#[derive(Debug)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    /// Jobs accepted but not yet finished (running or queued).
    in_flight: Arc<AtomicUsize>,
    threads: usize,
}

impl HashPool {
    /// Starts `threads` hashing threads (at least one) with room for `queue` waiting jobs.
    pub fn new(hasher: Hasher, threads: usize, queue: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        // The channel buffers the waiting jobs; each thread holds one more while it works.
        let (jobs, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let hasher = Arc::new(hasher);
        for index in 0..threads {
            let (receiver, hasher) = (receiver.clone(), hasher.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    loop {
                        let job = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        match job {
                            Ok(job) => job(&hasher),
                            Err(_) => return, // the pool was dropped
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            in_flight: Arc::new(AtomicUsize::new(0)),
            threads,
        })
    }

    /// Jobs waiting for a thread (a metric).
    pub fn queue_depth(&self) -> usize {
        self.in_flight
            .load(Ordering::SeqCst)
            .saturating_sub(self.threads)
    }

    pub fn hash(&self, password: Password) -> Result<String, PoolError> {
        self.run(move |hasher| hasher.hash(&password))?
            .map_err(PoolError::from)
    }

    pub fn verify(&self, password: Password, phc: String) -> Result<Verification, PoolError> {
        self.run(move |hasher| hasher.verify(&password, &phc))
    }

    pub fn verify_dummy(&self, raw_password: String) -> Result<(), PoolError> {
        self.run(move |hasher| hasher.verify_dummy(&raw_password))
    }

    /// Runs `work` on a hashing thread and waits for its result.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, result) = mpsc::sync_channel(1);
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let job: Job = Box::new(move |hasher| {
            let _ = reply.send(work(hasher));
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        match self.jobs.try_send(job) {
            Ok(()) => result.recv().map_err(|_| PoolError::Stopped),
            Err(TrySendError::Full(_)) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(PoolError::Overloaded)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(PoolError::Stopped)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::HashParams;
    use std::sync::Barrier;

    fn pool(threads: usize, queue: usize) -> HashPool {
        let params = HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        HashPool::new(Hasher::new(params).unwrap(), threads, queue).unwrap()
    }

    #[test]
    fn hashes_and_verifies_on_its_threads() {
        let pool = pool(2, 4);
        let password = Password::normalize("correct horse battery staple").unwrap();
        let phc = pool.hash(password.clone()).unwrap();
        assert!(matches!(
            pool.verify(password, phc).unwrap(),
            Verification::Match { .. }
        ));
        assert_eq!(pool.queue_depth(), 0);
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let pool = Arc::new(pool(1, 1));
        // Occupy the only thread, then the only queue slot.
        let gate = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let busy = {
            let (pool, gate, release) = (pool.clone(), gate.clone(), release.clone());
            std::thread::spawn(move || {
                pool.run(move |_| {
                    gate.wait();
                    release.wait();
                })
            })
        };
        gate.wait();
        let queued = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.run(|_| ()))
        };
        while pool.queue_depth() == 0 {
            std::thread::yield_now();
        }
        assert!(matches!(pool.run(|_| ()), Err(PoolError::Overloaded)));
        release.wait();
        assert!(busy.join().unwrap().is_ok());
        assert!(queued.join().unwrap().is_ok());
        assert_eq!(pool.queue_depth(), 0);
    }
}
