//! The VM's serial console, owned in one place. The launcher listens on the serial socket and
//! each qemu it starts connects to it, so the console (its log, its clients) outlives a qemu
//! restart and no early output is lost. Every line goes to stdout marked `console:` (docker
//! logs; through `logout`'s queue, never blocking) and to the log file; the bytes fan out to
//! telnet clients (vrnetlab's port 5000) and to `launcher console` clients, who may all type,
//! except while the bootstrap holds the write side.
//! This module owns the serial socket and the hub (history, fan-out, the hold, the bounded queue
//! towards the VM, the channel of the bootstrap's key presses to the supervisor); the log file, docker-logs lines and ready pattern live in `lines`, telnet in
//! [`telnet`], the scripted user in [`bootstrap`]. It never starts qemu and never decides what a
//! console event means for the VM's state.

pub mod bootstrap;
mod lines;
mod logfile;
pub mod telnet;

pub use lines::{CUT_MARK, MAX_LINE};
pub use telnet::TelnetFilter;

pub(crate) use lines::LineSplitter;
use logfile::RotatingLog;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{broadcast, mpsc};

/// How much recent output a newly attached client is shown first.
const HISTORY: usize = 4096;

/// How many writes (a client's read of at most 1 KiB, a bootstrap line) may wait for the serial
/// line. When the VM does not read, writers wait for room, so a telnet client is no longer read
/// and TCP pushes back on it; the launcher's memory stays bounded.
pub const TO_VM_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on serial socket {path}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open console log {path}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on telnet port {port}")]
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
    to_vm: mpsc::Sender<Vec<u8>>,
    from_vm: broadcast::Sender<Arc<[u8]>>,
    history: Arc<Mutex<VecDeque<u8>>>,
    held: Arc<AtomicBool>,
    /// The guest booted again (a reset, a reboot): its ready pattern counts again.
    rearm: Arc<AtomicBool>,
    /// The bootstrap step running now, plus one (0: none has started).
    step: Arc<AtomicUsize>,
    /// Where key presses go (the supervisor, which has QMP), once it asked for them.
    keys: Arc<Mutex<Option<mpsc::UnboundedSender<KeyPress>>>>,
}

/// Keys to press together on the VM's keyboard (qemu's names), and where to say how it went.
pub struct KeyPress {
    pub keys: Vec<String>,
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl Hub {
    /// A hub and the receiving end of what is written to the VM.
    fn new() -> (Hub, mpsc::Receiver<Vec<u8>>) {
        let (to_vm, to_vm_rx) = mpsc::channel::<Vec<u8>>(TO_VM_QUEUE);
        let (from_vm, _) = broadcast::channel(1024);
        let hub = Hub {
            to_vm,
            from_vm,
            history: Arc::default(),
            held: Arc::default(),
            rearm: Arc::default(),
            step: Arc::default(),
            keys: Arc::default(),
        };
        (hub, to_vm_rx)
    }
    /// Every byte the VM prints from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[u8]>> {
        self.from_vm.subscribe()
    }
    /// Writes to the VM, whoever holds the console (the bootstrap uses this); waits while
    /// [`TO_VM_QUEUE`] writes are already waiting for the serial line.
    pub async fn write(&self, bytes: &[u8]) {
        let _ = self.to_vm.send(bytes.to_vec()).await;
    }
    /// While held, human input is discarded (readers still see everything).
    pub fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
    }
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }
    /// The guest is booting again on the same qemu connection (a reset or a reboot): the ready
    /// pattern is looked for again, as for a new qemu.
    pub fn rearm_ready(&self) {
        self.rearm.store(true, Ordering::SeqCst);
    }
    /// The bootstrap step (from 0) that ran last on this console, if any did: what a guest
    /// that died was being asked.
    pub fn bootstrap_step(&self) -> Option<usize> {
        self.step.load(Ordering::SeqCst).checked_sub(1)
    }
    fn set_bootstrap_step(&self, step: usize) {
        self.step.store(step + 1, Ordering::SeqCst);
    }
    /// The key presses the bootstrap asks for from now on (the supervisor presses them
    /// through QMP): each call replaces the previous receiver.
    pub fn key_presses(&self) -> mpsc::UnboundedReceiver<KeyPress> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.keys.lock().unwrap() = Some(tx);
        rx
    }
    /// Presses `keys` together, through whoever took [`Hub::key_presses`]; Err says why not.
    pub async fn press(&self, keys: &[String]) -> Result<(), String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let sent = self.keys.lock().unwrap().as_ref().map(|tx| {
            tx.send(KeyPress {
                keys: keys.to_vec(),
                done,
            })
            .is_ok()
        });
        if sent != Some(true) {
            return Err("no keyboard attached to this console".into());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the key press was dropped (qemu gone)".into()),
            Err(_) => Err("no answer to the key press within 10 s".into()),
        }
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
            // Waits while the queue is full: this client is not read meanwhile (backpressure).
            self.write(&data).await;
        }
        out.abort();
    }
}

/// A serial port's log file and its rotation: at `max_size` bytes (0: never) it becomes
/// `path.1`, keeping `keep` such files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub max_size: u64,
    pub keep: u32,
}

impl LogFile {
    /// The log of `plan`'s serial port `n` (0 = the console) with the `[console]` rotation.
    pub fn of(plan: &crate::config::VmPlan, n: u32) -> Self {
        LogFile {
            path: plan.serial_log(n),
            max_size: plan.console.log_max_size,
            keep: plan.console.log_keep,
        }
    }
}

/// Starts the owner of one serial port: binds `socket` for qemu, appends to `log`, prints
/// lines to stdout after `label`, serves telnet on `telnet` (0 = off). Reports readiness on the
/// returned channel: `ready` is a literal substring of a line (not a regex, unlike the
/// bootstrap's `expect`).
pub async fn start(
    label: &str,
    socket: &Path,
    log: &LogFile,
    ready: Option<String>,
    telnet: u16,
) -> Result<(Hub, mpsc::UnboundedReceiver<ConsoleEvent>), ConsoleError> {
    let listener = bind_serial(socket)?;
    let file = open_log(log)?;
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

    let (hub, to_vm_rx) = Hub::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let lines = LineSplitter::new(label, file, crate::logout::stdout(), ready, tx);
    let writer = Writer::default();
    tokio::spawn(forward_to_vm(to_vm_rx, writer.clone()));
    tokio::spawn(own_serial(listener, hub.clone(), writer, lines));
    if let Some(tl) = telnet_listener {
        tokio::spawn(telnet::serve(tl, hub.clone()));
    }
    Ok((hub, rx))
}

/// The write side of the current qemu connection (none between two qemus).
type Writer = Arc<tokio::sync::Mutex<Option<OwnedWriteHalf>>>;

fn bind_serial(socket: &Path) -> Result<UnixListener, ConsoleError> {
    let err = |source| ConsoleError::Listen {
        path: socket.into(),
        source,
    };
    if let Some(d) = socket.parent() {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    let _ = std::fs::remove_file(socket);
    UnixListener::bind(socket).map_err(err)
}

fn open_log(log: &LogFile) -> Result<RotatingLog, ConsoleError> {
    RotatingLog::open(&log.path, log.max_size, log.keep).map_err(|source| ConsoleError::Log {
        path: log.path.clone(),
        source,
    })
}

/// Writes what clients and the bootstrap send to the qemu connected now (dropped when none is).
async fn forward_to_vm(mut to_vm: mpsc::Receiver<Vec<u8>>, writer: Writer) {
    while let Some(bytes) = to_vm.recv().await {
        let mut w = writer.lock().await;
        if let Some(conn) = w.as_mut() {
            if conn.write_all(&bytes).await.is_err() {
                *w = None;
            }
        }
    }
}

/// Accepts each qemu in turn on the serial socket, for the launcher's life, and fans out what
/// it prints: history, subscribers, the log file and docker logs.
async fn own_serial(
    listener: UnixListener,
    hub: Hub,
    writer: Writer,
    mut lines: LineSplitter<RotatingLog, crate::logout::Line>,
) {
    let mut failures = 0;
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => {
                failures = 0;
                conn
            }
            Err(error) => {
                failures += 1;
                let pause = telnet::accept_backoff(failures);
                tracing::warn!(%error, ?pause, "serial console: accept failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        tracing::debug!("qemu connected to the serial console");
        let (mut r, w) = conn.into_split();
        *writer.lock().await = Some(w);
        lines.new_connection();
        let mut buf = [0u8; 4096];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            {
                let mut hist = hub.history.lock().unwrap();
                hist.extend(chunk);
                let excess = hist.len().saturating_sub(HISTORY);
                hist.drain(..excess);
            }
            let _ = hub.from_vm.send(Arc::from(chunk));
            if hub.rearm.swap(false, Ordering::SeqCst) {
                lines.new_connection();
            }
            lines.feed(chunk);
        }
        lines.flush();
        *writer.lock().await = None;
        tracing::debug!("qemu left the serial console");
    }
}
