//! PID 1's duties towards signals and children: the stop signals (SIGTERM, SIGINT; SIGHUP and
//! SIGQUIT too when not PID 1), the SIGCHLD reaper (the one owner of exit statuses) and, when
//! not PID 1, a checked child subreaper; and the open-file limit raised for the children to
//! come. All before any child exists. Never decides what a stop means (the node does).

use super::SupervisorError;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{signal, Signal as SigStream, SignalKind};
use tokio::sync::oneshot;

/// The soft open-file limit raised to the hard one (logged), signals, then the reaper, then
/// (when not PID 1) the subreaper: orphans of qemu's helpers get re-parented to us, as they
/// would to PID 1. A subreaper that cannot be set is fatal, as in tini and catatonit: without
/// it those orphans escape the reaper.
pub fn start() -> Result<(Signals, Reaper), SupervisorError> {
    super::spawn::raise_nofile();
    let signals = Signals::new(std::process::id() == 1)?;
    let reaper = Reaper::start()?;
    if std::process::id() != 1 {
        // SAFETY: prctl with integer arguments only; no memory is passed to the kernel.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if r != 0 {
            return Err(SupervisorError::Subreaper(std::io::Error::last_os_error()));
        }
    }
    Ok((signals, reaper))
}

/// How a child ended, as an exit code: its code, or 128 + the signal.
pub fn exit_code_of(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// The stop signals the launcher listens to. (SIGCHLD belongs to the [`Reaper`].)
///
/// Outside a container (not PID 1) SIGHUP (the terminal closed) and SIGQUIT (^\) stop it as
/// SIGTERM does: their default action would kill the launcher on the spot and leave qemu
/// behind. As PID 1 they keep their default, which for PID 1 is to be ignored: a container is
/// stopped with SIGTERM.
pub struct Signals {
    term: SigStream,
    int: SigStream,
    /// SIGHUP and SIGQUIT, when not PID 1.
    hup_quit: Option<(SigStream, SigStream)>,
}

impl Signals {
    fn new(pid1: bool) -> Result<Self, SupervisorError> {
        let s = |k| signal(k).map_err(SupervisorError::Signals);
        Ok(Self {
            term: s(SignalKind::terminate())?,
            int: s(SignalKind::interrupt())?,
            hup_quit: match pid1 {
                true => None,
                false => Some((s(SignalKind::hangup())?, s(SignalKind::quit())?)),
            },
        })
    }

    /// The next stop signal, by name.
    pub async fn stop(&mut self) -> &'static str {
        let hup_quit = async {
            match &mut self.hup_quit {
                Some((hup, quit)) => tokio::select! {
                    _ = hup.recv() => "SIGHUP",
                    _ = quit.recv() => "SIGQUIT",
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            s = hup_quit => s,
        }
    }
}

/// The one owner of exit statuses: on every SIGCHLD it reaps every exited child
/// (`waitpid(-1, WNOHANG)` until none is left) and hands the status of each watched pid to the
/// task that spawned it; anything else is an orphan, logged and gone.
///
/// Hidden invariant: it runs on the launcher's one runtime thread (a current-thread runtime,
/// see `commands::run`), so std's own `waitpid` on a child it spawned and waits for itself
/// (`qemu-img` in `disks::prepare`) cannot be raced by this loop.
#[derive(Clone)]
pub struct Reaper {
    watched: Arc<Mutex<HashMap<i32, oneshot::Sender<WaitStatus>>>>,
}

impl Reaper {
    fn start() -> Result<Self, SupervisorError> {
        let mut chld = signal(SignalKind::child()).map_err(SupervisorError::Signals)?;
        let r = Reaper {
            watched: Default::default(),
        };
        let task = r.clone();
        tokio::spawn(async move {
            while chld.recv().await.is_some() {
                task.reap();
            }
        });
        Ok(r)
    }

    /// Where `pid`'s status will arrive. Call right after spawning, before the next await: the
    /// reaper runs on this same thread, so it cannot reap the child in between.
    pub fn watch(&self, pid: i32) -> oneshot::Receiver<WaitStatus> {
        let (tx, rx) = oneshot::channel();
        self.watched.lock().unwrap().insert(pid, tx);
        rx
    }

    fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    let owner = ws
                        .pid()
                        .and_then(|p| self.watched.lock().unwrap().remove(&p.as_raw()));
                    match owner {
                        Some(tx) => {
                            let _ = tx.send(ws);
                        }
                        None => tracing::info!(?ws, "reaped orphan"),
                    }
                }
            }
        }
    }
}
