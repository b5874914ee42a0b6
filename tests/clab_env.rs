//! containerlab's environment on real parts (issue 17 item 3): a passthrough node whose
//! management interface is not eth0 (CLAB_MGMT_INTF), with the MAC the lab asks for
//! (CLAB_MGMT_MAC: the guest's management NIC has it, and the container interface takes it too,
//! so frames for the container's address reach the guest), and the node name reaching the
//! bootstrap as `{node_name}` (CLAB_LABEL_CLAB_NODE_NAME).

mod common;
use common::*;
use std::time::Duration;

const MAC: &str = "0c:00:12:34:56:78";

const AFTER_LOGIN: &str = r##"  { send = "ip addr add {mgmt_ip} dev eth0" },
  { expect = "# ", timeout = 10 },
  { send = "echo NODE-{node_name}-$((1+1))" },
  { expect = "NODE-pe1-2", timeout = 10 },"##;

#[test]
fn passthrough_on_clab_mgmt_intf_with_clab_mgmt_mac_and_the_node_name() {
    let ns = Netns::new("clabenv-env");
    let outside = Netns::new("clabenv-out");
    must(&format!(
        "ip -n {} link add mgt0 type veth peer name mgmt0 netns {}",
        ns.name, outside.name
    ));
    ns.ip("addr add 192.0.2.2/24 dev mgt0");
    ns.ip("link set mgt0 up");
    ns.ip("route add default via 192.0.2.1");
    outside.ip("addr add 192.0.2.1/24 dev mgmt0");
    outside.ip("link set mgmt0 up");
    let cfg = tinylinux_config(&ns, "re", "", &login_bootstrap("bootstrap", AFTER_LOGIN));
    edit_file(&cfg, &[("tl.mgmt=user", "tl.mgmt=passthrough")]);
    let mut l = Running::start(
        &ns,
        &cfg,
        &[
            ("CLAB_MGMT_PASSTHROUGH", "true"),
            ("CLAB_MGMT_INTF", "mgt0"),
            ("CLAB_MGMT_MAC", "0C:00:12:34:56:78"),
            ("CLAB_LABEL_CLAB_NODE_NAME", "pe1"),
        ],
    );
    let st = wait_state(&ns, "ready", Duration::from_secs(150));
    assert_eq!(st["reason"], "bootstrap finished", "{st}");
    // The container interface took the MAC, and the guest's management NIC has it.
    let link = ns.ip("-br link show mgt0");
    assert!(link.contains(MAC), "{link}");
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains(&format!("eth0={MAC}/")),
        "the guest's management NIC is not {MAC}: {console}"
    );
    // The guest answers on the container's address, from that MAC.
    outside.wait_ping("192.0.2.2", Duration::from_secs(30), String::new);
    let neigh = outside.ip("neigh show 192.0.2.2");
    assert!(neigh.contains(MAC), "{neigh}");
    let text =
        String::from_utf8_lossy(&ns.launcher(&["status"]).output().unwrap().stdout).into_owned();
    assert!(
        text.contains("management: passthrough mgt0 192.0.2.2/24"),
        "{text}"
    );
    let (code, _) = l.stop(Duration::from_secs(60));
    assert_eq!(code, 0, "{}", l.output());
}
