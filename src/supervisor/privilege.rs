//! The sandbox applied to the node, in three steps of the recipe: [`resolve`] (before anything
//! is created: each sandboxed VM's qemu user, the group that opens /dev/kvm, the capabilities
//! the launcher needs to spawn it, else exit 2); [`grant`] (once files and consoles exist: the
//! run folder, serial sockets, overlays and CD images to qemu's user or group; the forwarded
//! ports bindable); [`drop_caps`] (once every tap is open, before the first qemu: the launcher
//! keeps only what re-wiring and restarts need, and says so in one line). The decisions live
//! in `sandbox`; this room reads the system facts they take. Never spawns (see `spawn`).

use super::SupervisorError;
use crate::config::{Node, Sandbox};
use crate::qemu::Launch;
use crate::sandbox::{self, caps, QemuCreds, SandboxError};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// Per VM: the credentials its qemu runs with (None: not sandboxed, it runs as the launcher).
pub type Creds = Vec<Option<QemuCreds>>;

/// Each VM's qemu user, from vm.qemu_user and /etc/passwd (read once), with the group of
/// /dev/kvm where the VM uses KVM (qemu opens it itself). Not /dev/vhost-net: the launcher
/// opens it and hands qemu the fds (`spawn::open_vhost`). Fails when a user is missing,
/// /dev/kvm is closed to it, or the launcher cannot start qemu as another user. A VM with
/// `sandbox = false` gets a warning.
pub fn resolve(node: &Node, launches: &[Launch]) -> Result<Creds, SupervisorError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let node_of = |p: &str| {
        std::fs::metadata(p)
            .map(|m| (m.permissions().mode(), m.uid(), m.gid()))
            .ok()
    };
    let kvm = node_of("/dev/kvm");
    let eff = caps::Status::current().map(|s| s.effective).unwrap_or(0);
    let mut out = Vec::new();
    for (i, (plan, launch)) in node.vms.iter().zip(launches).enumerate() {
        let Sandbox::On { user } = &plan.sandbox else {
            tracing::warn!(
                vm = %plan.name,
                "{} = false: qemu runs as root with the launcher's capabilities and no seccomp \
                 filter; a guest that breaks out of qemu owns the container",
                sandbox::key(plan, i, "sandbox")
            );
            out.push(None);
            continue;
        };
        let mut creds = sandbox::identity(user, &passwd, &sandbox::key(plan, i, "qemu_user"))?;
        let missing = sandbox::missing_for_spawn(eff);
        if missing != 0 {
            return Err(SandboxError::Caps {
                key: sandbox::key(plan, i, "sandbox"),
                missing: caps::names(missing),
                uid: creds.uid,
            }
            .into());
        }
        let key = sandbox::key(plan, i, "sandbox");
        if let Some(dev) = kvm.filter(|_| launch.kvm) {
            match sandbox::device_group(dev, &creds) {
                Ok(Some(g)) if !creds.groups.contains(&g) => creds.groups.push(g),
                Ok(_) => {}
                Err((mode, group)) => {
                    return Err(SandboxError::Device {
                        key,
                        device: "/dev/kvm",
                        instead: "use accel = \"tcg\"",
                        mode,
                        group,
                        uid: creds.uid,
                    }
                    .into())
                }
            }
        }
        tracing::info!(
            vm = %plan.name,
            user = %creds.user,
            uid = creds.uid,
            gid = creds.gid,
            groups = ?creds.groups,
            "qemu runs unprivileged: no capabilities, no_new_privs, seccomp (-sandbox)"
        );
        out.push(Some(creds));
    }
    Ok(out)
}

/// What each sandboxed qemu must reach, made reachable: its run folder and serial sockets, its
/// overlays and CD images, and the management ports it forwards (bindable without privilege).
pub fn grant(node: &Node, creds: &Creds) -> Result<(), SupervisorError> {
    for (plan, c) in node.vms.iter().zip(creds) {
        let Some(c) = c else { continue };
        sandbox::open_run_dir(plan, c.gid)?;
        crate::disks::hand_over(plan, c.uid, c.gid)?;
    }
    let uid = creds.iter().flatten().map(|c| c.uid).next();
    if let (Some(port), Some(uid)) = (sandbox::lowest_forward(&node.vms), uid) {
        if let Some(was) = sandbox::allow_ports(port, uid)? {
            tracing::warn!(
                from = was,
                to = port,
                "lowered net.ipv4.ip_unprivileged_port_start in this network namespace so the \
                 unprivileged qemu can bind its forwarded ports"
            );
        }
    }
    Ok(())
}

/// The launcher's capabilities reduced to what it still needs (see [`sandbox::kept`]); the
/// bounding set too when every VM is sandboxed (a `sandbox = false` qemu runs as root and gets
/// the bounding set). One log line says what is kept.
pub fn drop_caps(node: &Node, creds: &Creds) -> Result<(), SupervisorError> {
    let sandboxed = creds.iter().any(Option::is_some);
    let all = creds.iter().all(Option::is_some);
    let kept = sandbox::kept(super::preflight::needs_net_admin(node).is_some(), sandboxed);
    let groups: Vec<u32> = creds.iter().flatten().map(|c| c.gid).collect();
    let now = sandbox::drop_launcher(kept, all, &groups)?;
    tracing::info!(
        kept = %caps::names(now.effective),
        effective = format!("{:016x}", now.effective),
        bounding = format!("{:016x}", now.bounding),
        "the launcher keeps only these capabilities: {}",
        caps::names(now.effective)
    );
    Ok(())
}
