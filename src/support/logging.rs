//! Where log lines go: a background thread writes them to stderr, so a request never waits on a
//! `write(2)` to a terminal, a pipe or a slow log collector — it hands its line over and goes on.
//!
//! The queue is bounded: if the writer falls that far behind, senders wait (backpressure) rather
//! than drop lines or grow without limit. Lines keep their order; the writer batches whatever has
//! queued into one buffered write. Dropping the [`WriterThread`] guard waits until every line
//! queued before it is written, so nothing logged before the process exits is lost.

use std::io::Write as _;
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Lines that may wait for the writer before senders block.
const QUEUED_LINES: usize = 16_384;

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

/// What the writer thread is sent.
enum Message {
    Line(Vec<u8>),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// A handle for sending whole lines (each ending in `\n`) to the writer thread.
#[derive(Debug, Clone)]
pub struct LogSink {
    messages: SyncSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

/// Guard for the writer thread: dropping it waits until every line queued so far is written.
/// (The thread itself lives as long as the process: the global `tracing` subscriber keeps a
/// sink, so the queue never closes.)
#[derive(Debug)]
pub struct WriterThread {
    sink: LogSink,
}

impl LogSink {
    /// Starts the writer thread on stderr. It takes stderr's lock only for each batch, so the
    /// process's own last words (`eprintln!`) still get through.
    pub fn stderr() -> std::io::Result<(Self, WriterThread)> {
        let (messages, queue) = mpsc::sync_channel(QUEUED_LINES);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_until_closed(&queue, std::io::stderr()))?;
        let sink = Self { messages };
        Ok((sink.clone(), WriterThread { sink }))
    }

    /// Queues one line. Waits only if the writer is a whole queue behind.
    pub fn send(&self, line: Vec<u8>) {
        // The writer stops only when every sender is gone, so this cannot fail while `self`
        // lives; if it somehow did, the line would have nowhere to go anyway.
        let _ = self.messages.send(Message::Line(line));
    }

    /// Waits until every line queued before this call is written.
    pub fn flush(&self) {
        let (done, finished) = mpsc::sync_channel(1);
        if self.messages.send(Message::Flush(done)).is_ok() {
            let _ = finished.recv();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.sink.flush();
    }
}

fn write_until_closed(queue: &Receiver<Message>, out: impl std::io::Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let write = |message: Message, out: &mut std::io::BufWriter<_>| match message {
        Message::Line(line) => {
            let _ = out.write_all(&line);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    };
    while let Ok(message) = queue.recv() {
        write(message, &mut out);
        // Whatever else is already queued goes out in the same write.
        while let Ok(message) = queue.try_recv() {
            write(message, &mut out);
        }
        let _ = out.flush();
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
            self.sink.send(std::mem::take(&mut self.line));
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
    use std::sync::{Arc, Mutex};

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
    fn every_line_is_written_in_order_before_the_writer_stops() {
        let (messages, queue) = mpsc::sync_channel(4);
        let captured = Captured::default();
        let writer = {
            let out = captured.clone();
            std::thread::spawn(move || write_until_closed(&queue, out))
        };
        let sink = LogSink { messages };
        let written = || String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let expected = |n: usize| (0..n).map(|i| format!("line {i}\n")).collect::<String>();
        // More lines than the queue holds: senders wait, nothing is dropped.
        for i in 0..100 {
            sink.send(format!("line {i}\n").into_bytes());
        }
        // A flush returns only once everything before it is out.
        sink.flush();
        assert_eq!(written(), expected(100));
        for i in 100..150 {
            sink.send(format!("line {i}\n").into_bytes());
        }
        drop(sink);
        writer.join().unwrap();
        assert_eq!(written(), expected(150));
    }
}
