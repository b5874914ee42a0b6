//! The node's table tests: `[[vm]]` entries (the port split, internal networks, what two VMs
//! cannot share), the keys their errors name, and the settings that come once from the node.

use super::tests::{pn, MIN, TWO};
use super::*;
use std::time::Duration;

#[test]
fn several_vms_in_one_node() {
    let n = pn(TWO, &[("QEMU_MEMORY", "2048"), ("CLAB_INTFS", "3")]).unwrap();
    assert_eq!(n.vms.len(), 2);
    let (cp, lc) = (&n.vms[0], &n.vms[1]);
    // The environment sizes the first VM only; CLAB_INTFS is node-wide.
    assert_eq!((cp.machine.memory_mib, lc.machine.memory_mib), (2048, 512));
    assert_eq!(
        cp.nics.links.iter().map(|l| l.index).collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(
        lc.nics.links.iter().map(|l| l.index).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(n.links().len(), 3);
    assert_eq!(
        (cp.console.telnet_port, lc.console.telnet_port),
        (5000, 5010)
    );
    assert_eq!(lc.console.ready_pattern.as_deref(), Some("up"));
    assert_eq!(cp.run_dir, PathBuf::from("/run/launcher/cp"));
    assert_ne!(cp.mac_seed(), lc.mac_seed());
    assert_eq!(
        n.internal,
        vec![InternalNet {
            name: "fab".into(),
            bridge: "int-fab".into(),
            taps: vec!["i0-fab".into(), "i1-fab".into()]
        }]
    );
    assert_eq!(cp.internal, ["i0-fab"]);
    // Only the first VM forwards the container's ports by default.
    match (&cp.management, &lc.management) {
        (Management::User { forwards: a, .. }, Management::User { forwards: b, .. }) => {
            assert_eq!(a.len(), DEFAULT_FORWARDS.len());
            assert!(b.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Second VM's console defaults: 5001 and its own log.
    let n = pn(
        &TWO.replace("[vm.console]\ntelnet_port = 5010\n", "[vm.console]\n"),
        &[],
    );
    assert!(n.is_ok());
    let plain = TWO.replace(
        "[vm.console]\ntelnet_port = 5010\nready_pattern = \"up\"\n",
        "",
    );
    let n = pn(&plain, &[]).unwrap();
    assert_eq!(n.vms[1].console.telnet_port, 5001);
    assert_eq!(
        n.vms[1].console.log,
        PathBuf::from("/var/log/launcher/lc.console.log")
    );
}

#[test]
fn several_vms_broken_inputs_name_the_entry() {
    let cases: Vec<(String, &str)> = vec![
        (TWO.replace("data = \"1\"", "data = \"none\""), "vm[].data"),
        (TWO.replace("data = \"1\"", "data = \"1-2\""), "vm[1].data"),
        (
            TWO.replace("data = \"2-4\"", "data = \"4-2\""),
            "vm[1].data",
        ),
        (TWO.replace("data = \"1\"", "data = \"one\""), "vm[0].data"),
        (
            TWO.replace(
                "internal = [\"fab\"]\n[vm.kernel]\npath = \"k2\"",
                "[vm.kernel]\npath = \"k2\"",
            ),
            "vm[].internal",
        ),
        (TWO.replace("memory = 512", "memroy = 512"), "vm[1]"),
        (
            TWO.replace("path = \"k2\"", "path = \"\""),
            "vm[1].kernel.path",
        ),
        (TWO.replace("memory = 512", "memory = 1"), "vm[1].memory"),
        (
            TWO.replace(
                "path = \"k2\"",
                "path = \"k2\"\nappend = \"ip={mgmt_addr}\"",
            ),
            "vm[1].kernel.append",
        ),
        (TWO.replace("name = \"lc\"", "name = \"cp\""), "vm[1].name"),
        (
            TWO.replace("telnet_port = 5010", "telnet_port = 5000"),
            "vm[1].console.telnet_port",
        ),
        (format!("[kernel]\npath = \"k\"\n{TWO}"), "kernel"),
        (format!("[console]\ntelnet_port = 6000\n{TWO}"), "console"),
        (
            TWO.replace("internal = [\"fab\"]", "internal = [\"a-b\"]"),
            "vm[0].internal",
        ),
    ];
    for (text, key) in cases {
        match pn(&text, &[]) {
            Ok(_) => panic!("accepted broken input {text}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(key), "error does not name {key:?}: {msg}");
            }
        }
    }
}

#[test]
fn keys_are_built_as_the_code_descends() {
    assert_eq!(Key::root().child("nics").as_str(), "nics");
    assert_eq!(
        Key::new("vm")
            .index(1)
            .child("disk")
            .index(0)
            .child("path")
            .as_str(),
        "vm[1].disk[0].path"
    );
    assert_eq!(Key::new("QEMU_SMP").to_string(), "QEMU_SMP");
}

/// An error inside a `[[vm]]` entry names the entry; the same error in a single VM does not.
#[test]
fn entry_errors_name_the_entry() {
    let err = |text: &str| pn(text, &[]).unwrap_err().to_string();
    let disk = TWO.replace("[vm.kernel]\npath = \"k2\"", "[[vm.disk]]\npath = \"\"");
    assert_eq!(
        err(&disk),
        "vm[1].disk[0].path = \"\": must name a disk image"
    );
    assert_eq!(
        err("[[disk]]\npath = \"\""),
        "disk[0].path = \"\": must name a disk image"
    );
    let steps = TWO.replace(
        "path = \"k2\"",
        "path = \"k2\"\n[vm.bootstrap]\nsteps = [{wait = 1.0}, {send = \"{x}\"}]",
    );
    assert!(
        err(&steps).starts_with("vm[1].bootstrap.steps[1].send = \"{x}\": unknown placeholder {x}")
    );
    assert_eq!(
        err(&TWO.replace("memory = 512", "smbios = [\"x\"]")),
        "vm[1].smbios[0] = \"x\": expected a qemu -smbios value such as type=1,product=X"
    );
    // Node-wide sections and the environment keep their own names.
    assert_eq!(
        err(&TWO.replace("count = 4", "count = 4\nmtu = 1")),
        "nics.mtu = \"1\": must be between 68 and 65535"
    );
    assert_eq!(
        pn(TWO, &[("QEMU_SMP", "0")]).unwrap_err().to_string(),
        "QEMU_SMP = \"0\": vCPUs must be between 1 and 256"
    );
    let mgmt = TWO.replace(
        "ready_pattern = \"up\"",
        "ready_pattern = \"up\"\n[vm.management]\nmode = \"x\"",
    );
    assert_eq!(
        err(&mgmt),
        "vm[1].management.mode = \"x\": expected user, passthrough or none"
    );
}

#[test]
fn node_settings_come_once_from_the_node() {
    let n = pn(
        &TWO.replace("name = \"cp\"", "name = \"cp\"\nboot_delay = 3")
            .replace(
                "count = 4",
                "count = 4\nmtu = 1500\nwait_timeout = 7\non_timeout = \"continue\"",
            ),
        &[("QEMU_SMP", "2")],
    )
    .unwrap();
    let s = &n.settings;
    assert_eq!(s.identity, "cp");
    assert_eq!(s.health_file, PathBuf::from("/health"));
    assert_eq!(s.link_wait_timeout, Duration::from_secs(7));
    assert_eq!(s.on_missing_links, OnMissingLinks::Continue);
    assert_eq!(s.tap_mtu, 1500);
    assert_eq!(s.boot_delay, Duration::from_secs(3));
    // The first VM only is sized by the environment; both are in the node.
    assert_eq!((n.vms[0].machine.smp, n.vms[1].machine.smp), (2, 1));
    assert!(n.vms.iter().all(|v| v.in_node));
    assert_eq!(n.vms[1].serial_label(0), "console lc");
    let one = pn(MIN, &[("HOSTNAME", "r1")]).unwrap();
    assert_eq!(one.settings.identity, "r1");
    assert!(!one.vms[0].in_node);
    assert_eq!(one.vms[0].mac_seed(), "r1");
    assert_eq!(one.vms[0].serial_label(2), "ttyS2");
}

#[test]
fn sandbox_is_on_by_default_and_per_vm() {
    let user = |n: &str| Sandbox::On {
        user: QemuUser::Name(n.into()),
    };
    let single = |vm: &str| super::tests::p(&format!("[vm]\n{vm}\n{MIN}"), &[]);
    assert_eq!(single("").unwrap().sandbox, user(QEMU_USER));
    assert_eq!(single("sandbox = false").unwrap().sandbox, Sandbox::Off);
    assert_eq!(
        single("qemu_user = \"qemu\"").unwrap().sandbox,
        user("qemu")
    );
    assert_eq!(
        single("qemu_user = \"1234\"").unwrap().sandbox,
        Sandbox::On {
            user: QemuUser::Id {
                uid: 1234,
                gid: 1234
            }
        }
    );
    assert_eq!(
        single("qemu_user = \"1234:99\"").unwrap().sandbox,
        Sandbox::On {
            user: QemuUser::Id { uid: 1234, gid: 99 }
        }
    );
    // [[vm]]: each entry its own; the errors name the entry.
    let n = pn(&TWO.replace("memory = 512", "sandbox = false"), &[]).unwrap();
    assert_eq!(n.vms[0].sandbox, user(QEMU_USER));
    assert_eq!(n.vms[1].sandbox, Sandbox::Off);
    let err = |v: &str| {
        pn(
            &TWO.replace("memory = 512", &format!("qemu_user = \"{v}\"")),
            &[],
        )
        .unwrap_err()
        .to_string()
    };
    for bad in ["0", "0:0", "12:0", "12:x", "", "root", "a b", "x;y"] {
        assert!(
            err(bad).starts_with(&format!("vm[1].qemu_user = \"{bad}\": expected")),
            "{bad}: {}",
            err(bad)
        );
    }
}

#[test]
fn the_clock_after_a_restore_is_none_by_default_or_the_guest_agent() {
    let single = |vm: &str| super::tests::p(&format!("[vm]\n{vm}\n{MIN}"), &[]);
    assert_eq!(single("").unwrap().clock, Clock::None);
    assert_eq!(
        single("clock = \"guest-agent\"").unwrap().clock,
        Clock::GuestAgent
    );
    assert_eq!(
        single("clock = \"ntp\"").unwrap_err().to_string(),
        "vm.clock = \"ntp\": expected none or guest-agent"
    );
}

#[test]
fn a_vm_takes_its_own_nic_layout_over_the_nodes() {
    // [vm.nics] at the end belongs to the last entry (lc, ports 2-4).
    let with = |own: &str| {
        let text = TWO.replacen("count = 4", "count = 4\nmodel = \"e1000\"", 1);
        pn(&format!("{text}[vm.nics]\n{own}\n"), &[])
    };
    let n = with("bridges = 2\ndummies = 1\ndummy_model = \"virtio-net-pci\"").unwrap();
    let (cp, lc) = (&n.vms[0].nics, &n.vms[1].nics);
    assert_eq!((cp.bridges, cp.dummies, cp.model.as_str()), (0, 0, "e1000"));
    assert_eq!(
        (
            lc.bridges,
            lc.dummies,
            lc.dummy_model.as_str(),
            lc.model.as_str()
        ),
        (2, 1, "virtio-net-pci", "e1000")
    );
    // Its ports and links stay the entry's.
    assert_eq!(
        lc.links.iter().map(|l| l.index).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    let err = with("bridges = 21").unwrap_err();
    assert_eq!(
        err.to_string(),
        "vm[1].nics.bridges = \"21\": at most 20 PCI bridges (0 = only when needed)"
    );
    assert_eq!(crate::exit::Code::from(&err).as_i32(), 2);
    // The links are node-wide: no count in a VM's [vm.nics].
    assert!(with("count = 2")
        .unwrap_err()
        .to_string()
        .contains("vm[1].nics"));
}

#[test]
fn a_top_level_bootstrap_is_the_first_vms_unless_it_has_its_own() {
    let two = "[bootstrap]\nsteps = [{ expect = \"login:\" }]\n[[vm]]\nname = \"cp\"\n[vm.kernel]\npath = \"k\"\n[[vm]]\nname = \"lc\"\ndata = \"all\"\n[vm.kernel]\npath = \"k\"\n";
    let n = pn(two, &[]).unwrap();
    assert_eq!(n.vms[0].bootstrap.as_ref().unwrap().steps.len(), 1);
    assert!(n.vms[1].bootstrap.is_none());
    let own = format!("{two}[vm.bootstrap]\nsteps = [{{ wait = 1.0 }}, {{ wait = 2.0 }}]\n");
    let n = pn(&own, &[]).unwrap();
    assert_eq!(n.vms[0].bootstrap.as_ref().unwrap().steps.len(), 1);
    assert_eq!(n.vms[1].bootstrap.as_ref().unwrap().steps.len(), 2);
}

#[test]
fn a_vm_without_data_ports_has_no_data_slots_offset_or_bridges() {
    let text = "[nics]\nslots = 36\nbridges = 2\noffset = 1\n[[vm]]\nname = \"cp\"\ndata = \"none\"\n[vm.kernel]\npath = \"k\"\n[[vm]]\nname = \"lc\"\ndata = \"all\"\n[vm.kernel]\npath = \"k\"\n";
    let n = pn(text, &[]).unwrap();
    let (cp, lc) = (&n.vms[0].nics, &n.vms[1].nics);
    assert_eq!((cp.slots, cp.bridges, cp.offset), (0, 0, 0));
    assert_eq!((lc.slots, lc.bridges, lc.offset), (36, 2, 1));
}
