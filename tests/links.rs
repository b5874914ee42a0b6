//! Sparse links, as containerlab makes them: CLAB_INTFS counts the links (eth0 excluded), and
//! links may skip ports (eth1 and eth3 only: CLAB_INTFS=2). Each interface is created in a peer
//! namespace after the launcher starts, moved into the router's namespace and renamed there.
//! Real qemu (TCG) booting images/tinylinux where the guest is needed.

mod common;
use common::*;
use std::time::Duration;

/// containerlab's way: a veth made outside the router's namespace (`peer` keeps `outside`),
/// its other end moved in under a temporary name, renamed to `eth` and brought up.
fn clab_link(ns: &Netns, peer: &Netns, eth: &str, outside: &str) {
    let tmp = format!("tmp-{eth}");
    peer.ip(&format!("link add {outside} type veth peer name {tmp}"));
    peer.ip(&format!("link set {tmp} netns {}", ns.name));
    ns.ip(&format!("link set {tmp} name {eth}"));
    ns.ip(&format!("link set {eth} up"));
    peer.ip(&format!("link set {outside} up"));
}

fn port_states(st: &serde_json::Value) -> Vec<String> {
    (st["links"].as_array().unwrap().iter())
        .map(|l| l["port_state"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ports(st: &serde_json::Value) -> Vec<(u64, bool)> {
    st["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["port"].as_u64().unwrap(), l["wired"] == true))
        .collect()
}

#[test]
fn clab_intfs_2_with_eth1_and_eth3_wires_both_and_port_3_carries_traffic() {
    let ns = Netns::new("sparse");
    let peer = Netns::new("sparse-peer");
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(&sc, "ip addr add 192.0.2.2/24 dev eth3\n").unwrap();
    let cfg = tinylinux_config(
        &ns,
        "rsparse",
        &format!("startup_config = \"{}\"", sc.display()),
        "[nics]\nwait_timeout = 60\n",
    );
    // The guest waits for its 4 NICs: management, ports 1, 2 (a placeholder) and 3.
    edit_file(&cfg, &[("tl.mgmt=user", "tl.mgmt=user tl.nics=4")]);
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth3", "p3");
    std::thread::sleep(Duration::from_millis(500));
    let st = status(&ns).unwrap();
    assert_eq!(st["state"], "waiting-for-interfaces", "one of two: {st}");
    clab_link(&ns, &peer, "eth1", "p1");
    peer.ip("addr add 192.0.2.1/24 dev p3");
    let st = wait_all_wired(&ns, Duration::from_secs(30));
    // Port 2 has its tap too (a cable slot, its ethN absent).
    assert_eq!(ports(&st), [(1, true), (2, false), (3, true)], "{st}");
    assert_eq!(st["links"][2]["eth"], "eth3", "{st}");
    assert_eq!(st["links"][2]["tap"], "tap3", "{st}");
    assert_eq!(port_states(&st), ["up", "absent", "up"], "{st}");
    wait_state(&ns, "ready", Duration::from_secs(120));
    let out = r.log();
    assert!(
        out.has("found 2 of 2 data interfaces: eth1, eth3", &[]),
        "{out}"
    );
    // The guest's own view: port N is its ethN (MAC ...:00:0N), port 2 a NIC without a link.
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    let line = console
        .lines()
        .find(|l| l.contains("NICs:"))
        .unwrap_or_default()
        .to_string();
    let nic = |n: u32| {
        line.split_whitespace()
            .find(|w| w.starts_with(&format!("eth{n}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line.contains("tinylinux: 4 NICs:"), "{line}");
    for n in 1..=3 {
        assert!(nic(n).contains(&format!(":00:0{n}/")), "eth{n}: {line}");
    }
    // Traffic from the peer's end of eth3 to the guest's port 3.
    peer.wait_ping("192.0.2.2", Duration::from_secs(30), || r.output());
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn too_few_links_time_out_saying_which_were_found() {
    let ns = Netns::new("sparse-few");
    let peer = Netns::new("sparse-few-peer");
    let cfg = tinylinux_config(&ns, "rfew", "", "[nics]\nwait_timeout = 2\n");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth3", "p3");
    let code = r.wait_exit(Duration::from_secs(20));
    let out = r.log();
    assert_eq!(code, Some(3), "{out}");
    assert!(out.stderr.contains("1 of 2 (found eth3)"), "{out}");
}

#[test]
fn on_timeout_continue_boots_with_the_ports_found_and_wires_late_ones() {
    let ns = Netns::new("sparse-cont");
    let peer = Netns::new("sparse-cont-peer");
    let nics = "[nics]\nwait_timeout = 2\non_timeout = \"continue\"\n";
    let cfg = tinylinux_config(&ns, "rcont", "", nics);
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth3", "p3");
    // After the wait: eth3 found, the missing one assumed the lowest free port (eth1).
    // (eth3 is wired a moment before the node leaves waiting-for-interfaces: wait for both.)
    wait_for(
        Duration::from_secs(20),
        "eth3 wired, eth1 not, booting",
        || {
            status(&ns).filter(|s| {
                ports(s) == [(1, false), (2, false), (3, true)]
                    && s["state"] != "waiting-for-interfaces"
            })
        },
    );
    let out = r.log();
    assert!(
        out.any(|e| e
            .message
            .starts_with("found 1 of 2 data interfaces: eth3; booting with ports eth1, eth3")),
        "{out}"
    );
    clab_link(&ns, &peer, "eth1", "p1");
    let st = wait_all_wired(&ns, Duration::from_secs(20));
    assert_eq!(ports(&st), [(1, true), (2, false), (3, true)], "{st}");
    wait_state(&ns, "ready", Duration::from_secs(120));
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn a_link_above_the_platforms_slots_exits_2_naming_it() {
    let ns = Netns::new("sparse-slots");
    let peer = Netns::new("sparse-slots-peer");
    let cfg = tinylinux_config(&ns, "rslots", "", "[nics]\nslots = 4\nwait_timeout = 30\n");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth1", "p1");
    clab_link(&ns, &peer, "eth5", "p5");
    let code = r.wait_exit(Duration::from_secs(20));
    let out = r.log();
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.stderr.contains("nics.slots") && out.stderr.contains("eth5"),
        "{out}"
    );
    assert!(!ns.dir.join("run/qmp.sock").exists(), "qemu never started");
}

#[test]
fn sigterm_while_counting_links_stops_cleanly() {
    let ns = Netns::new("sparse-term");
    let cfg = tinylinux_config(&ns, "rterm", "", "[nics]\nwait_timeout = 60\n");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    let (code, took) = r.stop(Duration::from_secs(10));
    assert_eq!(code, 0, "{}", r.output());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// A `[[vm]]` entry for tinylinux taking the data ports `data`, no management network.
fn vm_entry(ns: &Netns, name: &str, data: &str, telnet: u16) -> String {
    let b = tinylinux_dir();
    format!(
        "[[vm]]\nname = \"{name}\"\nmachine = \"q35\"\nmemory = 256\nshutdown_timeout = 20\n\
         data = \"{data}\"\n[vm.kernel]\npath = \"{k}\"\ninitrd = \"{i}\"\n\
         append = \"console=ttyS0 panic=-1 tl.hostname={name}\"\n[vm.management]\nmode = \"none\"\n\
         [vm.console]\nready_pattern = \"TINYLINUX-READY\"\nlog = \"{d}/{name}.console.log\"\n\
         telnet_port = {telnet}\n",
        k = b.join("vmlinuz").display(),
        i = b.join("initramfs.cpio.gz").display(),
        d = ns.dir.display(),
    )
}

#[test]
fn several_vms_take_the_ports_present_that_their_data_selects() {
    let ns = Netns::new("sparse-vms");
    let peer = Netns::new("sparse-vms-peer");
    let d = ns.dir.display();
    let text = format!(
        "[restart]\npolicy = \"never\"\n[paths]\nrun_dir = \"{d}/run\"\nstate_dir = \"{d}/state\"\nhealth_file = \"{d}/health\"\n{}{}",
        vm_entry(&ns, "cp", "1", 5000),
        vm_entry(&ns, "lc", "2-4", 5001),
    );
    let cfg = ns.dir.join("node.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth3", "p3");
    clab_link(&ns, &peer, "eth1", "p1");
    let st = wait_all_wired(&ns, Duration::from_secs(30));
    assert_eq!(ports(&st), [(1, true), (2, false), (3, true)], "{st}");
    wait_state(&ns, "ready", Duration::from_secs(150));
    // cp: its data NIC 1; lc: NICs for ports 1..3, only port 3 with a link (MAC ...:00:03).
    let nics = |vm: &str| {
        let log = std::fs::read_to_string(ns.dir.join(format!("{vm}.console.log"))).unwrap();
        let line = log.lines().find(|l| l.contains("NICs:"));
        line.unwrap_or_default().to_string()
    };
    assert!(nics("cp").contains("tinylinux: 1 NICs:"), "{}", nics("cp"));
    let lc = nics("lc");
    assert!(lc.contains("tinylinux: 3 NICs:"), "{lc}");
    let lc_eth2 = lc.split_whitespace().find(|w| w.starts_with("eth2="));
    assert!(lc_eth2.unwrap_or_default().contains(":00:03/"), "{lc}");
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

/// Waits (bounded) until the guest prints `line` (its carrier log) after console byte `from`
/// and status shows `port`'s state `state`; returns the console length then.
fn guest_and_status_see(ns: &Netns, from: usize, line: &str, port: usize, state: &str) -> usize {
    wait_for(
        Duration::from_secs(60),
        &format!("{line:?} and port state {state}"),
        || {
            let seen = console_from(ns, from).contains(line);
            let st = status(ns)?;
            (seen && st["links"][port - 1]["port_state"] == state).then_some(())
        },
    );
    console_len(ns)
}

/// Waits (bounded) for pings from `peer` to `addr` (the guest) to get through.
fn ping_passes(peer: &Netns, addr: &str, r: &Running) {
    peer.wait_ping(addr, Duration::from_secs(40), || r.output());
}

/// A tinylinux router with `slots` NIC slots, CLAB_INTFS=1, and addresses on its ports 1 and
/// 3 (192.0.2.2/24, 198.51.100.2/24), started and waiting for its one link.
fn carrier_router(ns: &Netns, name: &str) -> (std::path::PathBuf, Running) {
    let sc = ns.dir.join("startup-config.cfg");
    let cfg_text = "ip addr add 192.0.2.2/24 dev eth1\nip addr add 198.51.100.2/24 dev eth3\n";
    std::fs::write(&sc, cfg_text).unwrap();
    let cfg = tinylinux_config(
        ns,
        name,
        &format!("startup_config = \"{}\"", sc.display()),
        "[nics]\nslots = 3\nwait_timeout = 60\n",
    );
    edit_file(&cfg, &[("tl.mgmt=user", "tl.mgmt=user tl.nics=4")]);
    let r = Running::start(ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_state(ns, "waiting-for-interfaces", Duration::from_secs(10));
    (cfg, r)
}

#[test]
fn carrier_guest_sees_its_port_down_when_eth_is_deleted_or_its_peer_down_and_up_again() {
    let ns = Netns::new("carrier-cable");
    let peer = Netns::new("carrier-cable-peer");
    let (_cfg, mut r) = carrier_router(&ns, "rcable");
    clab_link(&ns, &peer, "eth1", "p1");
    peer.ip("addr add 192.0.2.1/24 dev p1");
    let st = wait_state(&ns, "ready", Duration::from_secs(150));
    assert_eq!(port_states(&st), ["up", "absent", "absent"], "{st}");
    // The guest's own view: ports 2 and 3 have no cable.
    let at = guest_and_status_see(&ns, 0, "tinylinux: carrier eth1 up", 1, "up");
    guest_ends_up_seeing(&ns, 0, &[(1, "up"), (2, "down"), (3, "down")]);
    ping_passes(&peer, "192.0.2.2", &r);
    // The peer goes down: the guest's port goes down.
    peer.ip("link set p1 down");
    let at = guest_and_status_see(&ns, at, "tinylinux: carrier eth1 down", 1, "down");
    peer.ip("link set p1 up");
    let at = guest_and_status_see(&ns, at, "tinylinux: carrier eth1 up", 1, "up");
    ping_passes(&peer, "192.0.2.2", &r);
    // ethN deleted (with its peer): down and absent; re-created: up, traffic passes.
    ns.ip("link del eth1");
    let at = guest_and_status_see(&ns, at, "tinylinux: carrier eth1 down", 1, "absent");
    clab_link(&ns, &peer, "eth1", "p1");
    peer.ip("addr add 192.0.2.1/24 dev p1");
    guest_and_status_see(&ns, at, "tinylinux: carrier eth1 up", 1, "up");
    ping_passes(&peer, "192.0.2.2", &r);
    let st = status(&ns).unwrap();
    assert_eq!(st["links"][0]["wirings"], 2, "{st}");
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn carrier_a_late_link_within_the_slots_comes_up_without_a_restart_and_after_one() {
    let ns = Netns::new("carrier-late");
    let peer = Netns::new("carrier-late-peer");
    let (_cfg, mut r) = carrier_router(&ns, "rlate");
    clab_link(&ns, &peer, "eth1", "p1");
    let st = wait_state(&ns, "ready", Duration::from_secs(150));
    let qemu = st["qemu_pid"].clone();
    assert_eq!(port_states(&st), ["up", "absent", "absent"], "{st}");
    let at = guest_and_status_see(&ns, 0, "tinylinux: carrier eth1 up", 1, "up");
    // containerlab adds a link to the running node: eth3, within the 3 slots.
    clab_link(&ns, &peer, "eth3", "p3");
    peer.ip("addr add 198.51.100.1/24 dev p3");
    guest_and_status_see(&ns, at, "tinylinux: carrier eth3 up", 3, "up");
    ping_passes(&peer, "198.51.100.2", &r);
    let st = status(&ns).unwrap();
    assert_eq!(st["qemu_pid"], qemu, "the same qemu: {st}");
    assert_eq!(st["restarts"], 0, "{st}");
    assert_eq!(port_states(&st), ["up", "absent", "up"], "{st}");
    // qemu dies and is restarted: the new guest gets the same port states.
    let at = console_len(&ns);
    kill(qemu.as_i64().unwrap() as i32, libc::SIGKILL);
    let st = wait_for(Duration::from_secs(150), "ready after a restart", || {
        status(&ns).filter(|s| s["state"] == "ready" && s["restarts"] == 1)
    });
    assert_ne!(st["qemu_pid"], qemu, "{st}");
    guest_ends_up_seeing(&ns, at, &[(1, "up"), (2, "down"), (3, "up")]);
    ping_passes(&peer, "198.51.100.2", &r);
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

/// The ifindexes `dev`'s ingress filters redirect to, as `tc` shows them (empty: none).
fn redirects(ns: &Netns, dev: &str) -> String {
    let out = ns.exec(&format!("tc filter show dev {dev} ingress"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut to: Vec<&str> = (text.split("to device ").skip(1))
        .filter_map(|s| s.split(|c: char| c == ')' || c.is_whitespace()).next())
        .collect();
    to.sort_unstable();
    to.join(",")
}

#[test]
fn carrier_wiring_removed_behind_our_back_is_put_back_a_renamed_eth_unhooked_a_deleted_tap_shown() {
    let ns = Netns::new("carrier-repair");
    let peer = Netns::new("carrier-repair-peer");
    let cfg = tinylinux_config(&ns, "rrepair", "", "[nics]\ncount = 1\nwait_timeout = 30\n");
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    clab_link(&ns, &peer, "eth1", "p1");
    wait_all_wired(&ns, Duration::from_secs(20));
    // From here the watcher owns the links (qemu started).
    wait_for(Duration::from_secs(20), "qemu started", || {
        status(&ns).filter(|s| s["qemu_pid"].is_i64())
    });
    let wired = || (redirects(&ns, "eth1"), redirects(&ns, "tap1"));
    assert_eq!(wired(), ("tap1".into(), "eth1".into()));
    // A filter deleted, then the whole ingress qdisc of the tap: both put back.
    ns.exec("tc filter del dev eth1 ingress");
    wait_for(Duration::from_secs(10), "eth1's filter put back", || {
        (wired() == ("tap1".into(), "eth1".into())).then_some(())
    });
    ns.exec("tc qdisc del dev tap1 ingress");
    wait_for(Duration::from_secs(10), "tap1's filter put back", || {
        (wired() == ("tap1".into(), "eth1".into())).then_some(())
    });
    let st = status(&ns).unwrap();
    assert_eq!(st["links"][0]["wired"], true, "{st}");
    assert_eq!(st["links"][0]["wirings"], 3, "{st}");
    let out = r.log();
    let repaired = out
        .events
        .iter()
        .filter(|e| e.message == "wiring removed from outside the launcher; re-wiring");
    assert_eq!(repaired.count(), 2, "{out}");
    // eth1 renamed away: unhooked (neither it nor tap1 redirects), its port no longer up.
    ns.ip("link set eth1 down");
    ns.ip("link set eth1 name away1");
    let st = wait_for(Duration::from_secs(10), "the port shown absent", || {
        status(&ns).filter(|s| s["links"][0]["port_state"] == "absent")
    });
    assert_eq!(st["links"][0]["wired"], false, "{st}");
    wait_for(Duration::from_secs(10), "away1 and tap1 unhooked", || {
        (redirects(&ns, "away1").is_empty() && redirects(&ns, "tap1").is_empty()).then_some(())
    });
    // Back under its name: wired again.
    ns.ip("link set away1 name eth1");
    ns.ip("link set eth1 up");
    wait_all_wired(&ns, Duration::from_secs(10));
    assert_eq!(wired(), ("tap1".into(), "eth1".into()));
    // tap1 deleted under the running qemu: it cannot be made again, so status says so.
    ns.ip("link del tap1");
    let st = wait_for(Duration::from_secs(10), "the deleted tap in status", || {
        status(&ns).filter(|s| s["links"][0]["error"].is_string())
    });
    assert_eq!(st["links"][0]["wired"], false, "{st}");
    assert!(
        st["links"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("tap deleted from outside the launcher"),
        "{st}"
    );
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}
