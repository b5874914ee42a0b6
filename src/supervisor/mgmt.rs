//! What a VM learns at run time and its plan cannot know: the management addresses it is to
//! take (user mode's fixed ones, or what passthrough found on the container's interface), the
//! values its templates see, how status shows its management, and the [`qemu::Resolved`] facts
//! its argv takes (passthrough MAC, the kernel line rendered, the startup config if its file is
//! there). Reads what net found and whether one file exists; never edits the plan.

use crate::config::{Management, VmPlan};
use crate::net::Passthrough;
use crate::state::MgmtView;
use crate::{qemu, template};

/// The management addresses the guest is to take, for the bootstrap templates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MgmtAddrs {
    pub ipv4: String,
    pub gateway4: String,
    pub ipv6: String,
    pub gateway6: String,
}

impl MgmtAddrs {
    /// qemu's user network: the guest at 10.0.0.15, slirp's gateway at 10.0.0.2.
    pub fn user() -> Self {
        Self {
            ipv4: format!("{}/24", qemu::GUEST_MGMT_IP),
            gateway4: "10.0.0.2".into(),
            ..Default::default()
        }
    }

    /// What the container's management interface had (passthrough): the first address and
    /// gateway of each family.
    pub fn from_passthrough(p: &Passthrough) -> Self {
        let mut m = Self::default();
        for a in &p.addresses {
            let slot = if a.contains(':') {
                &mut m.ipv6
            } else {
                &mut m.ipv4
            };
            if slot.is_empty() {
                *slot = a.clone();
            }
        }
        for g in &p.gateways {
            let slot = if g.is_ipv6() {
                &mut m.gateway6
            } else {
                &mut m.gateway4
            };
            if slot.is_empty() {
                *slot = g.to_string();
            }
        }
        m
    }

    /// The addresses of a VM whose management is not passthrough (user mode's, or none).
    pub fn without_passthrough(m: &Management) -> Self {
        match m {
            Management::User { .. } => Self::user(),
            _ => Self::default(),
        }
    }
}

/// How the VM is managed, as status shows it (`control::report` renders it).
pub fn describe(m: &Management, addrs: &MgmtAddrs) -> MgmtView {
    match m {
        Management::None => MgmtView::None,
        Management::User { forwards, .. } => MgmtView::User {
            address: addrs.ipv4.clone(),
            forwards: forwards.len(),
        },
        Management::Passthrough { interface, .. } => MgmtView::Passthrough {
            interface: interface.clone(),
            address: addrs.ipv4.clone(),
            gateway: (!addrs.gateway4.is_empty()).then(|| addrs.gateway4.clone()),
        },
    }
}

/// What one VM was told at start: the facts its argv takes, and the values its templates see.
#[derive(Debug, Clone)]
pub struct VmFacts {
    pub resolved: qemu::Resolved,
    pub values: template::Values,
}

/// Resolves one VM's run-time facts once, at start: `mac` is the container interface's MAC in
/// passthrough mode. A startup config whose file is not there is left out (the VM boots
/// without one), as it was at start.
pub fn resolve(plan: &VmPlan, addrs: &MgmtAddrs, mac: Option<String>) -> VmFacts {
    let values = template_values(plan, addrs);
    let startup_config = plan.startup_config.clone().filter(|sc| {
        let there = sc.path.exists();
        if !there {
            tracing::info!(path = %sc.path.display(), "no startup config there; booting without one");
        }
        there
    });
    let resolved = qemu::Resolved {
        mgmt_mac: mac,
        kernel_append: plan
            .boot
            .kernel
            .as_ref()
            .map(|k| template::render(&k.append, &values)),
        startup_config,
        links: plan.nics.links.clone(),
    };
    VmFacts { resolved, values }
}

/// The values a VM's templates (kernel command line, bootstrap) see.
pub fn template_values(plan: &VmPlan, mgmt: &MgmtAddrs) -> template::Values {
    let mut v = template::Values::new();
    v.insert("hostname", plan.identity().to_string());
    v.insert("name", plan.name.clone());
    v.insert(
        "username",
        plan.credentials.username.clone().unwrap_or_default(),
    );
    v.insert(
        "password",
        plan.credentials.password.clone().unwrap_or_default(),
    );
    v.insert("mgmt_ip", mgmt.ipv4.clone());
    v.insert("mgmt_gateway", mgmt.gateway4.clone());
    v.insert("mgmt_ipv6", mgmt.ipv6.clone());
    v.insert("mgmt_gateway6", mgmt.gateway6.clone());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_takes_the_first_address_and_gateway_of_each_family() {
        let p = Passthrough {
            tap: crate::net::tap::Tap {
                name: "tap0".into(),
                fd: std::fs::File::open("/dev/null").unwrap().into(),
            },
            mac: "02:00:00:00:00:01".into(),
            addresses: vec![
                "192.0.2.5/24".into(),
                "2001:db8::5/64".into(),
                "192.0.2.6/24".into(),
            ],
            gateways: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        };
        let m = MgmtAddrs::from_passthrough(&p);
        assert_eq!(m.ipv4, "192.0.2.5/24");
        assert_eq!(m.ipv6, "2001:db8::5/64");
        assert_eq!(m.gateway4, "192.0.2.1");
        assert_eq!(m.gateway6, "2001:db8::1");
        assert_eq!(MgmtAddrs::user().ipv4, "10.0.0.15/24");
    }
}
