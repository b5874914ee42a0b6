//! The console's text side: [`LineSplitter`] turns the serial bytes into `label: text` lines for
//! docker logs, appends the raw bytes to the log file and watches for the readiness pattern.
//! Its cost is linear in the bytes and its memory bounded, whatever the VM prints: a line longer
//! than [`MAX_LINE`] bytes is cut (each cut piece printed marked [`CUT_MARK`]), and the pattern
//! is searched in the new bytes plus an overlap of its length - 1, never in the whole line again.

use crate::console::ConsoleEvent;
use std::io::Write;
use tokio::sync::mpsc;

/// The longest line printed whole; longer ones are printed in pieces of this many bytes.
pub const MAX_LINE: usize = 4096;

/// What ends a printed piece of a line that was cut (the line goes on in the next one).
pub const CUT_MARK: &str = " [cut]";

/// The readiness pattern, a literal substring, and where the search stands in the current line.
struct Ready {
    text: String,
    /// The pattern as a literal byte regex (a linear substring search).
    re: regex::bytes::Regex,
    /// Bytes of the current piece already searched.
    searched: usize,
    /// The last `len - 1` bytes of the pieces already cut from the current line, so a pattern
    /// that straddles a cut is still seen.
    carry: Vec<u8>,
}

impl Ready {
    fn new(text: String) -> Self {
        let re = regex::bytes::Regex::new(&regex::escape(&text))
            .expect("an escaped literal is a valid regex");
        Ready {
            text,
            re,
            searched: 0,
            carry: Vec::new(),
        }
    }
    fn overlap(&self) -> usize {
        self.text.len().saturating_sub(1)
    }
    /// Whether the pattern ends in the bytes of `piece` not searched yet (or across the cut
    /// before them); each byte is searched at most `overlap + 1` times.
    fn found(&mut self, piece: &[u8]) -> bool {
        let k = self.overlap();
        let start = self.searched.min(piece.len()).saturating_sub(k);
        let mut hit = self.re.is_match(&piece[start..]);
        if !hit && !self.carry.is_empty() && self.searched < k {
            let mut window = self.carry.clone();
            window.extend_from_slice(&piece[..piece.len().min(k)]);
            hit = self.re.is_match(&window);
        }
        self.searched = piece.len();
        hit
    }
    /// The current piece is cut: keep its tail (after the older carry) for the overlap.
    fn cut(&mut self, piece: &[u8]) {
        let k = self.overlap();
        self.carry.extend_from_slice(piece);
        let excess = self.carry.len().saturating_sub(k);
        self.carry.drain(..excess);
        self.searched = 0;
    }
    /// The line ended: nothing carries over.
    fn newline(&mut self) {
        self.carry.clear();
        self.searched = 0;
    }
}

/// Splits console bytes into lines for docker logs (`label: text` on `out`), appends raw bytes
/// to the log file, and watches for the readiness pattern (also in a partial line: a prompt has
/// no newline; never across two lines), once per qemu connection.
pub(crate) struct LineSplitter<L: Write, O: Write> {
    label: String,
    log: L,
    out: O,
    line: Vec<u8>,
    ready: Option<Ready>,
    seen: bool,
    tx: mpsc::UnboundedSender<ConsoleEvent>,
}

impl<L: Write, O: Write> LineSplitter<L, O> {
    pub(crate) fn new(
        label: &str,
        log: L,
        out: O,
        ready: Option<String>,
        tx: mpsc::UnboundedSender<ConsoleEvent>,
    ) -> Self {
        LineSplitter {
            label: label.to_string(),
            log,
            out,
            line: Vec::with_capacity(MAX_LINE),
            ready: ready.map(Ready::new),
            seen: false,
            tx,
        }
    }
    /// A new qemu connected: its readiness pattern counts again.
    pub(crate) fn new_connection(&mut self) {
        self.seen = false;
    }
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        let _ = self.log.write_all(chunk);
        for &b in chunk {
            if b == b'\n' {
                self.check();
                self.emit("");
                if let Some(r) = &mut self.ready {
                    r.newline();
                }
            } else if b != b'\r' {
                self.line.push(b);
                if self.line.len() >= MAX_LINE {
                    self.check();
                    if let Some(r) = &mut self.ready {
                        r.cut(&self.line);
                    }
                    self.emit(CUT_MARK);
                }
            }
        }
        self.check();
    }
    fn check(&mut self) {
        let Some(r) = &mut self.ready else { return };
        if !self.seen && r.found(&self.line) {
            self.seen = true;
            let _ = self.tx.send(ConsoleEvent::ReadyPattern(r.text.clone()));
        }
    }
    fn emit(&mut self, mark: &str) {
        let text = String::from_utf8_lossy(&self.line);
        let _ = writeln!(self.out, "{}: {text}{mark}", self.label);
        self.line.clear();
    }
    /// The log and output writers back (for the fuzz checks in `crate::fuzzing`).
    pub(crate) fn into_parts(self) -> (L, O) {
        (self.log, self.out)
    }
    /// The connection ended: a partial line is printed, the log flushed.
    pub(crate) fn flush(&mut self) {
        if !self.line.is_empty() {
            self.emit("");
        }
        if let Some(r) = &mut self.ready {
            r.newline();
        }
        let _ = self.log.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Splitter = LineSplitter<Vec<u8>, Vec<u8>>;

    fn splitter(ready: Option<&str>) -> (Splitter, mpsc::UnboundedReceiver<ConsoleEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = LineSplitter::new("console", Vec::new(), Vec::new(), ready.map(Into::into), tx);
        (s, rx)
    }

    fn events(rx: &mut mpsc::UnboundedReceiver<ConsoleEvent>) -> Vec<ConsoleEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn lines_are_labelled_without_carriage_returns_and_the_log_gets_raw_bytes() {
        let (mut s, _rx) = splitter(None);
        s.feed(b"boot\r\nhel");
        s.feed(b"lo\r\r\nlogin: ");
        assert_eq!(
            String::from_utf8_lossy(&s.out),
            "console: boot\nconsole: hello\n"
        );
        // A partial line waits for its newline, or for the connection to end.
        s.flush();
        assert_eq!(
            String::from_utf8_lossy(&s.out),
            "console: boot\nconsole: hello\nconsole: login: \n"
        );
        assert_eq!(s.log, b"boot\r\nhello\r\r\nlogin: ");
        // Nothing is printed twice.
        s.flush();
        assert_eq!(String::from_utf8_lossy(&s.out).lines().count(), 3);
    }

    #[test]
    fn the_ready_pattern_is_seen_once_per_connection_even_in_a_partial_line_or_split() {
        let (mut s, mut rx) = splitter(Some("READY"));
        s.feed(b"not yet\nRE");
        assert!(events(&mut rx).is_empty());
        s.feed(b"ADY r1");
        assert_eq!(
            events(&mut rx),
            vec![ConsoleEvent::ReadyPattern("READY".into())]
        );
        s.feed(b"\nREADY again\n");
        assert!(events(&mut rx).is_empty(), "once per connection");
        s.flush();
        s.new_connection();
        s.feed(b"READY after a restart\n");
        assert_eq!(events(&mut rx).len(), 1);
    }

    #[test]
    fn the_pattern_does_not_span_two_lines() {
        let (mut s, mut rx) = splitter(Some("AB"));
        s.feed(b"xA\nBx\n");
        assert!(events(&mut rx).is_empty());
    }

    #[test]
    fn other_labels_name_their_port() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut s = LineSplitter::new("ttyS2", Vec::new(), Vec::new(), None, tx);
        s.feed(b"tinylinux: hello on ttyS2\n");
        assert_eq!(s.out, b"ttyS2: tinylinux: hello on ttyS2\n");
    }
}

#[cfg(test)]
mod limits {
    use super::*;
    use std::time::{Duration, Instant};

    type Splitter = LineSplitter<std::io::Sink, Vec<u8>>;

    fn splitter(ready: &str) -> (Splitter, mpsc::UnboundedReceiver<ConsoleEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = LineSplitter::new(
            "console",
            std::io::sink(),
            Vec::new(),
            Some(ready.into()),
            tx,
        );
        (s, rx)
    }

    #[test]
    fn a_long_line_is_printed_in_marked_pieces_and_its_buffer_stays_bounded() {
        let (mut s, _rx) = splitter("NEVER");
        s.feed(&vec![b'x'; 2 * MAX_LINE + 10]);
        s.feed(b"yz\n");
        let out = String::from_utf8(std::mem::take(&mut s.out)).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let piece = format!("console: {}{CUT_MARK}", "x".repeat(MAX_LINE));
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!((lines[0], lines[1]), (piece.as_str(), piece.as_str()));
        assert_eq!(
            lines[2], "console: xxxxxxxxxxyz",
            "the last piece is unmarked"
        );
        // 10 MB without a newline: the line buffer never grows past one piece.
        let chunk = vec![b'.'; 4096];
        for _ in 0..2560 {
            s.feed(&chunk);
        }
        assert!(s.line.capacity() <= MAX_LINE, "{}", s.line.capacity());
        assert!(s.ready.as_ref().unwrap().carry.len() < "NEVER".len());
    }

    #[test]
    fn the_ready_pattern_is_seen_across_a_cut_and_only_once() {
        for at in [MAX_LINE - 3, MAX_LINE - 1, MAX_LINE, 2 * MAX_LINE - 2] {
            let (mut s, mut rx) = splitter("READY");
            let mut text = vec![b'-'; at];
            text.extend_from_slice(b"READY---");
            // Fed one byte at a time and in one go: the same answer.
            for bytes in [1, text.len()] {
                let (mut s2, mut rx2) = splitter("READY");
                text.chunks(bytes).for_each(|c| s2.feed(c));
                assert!(rx2.try_recv().is_ok(), "at {at}, by {bytes}");
            }
            s.feed(&text);
            assert!(rx.try_recv().is_ok(), "at {at}");
            assert!(rx.try_recv().is_err(), "once");
        }
        // Never across two lines, nor across a line end that follows a cut.
        let (mut s, mut rx) = splitter("READY");
        let mut text = vec![b'-'; MAX_LINE - 2];
        text.extend_from_slice(b"RE\nADY");
        s.feed(&text);
        assert!(rx.try_recv().is_err());
    }

    /// How long `chunks` take to go through a splitter watching for a pattern that never shows.
    fn time(chunks: &[Vec<u8>]) -> Duration {
        let (mut s, _rx) = splitter("TINYLINUX-READY");
        let t = Instant::now();
        chunks.iter().for_each(|c| s.feed(c));
        t.elapsed()
    }

    #[test]
    fn ten_megabytes_without_a_newline_cost_about_what_ten_megabytes_of_lines_cost() {
        let lines: Vec<Vec<u8>> = (0..2560)
            .map(|_| b"0123456789abcdefghijklmnopqrstuvwxyz.....................\n".repeat(70))
            .map(|mut v| {
                v.truncate(4096);
                v
            })
            .collect();
        let dots = vec![vec![b'.'; 4096]; 2560];
        let baseline = time(&lines);
        let flood = time(&dots);
        println!("10 MB: lines {baseline:?}, no newline {flood:?}");
        assert!(
            flood < baseline * 4 + Duration::from_millis(50),
            "no newline {flood:?} vs lines {baseline:?}: not linear"
        );
    }
}
