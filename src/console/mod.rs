//! The VM's serial console, owned in one place. The launcher listens on the serial socket and
//! each qemu it starts connects to it, so the console (its log, its clients) outlives a qemu
//! restart and no early output is lost. Every line goes to stdout marked `console:` (docker
//! logs) and to the log file; the bytes fan out to telnet clients (vrnetlab's port 5000) and to
//! `launcher console` clients, who may all type, except while the bootstrap holds the write side.

pub mod bootstrap;

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{broadcast, mpsc};

/// How much recent output a newly attached client is shown first.
const HISTORY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on serial socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open console log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on telnet port {port}: {source}")]
    Telnet { port: u16, source: std::io::Error },
}

/// What the console tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// The readiness pattern was seen (once per qemu connection).
    ReadyPattern(String),
}

/// A handle on the console: read what the VM prints, write to it, hold its write side.
#[derive(Clone)]
pub struct Hub {
    to_vm: mpsc::UnboundedSender<Vec<u8>>,
    from_vm: broadcast::Sender<Arc<[u8]>>,
    history: Arc<Mutex<VecDeque<u8>>>,
    held: Arc<AtomicBool>,
}

impl Hub {
    /// Every byte the VM prints from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.from_vm.subscribe()
    }
    /// Writes to the VM, whoever holds the console (the bootstrap uses this).
    pub fn write(&self, bytes: &[u8]) {
        let _ = self.to_vm.send(bytes.to_vec());
    }
    /// While held, human input is discarded (readers still see everything).
    pub fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
    }
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
    fn history(&self) -> Vec<u8> {
        self.history.lock().unwrap().iter().copied().collect()
    }

    /// Serves one interactive client (telnet or `launcher console`) until it leaves.
    pub async fn attach<S: AsyncRead + AsyncWrite + Send + 'static>(
        &self,
        stream: S,
        telnet: bool,
    ) {
        let (mut r, mut w) = tokio::io::split(stream);
        let mut rx = self.subscribe();
        if telnet {
            // IAC WILL ECHO, IAC WILL SUPPRESS-GO-AHEAD: character mode, the VM echoes.
            let _ = w.write_all(&[255, 251, 1, 255, 251, 3]).await;
        }
        let _ = w.write_all(&self.history()).await;
        let out = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(b) => {
                        if w.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        let mut buf = [0u8; 1024];
        let mut filter = TelnetFilter::default();
        let mut warned = false;
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let data = if telnet {
                filter.feed(&buf[..n])
            } else {
                buf[..n].to_vec()
            };
            if data.is_empty() {
                continue;
            }
            if self.is_held() {
                if !warned {
                    warned = true;
                    tracing::info!("console input ignored: the bootstrap holds the console");
                }
                continue;
            }
            warned = false;
            self.write(&data);
        }
        out.abort();
    }
}

/// Strips telnet negotiation from client input and turns CR NUL / CR LF into CR.
#[derive(Default)]
pub struct TelnetFilter {
    state: u8, // 0 data, 1 after IAC, 2 option byte follows, 3 in subnegotiation, 4 IAC in SB, 5 after CR
}

impl TelnetFilter {
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            match (self.state, b) {
                (0, 255) => self.state = 1,
                (0, b'\r') => {
                    out.push(b'\r');
                    self.state = 5;
                }
                (0, b) => out.push(b),
                (5, 0) | (5, b'\n') => self.state = 0,
                (5, 255) => self.state = 1,
                (5, b) => {
                    self.state = 0;
                    if b == b'\r' {
                        self.state = 5;
                    }
                    out.push(b);
                }
                (1, 255) => {
                    out.push(255);
                    self.state = 0;
                }
                (1, 251..=254) => self.state = 2,
                (1, 250) => self.state = 3,
                (1, _) => self.state = 0,
                (2, _) => self.state = 0,
                (3, 255) => self.state = 4,
                (3, _) => {}
                (4, 240) => self.state = 0,
                (4, _) => self.state = 3,
                _ => self.state = 0,
            }
        }
        out
    }
}

/// Starts the owner of one serial port: binds `socket` for qemu, appends to `log`, prints
/// lines to stdout after `label`, serves telnet on `telnet` (0 = off). Reports readiness on the
/// returned channel.
pub async fn start(
    label: &str,
    socket: &Path,
    log: &Path,
    ready: Option<String>,
    telnet: u16,
) -> Result<(Hub, mpsc::UnboundedReceiver<ConsoleEvent>), ConsoleError> {
    if let Some(d) = socket.parent() {
        std::fs::create_dir_all(d).map_err(|source| ConsoleError::Listen {
            path: socket.into(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|source| ConsoleError::Listen {
        path: socket.into(),
        source,
    })?;
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d).map_err(|source| ConsoleError::Log {
            path: log.into(),
            source,
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ConsoleError::Log {
            path: log.into(),
            source,
        })?;
    let telnet_listener = if telnet != 0 {
        Some(
            TcpListener::bind(("0.0.0.0", telnet))
                .await
                .map_err(|source| ConsoleError::Telnet {
                    port: telnet,
                    source,
                })?,
        )
    } else {
        None
    };

    let (to_vm, mut to_vm_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (from_vm, _) = broadcast::channel(1024);
    let hub = Hub {
        to_vm,
        from_vm,
        history: Default::default(),
        held: Default::default(),
    };
    let (tx, rx) = mpsc::unbounded_channel();

    // The write side of the current qemu connection.
    let writer: Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>> = Default::default();
    let w2 = writer.clone();
    tokio::spawn(async move {
        while let Some(bytes) = to_vm_rx.recv().await {
            let mut w = w2.lock().await;
            if let Some(conn) = w.as_mut() {
                if conn.write_all(&bytes).await.is_err() {
                    *w = None;
                }
            }
        }
    });

    let h = hub.clone();
    let label = label.to_string();
    tokio::spawn(async move {
        let mut lines = LineSplitter {
            label,
            file,
            line: Vec::new(),
            ready,
            seen: false,
            tx,
        };
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            tracing::debug!("qemu connected to the serial console");
            let (mut r, w) = conn.into_split();
            *writer.lock().await = Some(w);
            lines.seen = false;
            let mut buf = [0u8; 4096];
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &buf[..n];
                {
                    let mut hist = h.history.lock().unwrap();
                    hist.extend(chunk);
                    let excess = hist.len().saturating_sub(HISTORY);
                    hist.drain(..excess);
                }
                let _ = h.from_vm.send(Arc::from(chunk));
                lines.feed(chunk);
            }
            lines.flush();
            *writer.lock().await = None;
            tracing::debug!("qemu left the serial console");
        }
    });

    if let Some(tl) = telnet_listener {
        let h = hub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((conn, peer)) = tl.accept().await else {
                    continue;
                };
                tracing::info!(%peer, "telnet console client attached");
                let h = h.clone();
                tokio::spawn(async move {
                    let _ = conn.set_nodelay(true);
                    h.attach(conn, true).await;
                    tracing::info!(%peer, "telnet console client left");
                });
            }
        });
    }
    Ok((hub, rx))
}

/// Splits console bytes into lines for docker logs, appends raw bytes to the log file, and
/// watches for the readiness pattern (also in a partial line: a prompt has no newline).
struct LineSplitter {
    label: String,
    file: std::fs::File,
    line: Vec<u8>,
    ready: Option<String>,
    seen: bool,
    tx: mpsc::UnboundedSender<ConsoleEvent>,
}

impl LineSplitter {
    fn feed(&mut self, chunk: &[u8]) {
        let _ = self.file.write_all(chunk);
        for &b in chunk {
            if b == b'\n' {
                self.check();
                self.emit();
            } else if b != b'\r' {
                self.line.push(b);
            }
        }
        self.check();
    }
    fn check(&mut self) {
        if let Some(p) = &self.ready {
            if !self.seen && String::from_utf8_lossy(&self.line).contains(p.as_str()) {
                self.seen = true;
                let _ = self.tx.send(ConsoleEvent::ReadyPattern(p.clone()));
            }
        }
    }
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}: {text}", self.label);
        self.line.clear();
    }
    fn flush(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telnet_negotiation_is_stripped() {
        let mut f = TelnetFilter::default();
        // IAC DO ECHO, "ls", CR NUL, IAC SB ... IAC SE, IAC IAC, "x", CR LF
        let input = [
            255, 253, 1, b'l', b's', b'\r', 0, 255, 250, 24, 1, 255, 240, 255, 255, b'x', b'\r',
            b'\n',
        ];
        assert_eq!(f.feed(&input), vec![b'l', b's', b'\r', 255, b'x', b'\r']);
        // Split across reads.
        let mut f = TelnetFilter::default();
        let mut out = f.feed(&[b'a', 255]);
        out.extend(f.feed(&[251]));
        out.extend(f.feed(&[3, b'b', b'\r']));
        out.extend(f.feed(&[0, b'c']));
        assert_eq!(out, b"ab\rc");
    }
}
