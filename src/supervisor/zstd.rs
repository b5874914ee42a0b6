//! zstd, run by the launcher beside qemu (qemu itself may not spawn: its sandbox denies it):
//! [`zstd`] starts it on two fds (a pipe end and a file), watched by the reaper; [`pipe`] makes
//! the pipe between it and qemu, both ends closed on exec so that only the dup'd stdin/stdout
//! reach the child (a stray write end would keep the stream from ever ending).

use super::reaper::{exit_code_of, Reaper};
use nix::sys::wait::WaitStatus;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::sync::oneshot;

/// A spawned helper process (zstd) and where its exit status arrives.
pub struct Helper {
    pid: i32,
    exited: oneshot::Receiver<WaitStatus>,
}

/// Runs `zstd args` with these stdin and stdout, watched by the reaper.
pub fn zstd(
    args: &[&str],
    stdin: Stdio,
    stdout: Stdio,
    reaper: &Reaper,
) -> std::io::Result<Helper> {
    let child = Command::new("zstd")
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .spawn()?;
    let pid = child.id() as i32;
    // Watched before the next await: the reaper runs on this thread and cannot have reaped it.
    Ok(Helper {
        pid,
        exited: reaper.watch(pid),
    })
}

impl Helper {
    /// Its exit, bounded; killed when late. Err says how it ended otherwise than with 0.
    pub async fn wait(self, within: Duration) -> Result<(), String> {
        match tokio::time::timeout(within, self.exited).await {
            Ok(Ok(ws)) => match exit_code_of(ws) {
                Some(0) => Ok(()),
                c => Err(format!("ended with {c:?}")),
            },
            Ok(Err(_)) => Err("status lost".into()),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                Err(format!("still running after {within:?}: killed"))
            }
        }
    }
}

/// A pipe whose ends close on exec (only the dup'd stdin/stdout reach a child).
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}
