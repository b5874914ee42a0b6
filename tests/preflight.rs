//! Nothing half done, before and after: on every exit after the network came up (a SIGTERM, the
//! data links missing at the time-out) the launcher takes its tc wiring back off ethN and
//! removes its sockets. Real qemu (tinylinux, TCG), real netns and tc; root.

mod common;
use common::*;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `tc filter show dev ETH ingress` in the namespace (empty: no filter at all).
fn ingress_filters(ns: &Netns, eth: &str) -> String {
    let out = ns.exec(&format!("tc filter show dev {eth} ingress"));
    assert!(out.status.success(), "tc filter show: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every socket file under `dir`, recursively.
fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(sockets_under(&e.path()));
        } else if ft.is_socket() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn sigterm_takes_the_wiring_off_ethn_and_removes_the_sockets() {
    let ns = Netns::new("unwire");
    ns.veth_pair("eth1", "p1");
    let cfg = tinylinux_config(&ns, "u1", "", "");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_all_wired(&ns, Duration::from_secs(60));
    let wired = ingress_filters(&ns, "eth1");
    assert!(
        wired.contains("mirred"),
        "while running, eth1 redirects to the tap: {wired}"
    );
    // qemu is up (its QMP socket is there): the stop goes through the VMs' shutdown.
    wait_for(Duration::from_secs(60), "qemu's QMP socket", || {
        sockets_under(&ns.dir)
            .iter()
            .any(|p| p.ends_with("qmp.sock"))
            .then_some(())
    });
    let (code, _) = r.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "{}", r.output());
    // No stale redirect to the deleted tap: a frame arriving on eth1 would vanish.
    let left = ingress_filters(&ns, "eth1");
    assert!(
        left.is_empty(),
        "the launcher's filter is left on eth1 after exit: {left}\n{}",
        r.output()
    );
    let socks = sockets_under(&ns.dir);
    assert!(socks.is_empty(), "sockets left after exit: {socks:?}");
}

#[test]
fn links_missing_at_the_time_out_take_the_wiring_off_the_present_one() {
    let ns = Netns::new("unwire-missing");
    ns.veth_pair("eth1", "p1");
    let extra = "[nics]\nwait_timeout = 2\nnames = [\"eth1\", \"eth2\"]\n";
    let cfg = tinylinux_config(&ns, "u2", "", extra);
    let mut r = Running::start(&ns, &cfg, &[]);
    let code = r.wait_exit(Duration::from_secs(30));
    let log = r.log();
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.has("wired", &[("eth", "eth1")]),
        "eth1 was wired before the time-out: {log}"
    );
    let left = ingress_filters(&ns, "eth1");
    assert!(
        left.is_empty(),
        "the launcher's filter is left on eth1 after exit 3: {left}\n{log}"
    );
    let socks = sockets_under(&ns.dir);
    assert!(socks.is_empty(), "sockets left after exit: {socks:?}");
}

/// Nothing the earlier steps would create: no run folder, no console log, no health file.
fn assert_nothing_created(ns: &Netns, out: &str) {
    for f in ["run", "console.log", "health", "control.sock"] {
        assert!(!ns.dir.join(f).exists(), "{f} was created: {out}");
    }
    let links = ns.ip("-o link show");
    assert!(!links.contains("tap"), "a tap was created: {links}");
}

#[test]
fn a_missing_disk_image_exits_2_naming_the_key_and_creates_nothing() {
    let ns = Netns::new("pre-disk");
    ns.veth_pair("eth1", "p1");
    let disk = ns.dir.join("absent.qcow2");
    let extra = format!(
        "[[disk]]\npath = \"{}\"\nformat = \"qcow2\"\n",
        disk.display()
    );
    let cfg = tinylinux_config(&ns, "p1", "", &extra);
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    let code = r.wait_exit(Duration::from_secs(20));
    let log = r.log();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.stderr.contains("disk[0].path") && log.stderr.contains("absent.qcow2"),
        "the error names the key and the path: {log}"
    );
    assert_nothing_created(&ns, &log.to_string());
}

#[test]
fn without_net_admin_a_node_with_data_links_exits_2_naming_cap_add() {
    let ns = Netns::new("pre-cap");
    ns.veth_pair("eth1", "p1");
    let cfg = tinylinux_config(&ns, "p2", "", "");
    // setpriv (util-linux) drops NET_ADMIN from every set, then execs `ip netns exec ...`.
    let drop = [
        "setpriv",
        "--inh-caps=-net_admin",
        "--ambient-caps=-net_admin",
        "--bounding-set=-net_admin",
    ];
    let mut r = Running::start_under(&ns, &cfg, &[("CLAB_INTFS", "1")], &drop);
    let code = r.wait_exit(Duration::from_secs(20));
    let log = r.log();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.stderr.contains("--cap-add NET_ADMIN") && log.stderr.contains("CAP_NET_ADMIN"),
        "the error names the capability and the fix: {log}"
    );
    assert_nothing_created(&ns, &log.to_string());
}

/// A bring-up that fails half-way (passthrough wired eth0, then the data link's tap cannot be
/// made: a non-tap device already holds its name) exits 1 and takes the passthrough filters
/// back off eth0, which would otherwise send every frame to a tap that is gone.
#[test]
fn a_bring_up_failing_after_passthrough_takes_the_eth0_filters_back() {
    let ns = Netns::new("fuzz-halfpass");
    ns.veth_pair("eth0", "mgmt0");
    ns.ip("addr add 192.0.2.2/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.veth_pair("eth1", "p1");
    ns.ip("link add tap1 type bridge");
    let cfg = tinylinux_config(&ns, "hp", "", "[nics]\ncount = 1\n");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_MGMT_PASSTHROUGH", "true")]);
    let code = r.wait_exit(Duration::from_secs(30));
    let log = r.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.has("management passthrough wired", &[]) && log.stderr.contains("tap1"),
        "passthrough was wired, then tap1 failed: {log}"
    );
    let left = ingress_filters(&ns, "eth0");
    assert!(
        left.is_empty(),
        "passthrough filters left on eth0 after a failed bring-up: {left}\n{log}"
    );
    let socks = sockets_under(&ns.dir);
    assert!(socks.is_empty(), "sockets left after exit: {socks:?}");
}

/// A set-up step after the consoles failing (a CD image whose folder holds a folder) exits 1
/// and removes the console sockets the consoles had made.
#[test]
fn a_disk_failing_after_the_consoles_removes_their_sockets() {
    let ns = Netns::new("fuzz-halfdisk");
    let day0 = ns.dir.join("day0");
    std::fs::create_dir_all(day0.join("not-a-file")).unwrap();
    let extra = format!(
        "[[disk]]\npath = \"{}\"\nformat = \"iso\"\n",
        day0.display()
    );
    let cfg = tinylinux_config(&ns, "hd", "", &extra);
    let mut r = Running::start(&ns, &cfg, &[]);
    let code = r.wait_exit(Duration::from_secs(30));
    let log = r.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.stderr.contains("only plain files go on the CD image"),
        "the CD image failed: {log}"
    );
    assert!(
        ns.dir.join("console.log").exists(),
        "the consoles had started: {log}"
    );
    let socks = sockets_under(&ns.dir);
    assert!(
        socks.is_empty(),
        "sockets left after exit: {socks:?}\n{log}"
    );
}
