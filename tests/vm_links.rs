//! The launcher with real qemu (TCG) booting images/tinylinux while its data interfaces come
//! and go, each test in its own network namespace: interfaces arriving late, in any order and
//! renamed; a burst overrunning the link event socket; interfaces that never come (a clear
//! error); ethN deleted and made again fifty times under traffic.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn interfaces_arriving_late_in_random_order_and_renamed_are_wired() {
    let ns = Netns::new("late");
    let cfg = tinylinux_config(&ns, "r4", "", "");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "3")]);
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    // eth3 first, a gap, then eth1 arriving under another name and renamed, then eth2.
    std::thread::sleep(Duration::from_millis(300));
    ns.veth_pair("eth3", "p3");
    std::thread::sleep(Duration::from_millis(400));
    ns.ip("link add p1 type veth peer name tmp-xyz");
    std::thread::sleep(Duration::from_millis(200));
    let st = status(&ns).unwrap();
    assert_eq!(st["state"], "waiting-for-interfaces", "{st}");
    // CLAB_INTFS counts links on any ports: which ones is known once 3 are there.
    assert!(
        st["links"].as_array().is_none_or(|l| l.is_empty()),
        "only eth3 is there yet, no link known: {st}"
    );
    ns.ip("link set tmp-xyz name eth1");
    std::thread::sleep(Duration::from_millis(300));
    ns.veth_pair("eth2", "p2");
    let st = wait_all_wired(&ns, Duration::from_secs(90));
    assert!(st["links"][0]["eth_ifindex"].as_u64().is_some());
    wait_state(&ns, "ready", Duration::from_secs(90));
    // eth1 renamed away: status says so.
    ns.ip("link set eth1 name gone1");
    let st = wait_for(Duration::from_secs(5), "eth1 shown gone", || {
        status(&ns).filter(|s| s["links"][0]["wired"] == false)
    });
    assert!(st["links"][0]["eth_ifindex"].is_null(), "{st}");
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}

#[test]
fn a_burst_overrunning_the_link_event_socket_is_recovered_by_listing_again() {
    // A tiny event buffer and 100 interfaces created by one `ip -batch`: events are lost
    // (ENOBUFS); the launcher lists the links again and wires every one.
    let ns = Netns::new("burst");
    let cfg = tinylinux_config(&ns, "r100", "", "");
    let mut r = Running::start(
        &ns,
        &cfg,
        &[("CLAB_INTFS", "100"), ("LAUNCHER_NETLINK_RCVBUF", "1")],
    );
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(10));
    let batch = ns.dir.join("burst.batch");
    let lines: String = (1..=100)
        .map(|i| format!("link add p{i} type veth peer name eth{i}\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    ns.ip(&format!("-batch {}", batch.display()));
    let st = wait_all_wired(&ns, Duration::from_secs(60));
    assert_eq!(st["links"].as_array().unwrap().len(), 100);
    let out = r.log();
    assert!(
        out.has("link event socket overran; listing links again", &[]),
        "the burst did not overrun the 1-byte (kernel minimum) buffer:\n{out}"
    );
    wait_state(&ns, "ready", Duration::from_secs(120));
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn missing_interfaces_time_out_with_a_clear_error() {
    let ns = Netns::new("missing");
    ns.veth_pair("eth1", "p1");
    // CLAB_INTFS counts links on any ports: the error says how many are missing and which
    // were found.
    let cfg = tinylinux_config(&ns, "r5", "", "[nics]\nwait_timeout = 1\n");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "3")]);
    let code = r.wait_exit(Duration::from_secs(20));
    let out = r.log();
    assert_eq!(code, Some(3), "{out}");
    // The final error report (stderr), not a log line.
    assert!(
        out.stderr.contains("2 of 3 (found eth1)"),
        "the error says what is missing and what was found: {out}"
    );
    // Named ports: the error lists exactly the missing ones.
    let names = "[nics]\nwait_timeout = 1\nnames = [\"eth1\", \"eth2\", \"eth3\"]\n";
    let ns = Netns::new("missing-names");
    ns.veth_pair("eth1", "p1");
    let cfg = tinylinux_config(&ns, "r5n", "", names);
    let mut r = Running::start(&ns, &cfg, &[]);
    let code = r.wait_exit(Duration::from_secs(20));
    let out = r.log();
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.stderr.contains("eth2, eth3") && !out.stderr.contains("eth1,"),
        "the error lists exactly what is missing: {out}"
    );
}

#[test]
fn ethn_recreated_fifty_times_is_rewired_every_time_under_traffic() {
    let ns = Netns::new("rewire");
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(&sc, "ip addr add 192.0.2.2/24 dev eth1\n").unwrap();
    let cfg = tinylinux_config(
        &ns,
        "r6",
        &format!("startup_config = \"{}\"", sc.display()),
        "",
    );
    let mk = || {
        ns.ip("link add p1 address 02:00:00:00:00:01 type veth peer name eth1");
        ns.ip("link set p1 up");
        ns.ip("addr add 192.0.2.1/24 dev p1");
    };
    mk();
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_state(&ns, "ready", Duration::from_secs(90));
    let ping = || ns.exec("ping -c 1 -W 2 192.0.2.2").status.success();
    let t = Instant::now();
    while !ping() {
        let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap_or_default();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no ping through the VM; console:\n{console}"
        );
    }
    let mut gaps = Vec::new();
    for round in 1..=50 {
        ns.ip("link del p1");
        let t = Instant::now();
        mk();
        // The gap: from the link's creation until status shows it wired to the new ifindex.
        wait_for(Duration::from_secs(5), "re-wired", || {
            status(&ns)
                .filter(|s| s["links"][0]["wired"] == true && s["links"][0]["wirings"] == round + 1)
        });
        gaps.push(t.elapsed());
        assert!(ping(), "round {round}: no ping through the re-wired link");
    }
    gaps.sort();
    println!(
        "re-wire gaps over 50 rounds (creation to wired, status polled): min {:?} median {:?} max {:?}",
        gaps[0], gaps[25], gaps[49]
    );
    let st = status(&ns).unwrap();
    assert_eq!(st["links"][0]["wirings"], 51);
    assert!(st["links"][0]["to_vm_packets"].as_u64().unwrap() > 0);
    assert!(st["links"][0]["from_vm_packets"].as_u64().unwrap() > 0);
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}
