//! Reset (issue 17 item 6): `launcher reset [VM]` over the control socket and vrnetlab's
//! reset file each make qemu `system_reset` the real tinylinux guest (TCG): its console shows a
//! second boot, and the node goes back through booting to ready. A VM not there is named.

mod common;
use common::*;
use std::time::Duration;

/// How many times the guest's kernel started, from its console lines.
fn boots(r: &Running) -> usize {
    r.log()
        .lines
        .iter()
        .filter(|l| l.starts_with("console: ") && l.contains("Linux version"))
        .count()
}

fn readies(r: &Running) -> usize {
    r.log()
        .lines
        .iter()
        .filter(|l| l.starts_with("console: ") && l.contains("TINYLINUX-READY"))
        .count()
}

/// Waits (bounded) until the guest booted `n` times and showed its ready marker as often.
fn wait_boots(r: &Running, n: usize) {
    wait_for(Duration::from_secs(180), &format!("boot {n}"), || {
        std::thread::sleep(Duration::from_millis(200));
        (boots(r) >= n && readies(r) >= n).then_some(())
    });
    assert_eq!(boots(r), n, "{}", r.output());
}

#[test]
fn reset_command_and_reset_file_reboot_the_guest() {
    let ns = Netns::new("clabenv-reset");
    let reset_file = ns.dir.join("reset");
    let cfg = tinylinux_config(
        &ns,
        "r1",
        "",
        &format!("reset_file = \"{}\"", reset_file.display()),
    );
    // `extra` lands at the end of the file, i.e. inside [paths].
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_boots(&r, 1);
    wait_state(&ns, "ready", Duration::from_secs(60));

    // A VM that is not there: exit 1, named, nothing reset.
    let out = ns.launcher(&["reset", "vfp"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no VM \"vfp\" here; VMs: r1"), "{err}");

    // `launcher reset`: every VM (here the one), answered once qemu took it.
    let out = ns.launcher(&["reset"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        r.output()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "r1: reset\n");
    wait_boots(&r, 2);
    wait_state(&ns, "ready", Duration::from_secs(60));
    let log = r.log();
    assert!(log.has("system_reset sent", &[("vm", "r1")]), "{log}");
    assert!(log.transition("booting", "VM reset"), "{log}");

    // The reset file, as vrnetlab's /reset: listing the VM by name; removed once read.
    std::fs::write(&reset_file, "r1\n").unwrap();
    wait_boots(&r, 3);
    assert!(!reset_file.exists(), "the reset file is removed once read");
    // Empty: every VM (by number works too: 0 is the first).
    wait_state(&ns, "ready", Duration::from_secs(60));
    std::fs::write(&reset_file, "").unwrap();
    wait_boots(&r, 4);
    wait_state(&ns, "ready", Duration::from_secs(60));
    let log = r.log();
    assert!(log.has("reset file: VMs reset", &[]), "{log}");

    let (code, _) = r.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "{}", r.output());
}
