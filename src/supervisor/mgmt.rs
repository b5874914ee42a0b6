//! What a VM learns at run time and its plan cannot know: the management addresses it is to
//! take (user mode's fixed ones, or what passthrough found on the container's interface), the
//! values its templates see, how status shows its management, and the [`qemu::Resolved`] facts
//! its argv takes (passthrough MAC, the kernel line rendered, the startup config if its file is
//! there). Reads what net found and whether one file exists; never edits the plan.

use crate::config::{Management, UserSubnet, VmPlan};
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
    /// qemu's user network as vrnetlab's: the guest at 10.0.0.15, slirp's gateway at 10.0.0.2.
    pub fn user() -> Self {
        Self::user_in(&UserSubnet::default())
    }

    /// qemu's user network on `s`: the guest at .15, slirp's gateway at .2.
    pub fn user_in(s: &UserSubnet) -> Self {
        Self {
            ipv4: format!("{}/{}", s.guest(), s.prefix),
            gateway4: s.gateway().to_string(),
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
            Management::User { subnet, .. } => Self::user_in(subnet),
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
/// passthrough mode (CLAB_MGMT_MAC, when set, wins in every mode). A startup config whose file is not there is left out (the VM boots
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
        mgmt_mac: plan.lab.mgmt_mac.clone().or(mac),
        kernel_append: plan
            .boot
            .kernel
            .as_ref()
            .map(|k| template::render(&k.append, &values)),
        startup_config,
        links: plan.nics.links.clone(),
        smbios: Some(render_all(&plan.machine.smbios, &values)),
        license: plan.machine.license.as_deref().and_then(read_license),
    };
    VmFacts { resolved, values }
}

/// Each template rendered.
pub fn render_all(templates: &[String], values: &template::Values) -> Vec<String> {
    templates
        .iter()
        .map(|t| template::render(t, values))
        .collect()
}

/// vm.license read and parsed (the preflight refused a missing or bad one: one that went since
/// is left out, said in the log).
pub fn read_license(path: &std::path::Path) -> Option<qemu::License> {
    let text = std::fs::read_to_string(path);
    match text.map(|t| qemu::License::parse(&t)) {
        Ok(Ok(l)) => Some(l),
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "licence unusable; no uuid or clock from it");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "licence unreadable; no uuid or clock from it");
            None
        }
    }
}

/// The values a VM's templates (kernel command line, bootstrap) see. With CLAB_MGMT_DHCP in
/// passthrough, the management values are `dhcp` (the guest asks a DHCP server), as vrnetlab
/// has them.
pub fn template_values(plan: &VmPlan, mgmt: &MgmtAddrs) -> template::Values {
    let dhcp = MgmtAddrs {
        ipv4: "dhcp".into(),
        gateway4: "dhcp".into(),
        ipv6: "dhcp".into(),
        gateway6: "dhcp".into(),
    };
    let passthrough = matches!(plan.management, Management::Passthrough { .. });
    let mgmt = if plan.lab.mgmt_dhcp && passthrough {
        &dhcp
    } else {
        mgmt
    };
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
    let (address, netmask) = address_and_netmask(&mgmt.ipv4);
    v.insert("mgmt_address", address);
    v.insert("mgmt_netmask", netmask);
    v.insert("mgmt_gateway", mgmt.gateway4.clone());
    v.insert("mgmt_ipv6", mgmt.ipv6.clone());
    v.insert("mgmt_gateway6", mgmt.gateway6.clone());
    v.insert("node_name", plan.lab.node_name.clone());
    v.insert("docker_net_v4", plan.lab.docker_net_v4.clone());
    v.insert("docker_net_v6", plan.lab.docker_net_v6.clone());
    v.insert("variant", plan.lab.variant.clone());
    v.insert(
        "base_mac",
        qemu::mac(&format!("{}/base", plan.identity()), 0),
    );
    v
}

/// `10.0.0.15/24` as (`10.0.0.15`, `255.255.255.0`), as IOS, PAN-OS and VRP take it; a value
/// without a prefix (`dhcp`, none) is both.
fn address_and_netmask(ipv4: &str) -> (String, String) {
    match ipv4.split_once('/') {
        Some((a, len)) => {
            let len: u32 = len.parse().unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            (a.to_string(), std::net::Ipv4Addr::from(mask).to_string())
        }
        None => (ipv4.to_string(), ipv4.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_splits_into_address_and_netmask() {
        let s = |a: &str| address_and_netmask(a);
        assert_eq!(
            s("10.0.0.15/24"),
            ("10.0.0.15".into(), "255.255.255.0".into())
        );
        assert_eq!(
            s("172.20.20.3/16"),
            ("172.20.20.3".into(), "255.255.0.0".into())
        );
        assert_eq!(
            s("192.0.2.1/32"),
            ("192.0.2.1".into(), "255.255.255.255".into())
        );
        assert_eq!(s("192.0.2.1/0"), ("192.0.2.1".into(), "0.0.0.0".into()));
        assert_eq!(s("dhcp"), ("dhcp".into(), "dhcp".into()));
    }

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
        let text = "[vm]\nname = \"r\"\n[kernel]\npath = \"k\"\n[management]\nsubnet = \"169.254.127.0/24\"\n";
        let p = crate::config::parse_with(text, &[]).unwrap().vms.remove(0);
        let m = MgmtAddrs::without_passthrough(&p.management);
        assert_eq!(
            (m.ipv4.as_str(), m.gateway4.as_str()),
            ("169.254.127.15/24", "169.254.127.2")
        );
    }

    fn plan(env: &[(&str, &str)]) -> VmPlan {
        let text = "[vm]\nname = \"r\"\n[kernel]\npath = \"k\"\n";
        crate::config::parse_with(text, env).unwrap().vms.remove(0)
    }

    /// CLAB_MGMT_MAC is the guest management NIC's MAC in user mode (and in `launcher check`);
    /// without it, the derived one.
    #[test]
    fn clab_mgmt_mac_is_the_management_nics_mac() {
        let p = plan(&[("CLAB_MGMT_MAC", "0c:00:aa:bb:cc:01")]);
        let facts = resolve(&p, &MgmtAddrs::user(), None);
        let launch = qemu::Launch::for_check(&p);
        let argv: Vec<String> = qemu::argv(&p, &launch, &facts.resolved)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(
            argv.iter()
                .any(|a| a.ends_with("netdev=mgmt,mac=0c:00:aa:bb:cc:01")),
            "{argv:?}"
        );
        let planned = qemu::argv(&p, &launch, &qemu::Resolved::planned(&p));
        assert!(planned
            .iter()
            .any(|a| a.to_string_lossy().ends_with("mac=0c:00:aa:bb:cc:01")));
        // Passthrough: CLAB_MGMT_MAC over the interface's own (which takes it too).
        let facts = resolve(&p, &MgmtAddrs::user(), Some("02:42:ac:14:14:03".into()));
        assert_eq!(
            facts.resolved.mgmt_mac.as_deref(),
            Some("0c:00:aa:bb:cc:01")
        );
        let p = plan(&[]);
        let facts = resolve(&p, &MgmtAddrs::user(), None);
        assert_eq!(facts.resolved.mgmt_mac, None);
    }

    /// CLAB_MGMT_DHCP makes the management values `dhcp` in passthrough (only there, as in
    /// vrnetlab); the lab's values are placeholders.
    #[test]
    fn template_values_carry_the_lab_and_dhcp() {
        let env = [
            ("CLAB_MGMT_DHCP", "true"),
            ("CLAB_LABEL_CLAB_NODE_NAME", "pe1"),
            ("DOCKER_NET_V4_ADDR", "172.20.20.0/24"),
            ("DOCKER_NET_V6_ADDR", "3fff:172:20:20::/64"),
        ];
        let addrs = MgmtAddrs {
            ipv4: "172.20.20.5/24".into(),
            gateway4: "172.20.20.1".into(),
            ..Default::default()
        };
        let user = template_values(&plan(&env), &MgmtAddrs::user());
        assert_eq!(user["mgmt_ip"], "10.0.0.15/24");
        let mut pt = env.to_vec();
        pt.push(("CLAB_MGMT_PASSTHROUGH", "true"));
        let v = template_values(&plan(&pt), &addrs);
        for k in ["mgmt_ip", "mgmt_gateway", "mgmt_ipv6", "mgmt_gateway6"] {
            assert_eq!(v[k], "dhcp", "{k}");
        }
        assert_eq!(v["node_name"], "pe1");
        assert_eq!(v["docker_net_v4"], "172.20.20.0/24");
        assert_eq!(v["docker_net_v6"], "3fff:172:20:20::/64");
        assert_eq!(v["variant"], "");
        let v = template_values(&plan(&pt[1..]), &addrs);
        assert_eq!(v["mgmt_ip"], "172.20.20.5/24");
        // Every placeholder has a value.
        for k in template::PLACEHOLDERS {
            assert!(v.contains_key(k), "{k}");
        }
    }

    /// SMBIOS templates are rendered with the VM's values; vm.license gives -uuid (over
    /// vm.uuid) and -rtc base= the day after its date.
    #[test]
    fn smbios_is_rendered_and_the_licence_gives_uuid_and_clock() {
        let dir = std::env::temp_dir().join(format!("lt-sros-licence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lic = dir.join("license.txt");
        std::fs::write(
            &lic,
            "# c\n0a1b2c3d-1111-2222-3333-444455556666 k 2025-01-31\n",
        )
        .unwrap();
        let text = format!(
            "[vm]\nname = \"r\"\nuuid = \"00000000-0000-0000-0000-000000000000\"\nlicense = \"{}\"\nsmbios = [\"type=1,product=TIMOS:address={{mgmt_ip}}@active system-base-mac={{base_mac}} chassis=sr-1\"]\n[kernel]\npath = \"k\"\n",
            lic.display()
        );
        let p = crate::config::parse_with(&text, &[]).unwrap().vms.remove(0);
        let facts = resolve(&p, &MgmtAddrs::user(), None);
        let argv: Vec<String> = qemu::argv(&p, &qemu::Launch::for_check(&p), &facts.resolved)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let value = |flag: &str| argv[argv.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(value("-uuid"), "0a1b2c3d-1111-2222-3333-444455556666");
        assert_eq!(value("-rtc"), "base=2025-02-01");
        let base = qemu::mac("r/base", 0);
        assert_eq!(
            value("-smbios"),
            format!("type=1,product=TIMOS:address=10.0.0.15/24@active system-base-mac={base} chassis=sr-1")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
