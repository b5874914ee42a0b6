//! Suspend on stop, resume on start (opt-in: `LAUNCHER_SUSPEND=1`): the first stop signal
//! saves the node to the suspend file in the container's own filesystem (it survives `docker
//! stop`/`docker start`) and quits the qemus (exit 0), within [`SUSPEND_WAIT`], under Docker's
//! default 10 s stop time-out. A save that fails or is late resumes the guests, and the stop
//! goes on as a clean power-off. The next start restores from the file (`restore::prepare`),
//! once: the file is removed as it is used.

use super::snapshot::{save, After, Saver};
use crate::snapshot::Options;
use std::path::PathBuf;
use std::time::Duration;

/// How long a suspend may take before the stop falls back to a power-off.
pub const SUSPEND_WAIT: Duration = Duration::from_secs(6);

pub struct Suspend {
    saver: Saver,
    file: PathBuf,
}

impl Suspend {
    /// Some when the node suspends on stop.
    pub fn new(saver: &Saver, opts: &Options) -> Option<Suspend> {
        opts.suspend.then(|| Suspend {
            saver: saver.clone(),
            file: opts.suspend_file.clone(),
        })
    }

    /// Saves and quits; false when the stop must go on as usual.
    pub async fn run(&self) -> bool {
        if let Some(dir) = self.file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match save(&self.saver, &self.file, After::Quit, SUSPEND_WAIT).await {
            Ok(v) => {
                tracing::info!(
                    path = %v.path.display(),
                    bytes = v.bytes,
                    ms = v.total.as_millis() as u64,
                    "suspended: the next start resumes"
                );
                true
            }
            Err(e) => {
                let why = crate::exit::chain(&e);
                tracing::warn!("suspend failed: {why}; powering off instead");
                false
            }
        }
    }
}
