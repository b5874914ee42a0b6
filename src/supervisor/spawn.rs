//! Starting one qemu process: fork/exec with the given fds at fixed numbers, in its own process
//! group, bound to die with the launcher, and when sandboxed as its own user with no
//! capability at all and no_new_privs ([`confine`]). Never waits for the child (the reaper owns every exit
//! status) and never decides which fd goes where (the caller's fd layout does). Also the
//! open-file limit qemu's fds must fit under ([`fd_limit`]).

use super::SupervisorError;
use crate::config::Node;
use crate::qemu::fds::{self, FdLayout};
use crate::qemu::Launch;
use crate::sandbox::{caps, QemuCreds};
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The signal qemu gets when the launcher dies without stopping it (SIGKILL, the OOM killer, a
/// crash). SIGTERM, not SIGKILL: qemu handles it by quitting at once, after flushing its disk
/// images, so an overlay is not left half written; qemu never ignores it, even with
/// `-no-shutdown`. The container case needs no such signal: when PID 1 dies the kernel kills
/// the whole PID namespace.
const PARENT_DEATH: libc::c_int = libc::SIGTERM;

/// Spawns `argv` with each `(number, fd)` fd dup'ed to that number, in its own process group
/// (a ^C on the terminal reaches the launcher, which shuts qemu down properly), sent
/// [`PARENT_DEATH`] when the launcher dies, confined to `creds` when given. Returns the pid.
///
/// Hidden invariant: the parent-death signal fires when the *thread* that forked exits, not
/// the process. The launcher spawns qemu from its one runtime thread (a current-thread
/// runtime, see `commands::run`), which lives as long as the process.
pub fn qemu(
    argv: &[OsString],
    fds: &[(i32, RawFd)],
    creds: Option<&QemuCreds>,
) -> std::io::Result<i32> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    // Everything the child touches is allocated here, before fork: the closure below runs in
    // the forked child, where allocating (or taking any lock) may deadlock.
    let park = fds::park_from(fds);
    let fds = fds.to_vec();
    let mut parked: Vec<RawFd> = vec![-1; fds.len()];
    let confined = match creds {
        Some(c) => Some(Confined::new(c)?),
        None => None,
    };
    // SAFETY: getpid takes no arguments and cannot fail.
    let launcher = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec. It calls only prctl,
    // getppid, fcntl, dup2, setpgid, umask and the `caps` wrappers (raw syscalls, all
    // async-signal-safe), reads `confined` and writes into `parked` (allocated above, never
    // grown), and builds errors with `last_os_error`/`from_raw_os_error` (no allocation).
    unsafe {
        cmd.pre_exec(move || {
            // Two phases. A target number may be the number of another source fd (a tap opened
            // as fd 10 that must become fd 11, while another tap must become fd 10): dup2 straight
            // to the targets would close that source before it is copied. So first every source
            // is copied above all targets (F_DUPFD_CLOEXEC: the parked copies close at exec), then
            // each parked copy is dup2'ed to its number (dup2 clears close-on-exec there). Where
            // to park, and why not at a fixed high number: `fds::park_from`.
            for (slot, &(_, fd)) in parked.iter_mut().zip(&fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, park);
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
            if let Some(c) = &confined {
                confine(c)?;
            }
            // After the ids changed: changing them clears the parent-death signal.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                PARENT_DEATH as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before prctl: no signal will come then, and this
            // child was already re-parented. Never start an orphan.
            if libc::getppid() != launcher {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // Dropping `Child` neither waits nor kills: the reaper collects its status.
    Ok(child.id() as i32)
}

/// What the child needs to confine itself, prepared before fork (nothing is allocated or read
/// after it).
struct Confined {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// The launcher's effective and permitted sets, to write back with an empty inheritable
    /// set while the child still needs them (to set its ids and empty its bounding set).
    sets: caps::Sets,
    last_cap: u32,
}

impl Confined {
    fn new(c: &QemuCreds) -> std::io::Result<Self> {
        let now = caps::Status::current()?;
        Ok(Confined {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
            sets: caps::Sets {
                effective: now.effective,
                permitted: now.permitted,
                inheritable: 0,
            },
            last_cap: caps::last_cap(),
        })
    }
}

/// In the child: every capability set emptied (ambient and inheritable, then the bounding set;
/// the ids change from root, which empties the permitted and effective sets), qemu's groups
/// and ids, a umask that keeps what qemu creates (its QMP socket) to itself and its group (the
/// launcher joined it), then no_new_privs: the exec gives qemu no capability back.
fn confine(c: &Confined) -> std::io::Result<()> {
    caps::clear_ambient()?;
    caps::set(c.sets)?;
    caps::limit_bounding(0, c.last_cap)?;
    caps::set_groups(&c.groups)?;
    caps::become_user(c.uid, c.gid)?;
    // SAFETY: umask takes an integer and cannot fail.
    unsafe { libc::umask(0o007) };
    caps::no_new_privs()
}

/// Fails (before anything is created) when the open-file limit cannot hold what the node's
/// fds need (see [`fds::nofile_needed`]), from each VM's layout as launched. The soft limit was
/// raised to the hard one at start (`reaper::start`). The planned links count: with links on
/// any ports (CLAB_INTFS), as many are found as are planned, whatever their numbers.
pub fn fd_limit(node: &Node, launches: &[Launch]) -> Result<(), SupervisorError> {
    let vms: Vec<(FdLayout, bool)> = node
        .vms
        .iter()
        .zip(launches)
        .map(|(plan, l)| (FdLayout::of(plan, l, &plan.nics.links), l.vhost))
        .collect();
    let needed = fds::nofile_needed(&vms);
    let (soft, hard) = match nofile() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; not checked");
            return Ok(());
        }
    };
    if soft >= needed {
        return Ok(());
    }
    Err(SupervisorError::FdLimit {
        soft,
        hard,
        needed,
        taps: vms.iter().map(|(l, _)| l.count()).sum(),
    })
}

/// RLIMIT_NOFILE now: (soft, hard).
pub fn nofile() -> std::io::Result<(u64, u64)> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `l`, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((l.rlim_cur, l.rlim_max))
}

/// Raises the soft RLIMIT_NOFILE to the hard one (Docker and login shells start processes at
/// a soft 1024, far below the hard limit), logging the change. A failure is logged, not fatal:
/// [`fd_limit`] then says whether the soft limit is enough.
pub fn raise_nofile() {
    let (soft, hard) = match nofile() {
        Ok(l) => l,
        Err(e) => return tracing::warn!(error = %e, "cannot read the open-file limit"),
    };
    if soft >= hard {
        return;
    }
    let l = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit from `l`, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &l) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    } else {
        tracing::info!(
            from = soft,
            to = hard,
            "raised the open-file limit (RLIMIT_NOFILE soft) to the hard limit"
        );
    }
}
