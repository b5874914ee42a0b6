//! What follows a restored guest's `cont` ([`super::restore::resume`]): which of its readiness
//! probes the restore itself satisfies ([`restored_probes`]), and the checks that run beside
//! the supervision ([`after_cont`]): the console asked whether it answers, when its pattern
//! counts that way ([`Console`]), and with `vm.clock = "guest-agent"` the guest's clock set
//! once the VM is ready (or [`CLOCK_DEFER`] after `cont`): under TCG the agent's work (and its
//! `hwclock -w`) would otherwise compete with the probed service for the guest's one cold CPU.
//! Never loads, resumes or stops a qemu, and never decides readiness itself: it reports.

use super::vm::Vm;
use crate::config::Clock;
use crate::console::Hub;
use crate::qemu::agent::{self, Agent, AgentError};
use crate::state::Probe;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long the guest agent has to answer after `cont`.
const AGENT_WAIT: Duration = Duration::from_secs(20);
/// How long a restored console has to answer a carriage return.
const CONSOLE_WAIT: Duration = Duration::from_secs(15);
/// How long after `cont` the guest clock waits for the VM to be ready before it is set anyway.
const CLOCK_DEFER: Duration = Duration::from_secs(10);

/// How a restored VM's console pattern counts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// It has none.
    None,
    /// When the console answers a carriage return: the only sign that the guest runs.
    Asked,
    /// At once: a TCP probe checks the guest, and under TCG the console's answer (a login
    /// prompt drawn again) took 30-50 ms of the guest's one vCPU from that probe's service.
    Counted,
}

impl Console {
    /// How `vm`'s counts: by its console pattern and its TCP probe.
    pub fn of(vm: &Vm) -> Self {
        match (vm.plan.console.ready_pattern.is_some(), vm.plan.tcp_probe()) {
            (false, _) => Console::None,
            (true, None) => Console::Asked,
            (true, Some(_)) => Console::Counted,
        }
    }

    /// As the restore's log line gives it.
    pub fn name(self) -> &'static str {
        match self {
            Console::None => "none",
            Console::Asked => "asked",
            Console::Counted => "counted",
        }
    }
}

/// The probes a restore satisfies by itself: a bootstrap (it ran before the save), and the
/// console pattern when it counts at once ([`Console::Counted`]).
pub fn restored_probes(vm: &Vm, console: Console) -> Vec<(Probe, String)> {
    let mut passed = Vec::new();
    if vm.plan.bootstrap.is_some() {
        passed.push((
            Probe::Bootstrap,
            "restored: the bootstrap ran before the save".into(),
        ));
    }
    if console == Console::Counted {
        passed.push((
            Probe::Pattern,
            "restored: the console showed its pattern before the save".into(),
        ));
    }
    passed
}

/// What runs after a restored guest's `cont`, each on a task of its own (aborted when this is
/// dropped, at the end of the run): the console is asked whether it answers, when its pattern
/// counts that way ([`Console::Asked`]; up to [`CONSOLE_WAIT`]), and with
/// `vm.clock = "guest-agent"` the guest's clock is set (up to [`AGENT_WAIT`]) once
/// [`AfterCont::ready`] is told, or [`CLOCK_DEFER`] after `cont`. Meanwhile the VM is
/// supervised as usual: readiness, a stop or a reset never wait for them.
pub struct AfterCont {
    console: Option<tokio::task::JoinHandle<bool>>,
    clock: tokio::task::JoinHandle<()>,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AfterCont {
    /// The VM is ready (its probes passed again): the guest clock is set now. Once is enough;
    /// later calls do nothing.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the console's answer is still to come.
    pub fn console_pending(&self) -> bool {
        self.console.is_some()
    }

    /// Whether the restored console answered (pending forever once told).
    pub async fn console_answered(&mut self) -> bool {
        match self.console.as_mut() {
            Some(h) => {
                let answered = h.await.unwrap_or(false);
                self.console = None;
                answered
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for AfterCont {
    fn drop(&mut self) {
        if let Some(h) = &self.console {
            h.abort();
        }
        self.clock.abort();
    }
}

/// Starts what follows the `cont` of `vm`, whose console pattern counts as `console` says.
pub fn after_cont(vm: &Vm, console: Console) -> AfterCont {
    let hub = vm.hub.clone();
    let (name, clock, socket) = (vm.plan.name.clone(), vm.plan.clock, vm.plan.agent_socket());
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    AfterCont {
        console: (console == Console::Asked)
            .then(|| tokio::spawn(async move { console_answers(&hub).await })),
        clock: tokio::spawn(async move { set_clock(&name, clock, &socket, is_ready).await }),
        ready: Some(ready),
    }
}

/// vm.clock = "guest-agent": the guest's wall clock lags by the snapshot's age; once `ready`
/// comes (or [`CLOCK_DEFER`] has passed) the guest agent sets it to the host's (bounded by
/// [`AGENT_WAIT`]; a failure is logged, never fatal).
async fn set_clock(
    vm: &str,
    clock: Clock,
    socket: &Path,
    ready: tokio::sync::oneshot::Receiver<()>,
) {
    if clock != Clock::GuestAgent {
        return;
    }
    let _ = tokio::time::timeout(CLOCK_DEFER, ready).await;
    let t0 = Instant::now();
    let set = async {
        let mut a = Agent::connect(socket, AGENT_WAIT).await?;
        let before = a.get_time().await?;
        a.set_time_now().await?;
        Ok::<i64, AgentError>(agent::now_ns() - before)
    };
    match set.await {
        Ok(lag) => tracing::info!(
            vm = %vm,
            lag_ms = lag / 1_000_000,
            ms = t0.elapsed().as_millis() as u64,
            "guest clock set by the guest agent"
        ),
        Err(e) => tracing::warn!(
            vm = %vm,
            "guest clock not set: {}",
            crate::exit::chain(&e)
        ),
    }
}

/// A carriage return to the restored console, and any answer within [`CONSOLE_WAIT`].
async fn console_answers(hub: &Hub) -> bool {
    let mut rx = hub.subscribe();
    hub.write(b"\r").await;
    tokio::time::timeout(CONSOLE_WAIT, async {
        loop {
            match rx.recv().await {
                Ok(b) if !b.is_empty() => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}
