//! One qemu process, from spawn to exit: QMP events (and its loss), the readiness probes, the
//! bootstrap (and its key presses, as QMP `send-key`), the boot timeout, and the shutdown escalation (ACPI powerdown, then QMP `quit`,
//! then SIGKILL). A guest not ready yet (still booting: no ACPI driver to press the button for)
//! is quit at once, and that is a clean stop. Without QMP, `quit` becomes SIGTERM to qemu (qemu
//! handles it as a clean quit of the emulator, not a guest powerdown). Never restarts qemu (the
//! VM's life decides that) and never reaps it (the reaper does).

use super::reaper::exit_code_of;
use super::vm::Vm;
use super::{probes, reset};
use crate::config::VmPlan;
use crate::console::bootstrap::{self, AfterFailure, BootstrapError};
use crate::console::ConsoleEvent;
use crate::exit;
use crate::qemu::qmp::{Event, Qmp, QmpError};
use crate::state::{Probe, Readiness, State, VmHandle};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::{sleep_until, Instant};

/// How long qemu has to exit after `quit` (or SIGTERM) before SIGKILL.
const QUIT_WAIT: Duration = Duration::from_secs(3);

/// What a VM is told by the node: run; power down (ACPI, then quit, then kill); or quit now.
/// Each with why (the signal, or the node stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopLevel {
    Run,
    Graceful(&'static str),
    Now(&'static str),
}

impl StopLevel {
    /// The order of the levels: a VM is only ever told a higher one.
    pub fn rank(self) -> u8 {
        match self {
            StopLevel::Run => 0,
            StopLevel::Graceful(_) => 1,
            StopLevel::Now(_) => 2,
        }
    }
    pub fn why(self) -> &'static str {
        match self {
            StopLevel::Run => "",
            StopLevel::Graceful(w) | StopLevel::Now(w) => w,
        }
    }
    pub fn is_stop(self) -> bool {
        self != StopLevel::Run
    }
}

/// A spawned qemu: its pid and where its exit status will arrive.
pub struct Child {
    pub pid: i32,
    pub exited: oneshot::Receiver<WaitStatus>,
    /// Fast start: load this instead of booting.
    pub restore: Option<super::restore::Restoring>,
}

/// How one qemu run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// Its exit code, or 128 + the signal.
    pub code: i32,
    /// The node had asked it to stop.
    pub stopping: bool,
    /// The guest powered off by itself or on the ACPI button (not quit, not killed).
    pub clean: bool,
    /// The bootstrap failed with on_timeout = fail: no restart.
    pub give_up: bool,
    /// The launcher killed qemu, for this reason (a failed bootstrap, the boot timeout, the
    /// shutdown escalation): its 137 is ours, not the guest's.
    pub killed: Option<String>,
}

/// Where the shutdown escalation is. Only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    /// ACPI powerdown sent; QMP `quit` at `until`.
    PoweringDown {
        until: Instant,
    },
    /// `quit` (or SIGTERM) sent; SIGKILL at `until`. `clean`: quitting is the clean stop (the
    /// guest was still booting).
    Quitting {
        until: Instant,
        clean: bool,
    },
    /// SIGKILL sent (by the escalation, the boot timeout or a failed bootstrap).
    Killed,
}

impl Shutdown {
    fn deadline(self) -> Option<Instant> {
        match self {
            Shutdown::PoweringDown { until } | Shutdown::Quitting { until, .. } => Some(until),
            Shutdown::Running | Shutdown::Killed => None,
        }
    }
    /// An exit now would be clean: never quit (unless quitting was the clean stop), never
    /// killed.
    fn clean(self) -> bool {
        matches!(
            self,
            Shutdown::Running
                | Shutdown::PoweringDown { .. }
                | Shutdown::Quitting { clean: true, .. }
        )
    }
    /// The next escalation step at once ("quit now").
    fn hurry(self) -> Self {
        let until = Instant::now();
        match self {
            Shutdown::PoweringDown { .. } => Shutdown::PoweringDown { until },
            Shutdown::Quitting { clean, .. } => Shutdown::Quitting { until, clean },
            s => s,
        }
    }
}

/// Supervises one qemu process until it exits.
pub async fn supervise(vm: &mut Vm, stop: &mut watch::Receiver<StopLevel>, child: Child) -> RunEnd {
    let Child {
        pid,
        mut exited,
        mut restore,
    } = child;
    let (mut helpers, mut feeds) = probes::start(
        &vm.plan,
        &vm.facts,
        &vm.hub,
        vm.cables.clone(),
        restore.is_some(),
    );
    let mut run = Run::new(&vm.plan, &vm.handle, Pid::from_raw(pid));
    // Drain console readiness and resets left over from a previous run.
    while vm.console_rx.try_recv().is_ok() {}
    reset::refuse_waiting(&mut vm.resets);
    // A stop asked for before this run began counts at once.
    stop.mark_changed();
    // A restore's checks after `cont` (the console answering, the guest clock), while they run.
    let mut after_cont: Option<super::resumed::AfterCont> = None;
    let end = loop {
        let deadline = run.shutdown.deadline();
        let boot_timer = !run.booted && !run.stopping;
        tokio::select! {
            ws = &mut exited => break run.exited(ws.ok()),
            Ok(()) = stop.changed() => {
                let level = *stop.borrow_and_update();
                run.on_stop(level).await;
            }
            Some(q) = feeds.qmp.recv() => {
                vm.snap.qmp.set(q.clone());
                if let (Some(q), Some(r)) = (&q, restore.take()) {
                    match super::restore::resume(vm, q, r).await {
                        Ok((passed, after)) => {
                            passed.into_iter().for_each(|(p, why)| run.probe(p, why));
                            helpers.guest_runs();
                            after_cont = Some(after);
                        }
                        Err(why) => run.kill(format!("restore failed: {why}")),
                    }
                }
                run.on_qmp(q);
            }
            answered = async {
                match after_cont.as_mut() {
                    Some(a) => a.console_answered().await,
                    None => false,
                }
            }, if after_cont.as_ref().is_some_and(|a| a.console_pending()) => {
                if answered {
                    run.probe(Probe::Pattern, "restored: the console answers");
                }
            }
            Some(e) = feeds.events.recv() => {
                if matches!(e, Event::Reset { .. }) {
                    vm.hub.rearm_ready();
                }
                run.on_event(e);
            }
            Some(r) = feeds.bootstrap.recv() => run.on_bootstrap(r),
            Some(k) = vm.keys.recv() => {
                let _ = k.done.send(press(run.qmp.as_deref(), &k.keys).await);
            }
            Some(ConsoleEvent::ReadyPattern(p)) = vm.console_rx.recv() => {
                tracing::debug!(pattern = %p, "ready pattern seen");
                run.probe(Probe::Pattern, format!("console showed {p:?}"));
            }
            Some(req) = reset::next(&mut vm.resets) => {
                reset::answer(&vm.plan.name, run.qmp.as_deref(), run.stopping, req).await;
            }
            Some(port) = feeds.tcp.recv() => {
                tracing::debug!(port, "TCP probe answered");
                run.probe(Probe::Tcp, format!("TCP port {port} answers"));
            }
            _ = sleep_until(run.boot_deadline), if boot_timer => run.on_boot_timeout(),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                run.on_deadline().await;
            }
        }
        // A restored guest's clock is set once it is ready (resumed::AfterCont).
        if run.readiness.is_ready() {
            if let Some(a) = after_cont.as_mut() {
                a.ready();
            }
        }
    };
    drop(helpers);
    drop(feeds);
    end
}

/// The state of one run.
struct Run<'a> {
    plan: &'a VmPlan,
    handle: &'a VmHandle,
    pid: Pid,
    qmp: Option<Arc<Qmp>>,
    /// The node asked this VM to stop.
    stopping: bool,
    /// The highest stop level seen (a level is acted on once).
    level_seen: u8,
    shutdown: Shutdown,
    readiness: Readiness,
    /// Ready once (the boot timeout is off), until a reset.
    booted: bool,
    boot_deadline: Instant,
    give_up: bool,
    /// Why the launcher killed qemu, once it did.
    killed: Option<String>,
    /// The QMP connection was lost (or never came) and is not back.
    qmp_lost: bool,
    /// qemu was sent SIGTERM (a quit without QMP).
    sigterm: bool,
}

impl<'a> Run<'a> {
    fn new(plan: &'a VmPlan, handle: &'a VmHandle, pid: Pid) -> Self {
        Self {
            plan,
            handle,
            pid,
            qmp: None,
            stopping: false,
            level_seen: 0,
            shutdown: Shutdown::Running,
            readiness: new_readiness(plan),
            booted: false,
            boot_deadline: Instant::now() + plan.supervision.boot_timeout,
            give_up: false,
            killed: None,
            qmp_lost: false,
            sigterm: false,
        }
    }

    fn exited(&self, ws: Option<WaitStatus>) -> RunEnd {
        let ws = ws.unwrap_or(WaitStatus::Exited(self.pid, 1));
        let code = exit_code_of(ws).unwrap_or(1);
        tracing::info!(vm = %self.plan.name, ?ws, code, "qemu exited");
        RunEnd {
            code,
            stopping: self.stopping,
            // Dead of our SIGTERM before qemu handled it (right after exec): still a quit.
            clean: (code == 0 || (self.sigterm && code == 128 + 15)) && self.shutdown.clean(),
            give_up: self.give_up,
            killed: self.killed.clone(),
        }
    }

    fn kill(&mut self, why: impl Into<String>) {
        let _ = kill(self.pid, Signal::SIGKILL);
        self.shutdown = Shutdown::Killed;
        self.killed.get_or_insert_with(|| why.into());
    }

    /// QMP (re)connected, or lost (`None`). Shown in status: a ready VM whose QMP is gone is
    /// only running (unhealthy) until QMP is back.
    fn on_qmp(&mut self, q: Option<Arc<Qmp>>) {
        let back = q.is_some() && self.qmp_lost;
        self.qmp_lost = q.is_none();
        self.qmp = q;
        if self.stopping {
            return;
        }
        let state = self.handle.state();
        if self.qmp_lost {
            let why = "QMP connection lost; reconnecting";
            if state == State::Ready {
                self.handle.advance(State::Running, why);
            } else {
                self.handle.note(why);
            }
        } else if back {
            if state == State::Running && self.readiness.is_ready() {
                self.handle.advance(State::Ready, "QMP reconnected");
            } else {
                self.handle.note("QMP reconnected");
            }
        }
    }

    /// A readiness probe passed (ignored once stopping).
    fn probe(&mut self, p: Probe, reason: impl Into<String>) {
        self.booted |= self
            .handle
            .probe_passed(&mut self.readiness, p, self.stopping, reason);
    }

    async fn on_stop(&mut self, level: StopLevel) {
        if level.rank() <= self.level_seen {
            return;
        }
        self.level_seen = level.rank();
        let why = level.why();
        if !self.stopping {
            self.stopping = true;
            if self.shutdown != Shutdown::Running {
                // Already being killed (boot timeout, bootstrap): nothing more to send.
                self.handle
                    .advance(State::Stopping, format!("{why}: qemu being killed"));
            } else if !self.readiness.is_ready() {
                // No ACPI driver to press the button for yet: quitting loses nothing.
                self.handle.advance(
                    State::Stopping,
                    format!("{why}: guest still booting: quitting qemu"),
                );
                self.shutdown = self.quit(true).await;
            } else {
                self.handle
                    .advance(State::Stopping, format!("{why}: ACPI powerdown"));
                self.shutdown = self.power_down().await;
            }
        }
        if let StopLevel::Now(_) = level {
            tracing::info!(vm = %self.plan.name, why, "second stop signal: quitting qemu now");
            self.shutdown = self.shutdown.hurry();
        }
    }

    /// The ACPI power button; with no QMP (or a refusal) qemu is quit at once.
    async fn power_down(&mut self) -> Shutdown {
        let until = Instant::now() + self.plan.supervision.shutdown_timeout;
        let Some(q) = &self.qmp else {
            tracing::warn!("QMP unavailable: no ACPI powerdown possible; quitting qemu");
            return self.quit(false).await;
        };
        match q
            .execute("system_powerdown", None, Duration::from_secs(5))
            .await
        {
            Ok(_) => Shutdown::PoweringDown { until },
            Err(e) => {
                tracing::warn!(error = %e, "system_powerdown failed; quitting qemu");
                self.quit(false).await
            }
        }
    }

    /// QMP `quit`; without QMP (or when it fails) SIGTERM, which qemu handles as a clean quit
    /// of the emulator (not a guest powerdown). SIGKILL follows if qemu is still there.
    /// `clean`: this quit is the clean stop.
    async fn quit(&mut self, clean: bool) -> Shutdown {
        let quit = match &self.qmp {
            Some(q) => q.execute("quit", None, Duration::from_secs(2)).await.err(),
            None => Some(QmpError::Closed),
        };
        if let Some(e) = quit {
            tracing::warn!(error = %e, "QMP quit failed: SIGTERM to qemu");
            let _ = kill(self.pid, Signal::SIGTERM);
            self.sigterm = true;
        }
        Shutdown::Quitting {
            until: Instant::now() + QUIT_WAIT,
            clean,
        }
    }

    /// The escalation's deadline passed: quit, then kill.
    async fn on_deadline(&mut self) {
        match self.shutdown {
            Shutdown::PoweringDown { .. } => {
                tracing::warn!("guest did not power off in time: QMP quit");
                self.shutdown = self.quit(false).await;
            }
            Shutdown::Quitting { .. } => {
                tracing::warn!("qemu still alive after quit: SIGKILL");
                self.kill(format!(
                    "qemu still alive {}s after quit",
                    QUIT_WAIT.as_secs()
                ));
            }
            Shutdown::Running | Shutdown::Killed => {}
        }
    }

    fn on_boot_timeout(&mut self) {
        tracing::error!(
            timeout_s = self.plan.supervision.boot_timeout.as_secs(),
            "guest not ready within the boot timeout; killing qemu"
        );
        self.booted = true; // fire once
        self.kill(format!(
            "guest not ready within the boot timeout ({}s)",
            self.plan.supervision.boot_timeout.as_secs()
        ));
    }

    fn on_bootstrap(&mut self, r: Result<(), BootstrapError>) {
        match r {
            Ok(()) => self.probe(Probe::Bootstrap, "bootstrap finished"),
            Err(e) => {
                tracing::error!(error = %e, "bootstrap failed");
                if !self.stopping {
                    let policy = self.plan.bootstrap.as_ref().map(|b| b.on_timeout);
                    self.give_up = policy
                        .is_some_and(|p| bootstrap::after_failure(&e, p) == AfterFailure::GiveUp);
                    self.kill(exit::chain(&e));
                }
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        tracing::debug!(?e, "QMP event");
        match e {
            Event::Resume if !self.stopping => {
                if self.handle.state() == State::Booting {
                    self.handle
                        .advance(State::Running, "qemu reports the guest running");
                }
                self.probe(
                    Probe::Running,
                    "guest running (no readiness probe configured)",
                );
            }
            Event::Reset { guest } if !self.stopping => {
                self.booted = false;
                self.readiness = new_readiness(self.plan);
                let why = if guest { "guest rebooted" } else { "VM reset" };
                self.handle.advance(State::Booting, why);
                self.handle
                    .advance(State::Running, "guest running after reset");
            }
            Event::Shutdown { guest, reason } => {
                tracing::info!(guest, %reason, "qemu reports shutdown");
            }
            Event::GuestPanicked { action } => tracing::error!(%action, "guest panicked"),
            Event::Stop => tracing::info!("VM paused"),
            _ => {}
        }
    }
}

/// QMP `send-key`: `keys` (qemu's names) pressed together.
async fn press(qmp: Option<&Qmp>, keys: &[String]) -> Result<(), String> {
    let q = qmp.ok_or("QMP is not connected")?;
    let keys: Vec<_> = keys
        .iter()
        .map(|k| serde_json::json!({ "type": "qcode", "data": k }))
        .collect();
    q.execute(
        "send-key",
        Some(serde_json::json!({ "keys": keys })),
        Duration::from_secs(5),
    )
    .await
    .map(|_| ())
    .map_err(|e| exit::chain(&e))
}

fn new_readiness(plan: &VmPlan) -> Readiness {
    Readiness::new(
        plan.console.ready_pattern.is_some(),
        plan.bootstrap.is_some(),
        plan.tcp_probe().is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escalation_only_moves_forward_and_hurries() {
        let later = Instant::now() + Duration::from_secs(60);
        let s = Shutdown::PoweringDown { until: later };
        assert!(s.clean() && Shutdown::Running.clean());
        let quit = |clean| Shutdown::Quitting {
            until: later,
            clean,
        };
        assert!(!quit(false).clean() && !Shutdown::Killed.clean());
        // Quitting a guest that was still booting is the clean stop, and stays so when hurried.
        assert!(quit(true).clean() && quit(true).hurry().clean());
        assert_eq!(Shutdown::Running.deadline(), None);
        assert_eq!(Shutdown::Killed.deadline(), None);
        assert!(s.hurry().deadline().unwrap() <= Instant::now());
        assert_eq!(Shutdown::Killed.hurry(), Shutdown::Killed);
        assert_eq!(Shutdown::Running.hurry(), Shutdown::Running);
    }

    #[test]
    fn stop_levels_are_ordered() {
        assert!(StopLevel::Run.rank() < StopLevel::Graceful("x").rank());
        assert!(StopLevel::Graceful("x").rank() < StopLevel::Now("x").rank());
        assert!(!StopLevel::Run.is_stop() && StopLevel::Now("SIGINT").is_stop());
        assert_eq!(StopLevel::Now("SIGINT").why(), "SIGINT");
    }
}
