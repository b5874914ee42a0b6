//! The hardware keys platforms need beyond a plain VM: `vm.smp` as qemu's topology text, disks
//! on SATA (AHCI) and USB, templated FAT disks with a label and an archive, dummy NICs.

use super::tests::{p, MIN};
use super::*;

fn smp(text: &str, env: &[(&str, &str)]) -> Result<(u32, Option<String>), String> {
    p(&format!("[vm]\nsmp = {text}\n{MIN}"), env)
        .map(|v| (v.machine.smp, v.machine.smp_topology))
        .map_err(|e| e.to_string())
}

#[test]
fn smp_is_a_count_or_qemus_topology_text() {
    assert_eq!(smp("2", &[]), Ok((2, None)));
    assert_eq!(
        smp("\"4,sockets=1,cores=4,threads=1\"", &[]),
        Ok((4, Some("sockets=1,cores=4,threads=1".into())))
    );
    // vrnetlab's cat9kv passes the topology without the count: the count is the product.
    assert_eq!(
        smp("\"cores=4,threads=1,sockets=1\"", &[]),
        Ok((4, Some("cores=4,threads=1,sockets=1".into())))
    );
    assert_eq!(
        smp("\"2,sockets=1,cores=1\"", &[]),
        Ok((2, Some("sockets=1,cores=1".into())))
    );
    // QEMU_SMP overrides with either form.
    assert_eq!(
        smp("1", &[("QEMU_SMP", "2,sockets=1,cores=2,threads=1")]),
        Ok((2, Some("sockets=1,cores=2,threads=1".into())))
    );
    assert_eq!(smp("\"4,cores=4\"", &[("QEMU_SMP", " 8 ")]), Ok((8, None)));
}

#[test]
fn a_bad_smp_names_the_key_or_variable_and_why() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("\"4,sockets=1,cores=2,threads=1\"", &[], "vm.smp = \"4,sockets=1,cores=2,threads=1\": the topology gives 2 vCPUs, not 4"),
        ("\"4,sokets=1\"", &[], "vm.smp = \"4,sokets=1\": sokets: qemu's -smp takes cpus, sockets, dies, clusters, cores, threads, maxcpus"),
        ("\"4,cores\"", &[], "vm.smp = \"4,cores\": expected key=value after the count"),
        ("\"4,cores=0\"", &[], "vm.smp = \"4,cores=0\": cores=0: expected a number from 1 to 256"),
        ("\"4,cpus=4\"", &[], "vm.smp = \"4,cpus=4\": the vCPU count is given twice"),
        ("\"cores=32,sockets=16\"", &[], "vm.smp = \"cores=32,sockets=16\": vCPUs must be between 1 and 256"),
        ("1", &[("QEMU_SMP", "four")], "QEMU_SMP = \"four\": expected a number of vCPUs, or qemu's -smp text such as 4,sockets=1,cores=4,threads=1"),
    ];
    for (text, env, want) in cases {
        assert_eq!(smp(text, env).unwrap_err(), *want, "{text} {env:?}");
    }
}

#[test]
fn disks_sit_on_sata_and_usb_within_their_bounds() {
    let disk = |extra: &str| format!("[[disk]]\npath = \"/i/a.qcow2\"\n{extra}\n");
    let plan = p(
        &(disk("interface = \"sata\"") + &disk("interface = \"usb\"")),
        &[],
    )
    .unwrap();
    let ifs: Vec<_> = plan.boot.disks.iter().map(|d| d.interface).collect();
    assert_eq!(ifs, [DiskInterface::Sata, DiskInterface::Usb]);
    let cd_on_usb = "[[disk]]\npath = \"/c\"\nformat = \"iso\"\ninterface = \"usb\"\n";
    assert_eq!(
        p(cd_on_usb, &[]).unwrap_err().to_string(),
        "disk[0].interface = \"usb\": a CD-ROM sits on ide, scsi or sata"
    );
    let seven = disk("interface = \"sata\"").repeat(7);
    assert_eq!(
        p(&seven, &[]).unwrap_err().to_string(),
        "disk = \"7 on sata\": an AHCI controller has 6 ports; put the others on virtio or scsi"
    );
    assert!(p(&disk("interface = \"floppy\""), &[])
        .unwrap_err()
        .to_string()
        .contains("sata (an AHCI port) or usb (a USB stick)"));
}

#[test]
fn offset_nics_take_their_own_model() {
    let plan = p(
        &format!("[nics]\nmodel = \"e1000\"\noffset = 2\noffset_model = \"virtio-net-pci\"\n{MIN}"),
        &[],
    )
    .unwrap();
    assert_eq!(plan.nics.offset_model, "virtio-net-pci");
    let same = p(
        &format!("[nics]\nmodel = \"e1000\"\noffset = 1\n{MIN}"),
        &[],
    )
    .unwrap();
    assert_eq!(same.nics.offset_model, "e1000");
    assert_eq!(
        p(&format!("[nics]\noffset_model = \"virtio net\"\n{MIN}"), &[])
            .unwrap_err()
            .to_string(),
        "nics.offset_model = \"virtio net\": must be a qemu NIC device such as virtio-net-pci or e1000, optionally with ,key=value properties"
    );
}

#[test]
fn root_bus_dummies_take_their_own_model_and_are_bounded() {
    let plan = p(
        &format!("[nics]\nmodel = \"e1000\"\ndummies = 2\ndummy_model = \"virtio-net-pci\"\n{MIN}"),
        &[],
    )
    .unwrap();
    assert_eq!(
        (plan.nics.dummies, plan.nics.dummy_model.as_str()),
        (2, "virtio-net-pci")
    );
    let same = p(
        &format!("[nics]\nmodel = \"e1000\"\ndummies = 1\n{MIN}"),
        &[],
    )
    .unwrap();
    assert_eq!(same.nics.dummy_model, "e1000");
    let err = |t: &str| p(&format!("[nics]\n{t}\n{MIN}"), &[]).unwrap_err();
    assert_eq!(
        err("dummies = 9").to_string(),
        "nics.dummies = \"9\": at most 8 dummy NICs on the root bus"
    );
    assert_eq!(crate::exit::Code::from(&err("dummies = 9")).as_i32(), 2);
    assert!(err("dummy_model = \"\"")
        .to_string()
        .starts_with("nics.dummy_model = \"\": must be a qemu NIC device"));
}

#[test]
fn a_templated_fat_folder_renders_into_the_state_dir_with_its_label() {
    let plan = p(
        "[[disk]]\npath = \"/etc/launcher/vmm\"\nformat = \"fat\"\ninterface = \"usb\"\nlabel = \"vmm-data\"\ntemplate = true\narchive = \"vmm-config.tgz\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        plan.boot.disks[0].kind,
        DiskKind::Fat {
            label: Some("vmm-data".into()),
            rendered: Some(Rendered {
                dir: PathBuf::from("/var/lib/launcher/vmm-0.fat"),
                archive: Some("vmm-config.tgz".into()),
            }),
        }
    );
    let cases = [
        ("format = \"fat\"\nlabel = \"twelve-chars\"", "disk[0].label = \"twelve-chars\": 1-11 letters, digits, '-' or '_' (a FAT volume label)"),
        ("label = \"x\"", "disk[0].label = \"x\": only a CD image (format = \"iso\") or a fat folder has a label"),
        ("format = \"fat\"\narchive = \"a.tgz\"", "disk[0].archive = \"a.tgz\": an archive holds rendered files: set template = true"),
        ("format = \"iso\"\ntemplate = true\narchive = \"../a.tgz\"", "disk[0].archive = \"../a.tgz\": a file name ending .tgz or .tar.gz (letters, digits, '-', '_', '.')"),
        ("format = \"fat\"\ntemplate = true\narchive = \"a.zip\"", "disk[0].archive = \"a.zip\": a file name ending .tgz or .tar.gz (letters, digits, '-', '_', '.')"),
    ];
    for (extra, want) in cases {
        let text = format!("[[disk]]\npath = \"/c\"\n{extra}\n");
        assert_eq!(p(&text, &[]).unwrap_err().to_string(), want, "{extra}");
    }
}

#[test]
fn an_ide_disk_takes_the_position_it_asks_for_and_the_others_the_free_ones() {
    let two = |extra: &str| {
        p(
            &format!("[[disk]]\npath = \"/a.qcow2\"\ninterface = \"ide\"\n[[disk]]\npath = \"/cd\"\nformat = \"iso\"\ninterface = \"ide\"\n{extra}\n"),
            &[],
        )
    };
    let units = |plan: &VmPlan| {
        plan.boot
            .disks
            .iter()
            .map(|d| d.ide_unit)
            .collect::<Vec<_>>()
    };
    assert_eq!(units(&two("").unwrap()), [Some(0), Some(1)]);
    // vrnetlab's -cdrom: the secondary master.
    assert_eq!(units(&two("ide_unit = 2").unwrap()), [Some(0), Some(2)]);
    let err = |extra: &str| two(extra).unwrap_err();
    assert_eq!(
        err("ide_unit = 4").to_string(),
        "disk[1].ide_unit = \"4\": 0 to 3 on this machine (0 primary master, 1 primary slave, 2 secondary master, 3 secondary slave)"
    );
    assert_eq!(crate::exit::Code::from(&err("ide_unit = 4")).as_i32(), 2);
    let clash = p(
        "[[disk]]\npath = \"/a\"\ninterface = \"ide\"\nide_unit = 1\n[[disk]]\npath = \"/b\"\ninterface = \"ide\"\nide_unit = 1\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(
        clash.to_string(),
        "disk[1].ide_unit = \"1\": another IDE disk has that position"
    );
    // An explicit position taken first: the disk without one gets the lowest free one.
    let first_free = p(
        "[[disk]]\npath = \"/a\"\ninterface = \"ide\"\n[[disk]]\npath = \"/b\"\ninterface = \"ide\"\nide_unit = 0\n",
        &[],
    )
    .unwrap();
    assert_eq!(units(&first_free), [Some(1), Some(0)]);
    assert_eq!(
        p("[[disk]]\npath = \"/a\"\nide_unit = 0\n", &[])
            .unwrap_err()
            .to_string(),
        "disk[0].ide_unit = \"0\": only a disk on interface = \"ide\" has an IDE position"
    );
}

#[test]
fn a_template_carrying_the_startup_config_drops_the_fw_cfg_copy() {
    let dir = std::env::temp_dir().join(format!("lt-mech-carries-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("day0/config")).unwrap();
    std::fs::create_dir_all(dir.join("plain")).unwrap();
    std::fs::write(
        dir.join("day0/config/juniper.conf"),
        "system {}\n{startup_config}\n",
    )
    .unwrap();
    std::fs::write(dir.join("plain/a.txt"), "hostname {hostname}\n").unwrap();
    let via = |folder: &str, template: bool| {
        let text = format!(
            "[vm]\nstartup_config = \"/config/startup-config.cfg\"\n[[disk]]\npath = \"/a.qcow2\"\n[[disk]]\npath = \"{}\"\nformat = \"iso\"\ntemplate = {template}\n",
            dir.join(folder).display()
        );
        p(&text, &[]).unwrap().startup_config.unwrap().via
    };
    assert_eq!(via("day0", true), Delivery::Disk);
    // Not a template, no {startup_config}, or no folder: the fw_cfg copy stays.
    assert_eq!(via("day0", false), Delivery::FwCfg);
    assert_eq!(via("plain", true), Delivery::FwCfg);
    assert_eq!(via("missing", true), Delivery::FwCfg);
    // The scan is bounded: at most 8 folders down (and 256 entries).
    let deep = dir.join("deep/1/2/3/4/5/6/7/8/9");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("a.txt"), "{startup_config}").unwrap();
    assert_eq!(via("deep", true), Delivery::FwCfg);
    std::fs::write(dir.join("deep/1/2/3/4/5/6/7/8/a.txt"), "{startup_config}").unwrap();
    assert_eq!(via("deep", true), Delivery::Disk);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_user_network_takes_a_subnet() {
    let plan = p(
        &format!("[management]\nsubnet = \"169.254.127.0/24\"\n{MIN}"),
        &[],
    )
    .unwrap();
    let Management::User { subnet, .. } = plan.management else {
        panic!("user mode");
    };
    assert_eq!(subnet.to_string(), "169.254.127.0/24");
    assert_eq!(
        (subnet.guest().to_string(), subnet.gateway().to_string()),
        ("169.254.127.15".into(), "169.254.127.2".into())
    );
    let Management::User { subnet, .. } = p(MIN, &[]).unwrap().management else {
        panic!("user mode");
    };
    assert_eq!(subnet.to_string(), "10.0.0.0/24");
    for bad in [
        "169.254.127.1/24",
        "10.0.0.0/28",
        "10.0.0.0",
        "10.0.0/24",
        "10.0.0.0/x",
        "10.0.0.0/7",
    ] {
        let err = p(&format!("[management]\nsubnet = \"{bad}\"\n{MIN}"), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("management.subnet = \"{bad}\": an IPv4 network A.B.C.D/N with N from 8 to 27 and the host bits zero, e.g. \"169.254.127.0/24\""),
        );
        assert_eq!(crate::exit::Code::from(&err).as_i32(), 2);
    }
}
