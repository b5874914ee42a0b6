//! The config's table tests: whole files and environments through [`parse`], the keys and
//! values their errors name, and the plans they give.

use super::*;
use std::time::Duration;

pub(super) const MIN: &str = "[kernel]\npath = \"k\"\n";

pub(super) fn p(text: &str, env: &[(&str, &str)]) -> Result<VmPlan, ConfigError> {
    pn(text, env).map(|n| {
        assert_eq!(n.vms.len(), 1);
        n.vms.into_iter().next().unwrap()
    })
}

pub(super) fn pn(text: &str, env: &[(&str, &str)]) -> Result<Node, ConfigError> {
    parse_with(text, env)
}

pub(super) const TWO: &str = r#"
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
fn disk_kinds_and_startup_config_delivery() {
    let plan = p(
        "[[disk]]\npath = \"a.qcow2\"\noverlay = false\n[[disk]]\npath = \"lic\"\nformat = \"fat\"\n[[disk]]\npath = \"day0\"\nformat = \"iso\"\nlabel = \"cidata\"\n[[disk]]\npath = \"seed\"\nformat = \"iso\"\nlabel = \"cidata\"\ntemplate = true\n[vm]\nstartup_config = \"s.cfg\"\n",
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
            DiskKind::Fat {
                label: None,
                rendered: None
            },
            DiskKind::Cd {
                image: PathBuf::from("/var/lib/launcher/day0-2.iso"),
                label: "cidata".into(),
                template: false,
                archive: None,
            },
            DiskKind::Cd {
                image: PathBuf::from("/var/lib/launcher/seed-3.iso"),
                label: "cidata".into(),
                template: true,
                archive: None,
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
    let tftp = p(
        "[vm]\nstartup_config = \"/tftpboot/config.txt\"\n[kernel]\npath = \"k\"\n[management]\ntftp_root = \"/tftpboot\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(tftp.startup_config.unwrap().via, Delivery::Tftp);
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
