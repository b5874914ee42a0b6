//! Least privilege. Who each VM's qemu runs as ([`QemuCreds`]: a uid, a gid and the groups
//! that open /dev/kvm, from `vm.qemu_user` and the user database read once); what qemu must
//! reach made reachable before it starts ([`open_run_dir`], [`allow_ports`]); what the launcher
//! itself keeps once set-up is done ([`kept`], [`drop_launcher`]). The decisions are pure
//! functions of their inputs (the passwd text, /dev/kvm's mode, the capability masks); the
//! system calls are the few wrappers of [`caps`]. Never spawns qemu (`supervisor::spawn` applies
//! the credentials between fork and exec) and never touches the network.

pub mod caps;

use crate::config::{Management, QemuUser, VmPlan, QEMU_FALLBACK_ID, QEMU_USER};
use caps::CapSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{key} = \"{user}\": no such user in /etc/passwd (use an existing user, UID or UID:GID)"
    )]
    NoUser { key: String, user: String },
    #[error("{key}: the launcher lacks {missing}, needed to start qemu as uid {uid} with no capability (Docker's default set has them; or set {key} = false)")]
    Caps {
        key: String,
        missing: String,
        uid: u32,
    },
    #[error("{device} (mode {mode:o}, group {group}) cannot be opened by qemu's user (uid {uid}); make it group read-write (chmod 0660 and a group), {instead}, or set {key} = false")]
    Device {
        key: String,
        device: &'static str,
        /// The other way out (TCG).
        instead: &'static str,
        mode: u32,
        group: u32,
        uid: u32,
    },
    #[error("qemu runs as uid {uid} and cannot bind the forwarded port {port} below net.ipv4.ip_unprivileged_port_start ({start}), which cannot be lowered here; forward ports from {start} up, or set vm.sandbox = false")]
    Ports {
        port: u16,
        start: u16,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot give {path} to qemu's group")]
    Grant {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot drop the launcher's capabilities")]
    Drop(#[source] std::io::Error),
}

impl SandboxError {
    /// A configuration or an environment the user fixes (exit 2), not a run-time failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            SandboxError::NoUser { .. }
                | SandboxError::Caps { .. }
                | SandboxError::Device { .. }
                | SandboxError::Ports { .. }
        )
    }
}

/// Who one VM's qemu runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCreds {
    pub uid: u32,
    pub gid: u32,
    /// Its supplementary groups: its gid, and the group of /dev/kvm where it opens it (it
    /// never opens /dev/vhost-net: its vhost-net fds come open from the launcher).
    pub groups: Vec<u32>,
    /// For the log: the user name, or how the ids were chosen.
    pub user: String,
}

/// The capabilities qemu's spawn needs from the launcher: set the ids (SETUID, SETGID), empty
/// qemu's bounding set (SETPCAP), and signal it once it runs as another user (KILL).
pub const FOR_SPAWN: [u32; 4] = [caps::SETUID, caps::SETGID, caps::SETPCAP, caps::KILL];

/// `vm.sandbox` / `vm[i].sandbox` of VM `i`.
pub fn key(plan: &VmPlan, i: usize, leaf: &str) -> String {
    match plan.in_node {
        true => format!("vm[{i}].{leaf}"),
        false => format!("vm.{leaf}"),
    }
}

/// The uid and gid of `user` in an /etc/passwd text. The default user, when the system has
/// none, is [`QEMU_FALLBACK_ID`]; another name must exist.
pub fn identity(user: &QemuUser, passwd: &str, key: &str) -> Result<QemuCreds, SandboxError> {
    let (uid, gid, label) = match user {
        QemuUser::Id { uid, gid } => (*uid, *gid, format!("{uid}:{gid}")),
        QemuUser::Name(name) => match lookup(name, passwd) {
            Some((uid, gid)) => (uid, gid, name.clone()),
            None if name == QEMU_USER => (
                QEMU_FALLBACK_ID,
                QEMU_FALLBACK_ID,
                format!("{QEMU_FALLBACK_ID} (no {QEMU_USER} user here)"),
            ),
            None => {
                return Err(SandboxError::NoUser {
                    key: key.into(),
                    user: name.clone(),
                })
            }
        },
    };
    Ok(QemuCreds {
        uid,
        gid,
        groups: vec![gid],
        user: label,
    })
}

/// `name`'s uid and primary gid in an /etc/passwd text.
fn lookup(name: &str, passwd: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        match f.as_slice() {
            [n, _, uid, gid, ..] if *n == name => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    })
}

/// The group qemu needs to open a device node such as /dev/kvm (mode, owner uid, group), or
/// none when it may open it anyway (world read-write, or its own); an error (its mode and
/// group) when nothing lets it.
pub fn device_group(dev: (u32, u32, u32), creds: &QemuCreds) -> Result<Option<u32>, (u32, u32)> {
    let (mode, owner, group) = dev;
    if mode & 0o006 == 0o006 || (owner == creds.uid && mode & 0o600 == 0o600) {
        return Ok(None);
    }
    if mode & 0o060 == 0o060 && group != 0 {
        return Ok(Some(group));
    }
    Err((mode & 0o7777, group))
}

/// What the launcher keeps once set-up is done: NET_ADMIN when the node has data links,
/// internal networks or passthrough (re-wiring, link state); what a sandboxed qemu's spawn
/// needs when some VM is sandboxed (restarts spawn it again). Nothing else: the files, taps and
/// sockets are made before.
pub fn kept(needs_net: bool, sandboxed: bool) -> CapSet {
    let net = if needs_net {
        caps::mask(&[caps::NET_ADMIN])
    } else {
        0
    };
    let spawn = if sandboxed { caps::mask(&FOR_SPAWN) } else { 0 };
    net | spawn
}

/// What of [`FOR_SPAWN`] the launcher's effective set `eff` lacks.
pub fn missing_for_spawn(eff: CapSet) -> CapSet {
    caps::mask(&FOR_SPAWN) & !eff
}

/// The lowest management port a sandboxed VM forwards (qemu binds it itself).
pub fn lowest_forward(plans: &[VmPlan]) -> Option<u16> {
    plans
        .iter()
        .filter(|p| matches!(p.sandbox, crate::config::Sandbox::On { .. }))
        .filter_map(|p| match &p.management {
            Management::User { forwards, .. } => forwards.iter().map(|f| f.host_port).min(),
            _ => None,
        })
        .min()
}

const PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// Lets an unprivileged qemu bind `port`: lowers this network namespace's
/// `net.ipv4.ip_unprivileged_port_start` to it when it is above (Docker already sets 0 in its
/// containers). Returns the value it had when it was lowered.
pub fn allow_ports(port: u16, uid: u32) -> Result<Option<u16>, SandboxError> {
    let start: u16 = std::fs::read_to_string(PORT_START)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if port >= start {
        return Ok(None);
    }
    std::fs::write(PORT_START, port.to_string()).map_err(|source| SandboxError::Ports {
        port,
        start,
        uid,
        source,
    })?;
    Ok(Some(start))
}

/// The VM's run folder and its serial sockets, for qemu's group: the folder `root:GID 1770`
/// (qemu creates its QMP socket there; the sticky bit keeps it from removing or replacing the
/// launcher's sockets), each serial socket `root:GID 0660` (qemu connects to it).
pub fn open_run_dir(plan: &VmPlan, gid: u32) -> Result<(), SandboxError> {
    give(&plan.run_dir, gid, 0o1770)?;
    for n in 0..=plan.console.extra_serials {
        give(&plan.serial_socket(n), gid, 0o660)?;
    }
    Ok(())
}

/// `path` (never followed if a link) to group `gid` with `mode`.
fn give(path: &Path, gid: u32, mode: u32) -> Result<(), SandboxError> {
    let err = |source| SandboxError::Grant {
        path: path.into(),
        source,
    };
    std::os::unix::fs::lchown(path, None, Some(gid)).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// Drops the launcher's capabilities to `kept` (effective and permitted; inheritable and
/// ambient emptied; the bounding set too when `bounding`), first joining `groups` (qemu's
/// groups: its QMP socket is group-writable, not the launcher's). On the calling thread: the
/// launcher's one runtime thread (its stdout thread holds none, see `logout`). Returns the
/// sets as the kernel now shows them.
pub fn drop_launcher(
    kept: CapSet,
    bounding: bool,
    groups: &[u32],
) -> Result<caps::Status, SandboxError> {
    if !groups.is_empty() {
        let mut all: Vec<u32> = nix::unistd::getgroups()
            .map_err(|e| SandboxError::Drop(e.into()))?
            .into_iter()
            .map(|g| g.as_raw())
            .chain(groups.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        caps::set_groups(&all).map_err(SandboxError::Drop)?;
    }
    let now = caps::Status::current().map_err(SandboxError::Drop)?;
    caps::clear_ambient().map_err(SandboxError::Drop)?;
    if bounding {
        caps::limit_bounding(kept, caps::last_cap()).map_err(SandboxError::Drop)?;
    }
    let keep = kept & now.permitted;
    caps::set(caps::Sets {
        effective: keep,
        permitted: keep,
        inheritable: 0,
    })
    .map_err(SandboxError::Drop)?;
    caps::Status::current().map_err(SandboxError::Drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::{KILL, NET_ADMIN, SETGID, SETPCAP, SETUID};

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        launcher-qemu:x:64711:64711::/nonexistent:/usr/sbin/nologin\n\
        qemu:x:120:130:QEMU:/var/lib/qemu:/bin/false\nbroken:x:nope:1::/:/bin/sh\n";

    fn name(n: &str) -> QemuUser {
        QemuUser::Name(n.into())
    }

    #[test]
    fn users_resolve_from_the_passwd_text() {
        let c = identity(&name("qemu"), PASSWD, "vm.qemu_user").unwrap();
        assert_eq!((c.uid, c.gid, c.groups.clone()), (120, 130, vec![130]));
        let c = identity(&name(QEMU_USER), PASSWD, "k").unwrap();
        assert_eq!((c.uid, c.gid, c.user.as_str()), (64711, 64711, QEMU_USER));
        let id = QemuUser::Id { uid: 5, gid: 6 };
        assert_eq!(identity(&id, "", "k").unwrap().groups, [6]);
    }

    #[test]
    fn the_default_user_missing_falls_back_to_its_id_another_is_an_error() {
        let c = identity(&name(QEMU_USER), "root:x:0:0::/:/bin/sh\n", "k").unwrap();
        assert_eq!((c.uid, c.gid), (QEMU_FALLBACK_ID, QEMU_FALLBACK_ID));
        assert!(c.user.contains("no launcher-qemu user"), "{}", c.user);
        for missing in ["nobody2", "broken"] {
            let e = identity(&name(missing), PASSWD, "vm[1].qemu_user").unwrap_err();
            assert!(e.is_bad_input());
            assert_eq!(
                e.to_string(),
                format!("vm[1].qemu_user = \"{missing}\": no such user in /etc/passwd (use an existing user, UID or UID:GID)")
            );
        }
    }

    #[test]
    fn kvm_is_opened_through_its_group() {
        let c = identity(&name("qemu"), PASSWD, "k").unwrap();
        // Debian's udev rule: root:kvm 0660.
        assert_eq!(device_group((0o20660, 0, 108), &c), Ok(Some(108)));
        assert_eq!(device_group((0o20666, 0, 0), &c), Ok(None));
        assert_eq!(device_group((0o20600, 120, 0), &c), Ok(None));
        // A bare host's root-only node: no way in.
        assert_eq!(device_group((0o20600, 0, 0), &c), Err((0o600, 0)));
        assert_eq!(device_group((0o20660, 0, 0), &c), Err((0o660, 0)));
    }

    #[test]
    fn a_device_closed_to_qemu_names_the_way_out() {
        let e = SandboxError::Device {
            key: "vm.sandbox".into(),
            device: "/dev/kvm",
            instead: "use accel = \"tcg\"",
            mode: 0o600,
            group: 0,
            uid: 64711,
        };
        assert!(e.is_bad_input());
        assert_eq!(
            e.to_string(),
            "/dev/kvm (mode 600, group 0) cannot be opened by qemu's user (uid 64711); make it \
             group read-write (chmod 0660 and a group), use accel = \"tcg\", or set vm.sandbox = false"
        );
    }

    #[test]
    fn the_lowest_forwarded_port_of_a_sandboxed_vm_must_be_bindable() {
        use crate::config::{parse, Env, Overrides};
        let plans = |vm: &str, fw: &str| {
            let toml =
                format!("[vm]\n{vm}\n[kernel]\npath=\"/k\"\n[management]\nforwards = {fw}\n");
            let (p, b) = (Path::new("/l.toml"), Path::new("/"));
            parse(&toml, p, b, &Env::default(), &Overrides::default())
                .unwrap()
                .vms
        };
        let fw = r#"["tcp:2022:22", "udp:161", "tcp:8080"]"#;
        assert_eq!(lowest_forward(&plans("", fw)), Some(161));
        assert_eq!(lowest_forward(&plans("", "[]")), None);
        // qemu as root binds what it likes.
        assert_eq!(lowest_forward(&plans("sandbox = false", fw)), None);
    }

    #[test]
    fn the_launcher_keeps_what_it_needs_only() {
        assert_eq!(kept(false, false), 0);
        assert_eq!(kept(true, false), 1 << NET_ADMIN);
        assert_eq!(
            caps::names(kept(true, true)),
            "kill,setgid,setuid,setpcap,net_admin"
        );
        assert_eq!(
            kept(false, true),
            caps::mask(&[SETUID, SETGID, SETPCAP, KILL])
        );
        // Docker's default set holds every capability the spawn needs.
        assert_eq!(missing_for_spawn(0xa80425fb), 0);
        assert_eq!(
            caps::names(missing_for_spawn(1 << NET_ADMIN | 1 << KILL)),
            "setgid,setuid,setpcap"
        );
    }
}
