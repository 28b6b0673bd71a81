//! Where log lines go: a background thread writes them to stderr in batches, so a request never
//! waits on `write(2)` to a terminal, a pipe or a log collector, and the writer is not woken once
//! per line — it wakes when a batch starts, lets it gather for a few milliseconds
//! (`BATCH_WINDOW`), and writes it with one call.
//!
//! Each thread queues into its own shard (`support::shards`): two worker threads sharing one
//! queue passed its lock and buffer between their CPUs on every request. The writer takes every
//! shard's lines and merges them by the moment each was sent, so the output keeps the order in
//! which lines were sent, across threads too (to the monotonic clock's nanosecond). A request
//! line gives the moment its request finished, which the request had read anyway.
//!
//! Bounded: once `MAX_PENDING_BYTES` wait unwritten in a shard, its senders wait for the writer
//! (backpressure) rather than drop lines or grow without limit. [`LogSink::flush`] — and
//! dropping the [`WriterThread`] guard — waits until every line queued before it is written, so
//! nothing logged before the process exits is lost.

use super::shards::Sharded;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a batch may gather before it is written.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// A shard holding this much is written at once. Large enough that one busy worker rarely
/// fills it within `BATCH_WINDOW`: each early wake-up is a futex call and two context switches,
/// on the worker's own CPU when the two share one (BENCHMARKS.md, "The request log").
const BATCH_BYTES: usize = 256 * 1024;
/// Unwritten bytes in one shard beyond which its senders wait.
const MAX_PENDING_BYTES: usize = 1024 * 1024;
// A shard must be able to fill a batch, and wake the writer early, before its senders wait.
const _: () = assert!(BATCH_BYTES < MAX_PENDING_BYTES);

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

/// One thread's queued lines.
#[derive(Default)]
struct Queued {
    bytes: Vec<u8>,
    /// Per line: when it was sent (nanoseconds since the sink started) and where it ends in
    /// `bytes`.
    lines: Vec<(u64, usize)>,
    /// Senders waiting for room.
    waiting: usize,
}

#[derive(Default)]
struct Shard {
    queued: Mutex<Queued>,
    /// Wakes this shard's waiting senders: the writer took its lines.
    room: Condvar,
}

/// What the writer and flushers agree on.
#[derive(Default)]
struct Rounds {
    /// A shard started a batch, or grew past `BATCH_BYTES`: the writer has work.
    work: bool,
    large: bool,
    /// Callers waiting in [`LogSink::flush`]: the writer does not let a batch gather for them.
    flushing: usize,
    /// Rounds the writer began (took the shards' lines) and finished (wrote them).
    begun: u64,
    finished: u64,
}

struct Shared {
    shards: Sharded<Shard>,
    rounds: Mutex<Rounds>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes flushers: a round was written.
    written: Condvar,
    /// The zero of the lines' send times.
    started: Instant,
}

/// A handle for sending whole lines (each ending in `\n`) to the writer thread.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogSink {
    // Never the queued lines: a `Config` printed for debugging would dump them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// Guard for the writer thread: dropping it waits until every line queued so far is written.
/// (The thread itself lives as long as the process: the global `tracing` subscriber keeps a
/// sink.)
#[derive(Debug)]
pub struct WriterThread {
    sink: LogSink,
}

impl LogSink {
    /// Starts the writer thread on stderr. It takes stderr's lock only for each batch, so the
    /// process's own last words (`eprintln!`) still get through.
    pub fn stderr() -> std::io::Result<(Self, WriterThread)> {
        Self::writing_to(std::io::stderr())
    }

    fn writing_to(
        out: impl std::io::Write + Send + 'static,
    ) -> std::io::Result<(Self, WriterThread)> {
        let sink = Self::unwritten();
        let shared = sink.shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&shared, out))?;
        Ok((sink.clone(), WriterThread { sink }))
    }

    /// A sink with no writer yet.
    fn unwritten() -> Self {
        Self {
            shared: Arc::new(Shared {
                shards: Sharded::default(),
                rounds: Mutex::default(),
                wake: Condvar::new(),
                written: Condvar::new(),
                started: Instant::now(),
            }),
        }
    }

    /// Queues one line. Waits only if this thread's shard is `MAX_PENDING_BYTES` behind.
    pub fn send(&self, line: &[u8]) {
        self.queue(None, |queued| queued.extend_from_slice(line));
    }

    /// Queues one line that `render` writes straight into this thread's shard — no copy, no
    /// buffer of its own — ordered among other threads' lines by `sent`, when it happened.
    /// `render` runs under the shard's lock, so it must not log.
    pub fn send_rendered(&self, sent: Instant, render: impl FnOnce(&mut Vec<u8>)) {
        self.queue(Some(sent), render);
    }

    fn queue(&self, sent: Option<Instant>, render: impl FnOnce(&mut Vec<u8>)) {
        self.queue_in(self.shared.shards.local(), sent, render);
    }

    fn queue_in(&self, shard: &Shard, sent: Option<Instant>, render: impl FnOnce(&mut Vec<u8>)) {
        let mut queued = lock(&shard.queued);
        while queued.bytes.len() >= MAX_PENDING_BYTES {
            queued.waiting += 1;
            queued = wait(&shard.room, queued);
            queued.waiting -= 1;
        }
        // Without a time given, it is read under the shard's lock, so those lines are in the
        // order of their times within a shard.
        let sent = sent.map_or_else(
            || self.shared.started.elapsed(),
            |sent| sent.saturating_duration_since(self.shared.started),
        );
        let sent = u64::try_from(sent.as_nanos()).unwrap_or(u64::MAX);
        let before = queued.bytes.len();
        render(&mut queued.bytes);
        let end = queued.bytes.len();
        queued.lines.push((sent, end));
        drop(queued);
        // Wake the writer when this shard starts a batch and when it fills — once each: every
        // notify is a system call (BENCHMARKS.md, "The request log"). The writer checks the
        // flags under the lock before it waits, so no wake-up is lost.
        let fills = before < BATCH_BYTES && end >= BATCH_BYTES;
        if before == 0 || fills {
            let mut rounds = lock(&self.shared.rounds);
            rounds.work = true;
            rounds.large |= fills;
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every line queued before this call is written.
    pub fn flush(&self) {
        let mut rounds = lock(&self.shared.rounds);
        // A round that begins after this point takes every line queued before it.
        let target = rounds.begun + 1;
        rounds.flushing += 1;
        self.shared.wake.notify_one();
        while rounds.finished < target {
            rounds = wait(&self.shared.written, rounds);
        }
        rounds.flushing -= 1;
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.sink.flush();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves at worst a partial line: keep logging.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

fn write_batches(shared: &Shared, mut out: impl std::io::Write) {
    // Each shard's lines as taken, swapped with the shard's emptied buffers every round.
    let mut taken: Vec<Queued> = shared.shards.iter().map(|_| Queued::default()).collect();
    let mut batch = Vec::new();
    loop {
        let mut rounds = lock(&shared.rounds);
        while !rounds.work && rounds.flushing == 0 {
            rounds = wait(&shared.wake, rounds);
        }
        // Let the batch gather, unless a shard is large already or someone waits for it.
        let deadline = Instant::now() + BATCH_WINDOW;
        while !rounds.large && rounds.flushing == 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            rounds = shared
                .wake
                .wait_timeout(rounds, left)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        rounds.work = false;
        rounds.large = false;
        rounds.begun += 1;
        let round = rounds.begun;
        drop(rounds);
        for (shard, taken) in shared.shards.iter().zip(&mut taken) {
            let mut queued = lock(&shard.queued);
            std::mem::swap(&mut queued.bytes, &mut taken.bytes);
            std::mem::swap(&mut queued.lines, &mut taken.lines);
            if queued.waiting > 0 {
                shard.room.notify_all();
            }
        }
        // Lines from one thread only — a single busy worker — need no merging: written from
        // where they were queued, without copying them into `batch`.
        let mut with_lines = taken.iter().filter(|shard| !shard.lines.is_empty());
        match (with_lines.next(), with_lines.next()) {
            (Some(only), None) => {
                let _ = out.write_all(&only.bytes);
            }
            _ => {
                merge(&taken, &mut batch);
                let _ = out.write_all(&batch);
                batch.clear();
            }
        }
        let _ = out.flush();
        for taken in &mut taken {
            taken.bytes.clear();
            taken.lines.clear();
        }
        let mut rounds = lock(&shared.rounds);
        rounds.finished = round;
        if rounds.flushing > 0 {
            shared.written.notify_all();
        }
    }
}

/// The shards' lines in the order they were sent; a shard's own lines keep their order. Runs
/// of lines are copied whole: usually one or two shards hold lines, and a run lasts until
/// another shard has an earlier line.
fn merge(shards: &[Queued], out: &mut Vec<u8>) {
    // Per shard with lines: the next line to write, and where it starts in the shard's bytes.
    let mut heads: Vec<(&Queued, usize, usize)> = shards
        .iter()
        .filter(|shard| !shard.lines.is_empty())
        .map(|shard| (shard, 0, 0))
        .collect();
    loop {
        heads.retain(|(shard, line, _)| *line < shard.lines.len());
        let sent_at = |&(shard, line, _): &(&Queued, usize, usize)| {
            shard.lines.get(line).map_or(u64::MAX, |(sent, _)| *sent)
        };
        let Some(earliest) = (0..heads.len()).min_by_key(|&i| heads.get(i).map(sent_at)) else {
            return;
        };
        // Lines of other shards sent before this shard's next one — none, or the run ends.
        let others = heads
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != earliest)
            .map(|(_, head)| sent_at(head))
            .min()
            .unwrap_or(u64::MAX);
        let Some((shard, line, start)) = heads.get_mut(earliest) else {
            return;
        };
        let mut end = *start;
        while let Some(&(sent, line_end)) = shard.lines.get(*line) {
            if sent > others {
                break;
            }
            end = line_end;
            *line += 1;
        }
        out.extend_from_slice(shard.bytes.get(*start..end).unwrap_or_default());
        *start = end;
    }
}

/// `tracing-subscriber` formats each event into one buffer and writes it once; this writer
/// collects that buffer and queues it as one line when dropped.
pub struct SinkWriter<'a> {
    sink: &'a LogSink,
    line: Vec<u8>,
}

impl std::io::Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.sink.send(&self.line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            sink: self,
            line: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into shared memory, for reading back what the writer thread wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_a_flush() {
        let captured = Captured::default();
        let (sink, writer) = LogSink::writing_to(captured.clone()).unwrap();
        let written = || String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let expected = |n: usize| (0..n).map(|i| format!("line {i}\n")).collect::<String>();
        // Far more than the pending limit: senders wait for the writer, nothing is dropped.
        let long = "x".repeat(100_000);
        for i in 0..100 {
            sink.send(format!("line {i}\n").as_bytes());
        }
        sink.flush();
        assert_eq!(written(), expected(100));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (sink, long) = (sink.clone(), long.clone());
                std::thread::spawn(move || {
                    for _ in 0..30 {
                        sink.send(format!("{long}\n").as_bytes());
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        drop(writer); // flushes
        let text = written();
        assert_eq!(text.len(), expected(100).len() + 4 * 30 * (long.len() + 1));
        assert!(text.lines().skip(100).all(|line| line == long));
    }

    /// Lines sent one after another from different threads — each send happening before the
    /// next, as requests answered in turn are — come out in that order, though each thread
    /// queues into its own shard.
    #[test]
    fn lines_sent_in_turn_by_many_threads_keep_their_order() {
        let captured = Captured::default();
        let (sink, writer) = LogSink::writing_to(captured.clone()).unwrap();
        let threads = 6;
        let (baton_senders, baton_receivers): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| std::sync::mpsc::channel::<usize>())
            .unzip();
        let handles: Vec<_> = baton_receivers
            .into_iter()
            .enumerate()
            .map(|(me, receiver)| {
                let sink = sink.clone();
                let next = baton_senders[(me + 1) % threads].clone();
                std::thread::spawn(move || {
                    while let Ok(n) = receiver.recv() {
                        if n == 3000 {
                            let _ = next.send(n); // pass the end on, then stop
                            return;
                        }
                        sink.send(format!("line {n}\n").as_bytes());
                        let _ = next.send(n + 1);
                    }
                })
            })
            .collect();
        baton_senders[0].send(0).unwrap();
        for handle in handles {
            handle.join().unwrap();
        }
        drop(writer);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..3000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(text, expected);
    }

    /// Concurrent senders: nothing lost, no line torn, each thread's lines in its own order;
    /// a flush after the senders finished finds every line written.
    #[test]
    fn concurrent_senders_lose_nothing_and_keep_their_own_order() {
        let captured = Captured::default();
        let (sink, _writer) = LogSink::writing_to(captured.clone()).unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|thread| {
                let (sink, barrier) = (sink.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for n in 0..2000 {
                        sink.send(format!("{thread} {n} {}\n", "x".repeat(n % 300)).as_bytes());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        sink.flush();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 8];
        for line in text.lines() {
            let mut fields = line.split(' ');
            let thread: usize = fields.next().unwrap().parse().unwrap();
            let n: usize = fields.next().unwrap().parse().unwrap();
            assert_eq!(n, next[thread], "thread {thread} out of order");
            assert_eq!(fields.next().unwrap().len(), n % 300, "a torn line");
            next[thread] += 1;
        }
        assert_eq!(next, [2000; 8]);
    }

    /// A rendered line is ordered by the time it was given — when its request finished — not
    /// by when it reached the queue.
    #[test]
    fn rendered_lines_are_ordered_by_the_time_they_give() {
        let sink = LogSink::unwritten();
        let at = |millis| Some(sink.shared.started + Duration::from_millis(millis));
        // Three threads' shards, queued in an order other than the lines' times.
        let shards: Vec<&Shard> = sink.shared.shards.iter().take(3).collect();
        for (shard, finished, text) in [
            (shards[0], 30, "third\n"),
            (shards[1], 10, "first\n"),
            (shards[2], 20, "second\n"),
        ] {
            sink.queue_in(shard, at(finished), |out| {
                out.extend_from_slice(text.as_bytes())
            });
        }
        let taken: Vec<Queued> = sink
            .shared
            .shards
            .iter()
            .map(|shard| std::mem::take(&mut *lock(&shard.queued)))
            .collect();
        let mut out = Vec::new();
        merge(&taken, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "first\nsecond\nthird\n");
    }

    #[test]
    fn merging_orders_lines_by_send_time_and_keeps_each_shard_s_order() {
        let shard = |lines: &[(u64, &str)]| {
            let mut queued = Queued::default();
            for (sent, text) in lines {
                queued.bytes.extend_from_slice(text.as_bytes());
                queued.lines.push((*sent, queued.bytes.len()));
            }
            queued
        };
        let shards = [
            shard(&[(1, "a1\n"), (2, "a2\n"), (7, "a7\n"), (9, "a9\n")]),
            Queued::default(),
            shard(&[(3, "b3\n"), (4, "b4\n"), (9, "b9\n")]),
            shard(&[(5, "c5\n"), (8, "c8\n")]),
        ];
        let mut out = Vec::new();
        merge(&shards, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a1\na2\nb3\nb4\nc5\na7\nc8\na9\nb9\n"
        );
        let mut alone = Vec::new();
        merge(&shards[..1], &mut alone);
        assert_eq!(alone, b"a1\na2\na7\na9\n");
    }
}
