//! The steps of the recipe in `supervisor::run` before the VMs start, one function each: the
//! accel decision, the node's first snapshot, the consoles, the files, the network bring-up,
//! the wait for the data links, the boot delay, and each VM made ready (its resolved facts,
//! its argv, its fds bound through the one [`FdLayout`]). Never starts qemu.

use super::cables;
use super::mgmt::{self, MgmtAddrs};
use super::reaper::{Reaper, Signals};
use super::vm::Vm;
use super::SupervisorError;
use crate::config::{DataLink, LinkSpec, Management, Node};
use crate::console::{self, ConsoleEvent, Hub};
use crate::control;
use crate::net::{self, tap::Tap, DataLinks, LinkTable, Netlink};
use crate::qemu::{self, FdLayout, Launch};
use crate::state::{NodeState, Snapshot, State, VmSnapshot};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

/// One console's owner: its hub and its readiness events.
pub type Console = (Hub, UnboundedReceiver<ConsoleEvent>);

/// The host facts are read once; then KVM or TCG, vhost-net and the queues, per VM.
pub fn decide_accels(node: &Node) -> Result<Vec<Launch>, SupervisorError> {
    let host = qemu::Host::read();
    let mut launches: Vec<Launch> = Vec::new();
    for plan in &node.vms {
        let launch = qemu::decide(plan, &host)?;
        if let (Some(w), true) = (&launch.warning, launches.is_empty()) {
            tracing::warn!("{w}");
        }
        if let Some(why) = launch.vhost_reason() {
            tracing::info!("vhost-net for data NICs: {why}");
        }
        launches.push(launch);
    }
    Ok(launches)
}

/// The node as status first shows it.
pub fn snapshot(node: &Node, accels: &[Launch]) -> Snapshot {
    Snapshot {
        name: node.settings.identity.clone(),
        accel: if accels[0].kvm { "kvm" } else { "tcg" }.into(),
        vms: node
            .vms
            .iter()
            .map(|p| VmSnapshot {
                name: p.name.clone(),
                telnet_port: p.console.telnet_port,
                logs: (0..=p.console.extra_serials)
                    .map(|n| p.serial_log(n))
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Every VM's console, then its extra serial ports (XRv9k has four): logged and on telnet
/// ports above the console's.
pub async fn start_consoles(node: &Node) -> Result<Vec<Console>, SupervisorError> {
    let mut consoles = Vec::new();
    for plan in &node.vms {
        let (socket, log) = (plan.serial_socket(0), console::LogFile::of(plan, 0));
        let ready = plan.console.ready_pattern.clone();
        let label = plan.serial_label(0);
        consoles
            .push(console::start(&label, &socket, &log, ready, plan.console.telnet_port).await?);
        for n in 1..=plan.console.extra_serials {
            let telnet = match plan.console.telnet_port {
                0 => 0,
                p => p + n as u16,
            };
            let (socket, log) = (plan.serial_socket(n), console::LogFile::of(plan, n));
            console::start(&plan.serial_label(n), &socket, &log, None, telnet).await?;
        }
    }
    Ok(consoles)
}

/// The consoles `launcher console [VM]` attaches to, by VM name.
pub fn console_hubs(node: &Node, consoles: &[Console]) -> control::Consoles {
    let hubs = node.vms.iter().zip(consoles);
    Arc::new(
        hubs.map(|(p, (h, _))| (p.name.clone(), h.clone()))
            .collect(),
    )
}

/// Every file a VM needs before qemu: its run folder, its disks.
pub fn prepare_files(node: &Node) -> Result<(), SupervisorError> {
    for plan in &node.vms {
        std::fs::create_dir_all(&plan.run_dir).map_err(|source| SupervisorError::Dir {
            path: plan.run_dir.clone(),
            source,
        })?;
        crate::disks::prepare(plan)?;
    }
    Ok(())
}

/// Every network object the launcher owns for its whole life, and what the VMs learn from it.
pub struct NetResources {
    /// Per VM: its management addresses, and the MAC its management NIC takes (passthrough).
    mgmts: Vec<(MgmtAddrs, Option<String>)>,
    /// Per VM: its management tap (passthrough).
    mgmt_taps: Vec<Option<Tap>>,
    /// The data links (and their taps, per link) until the wait is over; then the watcher
    /// owns them. With CLAB_INTFS (any ports), opened once the wait found them.
    links: Option<DataLinks>,
    /// Which VM each data link belongs to, in link order.
    link_vm: Vec<usize>,
    /// Per VM: its data links, in port order (the plan's, or those found present).
    vm_links: Vec<Vec<DataLink>>,
    /// Per VM: the queues of each of its data taps.
    queues: Vec<u32>,
    /// The link table and netlink handle status reads (none without data links).
    status: (Option<LinkTable>, Option<Netlink>),
    /// A diagnostic knob (a minimal event buffer provokes ENOBUFS), read once.
    small_rcvbuf: Option<usize>,
    /// The internal networks' taps, by name.
    internal: Vec<Tap>,
    /// What takes the wiring off the data links at the end (once their taps are open).
    unwiring: Option<net::links::Unwiring>,
    /// The watcher task that owns the data links after the wait, stopped before unwiring.
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// The interfaces passthrough wired (eth0), whose filters come off at the end.
    passthrough: Vec<String>,
}

impl NetResources {
    /// The link table and netlink handle status reads (none without data links).
    pub fn for_status(&self) -> (Option<LinkTable>, Option<Netlink>) {
        self.status.clone()
    }

    /// Opens a tap for every NIC slot of these links per VM (each link's, and the spare slots
    /// [`cables::with_spares`] adds), filling `table`; the VMs' links become all their slots.
    async fn open_links(
        &mut self,
        node: &Node,
        links: &[Vec<DataLink>],
        tap_mtu: u32,
        table: LinkTable,
    ) -> Result<(), SupervisorError> {
        let per_vm = cables::with_spares(node, links);
        self.vm_links = (per_vm.iter())
            .map(|v| v.iter().map(|(l, _)| l.clone()).collect())
            .collect();
        let mut all: Vec<(usize, net::Slot)> = (per_vm.into_iter().enumerate())
            .flat_map(|(vm, v)| v.into_iter().map(move |(link, spare)| (vm, link, spare)))
            .map(|(vm, link, spare)| {
                let queues = self.queues[vm];
                (
                    vm,
                    net::Slot {
                        link,
                        queues,
                        spare,
                    },
                )
            })
            .collect();
        all.sort_by_key(|(_, s)| s.link.index);
        self.link_vm = all.iter().map(|(vm, _)| *vm).collect();
        let slots: Vec<net::Slot> = all.into_iter().map(|(_, s)| s).collect();
        let mode = node.settings.connection_mode;
        let dl = DataLinks::new(&slots, tap_mtu, self.small_rcvbuf, table, mode).await?;
        self.unwiring = Some(dl.unwiring());
        self.links = Some(dl);
        Ok(())
    }
}

/// Management passthrough (a VM takes over eth0, the consoles' telnet ports excepted), the
/// data links' taps, the internal networks. Records each VM's management in status. A failure
/// half-way takes the passthrough wiring it had added back off (the taps close as they drop).
pub async fn bring_up_net(
    node: &Node,
    launches: &[Launch],
    state: &NodeState,
) -> Result<NetResources, SupervisorError> {
    let mut wired = Vec::new();
    let up = bring_up(node, launches, state, &mut wired).await;
    if up.is_err() {
        undo_passthrough(wired).await;
    }
    up
}

async fn bring_up(
    node: &Node,
    launches: &[Launch],
    state: &NodeState,
    wired: &mut Vec<String>,
) -> Result<NetResources, SupervisorError> {
    let keep: Vec<u16> = node
        .vms
        .iter()
        .filter(|p| p.console.telnet_port > 0)
        .flat_map(|p| (0..=p.console.extra_serials as u16).map(move |n| p.console.telnet_port + n))
        .collect();
    let (mut mgmts, mut mgmt_taps) = (Vec::new(), Vec::new());
    for (i, plan) in node.vms.iter().enumerate() {
        let (mut addrs, mut mac, mut tap) =
            (MgmtAddrs::without_passthrough(&plan.management), None, None);
        if let Management::Passthrough {
            interface,
            tap: name,
            ..
        } = &plan.management
        {
            // Listed first: a wiring that fails half-way is taken back too.
            wired.push(interface.clone());
            let lab_mac = plan.lab.mgmt_mac.as_deref();
            let p = net::passthrough::wire(interface, name, &keep, lab_mac).await?;
            addrs = MgmtAddrs::from_passthrough(&p);
            mac = Some(p.mac.clone());
            tap = Some(p.tap);
        }
        state
            .vm(i)
            .set_management(mgmt::describe(&plan.management, &addrs));
        mgmts.push((addrs, mac));
        mgmt_taps.push(tap);
    }
    let rcvbuf = std::env::var(net::events::RCVBUF_ENV).ok();
    let mut net = NetResources {
        mgmts,
        mgmt_taps,
        links: None,
        link_vm: Vec::new(),
        vm_links: node.vms.iter().map(|p| p.nics.links.clone()).collect(),
        queues: launches.iter().map(|l| l.queues).collect(),
        status: (None, None),
        small_rcvbuf: net::events::parse_rcvbuf(rcvbuf.as_deref()),
        internal: net::internal::bring_up(&node.internal, node.settings.tap_mtu).await?,
        unwiring: None,
        watcher: None,
        passthrough: wired.clone(),
    };
    let table: LinkTable = Arc::new(Mutex::new(Vec::new()));
    match &node.settings.links {
        // Which ports are known only once they are there: the taps come after the wait.
        LinkSpec::AnyIndex { .. } => net.status = (Some(table), Some(Netlink::new()?)),
        LinkSpec::Listed => {
            if node.links().is_empty() {
                return Ok(net);
            }
            let links = net.vm_links.clone();
            (net.open_links(node, &links, node.settings.tap_mtu, table.clone())).await?;
            let nl = net.links.as_ref().map(DataLinks::netlink);
            net.status = (Some(table), nl);
        }
    }
    Ok(net)
}

/// How the wait before qemu ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Go,
    /// A stop signal came: every VM is stopped, qemu never started.
    Stopped,
}

/// Waits (bounded) for every data link's ethN, a stop signal still honoured. With CLAB_INTFS
/// (any ports), first for that many interfaces whatever their ports; they are the links.
pub async fn wait_for_links(
    net: &mut NetResources,
    node: &Node,
    signals: &mut Signals,
    state: &NodeState,
) -> Result<Waited, SupervisorError> {
    let settings = &node.settings;
    let mut timeout = settings.link_wait_timeout;
    if let LinkSpec::AnyIndex { n, prefix, .. } = &settings.links {
        let reason = format!("waiting for {n} data interfaces ({prefix}N, any N)");
        state.advance_where_valid(State::WaitingForInterfaces, &reason);
        let started = Instant::now();
        let on = settings.on_missing_links;
        let finding = net::present::find_present(prefix, *n, timeout, on, net.small_rcvbuf);
        let Some(found) = unless_stopped(finding, signals, state).await else {
            return Ok(Waited::Stopped);
        };
        let found = found?;
        let links = node.links_present(&found).map_err(SupervisorError::Links)?;
        let table = net.status.0.clone().expect("a link table with CLAB_INTFS");
        net.open_links(node, &links, settings.tap_mtu, table)
            .await?;
        timeout = timeout.saturating_sub(started.elapsed());
    } else if !net.link_vm.is_empty() {
        let reason = format!("waiting for {} data interfaces", net.link_vm.len());
        state.advance_where_valid(State::WaitingForInterfaces, &reason);
    }
    let Some(dl) = &mut net.links else {
        return Ok(Waited::Go);
    };
    match unless_stopped(
        dl.wait_all(timeout, settings.on_missing_links),
        signals,
        state,
    )
    .await
    {
        Some(r) => r.map(|()| Waited::Go).map_err(Into::into),
        None => Ok(Waited::Stopped),
    }
}

/// Waits for `work` unless a stop signal comes first; then every VM is stopped (qemu never
/// started) and there is nothing.
async fn unless_stopped<T>(
    work: impl std::future::Future<Output = T>,
    signals: &mut Signals,
    state: &NodeState,
) -> Option<T> {
    tokio::select! {
        r = work => Some(r),
        s = signals.stop() => {
            tracing::info!(signal = s, "stopped while waiting for interfaces");
            stopped_before_qemu(state, s);
            None
        }
    }
}

/// BOOT_DELAY, a stop signal still honoured.
pub async fn boot_delay(node: &Node, signals: &mut Signals, state: &NodeState) -> Waited {
    let delay = node.settings.boot_delay;
    if delay.is_zero() {
        return Waited::Go;
    }
    tracing::info!(delay_s = delay.as_secs(), "BOOT_DELAY");
    tokio::select! {
        _ = tokio::time::sleep(delay) => Waited::Go,
        s = signals.stop() => stopped_before_qemu(state, s),
    }
}

fn stopped_before_qemu(state: &NodeState, signal: &str) -> Waited {
    state.advance_where_valid(State::Stopping, signal);
    state.advance_where_valid(State::Stopped, "stopped before qemu started");
    Waited::Stopped
}

/// One VM's fds at the numbers its [`FdLayout`] gives them (the same layout its argv was built
/// from): the management tap (passthrough), the internal-network taps, the data taps per link.
fn bind_fds(
    vm: usize,
    layout: &FdLayout,
    plan: &crate::config::VmPlan,
    net: &NetResources,
) -> Result<Vec<(i32, RawFd)>, SupervisorError> {
    let mgmt = net.mgmt_taps[vm].as_ref().map(|t| t.fd.as_raw_fd());
    let internal: Vec<RawFd> = plan
        .internal
        .iter()
        .map(|name| {
            let t = net.internal.iter().find(|t| &t.name == name);
            t.expect("every internal tap of the plan was brought up")
                .fd
                .as_raw_fd()
        })
        .collect();
    let data: Vec<Vec<RawFd>> = match &net.links {
        None => Vec::new(),
        Some(dl) => dl
            .taps()
            .iter()
            .zip(&net.link_vm)
            .filter(|(_, &owner)| owner == vm)
            .map(|(lt, _)| lt.queues.iter().map(|t| t.fd.as_raw_fd()).collect())
            .collect(),
    };
    Ok(layout.bind(mgmt, &internal, &data)?)
}

/// Each VM ready to run: its run-time facts resolved (passthrough MAC, the kernel line's
/// templates filled, the startup config if its file is there), its argv, its fds bound through
/// the one layout both use, its console and state handle, who its qemu runs as.
pub fn ready_vms(
    node: Node,
    launches: &[Launch],
    net: &NetResources,
    consoles: Vec<Console>,
    state: &NodeState,
    reaper: &Reaper,
    creds: super::privilege::Creds,
) -> Result<Vec<Vm>, SupervisorError> {
    let mut vms = Vec::new();
    let all = node.vms.into_iter().enumerate().zip(consoles).zip(creds);
    for (((i, plan), (hub, console_rx)), creds) in all {
        let (addrs, mac) = &net.mgmts[i];
        let mut facts = mgmt::resolve(&plan, addrs, mac.clone());
        let qemu = creds.as_ref().map(|c| (c.uid, c.gid));
        crate::disks::write_templated(&plan, &facts.values, qemu)?;
        facts.resolved.links = net.vm_links[i].clone();
        let layout = FdLayout::of(&plan, &launches[i], &facts.resolved.links);
        let fds = bind_fds(i, &layout, &plan, net)?;
        vms.push(Vm {
            argv: qemu::argv(&plan, &launches[i], &facts.resolved),
            plan,
            facts,
            fds,
            ram: layout.ram(),
            vhost: layout.vhost_numbers(),
            handle: state.vm(i),
            keys: hub.key_presses(),
            hub,
            console_rx,
            reaper: reaper.clone(),
            resets: None,
            creds,
            cables: (net.links.as_ref()).map(|dl| {
                let ports = net.vm_links[i].iter().map(|l| l.index).collect();
                cables::VmCables::new(dl.cables(), ports)
            }),
            snap: Default::default(),
        });
    }
    Ok(vms)
}

/// From here the watcher owns the data links (and their tap fds) for the launcher's whole
/// life: it re-wires ethN when the lab tool re-creates it.
pub fn keep_links_wired(net: &mut NetResources) {
    if let Some(dl) = net.links.take() {
        net.watcher = Some(tokio::spawn(dl.watch()));
    }
}

/// Takes back the wiring the launcher added, on every exit after bring-up: stops the watcher
/// (so nothing re-wires), removes the launcher's filters from each ethN and from the
/// passthrough interface (the taps, and their own filters, go when their fds close). Failures
/// are logged; the exit goes on.
pub async fn unwire(net: &mut NetResources) {
    if let Some(w) = net.watcher.take() {
        w.abort();
        let _ = w.await;
    }
    if let Some(u) = net.unwiring.take() {
        u.unwire_all().await;
    }
    undo_passthrough(std::mem::take(&mut net.passthrough)).await;
}

/// Takes the passthrough wiring off these interfaces; failures are logged.
async fn undo_passthrough(interfaces: Vec<String>) {
    for name in interfaces {
        if let Err(e) = net::passthrough::unwire(&name).await {
            tracing::warn!(interface = %name, error = %net::chain(&e), "cannot undo passthrough");
        }
    }
}

/// The sockets the launcher made in the VMs' run folders (consoles, QMP), and the control
/// socket, removed at the end so nothing stale is left to connect to.
pub fn socket_paths(node: &Node) -> Vec<std::path::PathBuf> {
    let mut out = vec![control::socket_path()];
    for plan in &node.vms {
        out.extend((0..=plan.console.extra_serials).map(|n| plan.serial_socket(n)));
        out.push(plan.qmp_socket());
    }
    out
}

/// Removes `paths` (those already gone are fine).
pub fn remove_sockets(paths: &[std::path::PathBuf]) {
    for p in paths {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove socket")
            }
            _ => {}
        }
    }
}
