//! The launcher's life as PID 1, as a recipe of named steps ([`run`]): signals and the reaper,
//! the accel decision, the node state, consoles, disks, the network, the control socket, the
//! wait for the data links, then each VM's qemu with its tap fds at fixed numbers, started in
//! order and stopped in the reverse order, restarted per policy, shut down on SIGTERM/SIGINT
//! (and SIGHUP/SIGQUIT when not PID 1): ACPI powerdown, then `quit`, then SIGKILL; a router
//! still booting quits at once. The only room that imports both `net` and `qemu`. Never parses
//! config and never prints to the terminal (commands does).

mod cables;
mod mgmt;
pub use mgmt::{read_license, render_all, template_values, MgmtAddrs};
mod lz4;
mod node;
mod preflight;
mod privilege;
mod probes;
mod qemu_run;
mod ram;
mod reaper;
mod reset;
mod restore;
mod resumed;
mod setup;
mod snapshot;
mod spawn;
mod suspend;
mod vm;
mod zstd;

use crate::config::Node;
use crate::exit::Code;
use crate::state::NodeState;
use crate::{console, control, disks, net, qemu};
use setup::Waited;
use std::path::PathBuf;
use std::time::Instant;

/// What stops the launcher before or while it sets up. Each variant says only its own
/// context; the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("cannot become the child subreaper (prctl PR_SET_CHILD_SUBREAPER)")]
    Subreaper(#[source] std::io::Error),
    #[error(transparent)]
    Accel(#[from] qemu::AccelError),
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Fds(#[from] qemu::FdError),
    #[error(transparent)]
    Console(#[from] console::ConsoleError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(transparent)]
    Disk(#[from] disks::DiskError),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("the data interfaces present do not fit the configuration")]
    Links(#[source] crate::config::ConfigError),
    #[error("cannot create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the open-file limit (RLIMIT_NOFILE) is {soft} (hard limit {hard}), too low for {taps} taps: the launcher and qemu need {needed}; raise it (docker run --ulimit nofile={needed}:{needed}, or ulimit -n {needed})")]
    FdLimit {
        soft: u64,
        hard: u64,
        needed: u64,
        taps: usize,
    },
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
    /// `launcher install`: the install VM ended before its steps finished.
    #[error("install did not finish on VM {vm}: {}: {why}", match step { Some(n) => format!("during install step {n}"), None => "before install step 0".into() })]
    Install {
        vm: String,
        step: Option<usize>,
        why: String,
    },
    #[error("cannot open {} for qemu's vhost-net fd {number} (the launcher opens it for qemu at each start; with it gone, pass --device /dev/vhost-net or use accel = \"tcg\")", device.display())]
    Vhost {
        device: PathBuf,
        number: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start qemu {qemu}")]
    Spawn {
        qemu: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The supervisor's errors as exit codes: the accel the user asked for is bad input; data
/// interfaces still missing after the wait have their own code; anything else is a failure.
impl From<&SupervisorError> for Code {
    fn from(e: &SupervisorError) -> Self {
        match e {
            SupervisorError::Accel(_)
            | SupervisorError::Preflight(_)
            | SupervisorError::FdLimit { .. }
            | SupervisorError::Links(_) => Code::BadInput,
            SupervisorError::Net(net::NetError::Missing { .. }) => Code::LinksMissing,
            SupervisorError::Sandbox(e) if e.is_bad_input() => Code::BadInput,
            _ => Code::Failure,
        }
    }
}

/// Runs the router until it is shut down or gives up; returns the node's exit code.
pub async fn run(node: Node, fast: crate::snapshot::Options) -> Result<Code, SupervisorError> {
    run_node(node, fast, None).await
}

/// `launcher install` on the node `Node::for_install` made: the same recipe as [`run`]; once
/// the install VM is ready (its install steps finished) the node stops as on SIGTERM (ACPI
/// powerdown, then `quit` after the shutdown time-out). Ok only when the steps finished and
/// every qemu then exited by itself (not killed); an install that did not finish is an error
/// naming the step it was at.
pub async fn install(node: Node) -> Result<Code, SupervisorError> {
    let vm = node.install.as_ref().map_or(0, |i| i.vm);
    run_node(node, crate::snapshot::Options::default(), Some(vm)).await
}

/// The recipe: each step is one named call, run once, in the order below; each comment says
/// why it stands there. `install`: the VM whose readiness ends the node (`launcher install`).
async fn run_node(
    node: Node,
    fast: crate::snapshot::Options,
    install: Option<usize>,
) -> Result<Code, SupervisorError> {
    let t0 = Instant::now();
    // 1. Signals and the SIGCHLD reaper before any child exists (as tini and catatonit do), so
    //    no stop request and no exit status can be lost; the subreaper, checked, with them.
    let (mut signals, reaper) = reaper::start()?;
    // 2. The accel per VM, from host facts read once: a bad `accel = "kvm"` fails here, before
    //    anything is created on the system.
    let launches = setup::decide_accels(&node)?;
    //    And the open-file limit those NICs need (taps, queues), checked as early.
    spawn::fd_limit(&node, &launches)?;
    //    The preflight, before anything is created: the files the VMs boot from, the qemu
    //    binary, the tap names, NET_ADMIN when the node needs it.
    preflight::Facts::check_system(&node)?;
    //    Who each sandboxed qemu runs as, and whether the launcher can start it so.
    let creds = privilege::resolve(&node, &launches)?;
    //    Fast start: a snapshot's RAM fills begin now, on threads holding no capability, while
    //    the rest is set up and the links awaited; its key is checked once the argv exists
    //    (step 10), and a snapshot that does not fit only wasted their work.
    let filling = restore::fill_early(&node.vms, &fast);
    // 3. The node state (snapshot + health file) next: every later step reports through it.
    let snapshot = setup::snapshot(&node, &launches);
    let state = NodeState::new(snapshot, node.settings.health_file.clone());
    //    The sockets consoles make (and qemu and control will make), removed on every exit
    //    from here on, also when a later set-up step fails.
    let sockets = setup::socket_paths(&node);
    // 4. Consoles before qemu can connect to them, and before disks: their logs and telnet
    //    ports exist from the first second, and passthrough must know the telnet ports.
    // 5. Files: run folders, disk overlays, CD images. All local; a failure here leaves the
    //    network untouched.
    // 6. The network: passthrough (its addresses feed the templates), the data
    //    links' taps (subscribed to link events first, so no ethN arrival is missed), the
    //    internal networks. Every tap fd is owned from here to the end of `run`. A failure
    //    half-way takes back what it had wired (bring_up_net).
    let early = async {
        let consoles = setup::start_consoles(&node).await?;
        setup::prepare_files(&node)?;
        //  What a sandboxed qemu reaches (run folder, sockets, overlays, ports) is its own.
        privilege::grant(&node, &creds)?;
        let net = setup::bring_up_net(&node, &launches, &state).await?;
        Ok::<_, SupervisorError>((consoles, net))
    };
    let (consoles, mut net) = match early.await {
        Ok(done) => done,
        Err(e) => {
            setup::remove_sockets(&sockets);
            return Err(e);
        }
    };
    let result = async {
        // 7. The control socket once there is state, links and consoles to show: `status`
        //    works during the (possibly long) wait for the lab tool.
        let (table, nl) = net.for_status();
        let hubs = setup::console_hubs(&node, &consoles);
        let names: Vec<String> = node.vms.iter().map(|p| p.name.clone()).collect();
        let (resets, reset_rxs) = control::reset::channels(&names);
        let control = (hubs, resets.clone());
        let _control = control::serve(control::socket_path(), state.shared(), table, nl, control)?;
        //    vrnetlab's reset file, with the socket: both hand resets to the VMs once they run.
        let _reset_file = reset::watch_file(node.settings.reset_file.clone(), resets);
        // 8. Wait for the data links, interruptible: a SIGTERM here stops the node with exit 0.
        if setup::wait_for_links(&mut net, &node, &mut signals, &state).await? == Waited::Stopped {
            return Ok(Code::Ok);
        }
        // 9. BOOT_DELAY, after the links (the lab tool is done) and before qemu, interruptible.
        if setup::boot_delay(&node, &mut signals, &state).await == Waited::Stopped {
            return Ok(Code::Ok);
        }
        // 10. Per VM: its run-time facts (passthrough MAC, the kernel line rendered, the
        //     startup config if there), its argv, and its fds bound through the same FdLayout.
        //     Only now: the links are wired and every tap is open. The plan is never edited.
        //     Set-up is done: the launcher drops what it no longer needs, before any qemu.
        privilege::drop_caps(&node, &creds)?;
        let watched = install.map(|i| (i, node.vms[i].name.clone(), consoles[i].0.clone()));
        let mut vms = setup::ready_vms(node, &launches, &net, consoles, &state, &reaper, creds)?;
        for (vm, rx) in vms.iter_mut().zip(reset_rxs) {
            vm.resets = Some(rx);
        }
        //     Fast start: a snapshot that fits replaces the boot (its overlays in place, its
        //     streams beside them); saves are served from here (containerlab's trigger file,
        //     the control socket).
        let saver = snapshot::Saver::of(&vms, &state);
        restore::prepare(&mut vms, &saver, &fast, filling)?;
        let suspend = suspend::Suspend::new(&saver, &fast);
        let _saves = snapshot::serve(saver, control::snapshot::accept_saves());
        // From here the watcher task owns the data links; it re-wires a re-created ethN.
        setup::keep_links_wired(&mut net);
        // 11. The VMs: ordered start, reverse stop, restarts; their ends make the exit code.
        let (code, installed) = node::drive(vms, &state, &mut signals, t0, suspend, install).await;
        match watched {
            Some((i, vm, hub)) if !installed => Err(SupervisorError::Install {
                vm,
                step: hub.bootstrap_step(),
                why: state.shared().lock().unwrap().vms[i]
                    .lifecycle
                    .reason
                    .clone(),
            }),
            Some((i, ..)) => Ok(vm::install_code(code, &state, i)),
            None => Ok(code),
        }
    }
    .await;
    // 12. Nothing left behind, on every exit after bring-up (stop, a VM failing, an error, links
    //     missing): the launcher's filters come off ethN and eth0, its sockets are removed.
    //     The taps (management, internal, data) close only now, after every qemu has exited.
    setup::unwire(&mut net).await;
    drop(net);
    setup::remove_sockets(&sockets);
    result
}
