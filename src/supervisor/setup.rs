//! The steps of the recipe in `supervisor::run` before the VMs start, one function each: the
//! accel decision, the node's first snapshot, the consoles, the files, the network bring-up,
//! the wait for the data links, the boot delay, and the one place fd numbers are computed.
//! Never starts qemu.

use super::mgmt::{self, MgmtAddrs};
use super::reaper::{Reaper, Signals};
use super::vm::Vm;
use super::SupervisorError;
use crate::config::{DataLink, Management, Node};
use crate::console::{self, ConsoleEvent, Hub};
use crate::control::{self, Snapshot, VmSnapshot};
use crate::net::links::{self, Datapath, Table};
use crate::net::netlink::Netlink;
use crate::net::tap::Tap;
use crate::qemu::{self, AccelChoice, INTERNAL_FD_BASE, MGMT_TAP_FD, TAP_FD_BASE};
use crate::state::{NodeState, State};
use crate::template;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// One console's owner: its hub and its readiness events.
pub type Console = (Hub, UnboundedReceiver<ConsoleEvent>);

/// The host facts are read once; then KVM or TCG, and vhost-net, per VM.
pub fn decide_accels(node: &Node) -> Result<Vec<AccelChoice>, SupervisorError> {
    let opens = |p: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .is_ok()
    };
    let kvm_opens = opens("/dev/kvm");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // vhost-net moves the data path into the kernel; it only helps (and only works) with KVM.
    let vhost_opens = opens("/dev/vhost-net");
    let mut accels: Vec<AccelChoice> = Vec::new();
    for plan in &node.vms {
        let mut accel = qemu::decide_accel(plan.machine.accel, kvm_opens, &cpuinfo)?;
        if let Some(w) = &accel.warning {
            if accels.is_empty() {
                tracing::warn!("{w}");
            }
        }
        accel.vhost = accel.kvm && vhost_opens && !plan.nics.links.is_empty();
        if !plan.nics.links.is_empty() {
            let why = match (accel.kvm, vhost_opens) {
                (true, true) => "on",
                (false, _) => "off (TCG)",
                (true, false) => "off (/dev/vhost-net not available; pass --device /dev/vhost-net)",
            };
            tracing::info!("vhost-net for data NICs: {why}");
        }
        accels.push(accel);
    }
    Ok(accels)
}

/// The node as status first shows it.
pub fn snapshot(node: &Node, accels: &[AccelChoice]) -> Snapshot {
    Snapshot {
        name: node.first().identity().to_string(),
        accel: if accels[0].kvm { "kvm" } else { "tcg" }.into(),
        vms: node
            .vms
            .iter()
            .map(|p| VmSnapshot {
                name: p.name.clone(),
                telnet_port: p.console.telnet_port,
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
        let (socket, log) = (plan.serial_socket(0), plan.serial_log(0));
        let ready = plan.console.ready_pattern.clone();
        let label = plan.serial_label(0);
        consoles.push(console::start(&label, &socket, &log, ready, plan.console.telnet_port).await?);
        for n in 1..=plan.console.extra_serials {
            let telnet = match plan.console.telnet_port {
                0 => 0,
                p => p + n as u16,
            };
            let (socket, log) = (plan.serial_socket(n), plan.serial_log(n));
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

/// Every file a VM needs before qemu: its run folder, its disks; a startup config that is not
/// there is forgotten (the VM boots without one).
pub fn prepare_files(node: &mut Node) -> Result<(), SupervisorError> {
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
        crate::disks::prepare(plan)?;
    }
    Ok(())
}

/// Every network object the launcher owns for its whole life, and what the VMs learn from it.
pub struct Net {
    /// Per VM: its management addresses.
    mgmts: Vec<MgmtAddrs>,
    /// Per VM: its management tap (passthrough).
    mgmt_taps: Vec<Option<Tap>>,
    /// The data links (and their taps) until the wait is over; then the watcher owns them.
    datapath: Option<Datapath>,
    links: Vec<(usize, DataLink)>,
    queues: Vec<u32>,
    internal: Vec<Tap>,
}

impl Net {
    /// The link table and netlink handle status reads (none without data links).
    pub fn for_status(&self) -> (Option<Table>, Option<Netlink>) {
        match &self.datapath {
            Some(dp) => (Some(dp.table()), Some(dp.netlink())),
            None => (None, None),
        }
    }
}

/// Management passthrough (a VM takes over eth0, the consoles' telnet ports excepted), the
/// data links' taps, the internal networks. Records each VM's management in status and renders
/// the kernel command line's templates, now that the addresses are known.
pub async fn bring_up_net(
    node: &mut Node,
    accels: &[AccelChoice],
    state: &NodeState,
) -> Result<Net, SupervisorError> {
    let keep: Vec<u16> = node
        .vms
        .iter()
        .filter(|p| p.console.telnet_port > 0)
        .flat_map(|p| (0..=p.console.extra_serials as u16).map(move |n| p.console.telnet_port + n))
        .collect();
    let (mut mgmts, mut mgmt_taps) = (Vec::new(), Vec::new());
    for (i, plan) in node.vms.iter_mut().enumerate() {
        let mut addrs = MgmtAddrs::without_passthrough(&plan.management);
        let mut tap = None;
        if let Management::Passthrough {
            interface,
            tap: name,
            mac,
            ..
        } = &mut plan.management
        {
            let p = links::passthrough(interface, name, &keep).await?;
            *mac = Some(p.mac.clone());
            addrs = MgmtAddrs::from_passthrough(&p);
            tap = Some(p.tap);
        }
        state
            .vm(i)
            .set_management(mgmt::describe(&plan.management, &addrs));
        let values = mgmt::template_values(plan, &addrs);
        if let Some(k) = &mut plan.boot.kernel {
            k.append = template::render(&k.append, &values);
        }
        mgmts.push(addrs);
        mgmt_taps.push(tap);
    }
    let links = node.links();
    let queues: Vec<u32> = links
        .iter()
        .map(|(vm, _)| qemu::queues(&node.vms[*vm], &accels[*vm]))
        .collect();
    let datapath = if links.is_empty() {
        None
    } else {
        let only: Vec<DataLink> = links.iter().map(|(_, l)| l.clone()).collect();
        Some(Datapath::new(&only, node.first().min_tap_mtu, &queues).await?)
    };
    let internal = links::internal_networks(&node.internal, node.first().min_tap_mtu).await?;
    Ok(Net {
        mgmts,
        mgmt_taps,
        datapath,
        links,
        queues,
        internal,
    })
}

/// How the wait before qemu ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Go,
    /// A stop signal came: every VM is stopped, qemu never started.
    Stopped,
}

/// Waits (bounded) for every data link's ethN, a stop signal still honoured.
pub async fn wait_for_links(
    net: &mut Net,
    node: &Node,
    signals: &mut Signals,
    state: &NodeState,
) -> Result<Waited, SupervisorError> {
    let Some(dp) = &mut net.datapath else {
        return Ok(Waited::Go);
    };
    let reason = format!("waiting for {} data interfaces", net.links.len());
    state.advance_where_valid(State::WaitingForInterfaces, &reason);
    let first = node.first();
    tokio::select! {
        r = dp.wait_all(first.link_wait, first.on_timeout) => r?,
        s = signals.stop() => {
            tracing::info!(signal = s, "stopped while waiting for interfaces");
            return Ok(stopped_before_qemu(state, s));
        }
    }
    Ok(Waited::Go)
}

/// BOOT_DELAY, a stop signal still honoured.
pub async fn boot_delay(node: &Node, signals: &mut Signals, state: &NodeState) -> Waited {
    let delay = node.first().boot_delay;
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

/// Per VM, the `(number in qemu, fd)` list: internal-network taps at INTERNAL_FD_BASE + k, the
/// management tap at MGMT_TAP_FD, data taps at TAP_FD_BASE + (link position in the VM) *
/// queues + queue. The one place these numbers are computed here (qemu's argv computes the
/// same from the plan).
fn fd_bindings(node: &Node, net: &Net) -> Vec<Vec<(i32, RawFd)>> {
    let mut fds: Vec<Vec<(i32, RawFd)>> = vec![Vec::new(); node.vms.len()];
    for (i, tap) in net.mgmt_taps.iter().enumerate() {
        if let Some(t) = tap {
            fds[i].push((MGMT_TAP_FD, t.fd.as_raw_fd()));
        }
    }
    if let Some(dp) = &net.datapath {
        // The taps come flat: link order, queue order within a link.
        let mut taps = dp.taps().iter();
        let mut local = vec![0i32; node.vms.len()];
        for ((vm, _), q) in net.links.iter().zip(&net.queues) {
            for j in 0..*q as i32 {
                let t = taps.next().expect("one tap per queue");
                fds[*vm].push((TAP_FD_BASE + local[*vm] * *q as i32 + j, t.fd.as_raw_fd()));
            }
            local[*vm] += 1;
        }
    }
    let by_name: HashMap<&str, RawFd> = net
        .internal
        .iter()
        .map(|t| (t.name.as_str(), t.fd.as_raw_fd()))
        .collect();
    for (i, plan) in node.vms.iter().enumerate() {
        for (k, tap) in plan.internal.iter().enumerate() {
            fds[i].push((INTERNAL_FD_BASE + k as i32, by_name[tap.as_str()]));
        }
    }
    fds
}

/// Each VM ready to run: its argv, its fds at fixed numbers, its console, its state handle.
pub fn ready_vms(
    node: Node,
    accels: &[AccelChoice],
    net: &Net,
    consoles: Vec<Console>,
    state: &NodeState,
    reaper: &Reaper,
) -> Vec<Vm> {
    let fds = fd_bindings(&node, net);
    let per_vm = accels.iter().zip(fds).zip(consoles).zip(&net.mgmts);
    let vms = node.vms.into_iter().zip(per_vm).enumerate();
    vms.map(
        |(i, (plan, (((accel, fds), (hub, console_rx)), mgmt)))| Vm {
            argv: qemu::argv(&plan, accel),
            plan,
            mgmt: mgmt.clone(),
            fds,
            handle: state.vm(i),
            hub,
            console_rx,
            reaper: reaper.clone(),
        },
    )
    .collect()
}

/// From here the watcher owns the data links (and their tap fds) for the launcher's whole
/// life: it re-wires ethN when the lab tool re-creates it.
pub fn keep_links_wired(net: &mut Net) {
    if let Some(dp) = net.datapath.take() {
        tokio::spawn(dp.watch());
    }
}
