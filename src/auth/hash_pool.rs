//! A fixed set of threads that do all argon2 work, behind a bounded queue.
//!
//! argon2id is memory-bandwidth bound: running more hashes than cores at once only adds latency
//! and memory (the configured `m` each). So exactly `threads` hashes run at a time, at most
//! `queue` wait, and a request beyond that is refused at once ([`PoolError::Overloaded`] → 503 +
//! Retry-After) instead of piling up. Dedicated threads also keep memory bounded: each reuses its
//! own allocator arena, where hashing on the shared blocking pool spread argon2's buffers over
//! dozens of threads and arenas (BENCHMARKS.md, "Memory").
//!
//! The queue is std's bounded channel with its receiver shared behind a mutex: a bounded
//! multi-consumer queue with `try_send`, and no dependency, for a handful of threads that each
//! take a job only every few milliseconds — too rarely for the lock to be contended.
//! The caller blocks until its job is done, so it must itself be off the async reactor.
//!
//! A job whose requester has gone away by the time a thread takes it is skipped: when an HTTP
//! client hangs up, hyper drops the request's future, and a login queued behind a storm would
//! otherwise still burn a whole hash of a scarce thread for an answer nobody reads — under
//! overload, clients that time out and retry would make the queue all waste. The link is
//! explicit: every job carries the [`Cancellation`] of the [`Requester`] it is done for.
//!
//! The threads run at a lower scheduling priority (a higher nice value, `--hash-nice`): hashing
//! is throughput work, token checks are latency work. When a login storm keeps every core
//! hashing, a woken reactor thread then preempts a hash at once instead of waiting out the
//! scheduler's time slice (BENCHMARKS.md, "Isolation: a login storm"). When nothing
//! else wants the CPU, a niced thread hashes at full speed.

use crate::domain::password::{HashError, Hasher, Password, Verification};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

type Job = Box<dyn FnOnce(&Hasher) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the hashing queue is full")]
    Overloaded,
    #[error("the hashing threads have stopped")]
    Stopped,
    #[error("the requester left before a hashing thread took the job")]
    Abandoned,
    #[error(transparent)]
    Hash(#[from] HashError),
}

#[derive(Debug)]
pub struct HashPool {
    jobs: SyncSender<Job>,
    /// Jobs accepted but not yet finished (running or queued).
    in_flight: Arc<AtomicUsize>,
    /// Jobs skipped because their requester had gone (a metric).
    abandoned: Arc<AtomicU64>,
    /// Nanoseconds the latest verification with the configured parameters took.
    current_cost: Arc<AtomicU64>,
    /// Verifications of old-parameter hashes, each held to at least `current_cost` (a metric).
    /// Counted by the rule, not by the clock: one that already took as long counts too, so
    /// the count does not depend on how busy the machine was.
    padded: Arc<AtomicU64>,
    threads: usize,
}

/// Someone hashes are done for, who may give up waiting — an HTTP request. Lives in the async
/// task; dropping it (the task finished, or was dropped because the client hung up) cancels the
/// jobs queued on its behalf.
#[derive(Debug, Default)]
pub struct Requester {
    gone: Arc<AtomicBool>,
}

/// Passed with every job: tells a hashing thread whether the requester is still waiting.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    gone: Option<Arc<AtomicBool>>,
}

impl Requester {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle that travels with the work done for this requester.
    pub fn cancellation(&self) -> Cancellation {
        Cancellation {
            gone: Some(self.gone.clone()),
        }
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::SeqCst);
    }
}

impl Cancellation {
    /// For work nobody can abandon: the command line, tests.
    pub fn never() -> Self {
        Self::default()
    }

    fn is_cancelled(&self) -> bool {
        self.gone
            .as_ref()
            .is_some_and(|gone| gone.load(Ordering::SeqCst))
    }
}

/// What the pool reports for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingStats {
    /// Jobs waiting for a thread.
    pub queue_depth: usize,
    /// Jobs skipped because their requester had gone.
    pub abandoned: u64,
    /// Verifications of old-parameter hashes, each held to at least the configured
    /// parameters' cost.
    pub padded: u64,
}

/// Every hashing thread held by [`HashPool::hold`]; dropping it lets them go.
#[derive(Debug)]
pub struct Held {
    released: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let (lock, condvar) = &*self.released;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        condvar.notify_all();
    }
}

/// Sets the calling thread's nice value (on Linux, nice is per thread).
#[allow(
    unsafe_code,
    reason = "setpriority(2) has no safe wrapper in std or libc"
)]
fn lower_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches none of our memory. For
    // PRIO_PROCESS, `who` = 0 names the calling thread on Linux.
    let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl HashPool {
    /// Starts `threads` hashing threads (at least one) with room for `queue` waiting jobs,
    /// running at nice value `nice` (0 = the process's own priority; 19 = the lowest).
    pub fn new(hasher: Hasher, threads: usize, queue: usize, nice: i32) -> std::io::Result<Self> {
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
                    if nice > 0
                        && let Err(error) = lower_priority(nice)
                    {
                        tracing::warn!(%error, nice, "could not lower the hashing thread's priority");
                    }
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
            abandoned: Arc::new(AtomicU64::new(0)),
            current_cost: Arc::new(AtomicU64::new(0)),
            padded: Arc::new(AtomicU64::new(0)),
            threads,
        })
    }

    /// Occupies every hashing thread until the returned guard is dropped; jobs submitted
    /// meanwhile wait in the queue. Lets a test hold requests at a known point — between
    /// reading credentials and checking them — instead of hoping a sleep is long enough.
    pub fn hold(&self) -> Held {
        let taken = Arc::new(std::sync::Barrier::new(self.threads + 1));
        let released = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        for _ in 0..self.threads {
            let (taken, waiting_for, in_flight) =
                (taken.clone(), released.clone(), self.in_flight.clone());
            in_flight.fetch_add(1, Ordering::SeqCst);
            let job: Job = Box::new(move |_| {
                taken.wait();
                let (lock, condvar) = &*waiting_for;
                let mut done = lock.lock().unwrap_or_else(PoisonError::into_inner);
                while !*done {
                    done = condvar.wait(done).unwrap_or_else(PoisonError::into_inner);
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
            });
            if self.jobs.send(job).is_err() {
                return Held { released };
            }
        }
        taken.wait();
        Held { released }
    }

    /// Jobs waiting for a thread.
    fn queue_depth(&self) -> usize {
        self.in_flight
            .load(Ordering::SeqCst)
            .saturating_sub(self.threads)
    }

    pub fn stats(&self) -> HashingStats {
        HashingStats {
            queue_depth: self.queue_depth(),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            padded: self.padded.load(Ordering::Relaxed),
        }
    }

    pub fn hash(&self, password: Password, cancel: &Cancellation) -> Result<String, PoolError> {
        self.run(cancel, move |hasher| hasher.hash(&password))?
            .map_err(PoolError::from)
    }

    /// Verifies against a stored hash. A hash with older, cheaper parameters is checked faster
    /// than an unknown name's dummy hash, and that difference would tell a guesser which
    /// accounts exist; so such a verification holds its thread until it has taken as long as
    /// the latest verification with the configured parameters.
    pub fn verify(
        &self,
        password: Password,
        phc: String,
        cancel: &Cancellation,
    ) -> Result<Verification, PoolError> {
        let (current_cost, padded) = (self.current_cost.clone(), self.padded.clone());
        self.run(cancel, move |hasher| {
            let started = Instant::now();
            let outcome = hasher.verify(&password, &phc);
            let took = started.elapsed();
            if hasher.has_current_params(&phc) {
                current_cost.store(nanos(took), Ordering::Relaxed);
            } else {
                padded.fetch_add(1, Ordering::Relaxed);
                let target = Duration::from_nanos(current_cost.load(Ordering::Relaxed));
                if let Some(rest) = target.checked_sub(took) {
                    std::thread::sleep(rest);
                }
            }
            outcome
        })
    }

    /// A verification against the dummy hash: what an unknown name costs. Takes the raw input,
    /// which may not even normalise, and wipes it afterwards.
    pub fn verify_dummy(&self, raw_password: &str, cancel: &Cancellation) -> Result<(), PoolError> {
        let raw_password = zeroize::Zeroizing::new(raw_password.to_owned());
        let current_cost = self.current_cost.clone();
        self.run(cancel, move |hasher| {
            let started = Instant::now();
            hasher.verify_dummy(&raw_password);
            current_cost.store(nanos(started.elapsed()), Ordering::Relaxed);
        })
    }

    /// Runs `work` on a hashing thread and waits for its result; skips it if `cancel` says the
    /// requester is gone by the time a thread is free.
    fn run<T: Send + 'static>(
        &self,
        cancel: &Cancellation,
        work: impl FnOnce(&Hasher) -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, result) = mpsc::sync_channel(1);
        let (in_flight, abandoned) = (self.in_flight.clone(), self.abandoned.clone());
        let cancel = cancel.clone();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let job: Job = Box::new(move |hasher| {
            let outcome = if cancel.is_cancelled() {
                abandoned.fetch_add(1, Ordering::Relaxed);
                None
            } else {
                Some(work(hasher))
            };
            let _ = reply.send(outcome);
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
        match self.jobs.try_send(job) {
            Ok(()) => match result.recv() {
                Ok(Some(value)) => Ok(value),
                Ok(None) => Err(PoolError::Abandoned),
                Err(_) => Err(PoolError::Stopped),
            },
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
    use crate::domain::password::HashParams;
    use std::sync::Barrier;

    fn pool(threads: usize, queue: usize) -> HashPool {
        niced_pool(threads, queue, 0)
    }

    /// A pool with cheap parameters: these tests are about scheduling, not hashing.
    fn niced_pool(threads: usize, queue: usize, nice: i32) -> HashPool {
        let params = HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        HashPool::new(Hasher::new(params).unwrap(), threads, queue, nice).unwrap()
    }

    #[test]
    fn hashes_and_verifies_on_its_threads() {
        let pool = pool(2, 4);
        let password = Password::normalize("correct horse battery staple").unwrap();
        let never = Cancellation::never();
        let phc = pool.hash(password.clone(), &never).unwrap();
        assert!(matches!(
            pool.verify(password, phc, &never).unwrap(),
            Verification::Match { .. }
        ));
        assert_eq!(pool.queue_depth(), 0);
    }

    #[test]
    fn hashing_threads_run_at_the_configured_nice_value() {
        let before = thread_nice();
        let niced = niced_pool(1, 1, 10);
        // Lowering is always allowed; a process already below 10 stays where it is.
        assert_eq!(
            niced
                .run(&Cancellation::never(), |_| thread_nice())
                .unwrap(),
            before.max(10)
        );
        // The caller's own priority is untouched.
        assert_eq!(thread_nice(), before);
    }

    #[test]
    fn lowering_a_threads_priority_reports_success_and_takes_effect() {
        std::thread::spawn(|| {
            // 19, the lowest priority, is always allowed, whatever the process runs at.
            lower_priority(19).expect("setpriority succeeded");
            assert_eq!(thread_nice(), 19);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn durations_are_counted_in_nanoseconds_saturating() {
        assert_eq!(nanos(Duration::from_micros(3)), 3_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    /// An unknown name's verification is real work on a hashing thread, as a known name's is:
    /// it waits its turn in the queue, and it records what a current-parameter verification
    /// costs (the cost old-parameter hashes are held to).
    #[test]
    fn a_dummy_verification_queues_like_a_real_one_and_records_the_current_cost() {
        let pool = Arc::new(pool(1, 4));
        let occupied = Occupied::new(&pool);
        let dummy = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.verify_dummy("no such account", &Cancellation::never()))
        };
        wait_until_queued(&pool, 1);
        assert_eq!(pool.current_cost.load(Ordering::Relaxed), 0);
        occupied.release();
        assert!(dummy.join().unwrap().is_ok());
        assert!(pool.current_cost.load(Ordering::Relaxed) > 0);
    }

    /// Holding takes every thread of a larger pool, and releasing gives every one back: four
    /// jobs that each wait for the other three all finish. Bounded, so a hold that never
    /// returns fails the test instead of hanging the suite.
    #[test]
    fn holding_and_releasing_a_pool_gives_every_thread_back() {
        const THREADS: usize = 4;
        let pool = Arc::new(pool(THREADS, 2 * THREADS));
        let (done, finished) = mpsc::channel();
        std::thread::spawn({
            let pool = pool.clone();
            move || {
                drop(pool.hold());
                let together = Arc::new(Barrier::new(THREADS));
                let jobs: Vec<_> = (0..THREADS)
                    .map(|_| {
                        let (pool, together) = (pool.clone(), together.clone());
                        std::thread::spawn(move || {
                            pool.run(&Cancellation::never(), move |_| {
                                together.wait();
                            })
                        })
                    })
                    .collect();
                for job in jobs {
                    assert!(job.join().unwrap().is_ok());
                }
                let _ = done.send(());
            }
        });
        finished
            .recv_timeout(Duration::from_secs(10))
            .expect("every thread came back after the hold");
    }

    /// The calling thread's nice value: field 19 of /proc/thread-self/stat, counted after the
    /// parenthesised command name (which may itself contain spaces).
    fn thread_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    /// Keeps the only thread of `pool` busy until [`Occupied::release`].
    struct Occupied {
        release: Arc<Barrier>,
        busy: std::thread::JoinHandle<Result<(), PoolError>>,
    }

    impl Occupied {
        fn new(pool: &Arc<HashPool>) -> Self {
            let gate = Arc::new(Barrier::new(2));
            let release = Arc::new(Barrier::new(2));
            let busy = {
                let (pool, gate, release) = (pool.clone(), gate.clone(), release.clone());
                std::thread::spawn(move || {
                    pool.run(&Cancellation::never(), move |_| {
                        gate.wait();
                        release.wait();
                    })
                })
            };
            gate.wait();
            Self { release, busy }
        }

        fn release(self) {
            self.release.wait();
            assert!(self.busy.join().unwrap().is_ok());
        }
    }

    /// Waits for `depth` queued jobs; a build where they never queue fails here instead of
    /// hanging the suite.
    fn wait_until_queued(pool: &HashPool, depth: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pool.queue_depth() < depth {
            assert!(
                std::time::Instant::now() < deadline,
                "{depth} jobs never queued (depth {})",
                pool.queue_depth()
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let pool = Arc::new(pool(1, 1));
        // Occupy the only thread, then the only queue slot.
        let occupied = Occupied::new(&pool);
        let queued = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.run(&Cancellation::never(), |_| ()))
        };
        wait_until_queued(&pool, 1);
        assert!(matches!(
            pool.run(&Cancellation::never(), |_| ()),
            Err(PoolError::Overloaded)
        ));
        occupied.release();
        assert!(queued.join().unwrap().is_ok());
        assert_eq!(pool.queue_depth(), 0);
    }

    #[test]
    fn a_job_whose_requester_left_while_queued_is_skipped() {
        let pool = Arc::new(pool(1, 4));
        let occupied = Occupied::new(&pool);
        let ran = Arc::new(AtomicBool::new(false));
        let (leaving, staying) = (Requester::new(), Requester::new());
        let queue = |requester: &Requester| {
            let (pool, ran, cancel) = (pool.clone(), ran.clone(), requester.cancellation());
            std::thread::spawn(move || {
                pool.run(&cancel, move |_| ran.store(true, Ordering::SeqCst))
            })
        };
        let left = queue(&leaving);
        wait_until_queued(&pool, 1);
        drop(leaving);
        occupied.release();
        assert!(matches!(left.join().unwrap(), Err(PoolError::Abandoned)));
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job ran");
        assert_eq!(pool.stats().abandoned, 1);
        // A requester still waiting gets its work done as usual.
        assert!(queue(&staying).join().unwrap().is_ok());
        assert!(ran.load(Ordering::SeqCst));
        assert_eq!(pool.stats().abandoned, 1);
    }
}
