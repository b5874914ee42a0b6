//! Starting one qemu process: fork/exec with the given fds at fixed numbers, in its own process
//! group. Never waits for the child (the reaper owns every exit status) and never decides which
//! fd goes where (the caller's fd layout does).

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Where the first phase parks each fd: above every number qemu is handed.
const PARK_FROM: RawFd = 1024;

/// Spawns `argv` with each `(number, fd)` fd dup'ed to that number, in its own process group
/// (a ^C on the terminal reaches the launcher, which shuts qemu down properly). Returns the pid.
pub fn qemu(argv: &[OsString], fds: &[(i32, RawFd)]) -> std::io::Result<i32> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    // Everything the child touches is allocated here, before fork: the closure below runs in
    // the forked child, where allocating (or taking any lock) may deadlock.
    debug_assert!(fds.iter().all(|&(n, _)| (0..PARK_FROM).contains(&n)));
    let fds = fds.to_vec();
    let mut parked: Vec<RawFd> = vec![-1; fds.len()];
    // SAFETY: the closure runs in the child between fork and exec. It calls only fcntl, dup2
    // and setpgid (async-signal-safe), writes into `parked` (allocated above, never grown), and
    // builds errors with `last_os_error` (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            // Two phases. A target number may be the number of another source fd (a tap opened
            // as fd 10 that must become fd 11, while another tap must become fd 10): dup2 straight
            // to the targets would close that source before it is copied. So first every source
            // is copied above all targets (F_DUPFD_CLOEXEC: the parked copies close at exec), then
            // each parked copy is dup2'ed to its number (dup2 clears close-on-exec there).
            for (slot, &(_, fd)) in parked.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, PARK_FROM);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (&(number, _), &p) in fds.iter().zip(&parked) {
                if libc::dup2(p, number) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping `Child` neither waits nor kills: the reaper collects its status.
    Ok(child.id() as i32)
}
