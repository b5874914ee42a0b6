//! The VM's lifecycle: the state enum, its valid transitions, and a timestamped record of the
//! current state. Pure: no I/O. The supervisor drives it; status and health read it.

use serde::Serialize;
use std::time::SystemTime;

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
}
