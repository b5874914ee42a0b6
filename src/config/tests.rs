//! The config's table tests: whole files and environments through [`parse`], the keys and
//! values their errors name, and the plans they give.

use super::*;
use std::time::Duration;

const MIN: &str = "[kernel]\npath = \"k\"\n";

fn p(text: &str, env: &[(&str, &str)]) -> Result<VmPlan, ConfigError> {
    pn(text, env).map(|n| {
        assert_eq!(n.vms.len(), 1);
        n.vms.into_iter().next().unwrap()
    })
}

fn pn(text: &str, env: &[(&str, &str)]) -> Result<Node, ConfigError> {
    parse_with(text, env)
}

const TWO: &str = r#"
[nics]
count = 4
[[vm]]
name = "cp"
data = "1"
internal = ["fab"]
[vm.kernel]
path = "k"
[[vm]]
name = "lc"
memory = 512
data = "2-4"
internal = ["fab"]
[vm.kernel]
path = "k2"
[vm.console]
telnet_port = 5010
ready_pattern = "up"
"#;

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
fn defaults_and_relative_paths() {
    let plan = p("[kernel]\npath = \"k\"\ninitrd = \"/abs/i\"\n", &[]).unwrap();
    assert_eq!(
        plan.boot.kernel.as_ref().unwrap().path,
        PathBuf::from("/cfg/k")
    );
    assert_eq!(
        plan.boot.kernel.unwrap().initrd,
        Some(PathBuf::from("/abs/i"))
    );
    assert_eq!(plan.machine.memory_mib, 1024);
    assert_eq!(plan.machine.accel, Accel::Auto);
    assert!(plan.nics.links.is_empty());
    assert_eq!(
        plan.supervision.restart,
        RestartPolicy::OnFailure {
            max: 3,
            backoff: Duration::from_secs(2)
        }
    );
}

#[test]
fn env_overrides() {
    let plan = p(
        MIN,
        &[
            ("QEMU_MEMORY", "2048"),
            ("QEMU_SMP", "2"),
            ("QEMU_CPU", "host"),
            ("CLAB_INTFS", "3"),
            ("QEMU_ADDITIONAL_ARGS", "-device 'foo,bar=a b' -x"),
            ("LAUNCHER_ACCEL", "tcg"),
            ("BOOT_DELAY", "5"),
        ],
    )
    .unwrap();
    assert_eq!(plan.machine.memory_mib, 2048);
    assert_eq!(plan.machine.smp, 2);
    assert_eq!(plan.machine.cpu, "host");
    assert_eq!(plan.machine.accel, Accel::Tcg);
    assert_eq!(
        pn(MIN, &[("BOOT_DELAY", "5")]).unwrap().settings.boot_delay,
        Duration::from_secs(5)
    );
    assert_eq!(
        plan.machine.extra_args,
        vec!["-device", "foo,bar=a b", "-x"]
    );
    let names: Vec<_> = plan
        .nics
        .links
        .iter()
        .map(|l| (l.eth.as_str(), l.tap.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("eth1", "tap1"), ("eth2", "tap2"), ("eth3", "tap3")]
    );
}

#[test]
fn explicit_names_keep_their_index() {
    let plan = p(
        "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth4\",\"eth2\"]\n",
        &[],
    )
    .unwrap();
    let idx: Vec<_> = plan
        .nics
        .links
        .iter()
        .map(|l| (l.index, l.tap.as_str()))
        .collect();
    assert_eq!(idx, vec![(2, "tap2"), (4, "tap4")]);
}

#[test]
fn disk_overlay_lands_in_state_dir() {
    let plan = p(
        "[[disk]]\npath = \"img/vmx.qcow2\"\n[paths]\nstate_dir=\"/var/lib/x\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(plan.boot.disks[0].path, PathBuf::from("/cfg/img/vmx.qcow2"));
    assert_eq!(
        plan.boot.disks[0].kind,
        DiskKind::Image {
            format: "qcow2".into(),
            overlay: Some(PathBuf::from("/var/lib/x/vmx-overlay.qcow2"))
        }
    );
}

/// Every broken config or environment value is rejected, and the message names the key.
#[allow(clippy::too_many_lines)] // one table of cases
#[test]
fn broken_inputs_name_their_key() {
    // (config text, environment, the key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("[vm]\nmemroy = 5\n[kernel]\npath=\"k\"", &[], "memroy"),
        (
            "[vm]\nmemory = \"lots\"\n[kernel]\npath=\"k\"",
            &[],
            "memory",
        ),
        ("[vm]\nmemory = 4\n[kernel]\npath=\"k\"", &[], "vm.memory"),
        ("[vm]\nsmp = 0\n[kernel]\npath=\"k\"", &[], "vm.smp"),
        (
            "[vm]\naccel = \"hvf\"\n[kernel]\npath=\"k\"",
            &[],
            "vm.accel",
        ),
        ("[vm]\nname = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.name"),
        (
            "[vm]\nshutdown_timeout = 0\n[kernel]\npath=\"k\"",
            &[],
            "vm.shutdown_timeout",
        ),
        (
            "[vm]\nboot_timeout = 0\n[kernel]\npath=\"k\"",
            &[],
            "vm.boot_timeout",
        ),
        ("[vm]\ncpu = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.cpu"),
        ("", &[], "disk"),
        (
            "[[disk]]\npath=\"d\"\nformat=\"qcow3\"",
            &[],
            "disk[0].format",
        ),
        (
            "[[disk]]\npath=\"d\"\ninterface=\"sata\"",
            &[],
            "disk[0].interface",
        ),
        ("[[disk]]\npath=\"d\"\ntypo=1", &[], "typo"),
        (
            "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth0\"]",
            &[],
            "nics.names[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth1\",\"eth1\"]",
            &[],
            "nics.names[1]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\non_timeout=\"maybe\"",
            &[],
            "nics.on_timeout",
        ),
        ("[kernel]\npath=\"k\"\n[nics]\nmtu=10", &[], "nics.mtu"),
        (
            "[kernel]\npath=\"k\"\n[nics]\nprefix=\"a/b\"",
            &[],
            "nics.prefix",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\nmodel=\"e1000 x\"",
            &[],
            "nics.model",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nmode=\"bridge\"",
            &[],
            "management.mode",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nforwards=[\"tcp:99999\"]",
            &[],
            "management.forwards[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nforwards=[\"sctp:22\"]",
            &[],
            "management.forwards[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[restart]\npolicy=\"always\"",
            &[],
            "restart.policy",
        ),
        (
            "[kernel]\npath=\"k\"\n[restart]\nbackoff=9999",
            &[],
            "restart.backoff",
        ),
        (
            "[kernel]\npath=\"k\"\n[console]\nready_pattern=\"\"",
            &[],
            "console.ready_pattern",
        ),
        ("[kernel]\npath=\"\"", &[], "kernel.path"),
        ("[kernal]\npath=\"k\"", &[], "kernal"),
        ("not toml at all [", &[], "launcher.toml"),
        (MIN, &[("QEMU_MEMORY", "2G")], "QEMU_MEMORY"),
        (MIN, &[("QEMU_MEMORY", "1")], "QEMU_MEMORY"),
        (MIN, &[("QEMU_SMP", "two")], "QEMU_SMP"),
        (MIN, &[("QEMU_SMP", "0")], "QEMU_SMP"),
        (MIN, &[("QEMU_CPU", "host x")], "QEMU_CPU"),
        (MIN, &[("CLAB_INTFS", "-1")], "CLAB_INTFS"),
        (MIN, &[("CLAB_INTFS", "100000")], "CLAB_INTFS"),
        (MIN, &[("BOOT_DELAY", "soon")], "BOOT_DELAY"),
        (MIN, &[("LAUNCHER_ACCEL", "xen")], "LAUNCHER_ACCEL"),
        (
            MIN,
            &[("QEMU_ADDITIONAL_ARGS", "-device 'unterminated")],
            "QEMU_ADDITIONAL_ARGS",
        ),
        (
            MIN,
            &[("CLAB_INTF_PREFIX", "way-too-long-prefix")],
            "CLAB_INTF_PREFIX",
        ),
        (MIN, &[("HOSTNAME", "bad host")], "hostname"),
        (
            "[kernel]\npath=\"k\"\n[console]\nready_tcp=2222",
            &[],
            "console.ready_tcp",
        ),
        (
            "[vm]\nuuid=\"not-a-uuid\"\n[kernel]\npath=\"k\"",
            &[],
            "vm.uuid",
        ),
        (
            "[vm]\nsmbios=[\"product=x\"]\n[kernel]\npath=\"k\"",
            &[],
            "vm.smbios[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\noffset=20",
            &[],
            "nics.offset",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{expect=\"(\"}]",
            &[],
            "bootstrap.steps[0].expect",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"{hostnme}\"}]",
            &[],
            "bootstrap.steps[0].send",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"a\", wait=1.0}]",
            &[],
            "bootstrap.steps[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\non_timeout=\"panic\"\nsteps=[{wait=1.0}]",
            &[],
            "bootstrap.on_timeout",
        ),
        (
            "[[disk]]\npath=\"day0\"\nformat=\"iso\"\ninterface=\"virtio\"",
            &[],
            "disk[0].interface",
        ),
        (
            "[[disk]]\npath=\"day0\"\nformat=\"iso\"\nlabel=\"config-2\"",
            &[],
            "disk[0].label",
        ),
        (
            "[[disk]]\npath=\"a.qcow2\"\nlabel=\"x\"",
            &[],
            "disk[0].label",
        ),
        (
            "[[disk]]\npath=\"a\"\ninterface=\"ide\"\n[[disk]]\npath=\"b\"\ninterface=\"ide\"\n[[disk]]\npath=\"c\"\ninterface=\"ide\"\n[[disk]]\npath=\"d\"\ninterface=\"ide\"\n[[disk]]\npath=\"e\"\nformat=\"iso\"",
            &[],
            "5 on ide",
        ),
    ];
    assert!(cases.len() >= 20);
    for (text, env, key) in cases {
        match p(text, env) {
            Ok(_) => panic!("accepted broken input {text:?} {env:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(key),
                    "error for {text:?} {env:?} does not name {key:?}: {msg}"
                );
            }
        }
    }
}

#[test]
fn management_passthrough_from_env_or_file() {
    let plan = p(MIN, &[("CLAB_MGMT_PASSTHROUGH", "true")]).unwrap();
    assert_eq!(
        plan.management,
        Management::Passthrough {
            model: "virtio-net-pci".into(),
            interface: "eth0".into(),
            tap: "tap0".into()
        }
    );
    let file = format!("{MIN}\n[management]\nmode = \"passthrough\"\n");
    assert!(matches!(
        p(&file, &[]).unwrap().management,
        Management::Passthrough { .. }
    ));
    // CLAB_MGMT_PASSTHROUGH=false turns a file's passthrough back into user mode.
    assert!(matches!(
        p(&file, &[("CLAB_MGMT_PASSTHROUGH", "false")])
            .unwrap()
            .management,
        Management::User { .. }
    ));
    // And leaves none alone.
    let none = format!("{MIN}\n[management]\nmode = \"none\"\n");
    assert_eq!(
        p(&none, &[("CLAB_MGMT_PASSTHROUGH", "false")])
            .unwrap()
            .management,
        Management::None
    );
    let err = p(
        &file,
        &[("CLAB_INTFS", "1"), ("CLAB_MGMT_PASSTHROUGH", "yes please")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("CLAB_MGMT_PASSTHROUGH"), "{err}");
    let clash =
        format!("{MIN}\n[management]\nmode = \"passthrough\"\ntap = \"tap1\"\n[nics]\ncount = 1\n");
    let err = p(&clash, &[]).unwrap_err().to_string();
    assert!(
        err.contains("management.mode") && err.contains("tap1"),
        "{err}"
    );
}

#[test]
fn example_file_parses() {
    let text = include_str!("../../launcher.toml.example");
    // The example documents every key; with a kernel so it is bootable as written.
    p(text, &[]).expect("launcher.toml.example must be a valid config");
}

#[test]
fn choice_names_every_option() {
    let key = Key::new("a").child("b");
    let opts = [("x", 1), ("y|why", 2), ("z (the last)", 3)];
    assert_eq!(choice(&key, "x", &opts).unwrap(), 1);
    assert_eq!(choice(&key, "why", &opts).unwrap(), 2);
    assert_eq!(choice(&key, "z", &opts).unwrap(), 3);
    // A note is never part of a spelling.
    assert!(choice(&key, "z (the last)", &opts).is_err());
    assert_eq!(
        choice(&key, "w", &opts).unwrap_err().to_string(),
        "a.b = \"w\": expected x, y or z (the last)"
    );
    assert_eq!(
        choice(&key, "", &[("on", true), ("off", false)])
            .unwrap_err()
            .to_string(),
        "a.b = \"\": expected on or off"
    );
    assert_eq!(
        choice(&key, "q", &[("only", ())]).unwrap_err().to_string(),
        "a.b = \"q\": expected only"
    );
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
fn disk_kinds_and_startup_config_delivery() {
    let plan = p(
        "[[disk]]\npath = \"a.qcow2\"\noverlay = false\n[[disk]]\npath = \"lic\"\nformat = \"fat\"\n[[disk]]\npath = \"day0\"\nformat = \"iso\"\nlabel = \"cidata\"\n[vm]\nstartup_config = \"s.cfg\"\n",
        &[],
    )
    .unwrap();
    let kinds: Vec<_> = plan.boot.disks.iter().map(|d| d.kind.clone()).collect();
    assert_eq!(
        kinds,
        [
            DiskKind::Image {
                format: "qcow2".into(),
                overlay: None
            },
            DiskKind::Fat,
            DiskKind::Cd {
                image: PathBuf::from("/var/lib/launcher/day0-2.iso"),
                label: "cidata".into()
            },
        ]
    );
    assert_eq!(plan.boot.disks[2].interface, DiskInterface::Ide);
    let fw = plan.startup_config.unwrap();
    assert_eq!(
        (fw.path, fw.via),
        (PathBuf::from("/cfg/s.cfg"), Delivery::FwCfg)
    );
    let typed = p(
        "[vm]\nstartup_config = \"s.cfg\"\n[kernel]\npath = \"k\"\n[bootstrap]\nsteps = [{send_config = \"#\"}]\n",
        &[],
    )
    .unwrap();
    assert_eq!(typed.startup_config.unwrap().via, Delivery::Console);
}

#[test]
fn interface_name_rule() {
    for ok in ["eth0", "a", "fifteen-chars-x", "tap.1"] {
        assert_eq!(ifname_problem(ok), None, "{ok}");
    }
    for bad in [
        "",
        "sixteen-chars-xx",
        "a/b",
        "a:b",
        "a b",
        "a\0",
        ".",
        "..",
    ] {
        assert!(ifname_problem(bad).is_some(), "{bad:?}");
    }
}

/// (config text, environment, what the error says).
type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

/// Every time, delay and count has a bound, said in the error with the key and the value; the
/// bounds themselves are accepted. Before the bounds, `vm.boot_timeout = 9223372036854775807`
/// passed `launcher check` and aborted `launcher run` on `Instant + Duration`.
#[test]
fn every_number_has_a_bound() {
    let vm = |k: &str| format!("[vm]\n{k}\n{MIN}");
    let boot = |b: &str| format!("{MIN}[bootstrap]\n{b}");
    let entry = TWO.replace("memory = 512", "memory = 512\nboot_delay = 3601");
    let cases: Vec<Case> = vec![
        (
            vm("boot_timeout = 9223372036854775807"),
            vec![],
            "vm.boot_timeout = \"9223372036854775807\": must be between 1 and 86400 seconds",
        ),
        (
            vm("boot_timeout = 86401"),
            vec![],
            "vm.boot_timeout = \"86401\": must be between 1 and 86400 seconds",
        ),
        (
            vm("shutdown_timeout = 3601"),
            vec![],
            "vm.shutdown_timeout = \"3601\": must be between 1 and 3600 seconds",
        ),
        (
            vm("boot_delay = 9223372036854775807"),
            vec![],
            "vm.boot_delay = \"9223372036854775807\": at most 3600 seconds",
        ),
        (
            entry,
            vec![],
            "vm[1].boot_delay = \"3601\": at most 3600 seconds",
        ),
        (
            format!("{MIN}[nics]\nwait_timeout = 9223372036854775807"),
            vec![],
            "nics.wait_timeout = \"9223372036854775807\": at most 86400 seconds",
        ),
        (
            format!("{MIN}[restart]\nmax = 4294967295"),
            vec![],
            "restart.max = \"4294967295\": at most 1000",
        ),
        (
            format!("{MIN}[restart]\npolicy = \"never\"\nbackoff = 601"),
            vec![],
            "restart.backoff = \"601\": at most 600 seconds",
        ),
        (
            boot("steps = [{expect = \"x\", timeout = 9223372036854775807}]"),
            vec![],
            "bootstrap.steps[0].timeout = \"9223372036854775807\": must be between 1 and 86400 seconds",
        ),
        (
            boot("steps = [{send_config = \"#\", timeout = 86401}]"),
            vec![],
            "bootstrap.steps[0].timeout = \"86401\": must be between 1 and 86400 seconds",
        ),
        (
            boot("steps = [{wait = nan}]"),
            vec![],
            "bootstrap.steps[0].wait = \"NaN\": seconds between 0 and 3600",
        ),
        (
            boot("steps = [{wait = inf}]"),
            vec![],
            "bootstrap.steps[0].wait = \"inf\": seconds between 0 and 3600",
        ),
        (
            boot("steps = [{wait = -1.0}]"),
            vec![],
            "bootstrap.steps[0].wait = \"-1\": seconds between 0 and 3600",
        ),
        (
            boot("attempts = 101\nsteps = [{wait = 1.0}]"),
            vec![],
            "bootstrap.attempts = \"101\": must be between 1 and 100",
        ),
        (
            boot("attempts = 0\nsteps = [{wait = 1.0}]"),
            vec![],
            "bootstrap.attempts = \"0\": must be between 1 and 100",
        ),
        (
            MIN.into(),
            vec![("BOOT_DELAY", "3601")],
            "BOOT_DELAY = \"3601\": at most 3600 seconds",
        ),
        (
            MIN.into(),
            vec![("BOOT_DELAY", "18446744073709551616")],
            "BOOT_DELAY = \"18446744073709551616\": expected a number of seconds",
        ),
        (
            MIN.into(),
            vec![("QEMU_SMP", "4294967296")],
            "QEMU_SMP = \"4294967296\": expected a number of vCPUs",
        ),
        (
            MIN.into(),
            vec![("QEMU_MEMORY", "4194305")],
            "QEMU_MEMORY = \"4194305\": memory in MiB must be between 16 and 4194304",
        ),
        (
            format!("{MIN}[nics]\nnames = [\"eth1\", \"eth4294967295\"]"),
            vec![],
            "nics.names = \"eth4294967295\": data ports are numbered 1 to 512",
        ),
        (
            TWO.replace("data = \"2-4\"", "data = \"2-4294967295\""),
            vec![],
            "vm[1].data = \"2-4294967295\": data ports are numbered 1 to 512",
        ),
    ];
    for (text, env, want) in &cases {
        let got = pn(text, env).map(|_| ()).unwrap_err().to_string();
        assert_eq!(&got, want, "{text}");
    }
    // The bounds themselves are fine; XRv9k's two hours under TCG too.
    let edge = format!(
        "[vm]\nboot_timeout = 86400\nshutdown_timeout = 3600\nboot_delay = 3600\n{MIN}\
         [nics]\nwait_timeout = 86400\n[restart]\nmax = 1000\nbackoff = 600\n\
         [bootstrap]\nattempts = 100\nsteps = [{{expect = \"x\", timeout = 86400}}, {{wait = 3600.0}}]\n"
    );
    let n = pn(&edge, &[("BOOT_DELAY", "3600")]).unwrap();
    assert_eq!(n.settings.link_wait_timeout, Duration::from_secs(86_400));
    assert_eq!(
        n.vms[0].supervision.boot_timeout,
        Duration::from_secs(86_400)
    );
    assert!(p(&vm("boot_timeout = 7200"), &[]).is_ok());
}

/// Out-of-range integers for keys typed narrower than TOML's i64 are syntax errors naming the
/// key (serde's bound).
#[test]
fn integers_beyond_their_type_name_the_key() {
    for (text, key) in [
        (
            format!("{MIN}[console]\ntelnet_port = 70000"),
            "telnet_port",
        ),
        (format!("{MIN}[console]\nready_tcp = -1"), "ready_tcp"),
        (format!("[vm]\nsmp = 4294967296\n{MIN}"), "smp"),
        (
            format!("[vm]\nshutdown_timeout = 18446744073709551615\n{MIN}"),
            "shutdown_timeout",
        ),
    ] {
        let err = pn(&text, &[]).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

/// Extra qemu arguments that would break supervision are refused, naming the key (with the
/// argument's index) or the variable, and the argument.
#[test]
fn extra_args_that_break_supervision_are_refused() {
    let extra = |a: &str| format!("[vm]\nextra_args = {a}\n{MIN}");
    let cases: Vec<Case> = vec![
        (
            extra(r#"["-rtc", "base=utc", "-device", "pvpanic", "-daemonize"]"#),
            vec![],
            "vm.extra_args[4] = \"-daemonize\": refused: qemu would fork away",
        ),
        (
            extra(r#"["--qmp", "tcp::4444,server"]"#),
            vec![],
            "vm.extra_args[0] = \"--qmp\": refused: the launcher owns qemu's monitor",
        ),
        (
            extra(r#"["-chardev", "socket,id=serial0,path=/x"]"#),
            vec![],
            "vm.extra_args[1] = \"socket,id=serial0,path=/x\": refused: the id serial0 is the launcher's own",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-device pvpanic -S")],
            "QEMU_ADDITIONAL_ARGS = \"-S\": refused: the guest would stay paused",
        ),
        (
            extra(r#"["-device", "pvpanic"]"#),
            vec![("QEMU_ADDITIONAL_ARGS", "-netdev user,id=mgmt")],
            "QEMU_ADDITIONAL_ARGS = \"user,id=mgmt\": refused: the id mgmt is the launcher's own",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-monitor stdio")],
            "QEMU_ADDITIONAL_ARGS = \"-monitor\": refused: the launcher owns qemu's monitor",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-serial pty")],
            "QEMU_ADDITIONAL_ARGS = \"-serial\": refused: the launcher owns the serial ports",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-no-shutdown")],
            "QEMU_ADDITIONAL_ARGS = \"-no-shutdown\": refused: a guest powering off",
        ),
        (
            TWO.replace("memory = 512", "memory = 512\nextra_args = [\"-drive\", \"id=disk0,file=x\"]"),
            vec![],
            "vm[1].extra_args[1] = \"id=disk0,file=x\": refused: the id disk0",
        ),
    ];
    for (text, env, want) in &cases {
        let got = pn(text, env).map(|_| ()).unwrap_err().to_string();
        assert!(
            got.starts_with(want),
            "{text} {env:?}:\n got {got}\nwant {want}"
        );
    }
    // Harmless ones pass as given.
    let plan = p(
        &extra(r#"["-device", "virtio-rng-pci,id=rng0", "-rtc", "base=utc"]"#),
        &[("QEMU_ADDITIONAL_ARGS", "-chardev socket,id=mine,path=/x")],
    )
    .unwrap();
    assert_eq!(plan.machine.extra_args.len(), 6);
}

/// Every id the launcher writes into a qemu argv (the golden files) is one `qemu_args` keeps
/// for the launcher, so an extra argument cannot take it.
#[test]
fn every_id_in_the_golden_argvs_is_reserved() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let words: Vec<&str> = text.lines().collect();
        for w in words.windows(2) {
            if ["-chardev", "-netdev", "-device", "-drive"].contains(&w[0]) {
                for id in qemu_args::ids(w[1]) {
                    // The golden extra arguments carry no id; anything else is the launcher's.
                    assert!(qemu_args::is_own(&id), "{id} ({}) is not reserved", w[1]);
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} ids in {}", dir.display());
}

#[test]
fn console_log_rotation_defaults_and_bounds() {
    let v = p(MIN, &[]).unwrap();
    assert_eq!((v.console.log_max_size, v.console.log_keep), (10 << 20, 3));
    let v = p(
        &format!("{MIN}[console]\nlog_max_size = 0\nlog_keep = 5\n"),
        &[],
    )
    .unwrap();
    assert_eq!((v.console.log_max_size, v.console.log_keep), (0, 5));
    let err = p(&format!("{MIN}[console]\nlog_max_size = 100\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("console.log_max_size") && err.contains("4096"),
        "{err}"
    );
    let err = p(&format!("{MIN}[console]\nlog_keep = 0\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("console.log_keep"), "{err}");
}
