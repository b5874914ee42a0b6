//! The supervisor's side of a reset: a VM's run answers each [`ResetRequest`] with a QMP
//! `system_reset` ([`answer`]), and [`watch_file`] turns vrnetlab's `/reset` file into
//! requests. What a reset then does to the VM's state (booting again, readiness reset) follows
//! from qemu's RESET event, as for a guest reboot. Never decides which VMs a request means
//! (`control::reset` does).

use crate::control::{self, ResetRequest, Resets};
use crate::qemu::qmp::Qmp;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

/// How often the reset file is looked for (vrnetlab looks once per pass of its main loop).
const FILE_POLL: Duration = Duration::from_secs(1);

/// The next reset request of a VM whose receiver is attached; never, until it is.
pub async fn next(rx: &mut Option<Receiver<ResetRequest>>) -> Option<ResetRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Requests that waited while no qemu ran are refused, not carried into the new run.
pub fn refuse_waiting(rx: &mut Option<Receiver<ResetRequest>>) {
    if let Some(rx) = rx {
        while let Ok(req) = rx.try_recv() {
            let _ = req.reply.send(Err("the VM was restarting".into()));
        }
    }
}

/// One request, answered: QMP `system_reset` when the VM runs with QMP and is not stopping.
pub async fn answer(vm: &str, qmp: Option<&Qmp>, stopping: bool, req: ResetRequest) {
    let result = match (qmp, stopping) {
        (_, true) => Err("the VM is stopping".to_string()),
        (None, false) => Err("QMP not connected".to_string()),
        (Some(q), false) => q
            .execute("system_reset", None, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    match &result {
        Ok(()) => tracing::info!(vm, "system_reset sent"),
        Err(why) => tracing::warn!(vm, why = %why, "reset refused"),
    }
    let _ = req.reply.send(result);
}

/// The reset file's watcher task; it ends when this is dropped.
pub struct FileWatch(tokio::task::JoinHandle<()>);

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// vrnetlab's reset backdoor: once `path` exists it is read and removed, and the VMs it lists
/// (comma-separated names or numbers; empty: every VM) are reset. Runs until dropped.
pub fn watch_file(path: PathBuf, resets: Resets) -> FileWatch {
    FileWatch(tokio::spawn(async move {
        let mut tick = tokio::time::interval(FILE_POLL);
        loop {
            tick.tick().await;
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::error!(path = %path.display(), error = %e, "cannot remove the reset file: not resetting (it would reset again and again)");
                continue;
            }
            let which: Vec<&str> = text
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect();
            match control::reset::reset(&resets, &which).await {
                Ok(done) => {
                    tracing::info!(path = %path.display(), vms = ?done, "reset file: VMs reset")
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), why = %why, "reset file: not done")
                }
            }
        }
    }))
}
