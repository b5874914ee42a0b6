//! Linux capabilities: the bits by name, a `/proc/PID/status` reader, and the tiny syscall
//! wrappers (capget/capset, the bounding and ambient sets, setgroups/setresgid/setresuid) the
//! sandbox needs. Every wrapper is a raw syscall on the calling thread only: capabilities and
//! credentials are per thread in Linux, and glibc's set*id broadcast to every thread must not
//! run in the launcher (its stdout thread holds no capability, so the broadcast would fail
//! there). The wrappers that take `&[u32]`/[`Sets`] allocate nothing and are async-signal-safe:
//! `spawn` calls them between fork and exec. Never decides what to keep (the caller does).

use std::io;

/// A capability set as a bit mask (bit N = capability N, as /proc/PID/status shows it).
pub type CapSet = u64;

pub const CHOWN: u32 = 0;
pub const DAC_OVERRIDE: u32 = 1;
pub const KILL: u32 = 5;
pub const SETGID: u32 = 6;
pub const SETUID: u32 = 7;
pub const SETPCAP: u32 = 8;
pub const NET_ADMIN: u32 = 12;

/// The names of capabilities 0..=40 (linux/capability.h), lower case without `cap_`.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The mask of these capabilities.
pub fn mask(caps: &[u32]) -> CapSet {
    caps.iter().fold(0, |m, &c| m | 1 << c)
}

/// `set` as names, comma-separated ("net_admin,setuid"); "none" when empty.
pub fn names(set: CapSet) -> String {
    let v: Vec<String> = (0..64)
        .filter(|b| set & (1 << b) != 0)
        .map(|b| match NAMES.get(b as usize) {
            Some(n) => n.to_string(),
            None => format!("cap_{b}"),
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// The capability lines of a `/proc/PID/status` text (absent lines read as 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub inheritable: CapSet,
    pub permitted: CapSet,
    pub effective: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
}

impl Status {
    pub fn parse(status: &str) -> Status {
        let get = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        Status {
            inheritable: get("CapInh:"),
            permitted: get("CapPrm:"),
            effective: get("CapEff:"),
            bounding: get("CapBnd:"),
            ambient: get("CapAmb:"),
        }
    }

    /// This process's own (its main thread's).
    pub fn current() -> io::Result<Status> {
        Ok(Status::parse(&std::fs::read_to_string(
            "/proc/self/status",
        )?))
    }
}

/// The highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The three per-thread sets capset writes, ready to be written without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sets {
    pub effective: CapSet,
    pub permitted: CapSet,
    pub inheritable: CapSet,
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// capset on the calling thread. Async-signal-safe.
pub fn set(s: Sets) -> io::Result<()> {
    let word = |m: CapSet, i: u32| (m >> (32 * i)) as u32;
    let data = [0u32, 1].map(|i| Data {
        effective: word(s.effective, i),
        permitted: word(s.permitted, i),
        inheritable: word(s.inheritable, i),
    });
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads one header and two data structs (version 3), all live across the
    // call; pid 0 is the calling thread.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })
}

/// Clears the calling thread's ambient set. Async-signal-safe.
pub fn clear_ambient() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    check(rc.into())
}

/// Drops every capability 0..=`last` that is not in `keep` from the calling thread's bounding
/// set (needs CAP_SETPCAP). Async-signal-safe.
pub fn limit_bounding(keep: CapSet, last: u32) -> io::Result<()> {
    for cap in (0..=last.min(63)).filter(|c| keep & (1 << c) == 0) {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        check(rc.into())?;
    }
    Ok(())
}

/// Sets the calling thread's supplementary groups. Async-signal-safe.
pub fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` gids from the slice, which lives across the call.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })
}

/// The calling thread's real, effective and saved uid and gid become `uid`, `gid` (the gid
/// first, while setting it is still allowed). From uid 0 to another uid, the kernel clears
/// the permitted, effective and ambient sets. Async-signal-safe.
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: setresgid/setresuid take integers only.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
}

/// no_new_privs on the calling thread: no exec can ever grant privileges again (set-user-ID
/// bits and file capabilities are ignored). Async-signal-safe.
pub fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_masks() {
        assert_eq!(names(0), "none");
        assert_eq!(names(mask(&[NET_ADMIN, KILL])), "kill,net_admin");
        assert_eq!(mask(&[CHOWN, DAC_OVERRIDE]), 3);
        assert_eq!(names(1 << 40 | 1 << 50), "checkpoint_restore,cap_50");
        // Docker's default set, as its containers' /proc/1/status shows it.
        assert_eq!(
            names(0xa80425fb),
            "chown,dac_override,fowner,fsetid,kill,setgid,setuid,setpcap,net_bind_service,\
             net_raw,sys_chroot,mknod,audit_write,setfcap"
        );
    }

    #[test]
    fn status_lines_parse() {
        let s = Status::parse(
            "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\n\
             CapEff:\t0000000000001000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n",
        );
        assert_eq!(s.effective, 1 << NET_ADMIN);
        assert_eq!(s.permitted, 1 << NET_ADMIN);
        assert_eq!(s.bounding, (1 << 41) - 1);
        assert_eq!((s.inheritable, s.ambient), (0, 0));
        assert_eq!(Status::parse(""), Status::default());
    }
}
