//! One VM's life: spawn its qemu, supervise the run, and decide what comes after it (stop,
//! fail, or restart after a back-off) with the pure [`after_exit`]. Never touches another VM
//! (the node sequences them) and never opens an fd (they are owned by the net bring-up).

use super::mgmt::VmFacts;
use super::qemu_run::{self, Child, RunEnd, StopLevel};
use super::reaper::Reaper;
use super::spawn;
use crate::config::{RestartPolicy, VmPlan};
use crate::console::{ConsoleEvent, Hub};
use crate::exit::{self, Code};
use crate::state::{State, VmHandle};
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One VM of the node, ready to run: everything set up, its fds open (owned by the
/// supervisor's net bring-up for the launcher's whole life).
pub struct Vm {
    pub plan: VmPlan,
    /// What was resolved at start (argv facts, template values).
    pub facts: VmFacts,
    pub argv: Vec<OsString>,
    /// `(number in qemu, fd here)`.
    pub fds: Vec<(i32, RawFd)>,
    /// The number its qemu maps the guest RAM's memfd from (the same layout's).
    pub ram: i32,
    /// The numbers its qemu gets a fresh /dev/vhost-net fd at, each spawn (empty without
    /// vhost-net); from the same layout as `fds` and the argv.
    pub vhost: Vec<i32>,
    pub handle: VmHandle,
    pub hub: Hub,
    pub console_rx: mpsc::UnboundedReceiver<ConsoleEvent>,
    /// The bootstrap's `sendkey` presses, pressed through QMP.
    pub keys: mpsc::UnboundedReceiver<crate::console::KeyPress>,
    pub reaper: Reaper,
    /// `launcher reset` and the reset file's requests, once attached ([`super::reset`]).
    pub resets: Option<mpsc::Receiver<crate::control::ResetRequest>>,
    /// Who its qemu runs as (None: not sandboxed).
    pub creds: Option<crate::sandbox::QemuCreds>,
    /// Its data ports' link states, told to its qemu (none without data links).
    pub cables: Option<super::cables::VmCables>,
    /// Fast start: QMP and the RAM published for saves, and what the next qemu restores from.
    pub snap: super::snapshot::VmSnap,
}

/// What comes after one qemu run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Stopped cleanly (exit 0). `asked`: the node asked for it; else the guest powered itself
    /// off.
    Stopped { asked: bool },
    /// Given up, with the code the VM ends with and the reason status shows.
    Failed { code: Code, why: String },
    /// Restart after `wait`; `why` is the reason status shows.
    Restart { wait: Duration, why: String },
}

/// The decision after a qemu run ended. `failures`: the failed runs before this one. A qemu the
/// launcher killed (a failed bootstrap, the boot timeout) fails with 1 and the launcher's reason,
/// never with the 137 of its own SIGKILL; a qemu that ended on its own fails with its code. The
/// reason names the policy that applied.
pub fn after_exit(end: &RunEnd, failures: u32, policy: RestartPolicy) -> Next {
    let code = end.code;
    // What ended the run, and the code the VM fails with if it is not restarted.
    let (cause, fail_code) = match &end.killed {
        Some(why) => (why.clone(), Code::Failure),
        None => (format!("qemu exited with {code}"), Code::unclean(code)),
    };
    if end.stopping {
        if end.clean {
            return Next::Stopped { asked: true };
        }
        let why = match &end.killed {
            Some(why) => format!("{why}: killed during shutdown"),
            None if code == 0 => QUIT_AT_SHUTDOWN.to_string(),
            None => format!("qemu ended with {code} during shutdown"),
        };
        return Next::Failed {
            code: fail_code,
            why,
        };
    }
    if end.clean && code == 0 {
        return Next::Stopped { asked: false };
    }
    let failures = failures + 1;
    if end.give_up {
        return Next::Failed {
            code: Code::Failure,
            why: format!("{cause}; not restarting (bootstrap.on_timeout = \"fail\")"),
        };
    }
    match policy {
        RestartPolicy::OnFailure { max, backoff } if failures <= max => {
            let wait = backoff.saturating_mul(1 << (failures - 1).min(6));
            Next::Restart {
                wait,
                why: format!("{cause}; restart {failures}/{max} in {}s", wait.as_secs()),
            }
        }
        RestartPolicy::OnFailure { max, .. } => Next::Failed {
            code: fail_code,
            why: format!("{cause}; restart policy on-failure: {max}/{max} restarts used"),
        },
        RestartPolicy::Never => Next::Failed {
            code: fail_code,
            why: format!("{cause}; restart policy never: not restarting"),
        },
    }
}

/// One VM's life: spawn qemu, supervise it, restart it per policy, until it is stopped, powers
/// off, or gives up. Returns the code the VM ends with.
pub async fn life(mut vm: Vm, mut stop: watch::Receiver<StopLevel>) -> Code {
    let mut failures = 0u32;
    loop {
        if stop.borrow().is_stop() {
            return stopped(&vm.handle, "stopped before qemu started");
        }
        // With a bootstrap, humans can watch from the first byte but type only after it.
        vm.hub.hold(vm.plan.bootstrap.is_some());
        // Each qemu gets a fresh RAM; a restore's is filled while qemu starts (or earlier).
        let (ram, restore) = match super::restore::ram_for(
            &vm.plan.name,
            vm.plan.machine.memory_mib,
            vm.snap.restore.take(),
        ) {
            Ok(r) => r,
            Err(e) => return failed(&vm, format!("cannot make the guest RAM (memfd): {e}")),
        };
        let argv = super::restore::argv_for(&vm.argv, restore.is_some());
        let mut fds = vm.fds.clone();
        fds.push((vm.ram, ram.raw()));
        let pid = match spawn::qemu(&argv, &fds, &vm.vhost, vm.creds.as_ref()) {
            Ok(p) => p,
            Err(e) => return failed(&vm, exit::chain(&e)),
        };
        vm.snap.ram.set(Some(ram));
        // Watched before the next await: the reaper cannot have reaped it yet.
        let exited = vm.reaper.watch(pid);
        tracing::info!(vm = %vm.plan.name, pid, "qemu started");
        vm.handle.set_pid(Some(pid));
        vm.handle
            .advance(State::Booting, format!("qemu pid {pid} started"));
        let child = Child {
            pid,
            exited,
            restore,
        };
        let end = qemu_run::supervise(&mut vm, &mut stop, child).await;
        vm.handle.set_pid(None);
        // The RAM's pages go with its qemu (a save holds it only while it reads).
        vm.snap.ram.set(None);
        match after_exit(&end, failures, vm.plan.supervision.restart) {
            Next::Stopped { asked: true } => {
                vm.handle.advance(State::Stopped, "guest powered off");
                tracing::info!(vm = %vm.plan.name, "clean shutdown");
                return Code::Ok;
            }
            Next::Stopped { asked: false } => {
                return stopped(&vm.handle, "guest powered itself off")
            }
            Next::Failed { code, why } => {
                vm.handle.advance(State::Failed, why);
                return code;
            }
            Next::Restart { wait, why } => {
                failures += 1;
                vm.handle.advance(State::Restarting, why);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|l| l.is_stop()) => {
                        return stopped(&vm.handle, "stopped while waiting to restart qemu");
                    }
                }
            }
        }
    }
}

/// What stopping a VM after its install leaves (`cause during shutdown` below): qemu exited 0
/// on the `quit` that follows a guest not powering off in time.
const QUIT_AT_SHUTDOWN: &str = "qemu ended with 0 during shutdown";

/// The exit code of an install that finished: the node's, except that a guest that did not
/// power off in time and was then quit (qemu exited 0, its disks flushed) counts as done.
pub fn install_code(code: Code, state: &crate::state::NodeState, vm: usize) -> Code {
    let reason = state.shared().lock().unwrap().vms[vm]
        .lifecycle
        .reason
        .clone();
    if code == Code::Failure && reason == QUIT_AT_SHUTDOWN {
        tracing::warn!("the guest did not power off in time; qemu quit: install kept");
        return Code::Ok;
    }
    code
}

/// Failed, for `msg`, reported once: the log line (stdout, so docker logs) and the VM's
/// status.
fn failed(vm: &Vm, msg: String) -> Code {
    tracing::error!(vm = %vm.plan.name, "{msg}");
    vm.handle.advance(State::Failed, msg);
    Code::Failure
}

/// Stopping, then stopped, for `why`: a stop with no qemu to power down.
fn stopped(handle: &VmHandle, why: &str) -> Code {
    handle.advance(State::Stopping, why);
    handle.advance(State::Stopped, why);
    Code::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: i32, stopping: bool, clean: bool, give_up: bool) -> RunEnd {
        RunEnd {
            code,
            stopping,
            clean,
            give_up,
            killed: None,
        }
    }
    /// A run whose qemu the launcher killed (SIGKILL: 137) for `why`.
    fn killed(stopping: bool, give_up: bool, why: &str) -> RunEnd {
        RunEnd {
            killed: Some(why.into()),
            ..end(137, stopping, false, give_up)
        }
    }
    const BOOT: &str = "bootstrap step 2 (expect \"# \") timed out after 10s on attempt 1";
    const NEVER: RestartPolicy = RestartPolicy::Never;
    fn on_failure(max: u32) -> RestartPolicy {
        RestartPolicy::OnFailure {
            max,
            backoff: Duration::from_secs(2),
        }
    }

    #[test]
    fn asked_to_stop_and_powered_off_is_stopped() {
        assert_eq!(
            after_exit(&end(0, true, true, false), 0, on_failure(3)),
            Next::Stopped { asked: true }
        );
    }

    #[test]
    fn asked_to_stop_but_quit_or_killed_fails_with_its_code_and_0_becomes_1() {
        let n = after_exit(&end(137, true, false, false), 0, on_failure(3));
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Guest(137),
                why: "qemu ended with 137 during shutdown".into()
            }
        );
        let n = after_exit(&end(0, true, false, false), 0, NEVER);
        assert!(
            matches!(
                n,
                Next::Failed {
                    code: Code::Failure,
                    ..
                }
            ),
            "{n:?}"
        );
    }

    #[test]
    fn the_guest_powering_itself_off_is_stopped_not_restarted() {
        assert_eq!(
            after_exit(&end(0, false, true, false), 0, on_failure(3)),
            Next::Stopped { asked: false }
        );
    }

    #[test]
    fn a_bootstrap_give_up_fails_with_1_whatever_the_policy() {
        let n = after_exit(&killed(false, true, BOOT), 0, on_failure(3));
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Failure,
                why: format!("{BOOT}; not restarting (bootstrap.on_timeout = \"fail\")")
            }
        );
    }

    #[test]
    fn a_kill_by_the_launcher_restarts_with_its_reason_then_fails_with_1_not_137() {
        let n = after_exit(&killed(false, false, BOOT), 0, on_failure(3));
        assert_eq!(
            n,
            Next::Restart {
                wait: Duration::from_secs(2),
                why: format!("{BOOT}; restart 1/3 in 2s")
            }
        );
        let n = after_exit(&killed(false, false, BOOT), 3, on_failure(3));
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Failure,
                why: format!("{BOOT}; restart policy on-failure: 3/3 restarts used")
            }
        );
        let why = "guest not ready within the boot timeout (120s)";
        let n = after_exit(&killed(false, false, why), 0, NEVER);
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Failure,
                why: format!("{why}; restart policy never: not restarting")
            }
        );
        // Killed at the end of the shutdown escalation: 1 too, not 137.
        let n = after_exit(
            &killed(true, false, "qemu still alive 3s after quit"),
            0,
            NEVER,
        );
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Failure,
                why: "qemu still alive 3s after quit: killed during shutdown".into()
            }
        );
    }

    #[test]
    fn on_failure_restarts_with_a_doubling_backoff_capped_at_2_pow_6() {
        let n = after_exit(&end(1, false, false, false), 0, on_failure(3));
        assert_eq!(
            n,
            Next::Restart {
                wait: Duration::from_secs(2),
                why: "qemu exited with 1; restart 1/3 in 2s".into()
            }
        );
        let n = after_exit(&end(1, false, false, false), 2, on_failure(3));
        assert!(matches!(n, Next::Restart { wait, .. } if wait == Duration::from_secs(8)));
        let n = after_exit(&end(1, false, false, false), 19, on_failure(100));
        assert!(
            matches!(n, Next::Restart { wait, .. } if wait == Duration::from_secs(2 * 64)),
            "{n:?}"
        );
        // A back-off beyond the config's bound saturates rather than panics.
        let huge = RestartPolicy::OnFailure {
            max: 9,
            backoff: Duration::MAX / 2,
        };
        let n = after_exit(&end(1, false, false, false), 5, huge);
        assert!(
            matches!(n, Next::Restart { wait, .. } if wait == Duration::MAX),
            "{n:?}"
        );
    }

    #[test]
    fn beyond_the_policy_fails_with_the_code_and_0_becomes_1() {
        let n = after_exit(&end(137, false, false, false), 3, on_failure(3));
        assert_eq!(
            n,
            Next::Failed {
                code: Code::Guest(137),
                why: "qemu exited with 137; restart policy on-failure: 3/3 restarts used".into()
            }
        );
        // Killed at the boot timeout with code 0 is not clean: a failure, exit 1.
        let n = after_exit(&end(0, false, false, false), 0, NEVER);
        assert!(
            matches!(
                n,
                Next::Failed {
                    code: Code::Failure,
                    ..
                }
            ),
            "{n:?}"
        );
    }
}
