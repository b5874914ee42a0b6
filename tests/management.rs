//! Management networking on real qemu + tinylinux. Passthrough: the VM takes over the
//! container's eth0 (its address, its MAC); from outside, the guest answers on that address, the
//! launcher's telnet console stays reachable on it, and the guest reaches the gateway.

mod common;
use common::*;
use std::time::Duration;

/// The bootstrap gives the guest the container's management address and gateway, which the
/// launcher read from eth0 over netlink, and proves the gateway answers the guest.
const AFTER_LOGIN: &str = r##"  { send = "ip addr add {mgmt_ip} dev eth0 && ip route add default via {mgmt_gateway}" },
  { expect = "# ", timeout = 10 },
  { send = "ping -c 1 -W 5 {mgmt_gateway} >/dev/null && echo GW-$((40+2))" },
  { expect = "GW-42", timeout = 15 },"##;

#[test]
fn passthrough_the_guest_answers_on_the_containers_own_address() {
    let ns = Netns::new("pass");
    let outside = Netns::new("pout");
    // The container's eth0, as Docker or containerlab would leave it: an address and a default
    // route; the other end is "the management network" (another namespace).
    must(&format!(
        "ip -n {} link add eth0 type veth peer name mgmt0 netns {}",
        ns.name, outside.name
    ));
    ns.ip("addr add 192.0.2.2/24 dev eth0");
    ns.ip("link set eth0 up");
    ns.ip("route add default via 192.0.2.1");
    outside.ip("addr add 192.0.2.1/24 dev mgmt0");
    outside.ip("link set mgmt0 up");
    let eth0_mac = ns
        .ip("-br link show eth0")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();

    let cfg = tinylinux_config(&ns, "rp", "", &login_bootstrap("bootstrap", AFTER_LOGIN));
    edit_file(&cfg, &[("tl.mgmt=user", "tl.mgmt=passthrough")]);
    let mut l = Running::start(&ns, &cfg, &[("CLAB_MGMT_PASSTHROUGH", "true")]);
    let st = wait_state(&ns, "ready", Duration::from_secs(120));
    assert_eq!(st["reason"], "bootstrap finished", "{st}");

    // The VM's management NIC took eth0's MAC (the guest prints its NICs at boot).
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains(&format!("eth0={eth0_mac}/")),
        "guest NIC MAC is not eth0's {eth0_mac}: {console}"
    );
    // The guest's own web server answers on the container's address.
    let page = wait_for(Duration::from_secs(20), "the guest's web server", || {
        http_get(Some(&outside), "192.0.2.2:80")
    });
    assert!(
        page.contains("200 OK") && page.contains("tinylinux rp"),
        "{page}"
    );
    // And ping: the answer's source MAC is eth0's (the guest's), seen from outside.
    let ping = outside.exec("ping -c 2 -W 2 192.0.2.2");
    assert!(ping.status.success(), "{ping:?}");
    let neigh = outside.ip("neigh show 192.0.2.2");
    assert!(neigh.contains(&eth0_mac), "{neigh}");
    // The launcher's telnet console stays in the container, on the same address.
    let console_seen = telnet_read(Some(&outside), "192.0.2.2:5000", "GW-42");
    assert!(
        console_seen.contains("GW-42"),
        "the console history over telnet: {console_seen:?}"
    );
    // Status says so; the launcher logged what it took over.
    let text =
        String::from_utf8_lossy(&ns.launcher(&["status"]).output().unwrap().stdout).into_owned();
    assert!(
        text.contains("management: passthrough eth0 192.0.2.2/24 via 192.0.2.1"),
        "{text}"
    );
    let out = l.log();
    assert!(out.has("management passthrough wired", &[]), "{out}");
    let (code, _) = l.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", l.output());
    // After the exit eth0 is the container's again: the passthrough filters are gone, and a
    // frame arriving on eth0 is no longer redirected to the deleted tap (silently dropped).
    let left = ns.exec("tc filter show dev eth0 ingress");
    let left = String::from_utf8_lossy(&left.stdout).trim().to_string();
    assert!(left.is_empty(), "passthrough filters left on eth0: {left}");
    let ping = ns.exec("ping -c 2 -W 2 192.0.2.1");
    assert!(
        ping.status.success(),
        "the container reaches the gateway again: {ping:?}"
    );
}
