//! Where log lines go: a background thread writes them to stderr in batches, so a request never
//! waits on `write(2)` to a terminal, a pipe or a log collector, and the writer is not woken once
//! per line — it wakes when the first line of a batch arrives, lets the batch gather for a few
//! milliseconds (`BATCH_WINDOW`), and writes it with one call.
//!
//! Bounded: once `MAX_PENDING_BYTES` wait unwritten, senders wait for the writer (backpressure)
//! rather than drop lines or grow without limit. Lines keep their order. [`LogSink::flush`] — and
//! dropping the [`WriterThread`] guard — waits until every line queued before it is written, so
//! nothing logged before the process exits is lost.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a batch may gather before it is written.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// A batch this large is written at once.
const BATCH_BYTES: usize = 64 * 1024;
/// Unwritten bytes beyond which senders wait.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

#[derive(Default)]
struct Pending {
    buffer: Vec<u8>,
    /// Bytes ever queued, and ever written: a flush waits for `written` to reach `queued`.
    queued: u64,
    written: u64,
    /// Callers waiting in [`LogSink::flush`]: the writer does not let a batch gather for them.
    flushing: usize,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: a batch started, grew large, or a flush is waiting.
    wake: Condvar,
    /// Wakes senders and flushers: a batch was written.
    written: Condvar,
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
        let sink = Self {
            shared: Arc::new(Shared::default()),
        };
        let shared = sink.shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&shared, out))?;
        Ok((sink.clone(), WriterThread { sink }))
    }

    /// Queues one line. Waits only if the writer is `MAX_PENDING_BYTES` behind.
    pub fn send(&self, line: &[u8]) {
        let mut pending = lock(&self.shared.pending);
        while pending.buffer.len() >= MAX_PENDING_BYTES {
            pending = wait(&self.shared.written, pending);
        }
        let before = pending.buffer.len();
        pending.buffer.extend_from_slice(line);
        pending.queued += line.len() as u64;
        // Wake the writer when a batch starts and when it fills — once each. Every notify is a
        // system call, and a writer still waiting for a CPU would otherwise be notified again
        // by each line arriving meanwhile (BENCHMARKS.md, "The request log"). The writer checks
        // both conditions under the lock before it waits, so no wake-up is needed twice.
        let fills = before < BATCH_BYTES && pending.buffer.len() >= BATCH_BYTES;
        if before == 0 || fills {
            self.shared.wake.notify_one();
        }
    }

    /// Waits until every line queued before this call is written.
    pub fn flush(&self) {
        let mut pending = lock(&self.shared.pending);
        let target = pending.queued;
        pending.flushing += 1;
        self.shared.wake.notify_one();
        while pending.written < target {
            pending = wait(&self.shared.written, pending);
        }
        pending.flushing -= 1;
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.sink.flush();
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // A panic while holding the lock leaves at worst a partial line: keep logging.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wait<'a>(condvar: &Condvar, guard: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
    condvar.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

fn write_batches(shared: &Shared, mut out: impl std::io::Write) {
    let mut batch = Vec::new();
    loop {
        let mut pending = lock(&shared.pending);
        while pending.buffer.is_empty() && pending.written == pending.queued {
            pending = wait(&shared.wake, pending);
        }
        // Let the batch gather, unless it is large already or someone waits for it.
        let deadline = Instant::now() + BATCH_WINDOW;
        while pending.buffer.len() < BATCH_BYTES && pending.flushing == 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            pending = shared
                .wake
                .wait_timeout(pending, left)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        std::mem::swap(&mut pending.buffer, &mut batch);
        let upto = pending.queued;
        drop(pending);
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        lock(&shared.pending).written = upto;
        shared.written.notify_all();
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
}
