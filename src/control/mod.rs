//! The control socket: `launcher status` and `launcher health` (run through `docker exec`) ask
//! the running launcher over a Unix socket (mode 0600). The server answers from one shared
//! snapshot plus fresh link counters; it never changes state.

use crate::console::Hub;
use crate::net::links::{LinkStatus, Table};
use crate::net::netlink::{LinkInfo, Netlink};
use crate::state::{Lifecycle, State};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const DEFAULT_SOCKET: &str = "/run/launcher/control.sock";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on control socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the launcher at {path}: {source} (is it running? LAUNCHER_SOCKET overrides the path)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad answer from the launcher at {path}: {why}")]
    Answer { path: PathBuf, why: String },
    #[error("the launcher refused: {0}")]
    Refused(String),
}

/// What the supervisor publishes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub name: String,
    /// The node's state: with one VM, that VM's; with several, derived from theirs.
    pub lifecycle: Lifecycle,
    pub accel: String,
    /// The first VM's qemu.
    pub qemu_pid: Option<i32>,
    pub vms: Vec<VmSnapshot>,
}

/// One VM of the node.
#[derive(Debug, Clone, Default)]
pub struct VmSnapshot {
    pub name: String,
    pub lifecycle: Lifecycle,
    pub qemu_pid: Option<i32>,
    pub telnet_port: u16,
    /// How the VM is managed: "user 10.0.0.15/24, 11 forwards", "passthrough eth0 ...", "none".
    pub management: String,
}

pub type Shared = Arc<Mutex<Snapshot>>;

/// One data link with its live counters. "to_vm" counts what entered ethN (and went to the VM),
/// "from_vm" what the VM sent into tapN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkReport {
    pub port: u32,
    pub eth: String,
    pub tap: String,
    pub eth_ifindex: Option<u32>,
    pub tap_ifindex: u32,
    pub link_up: bool,
    pub mtu: u32,
    pub tap_mtu: u32,
    pub wired: bool,
    pub wirings: u32,
    pub to_vm_packets: u64,
    pub to_vm_bytes: u64,
    pub from_vm_packets: u64,
    pub from_vm_bytes: u64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub state: String,
    pub since: f64,
    pub reason: String,
    pub restarts: u32,
    pub healthy: bool,
    pub accel: String,
    pub qemu_pid: Option<i32>,
    pub links: Vec<LinkReport>,
    /// Each VM of the node (also for one VM).
    #[serde(default)]
    pub vms: Vec<VmReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmReport {
    pub name: String,
    pub state: String,
    pub since: f64,
    pub reason: String,
    pub restarts: u32,
    pub qemu_pid: Option<i32>,
    pub telnet_port: u16,
    #[serde(default)]
    pub management: String,
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Joins the link table with a fresh dump of the links (pure, for testing).
pub fn link_reports(rows: &[LinkStatus], live: &[LinkInfo]) -> Vec<LinkReport> {
    rows.iter()
        .map(|r| {
            let eth = r
                .eth_ifindex
                .and_then(|i| live.iter().find(|l| l.index == i));
            let tap = live.iter().find(|l| l.index == r.tap_ifindex);
            LinkReport {
                port: r.port,
                eth: r.eth.clone(),
                tap: r.tap.clone(),
                eth_ifindex: r.eth_ifindex,
                tap_ifindex: r.tap_ifindex,
                link_up: eth.map(|e| e.up && e.lower_up).unwrap_or(false),
                mtu: eth.map(|e| e.mtu).unwrap_or(0),
                tap_mtu: tap.map(|t| t.mtu).unwrap_or(0),
                wired: r.wired,
                wirings: r.wirings,
                to_vm_packets: eth.map(|e| e.rx_packets).unwrap_or(0),
                to_vm_bytes: eth.map(|e| e.rx_bytes).unwrap_or(0),
                from_vm_packets: tap.map(|t| t.rx_packets).unwrap_or(0),
                from_vm_bytes: tap.map(|t| t.rx_bytes).unwrap_or(0),
                error: r.last_error.clone(),
            }
        })
        .collect()
}

/// The socket path: LAUNCHER_SOCKET, else the default.
pub fn socket_path() -> PathBuf {
    std::env::var_os("LAUNCHER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The consoles `launcher console [VM]` can attach to, by VM name; the first is the default.
pub type Consoles = Arc<Vec<(String, Hub)>>;

/// Serves status, health and console sessions until the task is dropped.
pub async fn serve(
    path: PathBuf,
    snap: Shared,
    table: Option<Table>,
    nl: Option<Netlink>,
    consoles: Consoles,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ControlError::Listen {
            path: path.clone(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|source| ControlError::Listen {
        path: path.clone(),
        source,
    })?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Listen {
            path: path.clone(),
            source,
        }
    })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let snap = snap.clone();
            let table = table.clone();
            let nl = nl.clone();
            let consoles = consoles.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(conn, snap, table, nl, consoles).await {
                    tracing::debug!(error = %e, "control client");
                }
            });
        }
    }))
}

async fn answer(
    mut conn: UnixStream,
    snap: Shared,
    table: Option<Table>,
    nl: Option<Netlink>,
    consoles: Consoles,
) -> std::io::Result<()> {
    // The request line, read byte by byte so nothing after it is consumed (a console session
    // continues on the same stream).
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 && conn.read(&mut b).await? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let req = String::from_utf8_lossy(&line).trim().to_string();
    let (verb, arg) = match req.split_once(' ') {
        Some((v, a)) => (v, Some(a.trim())),
        None => (req.as_str(), None),
    };
    let body = match verb {
        "console" => {
            let hub = match arg {
                None => consoles.first(),
                Some(name) => consoles.iter().find(|(n, _)| n == name),
            };
            match hub {
                Some((name, hub)) => {
                    // The session starts with an empty line: the client knows it is attached.
                    conn.write_all(b"\n").await?;
                    tracing::info!(vm = %name, "console client attached");
                    hub.attach(conn, false).await;
                    tracing::info!(vm = %name, "console client left");
                    return Ok(());
                }
                None => {
                    let names: Vec<&str> = consoles.iter().map(|(n, _)| n.as_str()).collect();
                    format!(
                        "error: no VM {:?} here; VMs: {}",
                        arg.unwrap_or_default(),
                        names.join(", ")
                    )
                }
            }
        }
        "status" | "health" => {
            let report = build_report(&snap, table.as_ref(), nl.as_ref()).await;
            serde_json::to_string(&report).unwrap_or_default()
        }
        other => serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string(),
    };
    conn.write_all(body.as_bytes()).await?;
    conn.write_all(b"\n").await?;
    conn.shutdown().await
}

async fn build_report(snap: &Shared, table: Option<&Table>, nl: Option<&Netlink>) -> Report {
    let s = snap.lock().unwrap().clone();
    let rows = table.map(|t| t.lock().unwrap().clone()).unwrap_or_default();
    let live = match (nl, rows.is_empty()) {
        (Some(nl), false) => nl.links().await.unwrap_or_default(),
        _ => vec![],
    };
    Report {
        name: s.name,
        state: s.lifecycle.state.as_str().into(),
        since: secs(s.lifecycle.since),
        reason: s.lifecycle.reason,
        restarts: s.lifecycle.restarts,
        healthy: s.lifecycle.state == State::Ready,
        accel: s.accel,
        qemu_pid: s.qemu_pid,
        links: link_reports(&rows, &live),
        vms: s
            .vms
            .iter()
            .map(|v| VmReport {
                name: v.name.clone(),
                state: v.lifecycle.state.as_str().into(),
                since: secs(v.lifecycle.since),
                reason: v.lifecycle.reason.clone(),
                restarts: v.lifecycle.restarts,
                qemu_pid: v.qemu_pid,
                telnet_port: v.telnet_port,
                management: v.management.clone(),
            })
            .collect(),
    }
}

/// Connects to the launcher at `path` and sends one request line.
async fn request(path: &Path, what: &str) -> Result<UnixStream, ControlError> {
    let mut c = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.into(),
            source,
        })?;
    c.write_all(format!("{what}\n").as_bytes())
        .await
        .map_err(|e| ControlError::Answer {
            path: path.into(),
            why: e.to_string(),
        })?;
    Ok(c)
}

/// Client side: asks the launcher at `path` for a report.
pub async fn query(path: &Path, what: &str) -> Result<Report, ControlError> {
    let mut c = request(path, what).await?;
    let answer = |why: String| ControlError::Answer {
        path: path.into(),
        why,
    };
    let mut buf = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.read_to_string(&mut buf),
    )
    .await
    .map_err(|_| answer("timed out".into()))?
    .map_err(|e| answer(e.to_string()))?;
    serde_json::from_str(&buf).map_err(|e| answer(format!("{e}: {buf:?}")))
}

/// `launcher console [VM]`: attaches this terminal to a VM's console until Ctrl-] (or EOF).
pub async fn console(path: &Path, vm: Option<&str>) -> Result<(), ControlError> {
    let what = match vm {
        Some(v) => format!("console {v}"),
        None => "console".into(),
    };
    let c = request(path, &what).await?;
    let io = |e: std::io::Error| ControlError::Answer {
        path: path.into(),
        why: e.to_string(),
    };
    let (mut r, mut w) = c.into_split();
    // The first line: empty when attached, else why not.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while first.len() < 1024 && r.read(&mut b).await.map_err(io)? == 1 && b[0] != b'\n' {
        first.push(b[0]);
    }
    if !first.is_empty() {
        let why = String::from_utf8_lossy(&first).into_owned();
        return Err(ControlError::Refused(
            why.strip_prefix("error: ").unwrap_or(&why).to_string(),
        ));
    }
    let raw = RawTerminal::enter();
    eprint!("launcher: attached to the router console; Ctrl-] detaches\r\n");
    // stdin is read on a blocking thread; bytes arrive here.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => { std::io::Write::write_all(&mut out, &buf[..n]).map_err(io)?; std::io::Write::flush(&mut out).map_err(io)?; }
            },
            input = rx.recv() => match input {
                // Ctrl-] detaches, as in telnet.
                Some(bytes) => match bytes.iter().position(|&b| b == 0x1d) {
                    Some(i) => { w.write_all(&bytes[..i]).await.map_err(io)?; break; }
                    None => w.write_all(&bytes).await.map_err(io)?,
                },
                // stdin closed (a pipe): keep showing output briefly, then leave.
                None => { tokio::time::sleep(std::time::Duration::from_millis(500)).await; break; }
            },
        }
    }
    drop(raw);
    eprintln!("\r\nlauncher: detached");
    Ok(())
}

/// Puts the terminal in raw mode while alive (only when stdin is a terminal).
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawTerminal(Some(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// The human rendering of a report.
pub fn render(r: &Report) -> String {
    let age = (secs(SystemTime::now()) - r.since).max(0.0);
    let mut out = format!(
        "{}: {} for {:.0}s ({}), accel {}, qemu pid {}, restarts {}\n",
        r.name,
        r.state,
        age,
        r.reason,
        r.accel,
        r.qemu_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        r.restarts
    );
    if let [vm] = r.vms.as_slice() {
        out.push_str(&format!("management: {}\n", vm.management));
    }
    if r.vms.len() > 1 {
        out.push_str(&format!(
            "{:<12} {:<22} {:>8} {:>9} {:>7}  {:<40} {}\n",
            "VM", "STATE", "PID", "RESTARTS", "TELNET", "MANAGEMENT", "REASON"
        ));
        for v in &r.vms {
            out.push_str(&format!(
                "{:<12} {:<22} {:>8} {:>9} {:>7}  {:<40} {}\n",
                v.name,
                v.state,
                v.qemu_pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                v.restarts,
                if v.telnet_port == 0 {
                    "-".to_string()
                } else {
                    v.telnet_port.to_string()
                },
                v.management,
                v.reason
            ));
        }
    }
    if !r.links.is_empty() {
        out.push_str(&format!(
            "{:<5} {:<10} {:>7} {:<10} {:>7} {:<5} {:>5} {:<6} {:>20} {:>20}\n",
            "PORT",
            "ETH",
            "IFINDEX",
            "TAP",
            "IFINDEX",
            "LINK",
            "MTU",
            "WIRED",
            "TO-VM pkts/bytes",
            "FROM-VM pkts/bytes"
        ));
        for l in &r.links {
            out.push_str(&format!(
                "{:<5} {:<10} {:>7} {:<10} {:>7} {:<5} {:>5} {:<6} {:>20} {:>20}{}\n",
                l.port,
                l.eth,
                l.eth_ifindex
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "gone".into()),
                l.tap,
                l.tap_ifindex,
                if l.eth_ifindex.is_none() {
                    "gone"
                } else if l.link_up {
                    "up"
                } else {
                    "down"
                },
                l.mtu,
                if l.wired { "yes" } else { "no" },
                format!("{}/{}", l.to_vm_packets, l.to_vm_bytes),
                format!("{}/{}", l.from_vm_packets, l.from_vm_bytes),
                l.error
                    .as_ref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_join_counters_and_mark_gone_links() {
        let rows = vec![
            LinkStatus {
                port: 1,
                eth: "eth1".into(),
                tap: "tap1".into(),
                eth_ifindex: Some(5),
                tap_ifindex: 3,
                wired: true,
                wirings: 2,
                last_error: None,
            },
            LinkStatus {
                port: 2,
                eth: "eth2".into(),
                tap: "tap2".into(),
                eth_ifindex: None,
                tap_ifindex: 4,
                wired: false,
                wirings: 1,
                last_error: None,
            },
        ];
        let live = vec![
            LinkInfo {
                index: 5,
                name: "eth1".into(),
                mtu: 9500,
                up: true,
                lower_up: true,
                rx_packets: 10,
                rx_bytes: 1000,
                ..Default::default()
            },
            LinkInfo {
                index: 3,
                name: "tap1".into(),
                mtu: 9500,
                up: true,
                rx_packets: 7,
                rx_bytes: 700,
                ..Default::default()
            },
        ];
        let r = link_reports(&rows, &live);
        assert_eq!(
            (
                r[0].to_vm_packets,
                r[0].from_vm_bytes,
                r[0].link_up,
                r[0].mtu
            ),
            (10, 700, true, 9500)
        );
        assert!(!r[1].link_up && !r[1].wired);
        let rep = Report {
            name: "r1".into(),
            state: "ready".into(),
            since: 0.0,
            reason: "x".into(),
            restarts: 0,
            healthy: true,
            accel: "tcg".into(),
            qemu_pid: Some(9),
            links: r,
            vms: vec![],
        };
        let text = render(&rep);
        assert!(text.contains("eth2") && text.contains("gone"), "{text}");
        assert!(text.contains("10/1000"), "{text}");
        // Several VMs: one line each.
        let vm = |name: &str, state: &str, port| VmReport {
            name: name.into(),
            state: state.into(),
            since: 0.0,
            reason: format!("{name} why"),
            restarts: 0,
            qemu_pid: None,
            telnet_port: port,
            management: "none".into(),
        };
        let two = Report {
            vms: vec![vm("vcp", "ready", 5000), vm("vfp", "booting", 5001)],
            ..rep
        };
        let text = render(&two);
        assert!(
            text.lines()
                .any(|l| l.starts_with("vfp") && l.contains("booting") && l.contains("5001")),
            "{text}"
        );
    }
}
