//! The helpers that watch one qemu run from the side, each a task that reports over a channel:
//! the QMP connection (its handle and its events, reconnected with a back-off while qemu lives),
//! the TCP readiness probe (from the start of a boot; from `cont` for a restored guest, whose
//! paused qemu would swallow its first connection into slirp's seconds-long retransmit), and
//! the bootstrap
//! (the scripted console user). Dropping [`Helpers`] ends them all. Never moves the VM's state
//! (the run does, from what they report).

use super::cables::{self, AbortOnDrop, VmCables};
use super::mgmt::VmFacts;
use crate::config::VmPlan;
use crate::console::{bootstrap, Hub};
use crate::qemu::qmp::{Event, Qmp};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the helpers report.
pub struct Feeds {
    /// The QMP handle at each (re)connect; `None` when the connection was lost (or never came).
    pub qmp: UnboundedReceiver<Option<Arc<Qmp>>>,
    /// QMP events (a `Resume` first when qemu already runs the guest at connect time).
    pub events: UnboundedReceiver<Event>,
    /// The bootstrap's verdict.
    pub bootstrap: UnboundedReceiver<Result<(), bootstrap::BootstrapError>>,
    /// The port, once the TCP probe got an answer.
    pub tcp: UnboundedReceiver<u16>,
}

/// The running helper tasks; dropped, they end (and a bootstrap's hold on the console is
/// released).
pub struct Helpers {
    tasks: Vec<JoinHandle<()>>,
    hub: Option<Hub>,
    /// Lets the TCP probe begin (a restore's `cont`); None once sent, or for a boot.
    guest_runs: Option<oneshot::Sender<()>>,
}

impl Helpers {
    /// The restored guest runs (`cont` went through): the TCP probe may begin.
    pub fn guest_runs(&mut self) {
        if let Some(go) = self.guest_runs.take() {
            let _ = go.send(());
        }
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(hub) = &self.hub {
            hub.hold(false);
        }
    }
}

/// Starts the helpers for one run of `plan`'s qemu (its ports' link states told over each QMP
/// connection when it has `cables`); `restoring`: the guest is restored, not booted (its
/// bootstrap ran before the save, and the TCP probe waits for [`Helpers::guest_runs`]).
pub fn start(
    plan: &VmPlan,
    facts: &VmFacts,
    hub: &Hub,
    cables: Option<VmCables>,
    restoring: bool,
) -> (Helpers, Feeds) {
    let (qmp_tx, qmp) = unbounded_channel();
    let (ev_tx, events) = unbounded_channel();
    let (boot_tx, bootstrap) = unbounded_channel();
    let (tcp_tx, tcp) = unbounded_channel();
    let (go, runs) = oneshot::channel();
    let mut helpers = Helpers {
        tasks: Vec::new(),
        hub: None,
        guest_runs: Some(go),
    };
    if !restoring {
        helpers.guest_runs();
    }
    // The bootstrap, when configured, runs against this qemu's console.
    if let Some(b) = plan.bootstrap.clone().filter(|_| !restoring) {
        let hub = hub.clone();
        let values = facts.values.clone();
        // Read at every run: an edited startup config reaches the next restart.
        let startup = facts
            .resolved
            .startup_config
            .as_ref()
            .and_then(|sc| std::fs::read_to_string(&sc.path).ok());
        helpers.hub = Some(hub.clone());
        helpers.tasks.push(tokio::spawn(async move {
            let r = bootstrap::run(&b, &hub, &values, startup.as_deref()).await;
            let _ = boot_tx.send(r);
        }));
    }
    // QMP connects in the background; events and the handle come back over channels.
    let path = plan.qmp_socket();
    helpers
        .tasks
        .push(tokio::spawn(qmp_link(path, qmp_tx, ev_tx, cables)));
    // The TCP probe: until the port answers through the management forward.
    if let (Some(port), None) = (plan.console.ready_tcp, plan.tcp_probe()) {
        tracing::warn!(
            vm = %plan.name,
            port,
            "console.ready_tcp has no probe in passthrough (the guest took the container's address): ready on the bootstrap or pattern"
        );
    }
    if let Some(port) = plan.tcp_probe() {
        helpers.tasks.push(tokio::spawn(async move {
            if runs.await.is_err() {
                return;
            }
            loop {
                let t = std::time::Instant::now();
                let ok = tcp_answers(port).await;
                tracing::debug!(
                    port,
                    ok,
                    ms = t.elapsed().as_millis() as u64,
                    "TCP probe attempt"
                );
                if ok {
                    break;
                }
                tokio::time::sleep(TCP_PAUSE).await;
            }
            let _ = tcp_tx.send(port);
        }));
    }
    let feeds = Feeds {
        qmp,
        events,
        bootstrap,
        tcp,
    };
    (helpers, feeds)
}

/// The first QMP connect may take this long (qemu creates the socket a little after exec).
const QMP_FIRST: Duration = Duration::from_secs(30);
/// The back-off between reconnects: doubling from the first to the last.
const QMP_BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(5));
/// A closed connection is reported lost only after this: when qemu is exiting, the run ends
/// (and this task with it) first.
const QMP_GRACE: Duration = Duration::from_millis(500);

/// Keeps a QMP connection to qemu for as long as the task lives (the run aborts it when qemu
/// exits): sends the handle at every connect, forwards the events, reports a loss (`None`), and
/// reconnects with a back-off.
async fn qmp_link(
    path: std::path::PathBuf,
    qmp_tx: UnboundedSender<Option<Arc<Qmp>>>,
    ev_tx: UnboundedSender<Event>,
    cables: Option<VmCables>,
) {
    let mut within = QMP_FIRST;
    let mut wait = QMP_BACKOFF.0;
    let mut lost = false;
    loop {
        match Qmp::connect(&path, within).await {
            Ok((q, mut incoming)) => {
                let q = Arc::new(q);
                if let Ok(st) = q.query_status().await {
                    if st == "running" {
                        let _ = ev_tx.send(Event::Resume);
                    }
                }
                if lost {
                    tracing::info!("QMP reconnected");
                }
                // The ports' link states, told on this connection until it ends.
                let _cables = (cables.clone())
                    .map(|c| AbortOnDrop(tokio::spawn(cables::follow(q.clone(), c))));
                let _ = qmp_tx.send(Some(q));
                while let Some(e) = incoming.recv().await {
                    let _ = ev_tx.send(e);
                }
                tokio::time::sleep(QMP_GRACE).await;
                tracing::warn!("QMP connection lost; reconnecting");
                lost = true;
                let _ = qmp_tx.send(None);
                wait = QMP_BACKOFF.0;
            }
            Err(e) if !lost => {
                tracing::warn!(error = %e, "QMP unavailable; retrying");
                lost = true;
                let _ = qmp_tx.send(None);
            }
            Err(e) => tracing::debug!(error = %e, "QMP reconnect failed"),
        }
        within = Duration::ZERO;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(QMP_BACKOFF.1);
    }
}

/// The TCP probe's pause after an attempt that got no answer: one connection at a time (each
/// costs the guest a service process, an SSH server's fork and exec), a few a second.
const TCP_PAUSE: Duration = Duration::from_millis(250);
/// How long one attempt waits for the service's first bytes. A closed port ends it at once
/// (the guest resets slirp's connection); a guest still without network holds it this long.
const TCP_ANSWER: Duration = Duration::from_secs(3);

/// Whether a service answers on `port` through qemu's user-mode forward. slirp accepts every
/// connection itself (and holds it open while the guest is unreachable), so only bytes from the
/// service count: it is sent an empty line and must say something back (an SSH banner, an HTTP
/// error, ...) within [`TCP_ANSWER`].
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
    matches!(tokio::time::timeout(TCP_ANSWER, s.read(&mut b)).await, Ok(Ok(n)) if n > 0)
}
