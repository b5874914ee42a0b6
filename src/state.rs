//! The VM's lifecycle: the state enum, its valid transitions, and a timestamped record of the
//! current state; readiness; the node aggregate; and the live node state (`NodeState`, each
//! VM's `VmHandle`) with the /health file, its only I/O. The supervisor drives it through the
//! handles; status and health read it. Never spawns, never touches the network.

// The snapshot type moves here with the control room's rewrite; until then it is imported.
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Launcher started, config validated.
    Starting,
    /// Waiting for the lab tool to move ethN into the container.
    WaitingForInterfaces,
    /// qemu spawned, guest not yet known to run.
    Booting,
    /// qemu reports the guest running.
    Running,
    /// The readiness probe passed.
    Ready,
    /// qemu died; waiting out the back-off before spawning it again.
    Restarting,
    /// Shutting down (powerdown, quit, kill).
    Stopping,
    /// Shut down cleanly.
    Stopped,
    /// Given up: qemu failed beyond the restart policy, or a fatal error.
    Failed,
}

#[cfg(test)]
pub const ALL: [State; 9] = [
    State::Starting,
    State::WaitingForInterfaces,
    State::Booting,
    State::Running,
    State::Ready,
    State::Restarting,
    State::Stopping,
    State::Stopped,
    State::Failed,
];

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::WaitingForInterfaces => "waiting-for-interfaces",
            State::Booting => "booting",
            State::Running => "running",
            State::Ready => "ready",
            State::Restarting => "restarting",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// The explicit transition table. Anything not listed is a bug in the caller.
    pub fn valid_transition(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Starting, WaitingForInterfaces | Booting | Stopping | Failed)
                | (WaitingForInterfaces, Booting | Stopping | Failed)
                | (Booting, Running | Restarting | Stopping | Failed)
                | (Running, Ready | Booting | Restarting | Stopping | Failed)
                | (Ready, Running | Booting | Restarting | Stopping | Failed)
                | (Restarting, Booting | Stopping | Failed)
                | (Stopping, Stopped | Failed)
        )
    }

    /// The line vrnetlab's `/health` file carries: `0 ...` healthy, `1 ...` not.
    pub fn health_line(self) -> &'static str {
        match self {
            State::Ready => "0 running",
            State::Running => "1 VM running, not ready yet",
            State::Starting | State::WaitingForInterfaces | State::Booting => "1 starting",
            State::Restarting => "1 VM restarting",
            State::Stopping => "1 stopping",
            State::Stopped => "1 VM stopped",
            State::Failed => "1 VM failed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid lifecycle transition {from} -> {to}", from = .from.as_str(), to = .to.as_str())]
pub struct InvalidTransition {
    pub from: State,
    pub to: State,
}

/// The current state, since when, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Lifecycle {
    pub state: State,
    #[serde(serialize_with = "unix_secs")]
    pub since: SystemTime,
    pub reason: String,
    pub restarts: u32,
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    s.serialize_f64((d.as_millis() as f64) / 1000.0)
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            state: State::Starting,
            since: SystemTime::now(),
            reason: "launcher started".into(),
            restarts: 0,
        }
    }
}

impl Lifecycle {
    /// Moves to `to`. Staying in the same state is a no-op, not an error.
    pub fn go(&mut self, to: State, reason: impl Into<String>) -> Result<bool, InvalidTransition> {
        if self.state == to {
            return Ok(false);
        }
        if !self.state.valid_transition(to) {
            return Err(InvalidTransition {
                from: self.state,
                to,
            });
        }
        self.state = to;
        self.since = SystemTime::now();
        self.reason = reason.into();
        if to == State::Restarting {
            self.restarts += 1;
        }
        Ok(true)
    }
}

/// A node's state from its VMs' states (one VM: its own). The node is ready only when every
/// VM is; it failed when one did; once one VM stops or powers off, the node is stopping until
/// all have stopped; otherwise it is where its least advanced VM is.
pub fn aggregate(states: &[State]) -> State {
    use State::*;
    if states.len() == 1 {
        return states[0];
    }
    if states.is_empty() {
        return Starting;
    }
    if states.contains(&Failed) {
        return Failed;
    }
    if states.iter().all(|s| *s == Stopped) {
        return Stopped;
    }
    if states.iter().any(|s| matches!(s, Stopping | Stopped)) {
        return Stopping;
    }
    [Starting, WaitingForInterfaces, Restarting, Booting, Running]
        .into_iter()
        .find(|s| states.contains(s))
        .unwrap_or(Ready)
}

/// A readiness probe that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// qemu reports the guest running.
    Running,
    /// The console showed the ready pattern.
    Pattern,
    /// The bootstrap finished.
    Bootstrap,
    /// The TCP port answered through the management forward.
    Tcp,
}

/// Which of the configured probes one boot still waits for. Ready = all of them passed (with
/// none configured: running is enough).
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    running: bool,
    pattern: Option<bool>,
    bootstrap: Option<bool>,
    tcp: Option<bool>,
}

impl Readiness {
    pub fn new(pattern: bool, bootstrap: bool, tcp: bool) -> Self {
        let want = |on: bool| on.then_some(false);
        Self {
            running: false,
            pattern: want(pattern),
            bootstrap: want(bootstrap),
            tcp: want(tcp),
        }
    }

    /// Records a probe; true when this one completed the set.
    pub fn mark(&mut self, p: Probe) -> bool {
        let before = self.is_ready();
        // Console output or a login means the guest runs, whatever QMP said so far.
        self.running = true;
        let slot = match p {
            Probe::Running => None,
            Probe::Pattern => self.pattern.as_mut(),
            Probe::Bootstrap => self.bootstrap.as_mut(),
            Probe::Tcp => self.tcp.as_mut(),
        };
        if let Some(s) = slot {
            *s = true;
        }
        !before && self.is_ready()
    }

    pub fn is_ready(&self) -> bool {
        self.running
            && [self.pattern, self.bootstrap, self.tcp]
                .iter()
                .all(|p| p.unwrap_or(true))
    }
}

// ---- The node model the supervisor writes and the control server reads ----

/// What the supervisor publishes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub name: String,
    /// The node's state: with one VM, that VM's; with several, derived from theirs.
    pub lifecycle: Lifecycle,
    pub accel: String,
    pub vms: Vec<VmSnapshot>,
}

/// One VM of the node.
#[derive(Debug, Clone, Default)]
pub struct VmSnapshot {
    pub name: String,
    pub lifecycle: Lifecycle,
    pub qemu_pid: Option<i32>,
    pub telnet_port: u16,
    /// Its serial logs: console.log first, then one per extra serial port (each rotates to
    /// `.1`, `.2`, ... beside it).
    pub logs: Vec<PathBuf>,
    /// How the VM is managed (rendered for people by `control::report`).
    pub management: MgmtView,
}

/// How a VM is managed, as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MgmtView {
    /// No management interface.
    #[default]
    None,
    /// qemu's user network: the guest's address and the number of port forwards.
    User { address: String, forwards: usize },
    /// The VM took over the container's `interface`: its address and gateway, when it has them.
    Passthrough {
        interface: String,
        address: String,
        gateway: Option<String>,
    },
}

/// The snapshot, shared between the supervisor (writer) and the control server (reader).
pub type Shared = std::sync::Arc<std::sync::Mutex<Snapshot>>;

// ---------------------------------------------------------------------------------------------
// The node's live state: the snapshot status reads, and the /health file. The supervisor holds a
// `NodeState` and hands each VM its `VmHandle`; nothing else writes the snapshot. The only I/O
// here is the health file.
// ---------------------------------------------------------------------------------------------

/// The node's shared snapshot plus the health file. Each VM moves its own lifecycle; the node's
/// state is derived from them ([`aggregate`]) and is what `/health` says.
#[derive(Clone)]
pub struct NodeState {
    shared: Shared,
    health_file: PathBuf,
    /// Bumped on every VM state change (the ordered start waits on it).
    changed: Arc<watch::Sender<u64>>,
}

impl NodeState {
    /// Publishes `snapshot` and writes the health file's first line ("starting").
    pub fn new(snapshot: Snapshot, health_file: PathBuf) -> Self {
        let node = Self {
            shared: Arc::new(Mutex::new(snapshot)),
            health_file,
            changed: Arc::new(watch::channel(0).0),
        };
        node.write_health(State::Starting);
        node
    }

    /// What the control socket reads.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// VM `vm`'s handle: the only way to move its lifecycle.
    pub fn vm(&self, vm: usize) -> VmHandle {
        VmHandle {
            node: self.clone(),
            vm,
        }
    }

    /// How many VMs the node has.
    pub fn len(&self) -> usize {
        self.shared.lock().unwrap().vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes on every VM state change.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Moves every VM that can make the move (the phases before qemu: interfaces, stop); a VM
    /// that cannot (already further on) stays where it is.
    pub fn advance_where_valid(&self, to: State, reason: &str) {
        for i in 0..self.len() {
            let vm = self.vm(i);
            if vm.state().valid_transition(to) {
                vm.advance(to, reason);
            }
        }
    }

    fn write_health(&self, state: State) {
        let hf = &self.health_file;
        if let Err(e) = std::fs::write(hf, format!("{}\n", state.health_line())) {
            tracing::debug!(path = %hf.display(), error = %e, "cannot write health file");
        }
    }
}

/// One VM's view of the node state.
#[derive(Clone)]
pub struct VmHandle {
    node: NodeState,
    vm: usize,
}

impl VmHandle {
    /// Moves this VM to `to` and the node with it (logged, health file rewritten when the
    /// node's state changes). An invalid move is a bug in the caller: logged, and a panic in a
    /// debug build so tests catch it.
    pub fn advance(&self, to: State, reason: impl Into<String>) {
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
                let node = aggregate(&s.vms.iter().map(|v| v.lifecycle.state).collect::<Vec<_>>());
                let node_from = s.lifecycle.state;
                s.lifecycle.restarts = s.vms.iter().map(|v| v.lifecycle.restarts).sum();
                if node != node_from {
                    s.lifecycle.state = node;
                    s.lifecycle.since = SystemTime::now();
                    s.lifecycle.reason = if multi {
                        format!("{name}: {reason}")
                    } else {
                        reason
                    };
                    tracing::info!(from = node_from.as_str(), to = node.as_str(), reason = %s.lifecycle.reason, "state");
                    self.node.write_health(node);
                }
                drop(s);
                self.node.changed.send_modify(|n| *n += 1);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ignored");
                debug_assert!(false, "a caller bug: {e}");
            }
        }
    }

    /// Records a readiness probe; when it completes the set (and no shutdown is under way),
    /// the VM is running and ready. True when it became ready.
    pub fn probe_passed(
        &self,
        r: &mut Readiness,
        p: Probe,
        stopping: bool,
        reason: impl Into<String>,
    ) -> bool {
        if !r.mark(p) || stopping {
            return false;
        }
        self.advance(State::Running, "guest running");
        self.advance(State::Ready, reason);
        true
    }

    /// Replaces the reason of this VM's current state without a transition (something status
    /// should show that does not move the state, e.g. QMP lost while booting).
    pub fn note(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut s = self.node.shared.lock().unwrap();
        let multi = s.vms.len() > 1;
        let v = &mut s.vms[self.vm];
        v.lifecycle.reason = reason.clone();
        let name = v.name.clone();
        s.lifecycle.reason = if multi {
            format!("{name}: {reason}")
        } else {
            reason
        };
        drop(s);
        self.node.changed.send_modify(|n| *n += 1);
    }

    pub fn state(&self) -> State {
        self.node.shared.lock().unwrap().vms[self.vm]
            .lifecycle
            .state
    }

    /// The pid of this VM's qemu (None between runs).
    pub fn set_pid(&self, pid: Option<i32>) {
        let mut s = self.node.shared.lock().unwrap();
        s.vms[self.vm].qemu_pid = pid;
    }

    /// How the VM is managed, as status shows it.
    pub fn set_management(&self, described: MgmtView) {
        self.node.shared.lock().unwrap().vms[self.vm].management = described;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair of states, checked against the table written out a second time by hand.
    #[test]
    fn every_pair() {
        use State::*;
        let allowed: &[(State, &[State])] = &[
            (Starting, &[WaitingForInterfaces, Booting, Stopping, Failed]),
            (WaitingForInterfaces, &[Booting, Stopping, Failed]),
            (Booting, &[Running, Restarting, Stopping, Failed]),
            (Running, &[Ready, Booting, Restarting, Stopping, Failed]),
            (Ready, &[Running, Booting, Restarting, Stopping, Failed]),
            (Restarting, &[Booting, Stopping, Failed]),
            (Stopping, &[Stopped, Failed]),
            (Stopped, &[]),
            (Failed, &[]),
        ];
        let mut checked = 0;
        for from in ALL {
            let row = allowed.iter().find(|(f, _)| *f == from).unwrap().1;
            for to in ALL {
                assert_eq!(
                    from.valid_transition(to),
                    row.contains(&to),
                    "{from:?} -> {to:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 81);
    }

    #[test]
    fn a_node_is_as_healthy_as_its_least_healthy_vm() {
        use State::*;
        for s in ALL {
            assert_eq!(aggregate(&[s]), s, "one VM is the node");
        }
        assert_eq!(aggregate(&[Ready, Ready]), Ready);
        assert_eq!(aggregate(&[Ready, Running]), Running);
        assert_eq!(aggregate(&[Booting, Ready]), Booting);
        assert_eq!(aggregate(&[Ready, Restarting, Booting]), Restarting);
        assert_eq!(aggregate(&[Ready, Failed]), Failed);
        assert_eq!(aggregate(&[Stopped, Failed]), Failed);
        assert_eq!(aggregate(&[Ready, Stopping]), Stopping);
        assert_eq!(aggregate(&[Ready, Stopped]), Stopping);
        assert_eq!(aggregate(&[Stopped, Stopped]), Stopped);
        assert_eq!(
            aggregate(&[WaitingForInterfaces, WaitingForInterfaces]),
            WaitingForInterfaces
        );
        // Healthy only when every VM is ready, for every pair of states.
        for a in ALL {
            for b in ALL {
                assert_eq!(
                    aggregate(&[a, b]) == Ready,
                    a == Ready && b == Ready,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_have_no_exit() {
        for s in [State::Stopped, State::Failed] {
            assert!(ALL.iter().all(|&t| !s.valid_transition(t)));
        }
    }

    #[test]
    fn readiness_needs_every_configured_probe() {
        let mut r = Readiness::new(false, false, false);
        assert!(r.mark(Probe::Running));
        assert!(!r.mark(Probe::Running), "only the completing mark reports");
        let mut r = Readiness::new(true, true, false);
        assert!(!r.mark(Probe::Running));
        assert!(!r.mark(Probe::Pattern));
        assert!(!r.mark(Probe::Tcp), "an unconfigured probe changes nothing");
        assert!(r.mark(Probe::Bootstrap));
        assert!(r.is_ready());
        let mut r = Readiness::new(false, false, true);
        assert!(r.mark(Probe::Tcp), "a TCP answer implies the guest runs");
    }

    #[test]
    fn go_records_and_counts_restarts() {
        let mut l = Lifecycle::default();
        assert!(l.go(State::Booting, "spawned").unwrap());
        assert!(!l.go(State::Booting, "again").unwrap());
        l.go(State::Restarting, "qemu died").unwrap();
        assert_eq!(l.restarts, 1);
        assert!(l.go(State::Ready, "x").is_err());
        assert_eq!(l.state, State::Restarting);
        assert_eq!(State::Ready.health_line(), "0 running");
        assert!(State::Failed.health_line().starts_with('1'));
    }

    fn node(dir: &std::path::Path, vms: &[&str]) -> NodeState {
        let snap = Snapshot {
            name: "r1".into(),
            vms: vms
                .iter()
                .map(|n| VmSnapshot {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        NodeState::new(snap, dir.join("health"))
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("launcher-state-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_node_state_follows_its_vms_and_writes_the_health_file() {
        let d = temp_dir("health");
        let n = node(&d, &["cp", "fp"]);
        let health = || std::fs::read_to_string(d.join("health")).unwrap();
        assert_eq!(health(), "1 starting\n");
        let changed = n.changed();
        for vm in [n.vm(0), n.vm(1)] {
            vm.advance(State::Booting, "spawned");
            vm.advance(State::Running, "runs");
            vm.advance(State::Ready, "ready");
        }
        assert!(changed.has_changed().unwrap());
        assert_eq!(health(), "0 running\n");
        assert_eq!(n.shared().lock().unwrap().lifecycle.state, State::Ready);
        // Only the VMs that can make the move make it.
        n.vm(1).advance(State::Stopping, "x");
        n.vm(1).advance(State::Stopped, "x");
        n.advance_where_valid(State::Stopping, "SIGTERM");
        assert_eq!(n.vm(0).state(), State::Stopping);
        assert_eq!(n.vm(1).state(), State::Stopped);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a caller bug")]
    fn an_invalid_move_is_a_caller_bug_in_a_debug_build() {
        let d = temp_dir("invalid");
        let n = node(&d, &["vm"]);
        n.vm(0).advance(State::Ready, "not from starting");
    }
}
