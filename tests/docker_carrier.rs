//! Stop, start and restart the containerlab way, with real Docker and the tinylinux router:
//! containerlab parks ethN in another namespace, stops the container, starts it and moves ethN
//! back (it arrives anew, with a new ifindex). The router must come back healthy with the same
//! MACs, its link re-wired and up in the guest, traffic passing. `docker restart` and
//! `docker kill` + `docker start` likewise (the container's namespace goes with the container,
//! so the lab tool makes the link again). The image is launcher-tinylinux:latest with this
//! build's launcher and guest (kernel and initramfs) on top, tagged for this test only.

mod common;
use common::*;
use std::time::Duration;

/// containerlab's way: a veth made in `peer` (keeping `p1`), its other end moved into the
/// router's namespace, renamed eth1 and brought up; the peer end addressed.
fn link(r: &Container, peer: &Netns) {
    let _ = peer.exec("ip link del p1");
    peer.ip("link add p1 type veth peer name lt-carrier-t1");
    peer.ip(&format!("link set lt-carrier-t1 netns {}", r.pid()));
    r.ip("link set lt-carrier-t1 name eth1");
    r.ip("link set eth1 up");
    peer.ip("addr add 192.0.2.1/24 dev p1");
    peer.ip("link set p1 up");
}

/// Healthy, the same MACs as `macs`, eth1 wired and up in status, the guest's port up, pings
/// through eth1 reaching it.
fn back_as_before(r: &Container, peer: &Netns, macs: &str, what: &str) {
    r.healthy(Duration::from_secs(240));
    assert_eq!(r.macs(), macs, "same MACs after {what}");
    let st = wait_for(Duration::from_secs(30), "eth1 up in status", || {
        let st = r.status();
        (st["links"][0]["port_state"] == "up").then_some(st)
    });
    assert_eq!(st["links"][0]["wired"], true, "{what}: {st}");
    peer.wait_ping("192.0.2.2", Duration::from_secs(60), || what.to_string());
    let logs = r.logs();
    let last = logs.lines().rfind(|l| l.contains("carrier eth1 "));
    let last = last.unwrap_or_default();
    assert!(
        last.ends_with("tinylinux: carrier eth1 up"),
        "{what}: the guest's view: {last}"
    );
}

#[test]
fn carrier_docker_stop_start_with_parking_restart_and_kill_start_come_back_wired() {
    require_docker();
    let image = TestImage::build("carrier");
    let peer = Netns::new("carrier-dpeer");
    let park = Netns::new("carrier-park");
    let config = std::env::temp_dir().join(format!("lt-carrier-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("startup-config.cfg"),
        "ip addr add 192.0.2.2/24 dev eth1\n",
    )
    .unwrap();
    let r = Container {
        name: format!("lt-carrier-{}", std::process::id()),
        dirs: vec![config.clone()],
    };
    must(&format!(
        "docker run -d --name {} --hostname rc --cap-add NET_ADMIN --device /dev/net/tun \
         -e CLAB_INTFS=1 -v {}:/config {}",
        r.name,
        config.display(),
        image.tag
    ));
    link(&r, &peer);
    r.healthy(Duration::from_secs(240));
    let macs = r.macs();
    back_as_before(&r, &peer, &macs, "the first start");
    assert!(macs.contains("eth1="), "{macs}");

    // containerlab's stop: eth1 parked in another namespace, the container stopped.
    let ifindex = r.status()["links"][0]["eth_ifindex"].clone();
    r.ip(&format!("link set eth1 netns {}", park.name));
    must(&format!("docker stop -t 120 {}", r.name));
    assert_eq!(r.exit_code(), "0", "{}", r.logs());
    // ...and its start: the container started, eth1 moved back in, up.
    must(&format!("docker start {}", r.name));
    park.ip(&format!("link set eth1 netns {}", r.pid()));
    r.ip("link set eth1 up");
    back_as_before(&r, &peer, &macs, "stop and start with parking");
    let st = r.status();
    assert_eq!(
        st["links"][0]["wirings"], 1,
        "a new launcher wired it: {st}"
    );
    println!(
        "eth1 ifindex before {ifindex}, after {}",
        st["links"][0]["eth_ifindex"]
    );

    // docker restart: the namespace (and eth1 with it) goes; the lab tool links it again.
    must(&format!("docker restart -t 120 {}", r.name));
    link(&r, &peer);
    back_as_before(&r, &peer, &macs, "docker restart");

    // docker kill + docker start: the launcher SIGKILLed (qemu goes with it).
    must(&format!("docker kill {}", r.name));
    must(&format!("docker start {}", r.name));
    link(&r, &peer);
    back_as_before(&r, &peer, &macs, "docker kill and start");
}
