//! containerlab's environment and vrnetlab's flags through [`parse`]: what each variable sets
//! in the plan, and each bad value an error naming the variable (exit 2).

use super::tests::{p, pn, MIN};
use super::*;
use crate::exit::Code;

fn bad(env: &[(&str, &str)]) -> ConfigError {
    pn(MIN, env).unwrap_err()
}

#[test]
fn lab_values_come_from_containerlab_variables() {
    let plan = p(
        MIN,
        &[
            ("CLAB_LABEL_CLAB_NODE_NAME", "pe1"),
            ("DOCKER_NET_V4_ADDR", "172.20.20.0/24"),
            ("DOCKER_NET_V6_ADDR", "3fff:172:20:20::/64"),
            ("CLAB_MGMT_MAC", "0C:00:AA:bb:cc:01"),
            ("CLAB_MGMT_DHCP", "true"),
        ],
    )
    .unwrap();
    let lab = &plan.lab;
    assert_eq!(lab.node_name, "pe1");
    assert_eq!(lab.docker_net_v4, "172.20.20.0/24");
    assert_eq!(lab.docker_net_v6, "3fff:172:20:20::/64");
    assert_eq!(lab.mgmt_mac.as_deref(), Some("0c:00:aa:bb:cc:01"));
    assert!(lab.mgmt_dhcp);
    // Unset: the node name is the router's identity, the subnets empty; containerlab passes
    // an empty v6 subnet when the lab has none.
    let plan = p(MIN, &[("HOSTNAME", "r9"), ("DOCKER_NET_V6_ADDR", "")]).unwrap();
    assert_eq!(plan.lab.node_name, "r9");
    assert_eq!(
        (
            plan.lab.docker_net_v4.as_str(),
            plan.lab.docker_net_v6.as_str()
        ),
        ("", "")
    );
    assert_eq!(plan.lab.mgmt_mac, None);
    assert!(!plan.lab.mgmt_dhcp);
}

#[test]
fn the_variant_flag_and_connection_mode_reach_the_plan() {
    let over = Overrides {
        variant: Some("sr-1".into()),
        connection_mode: Some("tc".into()),
        ..Default::default()
    };
    let env: Env = [("CONNECTION_MODE".to_string(), "tc".to_string())].into();
    let n = parse(MIN, Path::new("/c/l.toml"), Path::new("/c"), &env, &over).unwrap();
    assert_eq!(n.vms[0].lab.variant, "sr-1");
    assert_eq!(n.settings.connection_mode, ConnectionMode::Tc);
    assert_eq!(n.settings.reset_file, PathBuf::from("/reset"));
    // The flag wins over the variable, and names itself when bad.
    let over = Overrides {
        connection_mode: Some("bridge".into()),
        ..Default::default()
    };
    let e = parse(MIN, Path::new("/c/l.toml"), Path::new("/c"), &env, &over).unwrap_err();
    assert_eq!(
        e.to_string(),
        "--connection-mode = \"bridge\": expected tc (tc mirred passes LACP, STP and LLDP) or macvtap (a passthru macvtap per port)"
    );
    assert_eq!(Code::from(&e), Code::BadInput);
    // macvtap, from the variable or the flag (the flag still wins).
    let env: Env = [("CONNECTION_MODE".to_string(), "macvtap".to_string())].into();
    let n = parse(
        MIN,
        Path::new("/c/l.toml"),
        Path::new("/c"),
        &env,
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(n.settings.connection_mode, ConnectionMode::Macvtap);
    let over = Overrides {
        connection_mode: Some("tc".into()),
        ..Default::default()
    };
    let n = parse(MIN, Path::new("/c/l.toml"), Path::new("/c"), &env, &over).unwrap();
    assert_eq!(n.settings.connection_mode, ConnectionMode::Tc);
}

#[test]
fn clab_mgmt_intf_is_the_interface_passthrough_takes_over() {
    let plan = p(
        MIN,
        &[
            ("CLAB_MGMT_PASSTHROUGH", "true"),
            ("CLAB_MGMT_INTF", "mgmt0"),
        ],
    )
    .unwrap();
    assert!(
        matches!(&plan.management, Management::Passthrough { interface, .. } if interface == "mgmt0"),
        "{:?}",
        plan.management
    );
    // In user mode it has nothing to take over.
    assert!(matches!(
        p(MIN, &[("CLAB_MGMT_INTF", "mgmt0")]).unwrap().management,
        Management::User { .. }
    ));
}

/// Each bad value: exit 2, the message naming the variable and the value.
#[test]
fn bad_containerlab_values_are_exit_2_naming_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("CONNECTION_MODE", "macvlan", "expected tc"),
        ("CONNECTION_MODE", "ovs-user", "or macvtap"),
        ("CLAB_MGMT_MAC", "0c:00:11:22:33", "expected a MAC address"),
        (
            "CLAB_MGMT_MAC",
            "0c-00-11-22-33-44",
            "expected a MAC address",
        ),
        (
            "CLAB_MGMT_MAC",
            "0c:00:11:22:33:zz",
            "expected a MAC address",
        ),
        ("CLAB_MGMT_MAC", "01:00:5e:00:00:01", "unicast"),
        ("CLAB_MGMT_MAC", "00:00:00:00:00:00", "unicast"),
        ("CLAB_MGMT_DHCP", "maybe", "expected true or false"),
        ("DOCKER_NET_V4_ADDR", "172.20.20.0", "IPv4 subnet"),
        ("DOCKER_NET_V4_ADDR", "172.20.20.0/33", "IPv4 subnet"),
        ("DOCKER_NET_V4_ADDR", "3fff::/64", "IPv4 subnet"),
        ("DOCKER_NET_V6_ADDR", "172.20.20.0/24", "IPv6 subnet"),
        ("DOCKER_NET_V6_ADDR", "3fff::/129", "IPv6 subnet"),
        ("BOOT_DELAY", "soon", "a number of seconds"),
        ("QEMU_MEMORY", "4G", "memory in MiB"),
        ("QEMU_SMP", "-1", "a number of vCPUs"),
        ("CLAB_INTFS", "two", "a number of data interfaces"),
        ("CLAB_INTF_PREFIX", "e th", "interface name"),
    ];
    for (var, value, why) in cases {
        let e = bad(&[(var, value)]);
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("{var} = \"{value}\": ")) && msg.contains(why),
            "{var}={value}: {msg}"
        );
        assert_eq!(Code::from(&e), Code::BadInput, "{var}={value}");
    }
    // CLAB_MGMT_INTF is used (and checked) in passthrough.
    let e = bad(&[("CLAB_MGMT_PASSTHROUGH", "true"), ("CLAB_MGMT_INTF", "a/b")]);
    assert!(e.to_string().starts_with("CLAB_MGMT_INTF = \"a/b\""), "{e}");
}

/// The README's platform example is the documented readiness pattern: SSH on port 22 through
/// the default forwards; it parses, and in passthrough (containerlab forces it on some kinds)
/// it still starts, without the probe: the container has no path to the guest's address.
#[test]
fn the_readme_platform_example_waits_for_ssh_through_the_forward() {
    let readme = include_str!("../../README.md");
    let at = readme
        .find("## Packaging a real router image")
        .expect("the packaging section");
    let block = &readme[at..];
    let start = block.find("```toml\n").expect("its toml block") + "```toml\n".len();
    let text = &block[start..start + block[start..].find("```").unwrap()];
    assert!(text.contains("ready_tcp = 22"), "{text}");
    let plan = p(text, &[]).unwrap();
    assert_eq!(plan.console.ready_tcp, Some(22));
    assert_eq!(plan.tcp_probe(), Some(22));
    let pt = p(text, &[("CLAB_MGMT_PASSTHROUGH", "true")]).unwrap();
    assert_eq!(pt.console.ready_tcp, Some(22));
    assert_eq!(pt.tcp_probe(), None);
    // Without management there is no forward and no passthrough: still refused.
    let none = text.replace("[console]", "[management]\nmode = \"none\"\n[console]");
    let e = p(&none, &[]).unwrap_err();
    assert!(
        e.to_string().starts_with("console.ready_tcp = \"22\""),
        "{e}"
    );
}
