//! The launcher's life as PID 1: set up (consoles, control socket, datapath, internal
//! networks), spawn each VM's qemu with its tap fds at fixed numbers, reap every child (the one
//! owner of exit statuses: a `waitpid(-1, WNOHANG)` loop on SIGCHLD), follow QMP events,
//! restart qemu per policy, and shut down on SIGTERM/SIGINT: ACPI powerdown, then `quit`, then
//! SIGKILL. Several VMs (vMX control + forwarding plane) start in order, each once the one
//! before runs, and stop in the reverse order; the node is healthy when all are.

use crate::config::{Management, Node, Plan, RestartPolicy};
use crate::console::bootstrap;
use crate::console::{self, ConsoleEvent};
use crate::control::{self, Shared, Snapshot, VmSnapshot};
use crate::net::links::Datapath;
use crate::qemu::qmp::{Event, Qmp};
use crate::qemu::{self, AccelChoice, INTERNAL_FD_BASE, TAP_FD_BASE};
use crate::state::{self, Probe, Readiness, State};
use crate::template;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, Signal as SigStream, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Accel(#[from] qemu::AccelError),
    #[error(transparent)]
    Datapath(#[from] crate::net::links::DatapathError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Iso(#[from] crate::disks::iso::IsoError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create disk overlay {overlay} over {base}: {why}")]
    Overlay {
        overlay: std::path::PathBuf,
        base: std::path::PathBuf,
        why: String,
    },
    #[error("cannot start qemu {qemu}: {source}")]
    Spawn {
        qemu: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl SupervisorError {
    /// The documented exit code: 2 for the user's input, 3 for missing interfaces, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            SupervisorError::Accel(_) => 2,
            SupervisorError::Datapath(crate::net::links::DatapathError::Missing { .. }) => 3,
            _ => 1,
        }
    }
}

/// How a child ended, as an exit code: its code, or 128 + the signal.
pub fn exit_code_of(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// The stop signals PID 1 listens to, registered before any child exists. (SIGCHLD belongs
/// to the [`Reaper`].)
struct Signals {
    term: SigStream,
    int: SigStream,
}

impl Signals {
    fn new() -> Result<Self, SupervisorError> {
        let s = |k| signal(k).map_err(SupervisorError::Signals);
        Ok(Self {
            term: s(SignalKind::terminate())?,
            int: s(SignalKind::interrupt())?,
        })
    }
    /// The next SIGTERM or SIGINT.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The one owner of exit statuses: on every SIGCHLD it reaps every exited child
/// (`waitpid(-1, WNOHANG)` until none is left) and hands the status of each qemu to the task
/// that spawned it; anything else is an orphan, logged and gone.
#[derive(Clone)]
struct Reaper {
    watched: Arc<std::sync::Mutex<HashMap<i32, oneshot::Sender<WaitStatus>>>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD (registered before any child exists).
    fn start() -> Result<Self, SupervisorError> {
        let mut chld = signal(SignalKind::child()).map_err(SupervisorError::Signals)?;
        let r = Reaper {
            watched: Default::default(),
        };
        let task = r.clone();
        tokio::spawn(async move {
            while chld.recv().await.is_some() {
                task.reap();
            }
        });
        Ok(r)
    }

    /// Where `pid`'s status will arrive. Call right after spawning, before the next await: the
    /// reaper runs on this same thread, so it cannot reap the child in between.
    fn watch(&self, pid: i32) -> oneshot::Receiver<WaitStatus> {
        let (tx, rx) = oneshot::channel();
        self.watched.lock().unwrap().insert(pid, tx);
        rx
    }

    fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    let owner = ws
                        .pid()
                        .and_then(|p| self.watched.lock().unwrap().remove(&p.as_raw()));
                    match owner {
                        Some(tx) => {
                            let _ = tx.send(ws);
                        }
                        None => tracing::info!(?ws, "reaped orphan"),
                    }
                }
            }
        }
    }
}

/// The node's shared snapshot plus the health file. Each VM moves its own lifecycle; the node's
/// state is derived from them ([`state::aggregate`]) and is what `/health` says.
#[derive(Clone)]
struct NodeStatus {
    shared: Shared,
    health_file: std::path::PathBuf,
    /// Bumped on every VM state change (the ordered start waits on it).
    changed: Arc<watch::Sender<u64>>,
}

impl NodeStatus {
    fn vm(&self, vm: usize) -> Status {
        Status {
            node: self.clone(),
            vm,
        }
    }
    /// Moves every VM that can make the move (the phases before qemu: interfaces, stop).
    fn go_all(&self, to: State, reason: &str) {
        let n = self.shared.lock().unwrap().vms.len();
        for i in 0..n {
            let st = self.vm(i);
            if st.state().valid_transition(to) {
                st.go(to, reason.to_string());
            }
        }
    }
}

/// One VM's view of the node status.
#[derive(Clone)]
struct Status {
    node: NodeStatus,
    vm: usize,
}

impl Status {
    fn go(&self, to: State, reason: impl Into<String>) {
        let reason = reason.into();
        let mut s = self.node.shared.lock().unwrap();
        let multi = s.vms.len() > 1;
        let v = &mut s.vms[self.vm];
        let from = v.lifecycle.state;
        match v.lifecycle.go(to, reason.clone()) {
            Ok(true) => {
                let name = v.name.clone();
                if multi {
                    tracing::info!(vm = %name, from = from.as_str(), to = to.as_str(), %reason, "VM state");
                }
                let states: Vec<State> = s.vms.iter().map(|v| v.lifecycle.state).collect();
                let restarts = s.vms.iter().map(|v| v.lifecycle.restarts).sum();
                let node = state::aggregate(&states);
                let node_from = s.lifecycle.state;
                s.lifecycle.restarts = restarts;
                if node != node_from {
                    s.lifecycle.state = node;
                    s.lifecycle.since = std::time::SystemTime::now();
                    s.lifecycle.reason = if multi {
                        format!("{name}: {reason}")
                    } else {
                        reason.clone()
                    };
                    tracing::info!(from = node_from.as_str(), to = node.as_str(), reason = %s.lifecycle.reason, "state");
                    let hf = &self.node.health_file;
                    if let Err(e) = std::fs::write(hf, format!("{}\n", node.health_line())) {
                        tracing::debug!(path = %hf.display(), error = %e, "cannot write health file");
                    }
                }
                drop(s);
                self.node.changed.send_modify(|n| *n += 1);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "ignored"),
        }
    }
    /// Records a readiness probe; when it completes the set (and no shutdown is under way),
    /// the VM is running and ready. True when it became ready.
    fn probe_passed(
        &self,
        r: &mut Readiness,
        p: Probe,
        stopping: bool,
        reason: impl Into<String>,
    ) -> bool {
        if !r.mark(p) || stopping {
            return false;
        }
        self.go(State::Running, "guest running");
        self.go(State::Ready, reason);
        true
    }
    fn state(&self) -> State {
        self.node.shared.lock().unwrap().vms[self.vm]
            .lifecycle
            .state
    }
    fn set_pid(&self, pid: Option<i32>) {
        let mut s = self.node.shared.lock().unwrap();
        s.vms[self.vm].qemu_pid = pid;
        if self.vm == 0 {
            s.qemu_pid = pid;
        }
    }
}

/// Writes the CD images (format = "iso") afresh from their folders: a changed day-0 config
/// takes effect at the next start.
fn make_cd_images(plan: &Plan) -> Result<(), SupervisorError> {
    for d in &plan.disks {
        if let Some((image, label)) = &d.cd {
            crate::disks::iso::write_from_dir(&d.path, label, image)?;
            tracing::info!(folder = %d.path.display(), image = %image.display(), "CD image written");
        }
    }
    Ok(())
}

/// Creates missing disk overlays with `qemu-img create -b`. Runs before qemu exists; the status
/// is collected by std's own waitpid on that pid, which the reaper loop cannot race because both
/// run on this one thread.
fn make_overlays(plan: &Plan) -> Result<(), SupervisorError> {
    for d in &plan.disks {
        let Some(o) = &d.overlay else { continue };
        if o.exists() {
            tracing::info!(overlay = %o.display(), "reusing disk overlay");
            continue;
        }
        if let Some(dir) = o.parent() {
            std::fs::create_dir_all(dir).map_err(|source| SupervisorError::Dir {
                path: dir.into(),
                source,
            })?;
        }
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", &d.format, "-b"])
            .arg(&d.path)
            .arg(o)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SupervisorError::Overlay {
                overlay: o.clone(),
                base: d.path.clone(),
                why: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SupervisorError::Overlay {
                overlay: o.clone(),
                base: d.path.clone(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::info!(overlay = %o.display(), base = %d.path.display(), "created disk overlay");
    }
    Ok(())
}

/// Spawns qemu with each `(number, fd)` fd dup'ed to that number, in its own process group (a
/// ^C on the terminal reaches the launcher, which shuts qemu down properly).
fn spawn_qemu(argv: &[OsString], fds: &[(i32, RawFd)]) -> std::io::Result<u32> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, setpgid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = Vec::with_capacity(fds.len());
            for &(_, fd) in &fds {
                let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 1024);
                if t < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp.push(t);
            }
            for (&(number, _), &t) in fds.iter().zip(&tmp) {
                if libc::dup2(t, number) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping `Child` neither waits nor kills: the reaper collects its status.
    Ok(child.id())
}

fn read_accel_inputs() -> (bool, String) {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    (kvm, cpuinfo)
}

/// How one qemu run ended.
enum RunEnd {
    /// qemu exited; `stopping` says whether we asked it to; `clean` whether the guest powered off.
    Exited {
        code: i32,
        stopping: bool,
        clean: bool,
        /// The bootstrap failed with on_timeout = fail: no restart.
        give_up: bool,
    },
}

/// Whether a service answers on `port` through qemu's user-mode forward. slirp accepts every
/// connection itself (and holds it open while the guest is unreachable), so only bytes from the
/// service count: it is sent an empty line and must say something back (an SSH banner, an HTTP
/// error, ...) within two seconds.
async fn tcp_answers(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    let Ok(Ok(mut s)) = conn else { return false };
    let _ = s.write_all(b"\r\n").await;
    let mut b = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await, Ok(Ok(n)) if n > 0)
}

/// The management addresses the guest is to take, for the bootstrap templates.
#[derive(Debug, Clone, Default)]
struct MgmtAddrs {
    ipv4: String,
    gateway4: String,
    ipv6: String,
    gateway6: String,
}

impl MgmtAddrs {
    /// qemu's user network: the guest at 10.0.0.15, slirp's gateway at 10.0.0.2.
    fn user() -> Self {
        Self {
            ipv4: format!("{}/24", qemu::GUEST_MGMT_IP),
            gateway4: "10.0.0.2".into(),
            ..Default::default()
        }
    }
    /// What the container's management interface had (passthrough).
    fn from_passthrough(p: &crate::net::links::Passthrough) -> Self {
        let mut m = Self::default();
        for a in &p.addresses {
            let v6 = a.contains(':');
            let slot = if v6 { &mut m.ipv6 } else { &mut m.ipv4 };
            if slot.is_empty() {
                *slot = a.clone();
            }
        }
        for g in &p.gateways {
            let slot = if g.is_ipv6() {
                &mut m.gateway6
            } else {
                &mut m.gateway4
            };
            if slot.is_empty() {
                *slot = g.to_string();
            }
        }
        m
    }
}

/// The values bootstrap templates see.
fn bootstrap_values(plan: &Plan, mgmt: &MgmtAddrs) -> template::Values {
    let mut v = template::Values::new();
    v.insert("hostname", plan.identity().to_string());
    v.insert("name", plan.name.clone());
    v.insert(
        "username",
        plan.credentials.username.clone().unwrap_or_default(),
    );
    v.insert(
        "password",
        plan.credentials.password.clone().unwrap_or_default(),
    );
    v.insert("mgmt_ip", mgmt.ipv4.clone());
    v.insert("mgmt_gateway", mgmt.gateway4.clone());
    v.insert("mgmt_ipv6", mgmt.ipv6.clone());
    v.insert("mgmt_gateway6", mgmt.gateway6.clone());
    v
}

/// What a VM is told: 0 run, 1 power down (ACPI, then quit, then kill), 2 quit now; and why
/// (the signal, or the node stopping).
type StopLevel = (u8, &'static str);

/// One VM of the node, ready to run: everything set up, its fds open (owned by `run`).
struct Vm {
    idx: usize,
    plan: Plan,
    mgmt: MgmtAddrs,
    argv: Vec<OsString>,
    fds: Vec<(i32, RawFd)>,
    status: Status,
    hub: console::Hub,
    console_rx: mpsc::UnboundedReceiver<ConsoleEvent>,
    reaper: Reaper,
    stop: watch::Receiver<StopLevel>,
}

/// How a VM's life ended: which VM, and its exit code (0 when it stopped cleanly).
#[derive(Debug, Clone, Copy)]
struct VmEnd {
    idx: usize,
    code: i32,
}

/// Runs the router until it is shut down or gives up. Returns the process exit code.
pub async fn run(mut node: Node) -> Result<i32, SupervisorError> {
    let t0 = Instant::now();
    let mut sig = Signals::new()?;
    let reaper = Reaper::start()?;
    if std::process::id() != 1 {
        // Orphans of qemu's helpers get re-parented to us, as they would to PID 1.
        // SAFETY: prctl with an integer argument.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let multi = node.vms.len() > 1;
    let (kvm_opens, cpuinfo) = read_accel_inputs();
    // vhost-net moves the data path into the kernel; it only helps (and only works) with KVM.
    let vhost_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/vhost-net")
        .is_ok();
    let mut accels = Vec::new();
    for plan in &mut node.vms {
        std::fs::create_dir_all(&plan.run_dir).map_err(|source| SupervisorError::Dir {
            path: plan.run_dir.clone(),
            source,
        })?;
        if let Some(sc) = &plan.startup_config {
            if !sc.exists() {
                tracing::info!(path = %sc.display(), "no startup config there; booting without one");
                plan.startup_config = None;
            }
        }
        let mut accel: AccelChoice = qemu::decide_accel(plan.accel, kvm_opens, &cpuinfo)?;
        if let Some(w) = &accel.warning {
            if accels.is_empty() {
                tracing::warn!("{w}");
            }
        }
        accel.vhost = accel.kvm && vhost_opens && !plan.links.is_empty();
        if !plan.links.is_empty() {
            let why = match (accel.kvm, vhost_opens) {
                (true, true) => "on",
                (false, _) => "off (TCG)",
                (true, false) => "off (/dev/vhost-net not available; pass --device /dev/vhost-net)",
            };
            tracing::info!("vhost-net for data NICs: {why}");
        }
        accels.push(accel);
    }
    let first = node.first().clone();
    let shared: Shared = Arc::new(std::sync::Mutex::new(Snapshot {
        name: first.identity().to_string(),
        accel: if accels[0].kvm { "kvm" } else { "tcg" }.into(),
        vms: node
            .vms
            .iter()
            .map(|p| VmSnapshot {
                name: p.name.clone(),
                telnet_port: p.telnet_port,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }));
    let status = NodeStatus {
        shared: shared.clone(),
        health_file: first.health_file.clone(),
        changed: Arc::new(watch::channel(0).0),
    };
    let _ = std::fs::write(
        &first.health_file,
        format!("{}\n", State::Starting.health_line()),
    );

    let mut consoles = Vec::new();
    for plan in &node.vms {
        consoles.push(
            console::start(
                &plan.serial_label(0),
                &plan.serial_socket(0),
                &plan.serial_log(0),
                plan.ready_pattern.clone(),
                plan.telnet_port,
            )
            .await?,
        );
        // Extra serial ports (XRv9k has four): logged and on telnet ports above the console's.
        for n in 1..=plan.extra_serials {
            let telnet = if plan.telnet_port == 0 {
                0
            } else {
                plan.telnet_port + n as u16
            };
            console::start(
                &plan.serial_label(n),
                &plan.serial_socket(n),
                &plan.serial_log(n),
                None,
                telnet,
            )
            .await?;
        }
        make_overlays(plan)?;
        make_cd_images(plan)?;
    }

    // Management passthrough: a VM takes over eth0 (the consoles' telnet ports excepted).
    let keep: Vec<u16> = node
        .vms
        .iter()
        .filter(|p| p.telnet_port > 0)
        .flat_map(|p| (0..=p.extra_serials as u16).map(move |n| p.telnet_port + n))
        .collect();
    let mut fds: Vec<Vec<(i32, RawFd)>> = vec![Vec::new(); node.vms.len()];
    let mut mgmts = Vec::new();
    let mut _mgmt_tap = None;
    for (i, plan) in node.vms.iter_mut().enumerate() {
        let mut mgmt = match plan.management {
            Management::User { .. } => MgmtAddrs::user(),
            _ => MgmtAddrs::default(),
        };
        if let Management::Passthrough {
            interface,
            tap,
            mac,
            ..
        } = &mut plan.management
        {
            let p = crate::net::links::passthrough(interface, tap, &keep).await?;
            *mac = Some(p.mac.clone());
            mgmt = MgmtAddrs::from_passthrough(&p);
            fds[i].push((qemu::MGMT_TAP_FD, p.tap.fd.as_raw_fd()));
            _mgmt_tap = Some(p.tap);
        }
        let described = match &plan.management {
            Management::None => "none".to_string(),
            Management::User { forwards, .. } => {
                format!("user {} ({} forwards)", mgmt.ipv4, forwards.len())
            }
            Management::Passthrough { interface, .. } => format!(
                "passthrough {interface} {} via {}",
                mgmt.ipv4,
                if mgmt.gateway4.is_empty() {
                    "-"
                } else {
                    &mgmt.gateway4
                }
            ),
        };
        shared.lock().unwrap().vms[i].management = described;
        // The kernel command line's templates ({mgmt_ip}, {hostname}, ...), now known.
        let values = bootstrap_values(plan, &mgmt);
        if let Some(k) = &mut plan.kernel {
            k.append = template::render(&k.append, &values);
        }
        mgmts.push(mgmt);
    }

    // Datapath: taps first, then wait for every ethN (bounded), SIGTERM still honoured.
    let links = node.links();
    let mut datapath = None;
    let (table, nl) = if links.is_empty() {
        (None, None)
    } else {
        let queues: Vec<u32> = links
            .iter()
            .map(|(vm, _)| qemu::queues(&node.vms[*vm], &accels[*vm]))
            .collect();
        let only: Vec<_> = links.iter().map(|(_, l)| l.clone()).collect();
        let dp = Datapath::new(&only, first.min_tap_mtu, &queues).await?;
        let parts = (Some(dp.table()), Some(dp.netlink()));
        datapath = Some((dp, queues));
        parts
    };
    let hubs: Vec<(String, console::Hub)> = node
        .vms
        .iter()
        .zip(&consoles)
        .map(|(p, (hub, _))| (p.name.clone(), hub.clone()))
        .collect();
    let _ctl = control::serve(
        control::socket_path(),
        shared.clone(),
        table,
        nl,
        Arc::new(hubs),
    )
    .await?;
    if let Some((mut dp, queues)) = datapath {
        status.go_all(
            State::WaitingForInterfaces,
            &format!("waiting for {} data interfaces", links.len()),
        );
        tokio::select! {
            r = dp.wait_all(first.link_wait, first.on_timeout) => r?,
            s = sig.stop() => {
                tracing::info!(signal = s, "stopped while waiting for interfaces");
                status.go_all(State::Stopping, s);
                status.go_all(State::Stopped, "stopped before qemu started");
                return Ok(0);
            }
        }
        // Each VM's data taps at TAP_FD_BASE + (its link position) * queues + queue.
        let mut taps = dp.taps().iter();
        let mut local = vec![0i32; node.vms.len()];
        for ((vm, _), q) in links.iter().zip(&queues) {
            for j in 0..*q as i32 {
                let t = taps.next().expect("one tap per queue");
                fds[*vm].push((TAP_FD_BASE + local[*vm] * *q as i32 + j, t.fd.as_raw_fd()));
            }
            local[*vm] += 1;
        }
        // The watcher owns the datapath (and so the tap fds) for the launcher's whole life.
        tokio::spawn(dp.watch());
    }
    // Internal networks between the VMs: a bridge each, a tap per member.
    let internal = crate::net::links::internal_networks(&node.internal, first.min_tap_mtu).await?;
    let by_name: HashMap<&str, RawFd> = internal
        .iter()
        .map(|t| (t.name.as_str(), t.fd.as_raw_fd()))
        .collect();
    for (i, plan) in node.vms.iter().enumerate() {
        for (k, tap) in plan.internal.iter().enumerate() {
            fds[i].push((INTERNAL_FD_BASE + k as i32, by_name[tap.as_str()]));
        }
    }

    if !first.boot_delay.is_zero() {
        tracing::info!(delay_s = first.boot_delay.as_secs(), "BOOT_DELAY");
        tokio::select! {
            _ = tokio::time::sleep(first.boot_delay) => {}
            s = sig.stop() => {
                status.go_all(State::Stopping, s);
                status.go_all(State::Stopped, "stopped before qemu started");
                return Ok(0);
            }
        }
    }

    // The VMs, in order.
    let mut stops = Vec::new();
    let mut pending = Vec::new();
    for (((i, plan), (hub, console_rx)), (accel, (fds, mgmt))) in node
        .vms
        .into_iter()
        .enumerate()
        .zip(consoles)
        .zip(accels.iter().zip(fds.into_iter().zip(mgmts)))
    {
        let (tx, rx) = watch::channel((0u8, ""));
        stops.push(tx);
        pending.push(Some(Vm {
            idx: i,
            argv: qemu::argv(&plan, accel),
            plan,
            mgmt,
            fds,
            status: status.vm(i),
            hub,
            console_rx,
            reaper: reaper.clone(),
            stop: rx,
        }));
    }
    let n = pending.len();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<VmEnd>();
    let mut changed = status.changed.subscribe();
    let mut running = vec![false; n];
    let mut started = 0usize;
    let mut level: StopLevel = (0, "");
    // The first VM to end on its own (a failure, or its guest powered off) ends the node.
    let mut verdict: Option<VmEnd> = None;
    let mut ends: Vec<VmEnd> = Vec::new();
    loop {
        let stopping = level.0 > 0 || verdict.is_some();
        // Start the next VM once the one before runs.
        while !stopping
            && started < n
            && (started == 0
                || matches!(
                    status.vm(started - 1).state(),
                    State::Running | State::Ready
                ))
        {
            let vm = pending[started].take().expect("each VM starts once");
            if started == 0 {
                tracing::info!(
                    since_start_ms = t0.elapsed().as_millis() as u64,
                    "starting qemu"
                );
            }
            running[started] = true;
            let tx = done_tx.clone();
            tokio::spawn(async move {
                let end = vm_life(vm).await;
                let _ = tx.send(end);
            });
            started += 1;
        }
        if !running.contains(&true) && (stopping || started == n) {
            break;
        }
        if stopping {
            // Stop in the reverse order: the last VM still running first; "quit now" reaches all.
            let want = if level.0 == 0 {
                (1, "the node is stopping")
            } else {
                level
            };
            for i in (0..n).rev().filter(|&i| running[i]) {
                if stops[i].borrow().0 < want.0 {
                    stops[i].send_replace(want);
                }
                if want.0 < 2 {
                    break;
                }
            }
        }
        tokio::select! {
            s = sig.stop() => {
                level = ((level.0 + 1).min(2), s);
                tracing::info!(signal = s, "stop signal");
            }
            Some(end) = done_rx.recv() => {
                running[end.idx] = false;
                if level.0 == 0 && verdict.is_none() {
                    if multi {
                        tracing::info!(vm = end.idx, code = end.code, "a VM ended: stopping the node");
                    }
                    verdict = Some(end);
                }
                ends.push(end);
            }
            _ = changed.changed() => {}
        }
    }
    // VMs never started (the node stopped during the ordered start).
    for i in started..n {
        let st = status.vm(i);
        st.go(State::Stopping, "the node stopped before this VM started");
        st.go(State::Stopped, "the node stopped before this VM started");
    }
    drop(internal);
    Ok(match verdict {
        Some(v) => v.code,
        None => ends.iter().map(|e| e.code).find(|&c| c != 0).unwrap_or(0),
    })
}

/// One VM's life: spawn qemu, supervise it, restart it per policy, until it is stopped, powers
/// off, or gives up.
async fn vm_life(vm: Vm) -> VmEnd {
    let Vm {
        idx,
        plan,
        mgmt,
        argv,
        fds,
        status,
        hub,
        mut console_rx,
        reaper,
        mut stop,
    } = vm;
    let end = |code| VmEnd { idx, code };
    let mut failures = 0u32;
    loop {
        if stop.borrow().0 > 0 {
            status.go(State::Stopping, "stopped before qemu started");
            status.go(State::Stopped, "stopped before qemu started");
            return end(0);
        }
        // With a bootstrap, humans can watch from the first byte but type only after it.
        hub.hold(plan.bootstrap.is_some());
        let pid = match spawn_qemu(&argv, &fds) {
            Ok(p) => p as i32,
            Err(source) => {
                let e = SupervisorError::Spawn {
                    qemu: plan.qemu.clone(),
                    source,
                };
                tracing::error!(vm = %plan.name, "{e}");
                eprintln!("launcher: {e}");
                status.go(State::Failed, e.to_string());
                return end(1);
            }
        };
        let exited = reaper.watch(pid);
        tracing::info!(vm = %plan.name, pid, "qemu started");
        status.set_pid(Some(pid));
        status.go(State::Booting, format!("qemu pid {pid} started"));

        let RunEnd::Exited {
            code,
            stopping,
            clean,
            give_up,
        } = run_once(
            (&plan, &mgmt),
            &status,
            &mut stop,
            (&hub, &mut console_rx),
            (Pid::from_raw(pid), exited),
        )
        .await;
        status.set_pid(None);

        if stopping {
            if clean {
                status.go(State::Stopped, "guest powered off");
                tracing::info!(vm = %plan.name, "clean shutdown");
                return end(0);
            }
            status.go(
                State::Failed,
                format!("qemu ended with {code} during shutdown"),
            );
            return end(if code == 0 { 1 } else { code });
        }
        if clean && code == 0 {
            status.go(State::Stopping, "guest powered itself off");
            status.go(State::Stopped, "guest powered itself off");
            return end(0);
        }
        failures += 1;
        if give_up {
            status.go(
                State::Failed,
                "bootstrap failed; not restarting (bootstrap.on_timeout = \"fail\")",
            );
            return end(1);
        }
        match plan.restart {
            RestartPolicy::OnFailure { max, backoff } if failures <= max => {
                let wait = backoff * (1 << (failures - 1).min(6));
                status.go(
                    State::Restarting,
                    format!(
                        "qemu exited with {code}; restart {failures}/{max} in {}s",
                        wait.as_secs()
                    ),
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|l| l.0 > 0) => {
                        status.go(State::Stopping, "stopped while waiting to restart qemu");
                        status.go(State::Stopped, "stopped while waiting to restart qemu");
                        return end(0);
                    }
                }
            }
            _ => {
                status.go(
                    State::Failed,
                    format!("qemu exited with {code}; not restarting (restart policy)"),
                );
                return end(if code == 0 { 1 } else { code });
            }
        }
    }
}

/// Supervises one qemu process until it exits.
async fn run_once(
    (plan, mgmt): (&Plan, &MgmtAddrs),
    status: &Status,
    stop: &mut watch::Receiver<StopLevel>,
    (hub, console_rx): (&console::Hub, &mut mpsc::UnboundedReceiver<ConsoleEvent>),
    (pid, mut exited): (Pid, oneshot::Receiver<WaitStatus>),
) -> RunEnd {
    // The bootstrap, when configured, runs against this qemu's console; its verdict comes back
    // over a channel.
    let (boot_tx, mut boot_rx) = mpsc::unbounded_channel();
    let boot_task = plan.bootstrap.clone().map(|b| {
        let hub = hub.clone();
        let values = bootstrap_values(plan, mgmt);
        let startup = plan
            .startup_config
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        tokio::spawn(async move {
            let r = bootstrap::run(&b, &hub, &values, startup.as_deref()).await;
            let _ = boot_tx.send(r);
        })
    });
    let mut give_up = false;
    // QMP connects in the background; events and the handle come back over channels.
    let (qmp_tx, mut qmp_rx) = mpsc::unbounded_channel::<Arc<Qmp>>();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let path = plan.qmp_socket();
    let qmp_task = tokio::spawn(async move {
        match Qmp::connect(&path, Duration::from_secs(30)).await {
            Ok((q, mut events)) => {
                let q = Arc::new(q);
                if let Ok(st) = q.query_status().await {
                    if st == "running" {
                        let _ = ev_tx.send(Event::Resume);
                    }
                }
                let _ = qmp_tx.send(q.clone());
                while let Some(e) = events.recv().await {
                    if ev_tx.send(e).is_err() {
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "QMP unavailable"),
        }
    });

    let mut qmp: Option<Arc<Qmp>> = None;
    let mut stopping = false;
    let mut quit_sent = false;
    let mut killed = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(10 * 365 * 86400);
    let mut deadline = far;
    let boot_deadline = tokio::time::Instant::now() + plan.boot_timeout;
    let new_readiness = || {
        Readiness::new(
            plan.ready_pattern.is_some(),
            plan.bootstrap.is_some(),
            plan.ready_tcp.is_some(),
        )
    };
    let mut readiness = new_readiness();
    let mut booted = false;
    // The TCP probe: until the port answers through the management forward.
    let (tcp_tx, mut tcp_rx) = mpsc::unbounded_channel::<u16>();
    let tcp_task = plan.ready_tcp.map(|port| {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tcp_answers(port).await {
                    let _ = tcp_tx.send(port);
                    return;
                }
            }
        })
    });
    // Drain console readiness left over from a previous run.
    while console_rx.try_recv().is_ok() {}

    // A stop asked for before this run began counts at once.
    stop.mark_changed();
    let mut level_seen = 0u8;
    let end = loop {
        tokio::select! {
            ws = &mut exited => {
                let ws = ws.unwrap_or(WaitStatus::Exited(pid, 1));
                let code = exit_code_of(ws).unwrap_or(1);
                tracing::info!(vm = %plan.name, ?ws, code, "qemu exited");
                break RunEnd::Exited { code, stopping, clean: code == 0 && !quit_sent && !killed, give_up };
            }
            Ok(()) = stop.changed() => {
                let (level, why) = *stop.borrow_and_update();
                if level <= level_seen {
                    continue;
                }
                level_seen = level;
                if !stopping {
                    stopping = true;
                    status.go(State::Stopping, format!("{why}: ACPI powerdown"));
                    deadline = tokio::time::Instant::now() + plan.shutdown_timeout;
                    match &qmp {
                        Some(q) => if let Err(e) = q.execute("system_powerdown", None, Duration::from_secs(5)).await {
                            tracing::warn!(error = %e, "system_powerdown failed; quitting qemu");
                            deadline = tokio::time::Instant::now();
                        },
                        None => deadline = tokio::time::Instant::now(),
                    }
                }
                if level >= 2 {
                    tracing::info!(vm = %plan.name, why, "second stop signal: quitting qemu now");
                    deadline = tokio::time::Instant::now();
                }
            }
            Some(q) = qmp_rx.recv() => { qmp = Some(q); }
            Some(e) = ev_rx.recv() => {
                tracing::debug!(?e, "QMP event");
                match e {
                    Event::Resume if !stopping => {
                        if status.state() == State::Booting {
                            status.go(State::Running, "qemu reports the guest running");
                        }
                        booted |= status.probe_passed(&mut readiness, Probe::Running, stopping, "guest running (no readiness probe configured)");
                    }
                    Event::Reset { guest } if !stopping => {
                        booted = false;
                        readiness = new_readiness();
                        status.go(State::Booting, if guest { "guest rebooted" } else { "VM reset" });
                        status.go(State::Running, "guest running after reset");
                    }
                    Event::Shutdown { guest, reason } => {
                        tracing::info!(guest, %reason, "qemu reports shutdown");
                    }
                    Event::GuestPanicked { action } => tracing::error!(%action, "guest panicked"),
                    Event::Stop => tracing::info!("VM paused"),
                    _ => {}
                }
            }
            Some(r) = boot_rx.recv() => match r {
                Ok(()) => {
                    booted |= status.probe_passed(&mut readiness, Probe::Bootstrap, stopping, "bootstrap finished");
                }
                Err(e) => {
                    tracing::error!(error = %e, "bootstrap failed");
                    if !stopping {
                        give_up = plan.bootstrap.as_ref().is_some_and(|b| {
                            bootstrap::after_failure(&e, b.on_timeout) == bootstrap::AfterFailure::GiveUp
                        });
                        let _ = kill(pid, Signal::SIGKILL);
                        killed = true;
                    }
                }
            },
            Some(ConsoleEvent::ReadyPattern(p)) = console_rx.recv() => {
                tracing::debug!(pattern = %p, "ready pattern seen");
                booted |= status.probe_passed(&mut readiness, Probe::Pattern, stopping, format!("console showed {p:?}"));
            }
            Some(port) = tcp_rx.recv() => {
                tracing::debug!(port, "TCP probe answered");
                booted |= status.probe_passed(&mut readiness, Probe::Tcp, stopping, format!("TCP port {port} answers"));
            }
            _ = tokio::time::sleep_until(boot_deadline), if !booted && !stopping => {
                tracing::error!(timeout_s = plan.boot_timeout.as_secs(), "guest not ready within the boot timeout; killing qemu");
                booted = true; // fire once
                let _ = kill(pid, Signal::SIGKILL);
                killed = true;
            }
            _ = tokio::time::sleep_until(deadline), if stopping => {
                if !quit_sent {
                    quit_sent = true;
                    tracing::warn!("guest did not power off in time: QMP quit");
                    if let Some(q) = &qmp {
                        let _ = q.execute("quit", None, Duration::from_secs(2)).await;
                    }
                    deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                } else if !killed {
                    killed = true;
                    tracing::warn!("qemu still alive after quit: SIGKILL");
                    let _ = kill(pid, Signal::SIGKILL);
                    deadline = far;
                }
            }
        }
    };
    qmp_task.abort();
    if let Some(t) = tcp_task {
        t.abort();
    }
    if let Some(t) = boot_task {
        t.abort();
        hub.hold(false);
    }
    end
}
