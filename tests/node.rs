//! Several VMs in one container (vMX control + forwarding plane, SR OS cards) on real qemu +
//! tinylinux: joined by an internal network they ping each other over; each has its own QMP,
//! console and telnet port; they start in order and stop in the reverse order; the node is
//! healthy only when both are, and one VM failing takes the node down cleanly.

mod common;
use common::*;
use std::time::Duration;

/// One `[[vm]]` entry: tinylinux, no management network, on the internal network "fab", its
/// bootstrap giving the internal NIC (the guest's eth0) `addr` and then running `then`.
fn entry(ns: &Netns, name: &str, data: &str, addr: &str, then: &str) -> String {
    let b = tinylinux_dir();
    format!(
        r##"
[[vm]]
name = "{name}"
machine = "q35"
memory = 256
shutdown_timeout = 20
boot_timeout = 120
data = "{data}"
internal = ["fab"]
[vm.kernel]
path = "{k}"
initrd = "{i}"
append = "console=ttyS0 panic=-1 tl.hostname={name}"
[vm.management]
mode = "none"
[vm.console]
ready_pattern = "TINYLINUX-READY"
log = "{d}/{name}.console.log"
{boot}
"##,
        k = b.join("vmlinuz").display(),
        i = b.join("initramfs.cpio.gz").display(),
        d = ns.dir.display(),
        boot = login_bootstrap(
            "vm.bootstrap",
            &format!(
                "  {{ send = \"ip addr add {addr}/24 dev eth0\" }},\n  {{ expect = \"# \", timeout = 10 }},\n{then}"
            )
        ),
    )
}

fn node_config(ns: &Netns) -> std::path::PathBuf {
    let d = ns.dir.display();
    // The forwarding plane pings the control plane over the internal network (retrying: the
    // control plane may still be finishing its own bootstrap).
    let ping = r#"{ send = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do ping -c 1 -W 1 10.9.0.1 >/dev/null && break; done && echo FAB-$((40+2))" },
  { expect = "FAB-42", timeout = 30 },"#;
    let text = format!(
        "[nics]\ncount = 1\n[restart]\npolicy = \"never\"\n[paths]\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\nhealth_file = \"{d}/health\"\n{}{}",
        entry(ns, "cp", "none", "10.9.0.1", ""),
        entry(ns, "fp", "all", "10.9.0.2", ping),
    );
    let p = ns.dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The two-VM node (one data link, eth1) running in a fresh namespace, ready.
fn start_node(tag: &str) -> (Netns, Running, serde_json::Value) {
    let ns = Netns::new(tag);
    ns.ip("link add p1 type veth peer name eth1");
    ns.ip("link set p1 up");
    let cfg = node_config(&ns);
    let l = Running::start(&ns, &cfg, &[]);
    let st = wait_state(&ns, "ready", Duration::from_secs(150));
    (ns, l, st)
}

#[test]
fn two_vms_linked_internally_start_in_order_ping_and_stop_in_reverse() {
    let (ns, mut l, st) = start_node("node");
    let vms = st["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "{st}");
    assert!(vms.iter().all(|v| v["state"] == "ready"), "{st}");
    assert_eq!(
        (
            vms[0]["telnet_port"].as_u64(),
            vms[1]["telnet_port"].as_u64()
        ),
        (Some(5000), Some(5001))
    );
    assert_eq!(ns.health(), "0 running");
    // The data link went to the forwarding plane only, and it is wired.
    assert_eq!(st["links"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["links"][0]["wired"], true, "{st}");

    // The forwarding plane reached the control plane over the internal network.
    let fp = std::fs::read_to_string(ns.dir.join("fp.console.log")).unwrap();
    assert!(fp.contains("FAB-42"), "{fp}");
    // Each VM has its own console and NICs: cp the internal one; fp the internal one + eth1.
    let cp = std::fs::read_to_string(ns.dir.join("cp.console.log")).unwrap();
    assert!(
        cp.contains("tinylinux: 1 NICs") && cp.contains("TINYLINUX-READY cp"),
        "{cp}"
    );
    assert!(
        fp.contains("tinylinux: 2 NICs") && fp.contains("TINYLINUX-READY fp"),
        "{fp}"
    );
    assert!(!cp.contains("TINYLINUX-READY fp") && !fp.contains("TINYLINUX-READY cp"));
    // Each its own telnet port and QMP socket.
    assert!(telnet_read(Some(&ns), "127.0.0.1:5000", "READY cp").contains("TINYLINUX-READY cp"));
    assert!(telnet_read(Some(&ns), "127.0.0.1:5001", "READY fp").contains("TINYLINUX-READY fp"));
    for vm in ["cp", "fp"] {
        assert!(
            ns.dir.join(format!("run/{vm}/qmp.sock")).exists(),
            "{vm} QMP socket"
        );
    }
    // `launcher console fp` attaches to fp's console (its history first); an unknown VM is
    // bad input: exit 2, naming it and the VMs there are.
    let out = ns.exec(&format!(
        "(sleep 1; printf \"\\035\") | LAUNCHER_SOCKET={}/control.sock {} console fp",
        ns.dir.display(),
        LAUNCHER
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("TINYLINUX-READY fp") && !text.contains("READY cp"),
        "{text}"
    );
    let out = ns.launcher(&["console", "nope"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"nope\"") && err.contains("cp, fp"), "{err}");
    // The internal network: a bridge with one tap per VM.
    let br = ns.ip("-o link show master int-fab");
    assert!(br.contains("i0-fab") && br.contains("i1-fab"), "{br}");

    // Started in order: fp's qemu only once cp's guest ran.
    let log = l.log();
    let cp_running = log.at("VM state", &[("vm", "cp"), ("to", "running")]);
    let fp_started = log.at("VM state", &[("vm", "fp"), ("to", "booting")]);
    assert!(cp_running < fp_started, "fp started before cp ran:\n{log}");

    // SIGTERM: fp powers off first, then cp; both through ACPI; exit 0.
    let (code, took) = l.stop(Duration::from_secs(60));
    println!("two VMs: SIGTERM to exit {took:?}");
    let log = l.log();
    assert_eq!(code, 0, "{log}");
    let fp_stopped = log.at("VM state", &[("vm", "fp"), ("to", "stopped")]);
    let cp_stopping = log.at("VM state", &[("vm", "cp"), ("to", "stopping")]);
    assert!(
        fp_stopped < cp_stopping,
        "not stopped in reverse order:\n{log}"
    );
    for vm in ["cp", "fp"] {
        let c = std::fs::read_to_string(ns.dir.join(format!("{vm}.console.log"))).unwrap();
        assert!(
            c.contains("ACPI power button pressed, powering off"),
            "{vm}: {c}"
        );
    }
}

#[test]
fn one_vm_failing_fails_the_node_and_stops_the_other_cleanly() {
    let (ns, mut l, st) = start_node("nodefail");
    let fp_pid = st["vms"][1]["qemu_pid"].as_i64().unwrap() as i32;
    let cp_pid = st["vms"][0]["qemu_pid"].as_i64().unwrap() as i32;
    kill(fp_pid, libc::SIGKILL);
    let code = l.wait_exit(Duration::from_secs(60));
    let out = l.log();
    assert_eq!(code, Some(137), "fp's qemu was killed: 128 + 9\n{out}");
    assert_eq!(ns.health(), "1 VM failed");
    // The control plane was powered off through ACPI, not killed.
    let cp = std::fs::read_to_string(ns.dir.join("cp.console.log")).unwrap();
    assert!(
        cp.contains("ACPI power button pressed, powering off"),
        "{cp}\n{out}"
    );
    assert!(
        out.has(
            "VM state",
            &[("vm", "cp"), ("from", "stopping"), ("to", "stopped")]
        ),
        "{out}"
    );
    assert!(!kill(cp_pid, 0), "cp's qemu still alive");
}
