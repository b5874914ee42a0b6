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
    fn terminal_states_have_no_exit() {
        for s in [State::Stopped, State::Failed] {
            assert!(ALL.iter().all(|&t| !s.valid_transition(t)));
        }
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
