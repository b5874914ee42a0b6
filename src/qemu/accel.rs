//! How a VM is accelerated: KVM or TCG, vhost-net or not, and how many queues per data NIC.
//! [`Host::read`] is the one function of `qemu` that looks at the system (it opens /dev/kvm
//! and /dev/vhost-net and reads /proc/cpuinfo, once); [`decide`] is pure and turns a plan
//! plus those facts into a [`Launch`]. Nothing here spawns or keeps a file open.

use crate::config::{Accel, VmPlan};

/// The facts about the host that the decision needs, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// /dev/kvm opens read-write.
    pub kvm_opens: bool,
    /// The text of /proc/cpuinfo (empty when it cannot be read).
    pub cpuinfo: String,
    /// /dev/vhost-net opens read-write.
    pub vhost_opens: bool,
}

impl Host {
    /// Reads the facts from the system. Never fails: what cannot be opened is "not there".
    pub fn read() -> Self {
        let opens = |path: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .is_ok()
        };
        Host {
            kvm_opens: opens("/dev/kvm"),
            cpuinfo: std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
            vhost_opens: opens("/dev/vhost-net"),
        }
    }

    /// /proc/cpuinfo shows hardware virtualisation (vmx or svm).
    fn has_virt(&self) -> bool {
        self.cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    }
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum AccelError {
    #[error(
        "accel = \"kvm\" was asked for, but /dev/kvm cannot be opened (pass --device /dev/kvm)"
    )]
    KvmUnavailable,
}

/// What one VM is launched with: the acceleration actually used, with the reason when it
/// differs from what was asked, and the data NICs' vhost-net and queue count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub kvm: bool,
    /// vhost-net for the data taps (only with KVM, a usable /dev/vhost-net and data NICs).
    pub vhost: bool,
    /// Queues (taps) per data NIC, at least 1.
    pub queues: u32,
    /// Why TCG was chosen when `auto` was asked for and KVM was not usable.
    pub warning: Option<String>,
    /// What to log about vhost-net; None when the VM has no data NICs.
    vhost_reason: Option<&'static str>,
}

impl Launch {
    /// Builds a launch from a decided `kvm`/`vhost`, with the queues that follow from them.
    fn new(plan: &VmPlan, kvm: bool, vhost: bool, warning: Option<String>) -> Self {
        Launch {
            kvm,
            vhost,
            queues: queues(plan, vhost),
            warning,
            vhost_reason: None,
        }
    }

    /// The launch `launcher check` shows, without probing the system: the accel asked for
    /// (auto shows as TCG, the safe choice), no vhost-net.
    pub fn for_check(plan: &VmPlan) -> Self {
        Launch::new(plan, plan.machine.accel == Accel::Kvm, false, None)
    }

    /// A launch with the given choices, as if decided (for tests of the argv).
    #[cfg(test)]
    pub(crate) fn assumed(plan: &VmPlan, kvm: bool, vhost: bool) -> Self {
        Launch::new(plan, kvm, vhost, None)
    }

    /// vhost-net for the data NICs, as the log says it: "on", "off (TCG)" or
    /// "off (/dev/vhost-net not available; ...)". None when the VM has no data NICs.
    pub fn vhost_reason(&self) -> Option<&'static str> {
        self.vhost_reason
    }
}

/// Decides KVM or TCG, vhost-net and the queues for one VM. A PVM-only KVM (a /dev/kvm
/// without vmx/svm in cpuinfo) hangs real guests, so `auto` picks TCG there.
pub fn decide(plan: &VmPlan, host: &Host) -> Result<Launch, AccelError> {
    let (kvm, warning) = match plan.machine.accel {
        Accel::Tcg => (false, None),
        Accel::Kvm if host.kvm_opens => (true, None),
        Accel::Kvm => return Err(AccelError::KvmUnavailable),
        Accel::Auto => match (host.kvm_opens, host.has_virt()) {
            (true, true) => (true, None),
            (false, _) => (false, Some("/dev/kvm cannot be opened")),
            (true, false) => (false, Some("/dev/kvm opens but /proc/cpuinfo shows no vmx/svm (a PVM-only or nested-less KVM hangs guests)")),
        },
    };
    let warning =
        warning.map(|why| format!("using TCG software emulation, the VM will be slow: {why}"));
    // vhost-net moves the data path into the kernel; it only helps (and only works) with KVM.
    let data = !plan.nics.links.is_empty();
    let vhost = kvm && host.vhost_opens && data;
    let mut launch = Launch::new(plan, kvm, vhost, warning);
    launch.vhost_reason = data.then_some(match (kvm, host.vhost_opens) {
        (true, true) => "on",
        (false, _) => "off (TCG)",
        (true, false) => "off (/dev/vhost-net not available; pass --device /dev/vhost-net)",
    });
    Ok(launch)
}

/// Queues per data NIC: as configured, or with 0 (auto) one per vCPU (at most 16) when
/// vhost-net is on (virtio-net only), else one.
fn queues(plan: &VmPlan, vhost: bool) -> u32 {
    match plan.nics.queues {
        0 if vhost && plan.nics.model.starts_with("virtio-net") => plan.machine.smp.min(16),
        0 => 1,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO_VMX: &str = "processor : 0\nflags\t\t: fpu vme de pse vmx sse\n";
    const CPUINFO_PLAIN: &str = "processor : 0\nflags\t\t: fpu vme de pse sse hypervisor\n";

    fn plan(toml: &str, intfs: &str) -> VmPlan {
        let node = crate::config::parse_with(toml, &[("CLAB_INTFS", intfs)]).unwrap();
        node.vms.into_iter().next().unwrap()
    }

    fn host(kvm_opens: bool, cpuinfo: &str, vhost_opens: bool) -> Host {
        Host {
            kvm_opens,
            cpuinfo: cpuinfo.into(),
            vhost_opens,
        }
    }

    fn with_accel(accel: &str) -> VmPlan {
        plan(
            &format!("[vm]\nname=\"r1\"\naccel=\"{accel}\"\nsmp=4\n[kernel]\npath=\"k\"\n"),
            "2",
        )
    }

    #[test]
    fn accel_auto() {
        let auto = with_accel("auto");
        assert!(decide(&auto, &host(true, CPUINFO_VMX, false)).unwrap().kvm);
        let pvm = decide(&auto, &host(true, CPUINFO_PLAIN, false)).unwrap();
        assert!(!pvm.kvm);
        assert!(pvm.warning.unwrap().contains("no vmx/svm"));
        let none = decide(&auto, &host(false, CPUINFO_VMX, false)).unwrap();
        assert!(!none.kvm && none.warning.unwrap().contains("cannot be opened"));
        assert_eq!(
            decide(&with_accel("kvm"), &host(false, CPUINFO_VMX, true)),
            Err(AccelError::KvmUnavailable)
        );
        let tcg = decide(&with_accel("tcg"), &host(true, CPUINFO_VMX, true)).unwrap();
        assert!(!tcg.kvm && !tcg.vhost && tcg.warning.is_none());
    }

    #[test]
    fn kvm_error_text() {
        assert_eq!(
            AccelError::KvmUnavailable.to_string(),
            "accel = \"kvm\" was asked for, but /dev/kvm cannot be opened (pass --device /dev/kvm)"
        );
    }

    #[test]
    fn vhost_and_queues() {
        let p = with_accel("auto");
        let on = decide(&p, &host(true, CPUINFO_VMX, true)).unwrap();
        assert!(on.vhost && on.queues == 4 && on.vhost_reason() == Some("on"));
        let tcg = decide(&p, &host(false, CPUINFO_VMX, true)).unwrap();
        assert!(!tcg.vhost && tcg.queues == 1 && tcg.vhost_reason() == Some("off (TCG)"));
        let nodev = decide(&p, &host(true, CPUINFO_VMX, false)).unwrap();
        assert!(!nodev.vhost && nodev.queues == 1);
        assert_eq!(
            nodev.vhost_reason(),
            Some("off (/dev/vhost-net not available; pass --device /dev/vhost-net)")
        );
        // No data NICs: no vhost, nothing to say about it.
        let bare = plan("[vm]\nname=\"r1\"\n[kernel]\npath=\"k\"\n", "0");
        let l = decide(&bare, &host(true, CPUINFO_VMX, true)).unwrap();
        assert!(l.kvm && !l.vhost && l.vhost_reason().is_none());
        // Configured queues win; a non-virtio model gets one queue under vhost.
        let fixed = plan(
            "[vm]\nname=\"r1\"\n[kernel]\npath=\"k\"\n[nics]\nqueues=2\n",
            "1",
        );
        assert_eq!(decide(&fixed, &host(false, "", false)).unwrap().queues, 2);
        let e1000 = plan(
            "[vm]\nname=\"r1\"\nsmp=4\n[kernel]\npath=\"k\"\n[nics]\nmodel=\"e1000\"\n",
            "1",
        );
        assert_eq!(
            decide(&e1000, &host(true, CPUINFO_VMX, true))
                .unwrap()
                .queues,
            1
        );
    }

    #[test]
    fn check_launch_probes_nothing() {
        let k = Launch::for_check(&with_accel("kvm"));
        assert!(k.kvm && !k.vhost && k.queues == 1 && k.warning.is_none());
        assert!(!Launch::for_check(&with_accel("auto")).kvm);
    }
}
