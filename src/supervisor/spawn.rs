//! Starting one qemu process: fork/exec with the given fds at fixed numbers, in its own process
//! group, bound to die with the launcher, and when sandboxed as its own user with no
//! capability at all and no_new_privs ([`confine`]). With vhost-net, a fresh /dev/vhost-net fd
//! per data tap queue, opened here for each spawn ([`open_vhost`]: a vhost-net fd belongs to
//! the process that claims it, so a restarted qemu cannot reuse its predecessor's) and closed
//! in the launcher once qemu has its copies. Never waits for the child (the reaper owns every exit
//! status) and never decides which fd goes where (the caller's fd layout does). Also the
//! open-file limit qemu's fds must fit under ([`fd_limit`]).

use super::SupervisorError;
use crate::config::Node;
use crate::qemu::fds::{self, FdLayout};
use crate::qemu::Launch;
use crate::sandbox::{caps, QemuCreds};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The signal qemu gets when the launcher dies without stopping it (SIGKILL, the OOM killer, a
/// crash). SIGTERM, not SIGKILL: qemu handles it by quitting at once, after flushing its disk
/// images, so an overlay is not left half written; qemu never ignores it, even with
/// `-no-shutdown`. The container case needs no such signal: when PID 1 dies the kernel kills
/// the whole PID namespace.
const PARENT_DEATH: libc::c_int = libc::SIGTERM;

/// The device qemu's vhost-net fds are opened from (by the launcher: qemu needs no access).
pub const VHOST_NET: &str = "/dev/vhost-net";

/// One fresh read-write fd of `device` (the host's [`VHOST_NET`]) per number, paired with it:
/// the vhost-net fds of one qemu spawn. Close-on-exec, so only the copies the spawn moves to
/// their numbers reach qemu, and no other child.
pub fn open_vhost(device: &Path, numbers: &[i32]) -> Result<Vec<(i32, OwnedFd)>, SupervisorError> {
    numbers
        .iter()
        .map(|&n| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(device)
                .map_err(|source| SupervisorError::Vhost {
                    device: device.to_path_buf(),
                    number: n,
                    source,
                })?;
            Ok((n, OwnedFd::from(f)))
        })
        .collect()
}

/// Spawns `argv` with each `(number, fd)` tap fd dup'ed to that number and a fresh
/// [`VHOST_NET`] fd at each of `vhost` (see [`open_vhost`]; closed here once qemu runs), in
/// its own process group (a ^C on the terminal reaches the launcher, which shuts qemu down
/// properly), sent [`PARENT_DEATH`] when the launcher dies, confined to `creds` when given.
/// Returns the pid.
pub fn qemu(
    argv: &[OsString],
    fds: &[(i32, RawFd)],
    vhost: &[i32],
    creds: Option<&QemuCreds>,
) -> Result<i32, SupervisorError> {
    spawn_with(argv, fds, vhost, Path::new(VHOST_NET), creds)
}

/// [`qemu`] with the vhost-net device at `device`.
fn spawn_with(
    argv: &[OsString],
    taps: &[(i32, RawFd)],
    vhost: &[i32],
    device: &Path,
    creds: Option<&QemuCreds>,
) -> Result<i32, SupervisorError> {
    let opened = open_vhost(device, vhost)?;
    let mut fds = taps.to_vec();
    fds.extend(opened.iter().map(|(n, fd)| (*n, fd.as_raw_fd())));
    let pid = fork_exec(argv, &fds, creds).map_err(|source| SupervisorError::Spawn {
        qemu: argv[0].clone().into(),
        source,
    });
    // The launcher's copies of the vhost-net fds close here: qemu holds its own.
    drop(opened);
    pid
}

/// The fork and exec of [`qemu`], every fd already open.
///
/// Hidden invariant: the parent-death signal fires when the *thread* that forked exits, not
/// the process. The launcher spawns qemu from its one runtime thread (a current-thread
/// runtime, see `commands::run`), which lives as long as the process.
fn fork_exec(
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
    let vms: Vec<FdLayout> = node
        .vms
        .iter()
        .zip(launches)
        .map(|(plan, l)| FdLayout::of(plan, l, &plan.nics.links))
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
        taps: vms.iter().map(FdLayout::taps).sum(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    /// A temp dir named for this helper's tests, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("lt-vhost-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Waits (bounded) for `pid` to exit; its exit status.
    fn wait(pid: i32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes one int into `status`, which lives across the call.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if r == pid {
                return libc::WEXITSTATUS(status);
            }
            assert!(Instant::now() < deadline, "pid {pid} did not exit in 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many of this process's fds point at `path`.
    fn open_at(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l == path)
            .count()
    }

    /// The spawn's fd plan, in a real spawned process: each tap at its number from the layout,
    /// and a fresh vhost-net fd at each vhost number, opened per spawn and closed in the
    /// launcher after it. This kernel has no vhost-net (CONFIG_VHOST_NET is not set), so a
    /// plain file stands in for /dev/vhost-net: what is shown is which open fd lands where,
    /// not vhost-net itself.
    #[test]
    fn each_spawn_gets_fresh_vhost_fds_at_the_layouts_numbers() {
        let dir = Dir::new("plan");
        let device = dir.0.join("vhost-net");
        std::fs::write(&device, "").unwrap();
        let layout = FdLayout::new(0, false, &[2, 1]).with_vhost(true);
        let taps: Vec<std::fs::File> = (0..3)
            .map(|k| std::fs::File::create(dir.0.join(format!("tap{k}"))).unwrap())
            .collect();
        let raw: Vec<RawFd> = taps.iter().map(|f| f.as_raw_fd()).collect();
        let bound = layout
            .bind(None, &[], &[vec![raw[0], raw[1]], vec![raw[2]]])
            .unwrap();
        assert_eq!(layout.vhost_numbers(), vec![13, 14, 15]);
        for run in 0..2 {
            let out = dir.0.join(format!("out{run}"));
            let script = "exec readlink /proc/self/fd/10 /proc/self/fd/11 /proc/self/fd/12 \
                          /proc/self/fd/13 /proc/self/fd/14 /proc/self/fd/15 > \"$0\"";
            let argv: Vec<OsString> = [
                "/bin/sh".as_ref(),
                "-c".as_ref(),
                script.as_ref(),
                out.as_os_str(),
            ]
            .iter()
            .map(|s: &&std::ffi::OsStr| s.to_os_string())
            .collect();
            let pid = spawn_with(&argv, &bound, &layout.vhost_numbers(), &device, None).unwrap();
            assert_eq!(wait(pid), 0, "readlink of fds 10..15 in the child failed");
            let got = std::fs::read_to_string(&out).unwrap();
            let d = dir.0.display();
            let v = device.display();
            assert_eq!(
                got,
                format!("{d}/tap0\n{d}/tap1\n{d}/tap2\n{v}\n{v}\n{v}\n"),
                "spawn {run}"
            );
            // The launcher's copies closed after each spawn: the next opens afresh.
            assert_eq!(open_at(&device), 0, "spawn {run} left vhost fds open here");
        }
    }

    /// Where the vhost-net device cannot be opened, the spawn fails before forking, naming
    /// the device and the number. Real here: this kernel has no /dev/vhost-net.
    #[test]
    fn a_vhost_device_that_does_not_open_is_named() {
        let dir = Dir::new("missing");
        let argv = vec![OsString::from("/bin/true")];
        let missing = dir.0.join("vhost-net");
        let e = spawn_with(&argv, &[], &[12], &missing, None).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, SupervisorError::Vhost { number: 12, .. }),
            "{e:?}"
        );
        assert!(
            msg.contains(&missing.display().to_string()) && msg.contains("fd 12"),
            "{msg}"
        );
        // The real device, through the public spawn.
        let real = qemu(&argv, &[], &[10], None);
        if Path::new(VHOST_NET).exists() {
            let pid = real.expect("/dev/vhost-net exists and opens");
            assert_eq!(wait(pid), 0);
        } else {
            let msg = real.unwrap_err().to_string();
            assert!(
                msg.starts_with("cannot open /dev/vhost-net for qemu's vhost-net fd 10"),
                "{msg}"
            );
        }
        // No vhost numbers (TCG, or no data links): the device is never touched.
        let pid = spawn_with(&argv, &[], &[], &missing, None).unwrap();
        assert_eq!(wait(pid), 0);
    }
}
