//! A restore tells the guest its ports' cables as they are at the restore. A NIC's link state
//! is part of qemu's saved device state (virtio-net and e1000 take it from their saved status
//! at the load), so a restored guest told only before the load would see its cables as they
//! were at the save: a port with no cable up, a port with one down until it changed. Real qemu
//! (TCG) and tinylinux, whose console logs each data port's carrier as the guest sees it.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

/// A tinylinux router with three NIC slots (a port without its ethN is a spare, link down).
fn router(ns: &Netns) -> PathBuf {
    let cfg = tinylinux_config(ns, "rsl", "", "[nics]\nslots = 3\n");
    edit_file(&cfg, &[("tl.mgmt=user", "tl.mgmt=user tl.nics=4")]);
    cfg
}

#[test]
fn a_restored_guest_sees_its_cables_as_they_are_at_the_restore_not_at_the_save() {
    // Saved with a cable on port 1 only.
    let ns = Netns::new("snaplinks");
    ns.veth_pair("eth1", "c-eth1");
    let mut r = Running::start(&ns, &router(&ns), &[("CLAB_INTFS", "1")]);
    wait_state(&ns, "ready", Duration::from_secs(180));
    guest_ends_up_seeing(&ns, 0, &[(1, "up"), (2, "down"), (3, "down")]);
    let file = ns.dir.join("rsl.tar");
    let out = (ns.launcher(&["snapshot", "save", file.to_str().unwrap()]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.output()
    );
    assert_eq!(r.stop(Duration::from_secs(60)).0, 0, "{}", r.output());

    // Restored where port 3 has a cable and port 1 has none: the guest sees port 1 go down
    // and port 3 come up, from its first moments (its restored carrier log printed the save's
    // states once already, so each line here is a change it saw).
    let ns2 = Netns::new("snaplinks2");
    ns2.veth_pair("eth3", "c-eth3");
    let env = [
        ("CLAB_INTFS", "1"),
        ("LAUNCHER_RESTORE", file.to_str().unwrap()),
    ];
    let mut r2 = Running::start(&ns2, &router(&ns2), &env);
    let st = wait_state(&ns2, "ready", Duration::from_secs(60));
    let log = r2.log();
    assert!(
        log.has("restoring from snapshot instead of booting", &[]),
        "{log}"
    );
    let ports: Vec<_> = (st["links"].as_array().unwrap().iter())
        .map(|l| l["port_state"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ports, ["absent", "absent", "up"], "{st}");
    guest_ends_up_seeing(&ns2, 0, &[(1, "down"), (3, "up")]);
    assert!(
        !carrier_lines(&ns2, 0).iter().any(|l| l.contains("eth2")),
        "port 2 had no cable at the save and has none now: {:?}",
        carrier_lines(&ns2, 0)
    );
    assert_eq!(r2.stop(Duration::from_secs(60)).0, 0, "{}", r2.output());
}
