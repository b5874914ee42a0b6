//! Everything the launcher prints to stdout (its log and the console's `label: text` lines)
//! goes through ONE bounded queue that a dedicated thread writes out, so a stdout nobody drains
//! (a stuck log driver, a paused pipe) never stalls the runtime: control answers, QMP, signals
//! and shutdown go on. A line that does not fit in the queue is dropped and counted; when the
//! writer catches up it says how many ("N log lines dropped: stdout was not drained"). At exit
//! [`finish`] waits a bounded time for the queue to drain, then gives up (stderr says what was
//! lost). It never writes to stdout from the caller's thread once [`init`] ran, and never takes
//! std's stdout lock. A leaf: it imports nothing of the crate.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How many lines (log events or console lines, each at most a few KiB) may wait for stdout.
pub const QUEUE_LINES: usize = 2048;

/// How long the exit waits for queued lines to reach stdout before it exits anyway.
pub const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// What the writer thread calls with the number of lines dropped, once it caught up.
type Report = Box<dyn Fn(u64) + Send>;

/// A bounded queue of lines and the thread that writes them to a sink.
pub struct Queue {
    tx: SyncSender<Vec<u8>>,
    /// Lines queued and not yet written.
    pending: AtomicUsize,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
    /// Lines dropped in all.
    total: AtomicU64,
}

impl Queue {
    /// A queue of at most `limit` lines written to `sink` by a new thread; `report` is called
    /// on that thread with the count of lines dropped when the queue is half empty again.
    pub fn new(limit: usize, mut sink: impl Write + Send + 'static, report: Report) -> Arc<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(limit);
        let q = Arc::new(Queue {
            tx,
            pending: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            total: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&q);
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                // This thread only writes stdout: it holds no capability (capabilities are per
                // thread; the launcher's runtime thread drops its own once set up).
                let _ = crate::sandbox::caps::set(Default::default());
                while let Ok(line) = rx.recv() {
                    let _ = sink.write_all(&line).and_then(|()| sink.flush());
                    let Some(q) = weak.upgrade() else { return };
                    let left = q.pending.fetch_sub(1, Ordering::SeqCst) - 1;
                    if left <= limit / 2 {
                        let n = q.dropped.swap(0, Ordering::SeqCst);
                        if n > 0 {
                            report(n);
                        }
                    }
                }
            })
            .expect("spawn the stdout writer thread");
        q
    }

    /// Queues `line` without ever waiting: when the queue is full the line is dropped and
    /// counted.
    pub fn push(&self, line: Vec<u8>) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.dropped.fetch_add(1, Ordering::SeqCst);
                self.total.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Lines dropped since the start.
    pub fn dropped_total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Waits until every queued line is written or `within` passed; the lines still queued
    /// (0: all written).
    pub fn drain(&self, within: Duration) -> usize {
        let end = Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.pending.load(Ordering::SeqCst)
    }

    /// The dropped lines not reported yet (taken: the writer will not report them again).
    pub fn take_unreported(&self) -> u64 {
        self.dropped.swap(0, Ordering::SeqCst)
    }

    /// A writer whose lines go to this queue.
    pub fn line(self: &Arc<Self>) -> Line {
        Line {
            buf: Vec::new(),
            queue: Some(self.clone()),
        }
    }
}

/// A writer that queues what it is given, one item per line (or per event: what ends with a
/// newline is queued at once, the rest when it is dropped or flushed). Without a queue (before
/// [`init`], in unit tests) it writes to stdout directly.
pub struct Line {
    buf: Vec<u8>,
    queue: Option<Arc<Queue>>,
}

impl Line {
    fn send(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.buf);
        match &self.queue {
            Some(q) => q.push(bytes),
            None => {
                let _ = std::io::stdout().write_all(&bytes);
            }
        }
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.ends_with(b"\n") {
            self.send();
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send();
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.send();
    }
}

static STDOUT: OnceLock<Arc<Queue>> = OnceLock::new();

/// Starts the stdout writer thread; from now on [`stdout`] never blocks. The drop report is a
/// warning in the log (so it has the log's format).
pub fn init() {
    STDOUT.get_or_init(|| {
        // A duplicate of fd 1, so writing never takes std's stdout lock (std's exit flush
        // takes it; a writer stuck on a full pipe must not hold it).
        let sink: Box<dyn Write + Send> =
            match std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
                Ok(fd) => Box::new(std::fs::File::from(fd)),
                Err(_) => Box::new(std::io::sink()),
            };
        Queue::new(
            QUEUE_LINES,
            sink,
            Box::new(|n| tracing::warn!("{n} log lines dropped: stdout was not drained")),
        )
    });
}

/// A writer to stdout through the queue (directly before [`init`]).
pub fn stdout() -> Line {
    Line {
        buf: Vec::new(),
        queue: STDOUT.get().cloned(),
    }
}

/// Lines dropped since the start because stdout was not drained (0 before [`init`]); what
/// `launcher status` shows.
pub fn dropped() -> u64 {
    STDOUT.get().map_or(0, |q| q.dropped_total())
}

/// At exit: waits at most [`EXIT_FLUSH`] for the queued lines, then says on stderr what did
/// not reach stdout. Never blocks longer, even if stdout is stuck.
pub fn finish() {
    let Some(q) = STDOUT.get() else { return };
    let left = q.drain(EXIT_FLUSH);
    let dropped = q.take_unreported();
    if dropped > 0 {
        eprintln!("launcher: {dropped} log lines dropped: stdout was not drained");
    }
    if left > 0 {
        eprintln!("launcher: {left} log lines not written at exit: stdout was not drained");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::Mutex;

    /// A sink that blocks every write until the test sends a go (a stuck stdout).
    struct Stuck {
        go: Receiver<()>,
        out: Arc<Mutex<Vec<u8>>>,
    }
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.go.recv();
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_drops_and_counts_without_blocking_then_reports_once_drained() {
        let (go_tx, go) = channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (rep_tx, reports) = channel();
        let q = Queue::new(
            4,
            Stuck {
                go,
                out: out.clone(),
            },
            Box::new(move |n| rep_tx.send(n).unwrap()),
        );
        let t = Instant::now();
        for i in 0..1000 {
            writeln!(q.line(), "line {i}").unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // At most the queue plus the line the writer holds got through.
        let dropped = q.dropped_total();
        assert!((1000 - 5..=1000 - 4).contains(&dropped), "{dropped}");
        // A stuck sink: the exit drain gives up at its deadline.
        let t = Instant::now();
        let left = q.drain(Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(left >= 4, "{left}");
        // The sink moves again: every queued line is written, and the count reported.
        for _ in 0..10 {
            go_tx.send(()).unwrap();
        }
        let n = reports.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(n, dropped);
        assert_eq!(q.drain(Duration::from_secs(5)), 0);
        assert_eq!(q.take_unreported(), 0, "reported once");
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("line 0\n"), "{text}");
        assert_eq!(text.lines().count() as u64, 1000 - dropped);
    }

    #[test]
    fn one_event_written_in_pieces_is_one_line() {
        let (rep_tx, _reports) = channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (go_tx, go) = channel();
        let q = Queue::new(
            8,
            Stuck {
                go,
                out: out.clone(),
            },
            Box::new(move |n| rep_tx.send(n).unwrap()),
        );
        let mut w = q.line();
        write!(w, "con").unwrap();
        write!(w, "sole: ").unwrap();
        writeln!(w, "hello").unwrap();
        write!(w, "partial").unwrap();
        drop(w);
        go_tx.send(()).unwrap();
        go_tx.send(()).unwrap();
        assert_eq!(q.drain(Duration::from_secs(5)), 0);
        assert_eq!(&*out.lock().unwrap(), b"console: hello\npartial");
    }
}
