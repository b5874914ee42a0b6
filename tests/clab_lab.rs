//! A containerlab-shaped lab, by hand (containerlab is not installed here), with real Docker,
//! real qemu and the tinylinux router (issue 17 item 8). The README's topology: r1 and r2 of
//! kind `generic_vm`, links r1:eth1-r2:eth1 and r1:eth3-r2:eth2 (r1 skips eth2, so its
//! `CLAB_INTFS` is 2 while its highest port is 3). containerlab's steps, as its `generic_vm`
//! kind takes them: a management network, each node's container created and started with the
//! environment containerlab sets (`CLAB_INTFS`, `CLAB_LABEL_*`, `USERNAME`/`PASSWORD`,
//! `CONNECTION_MODE`, `DOCKER_NET_*_ADDR`), its command line (`--username --password
//! --hostname --connection-mode --trace`), `<labdir>/<node>/config` on `/config`; the links
//! made afterwards as veth pairs with MTU 9500, moved into the containers' namespaces and
//! renamed there; Docker health awaited. Then traffic across the sparse port, the link's peer
//! down and up and the link deleted and re-made as the guests see them (their carrier lines on
//! the console), and containerlab's stop/start of r1 (its ethN parked in another namespace
//! while the container is stopped, moved back after the start). containerlab runs nodes
//! privileged; this test gives the least set the image needs (NET_ADMIN and the tun device).

mod common;
use common::*;
use std::path::PathBuf;
use std::time::Duration;

/// The README's topology (its lab name and image filled in), written as the lab's topology
/// file (containerlab's `clab-topo-file` label points at it).
const TOPOLOGY: &str = "name: NAME
topology:
  nodes:
    r1: {kind: generic_vm, image: IMAGE}
    r2: {kind: generic_vm, image: IMAGE}
  links:
    - endpoints: [\"r1:eth1\", \"r2:eth1\"]
    - endpoints: [\"r1:eth3\", \"r2:eth2\"]
";

/// Boot waits: TCG guests on a shared two-core machine.
const BOOT: Duration = Duration::from_secs(300);
/// The guest noticing a cable change (its carrier loop polls every 0.3 s) or a ping result.
const GUEST: Duration = Duration::from_secs(60);

/// r1's startup config: addresses on both links, then a ping loop over the sparse port that
/// prints its result on the console whenever it changes (the guest's own view of traffic).
const R1_CONFIG: &str = "ip addr add 192.0.2.1/24 dev eth1
ip addr add 198.51.100.1/24 dev eth3
(
  was=none
  while :; do
    if ping -c 1 -W 1 198.51.100.2 >/dev/null 2>&1; then now=ok; else now=fail; fi
    [ \"$now\" = \"$was\" ] || echo \"lt-clablab: ping over eth3 $now\" > /dev/console
    was=$now
    sleep 0.5
  done
) &
";
const R2_CONFIG: &str = "ip addr add 192.0.2.2/24 dev eth1\nip addr add 198.51.100.2/24 dev eth2\n";

/// The lab: its name, its folder (`<labdir>`, with the topology file) and its management
/// network (a Docker bridge, as containerlab's `clab` network), removed on drop.
struct Lab {
    name: String,
    dir: PathBuf,
    subnet: String,
}

impl Lab {
    fn new() -> Self {
        let name = format!("lt-clablab-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _ = sh(&format!("docker network rm {name}"));
        must(&format!("docker network create {name}"));
        let mut lab = Lab {
            subnet: String::new(),
            name,
            dir,
        };
        let subnet = must(&format!(
            "docker network inspect -f '{{{{range .IPAM.Config}}}}{{{{.Subnet}}}}{{{{end}}}}' {}",
            lab.name
        ));
        lab.subnet = subnet.trim().to_string();
        lab
    }

    fn topo_file(&self) -> PathBuf {
        self.dir.join(format!("{}.clab.yml", self.name))
    }

    /// What containerlab's deploy does for one `generic_vm` node before its links: the config
    /// folder with the startup config, the container created with containerlab's labels, the
    /// labels again as `CLAB_LABEL_*`, the kind's environment and command line, then started.
    fn deploy(&self, image: &TestImage, node: &str, intfs: u32, config: &str) -> Container {
        let labdir = self.dir.join(format!("clab-{}", self.name)).join(node);
        std::fs::create_dir_all(labdir.join("config")).unwrap();
        std::fs::write(labdir.join("config/startup-config.cfg"), config).unwrap();
        let c = Container {
            name: format!("clab-{}-{node}", self.name),
            dirs: vec![],
        };
        let _ = sh(&format!("docker rm -f {}", c.name));
        let labels = [
            ("containerlab", self.name.clone()),
            ("clab-node-name", node.to_string()),
            ("clab-node-kind", "generic_vm".to_string()),
            ("clab-node-type", String::new()),
            ("clab-node-group", String::new()),
            ("clab-node-lab-dir", labdir.display().to_string()),
            ("clab-topo-file", self.topo_file().display().to_string()),
        ];
        let mut args = String::new();
        for (k, v) in &labels {
            let env = k.to_uppercase().replace('-', "_");
            args += &format!(" --label {k}='{v}' -e CLAB_LABEL_{env}='{v}'");
        }
        for (k, v) in [
            ("CLAB_INTFS", intfs.to_string()),
            ("CONNECTION_MODE", "tc".to_string()),
            ("USERNAME", "clab".to_string()),
            ("PASSWORD", "clab@123".to_string()),
            ("DOCKER_NET_V4_ADDR", self.subnet.clone()),
            ("DOCKER_NET_V6_ADDR", String::new()),
        ] {
            args += &format!(" -e {k}='{v}'");
        }
        must(&format!(
            "docker create --name {} --hostname {node} --network {} \
             --cap-add NET_ADMIN --device /dev/net/tun -v {}:/config{args} {} \
             --username clab --password clab@123 --hostname {node} --connection-mode tc --trace",
            c.name,
            self.name,
            labdir.join("config").display(),
            image.tag
        ));
        must(&format!("docker start {}", c.name));
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&format!("docker network rm {}", self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A link the containerlab way: a veth pair with MTU 9500 made in the host, each end moved
/// into its node's namespace, renamed to its ethN there and brought up.
fn link(a: &Container, a_eth: &str, b: &Container, b_eth: &str) {
    // Host-side names within IFNAMSIZ: lt-clablab-<a's port>a and lt-clablab-<b's port>b.
    let (ta, tb) = (
        format!("lt-clablab-{}a", &a_eth[3..]),
        format!("lt-clablab-{}b", &b_eth[3..]),
    );
    let _ = sh(&format!("ip link del {ta}"));
    must(&format!(
        "ip link add {ta} mtu 9500 type veth peer name {tb} mtu 9500"
    ));
    must(&format!("ip link set {ta} netns {}", a.pid()));
    must(&format!("ip link set {tb} netns {}", b.pid()));
    a.ip(&format!("link set {ta} name {a_eth} up"));
    b.ip(&format!("link set {tb} name {b_eth} up"));
}

/// Waits (bounded) until the guest's latest boot shows `line` as the last of the lines
/// starting like it (its carrier or ping log), i.e. the state it is in now.
fn guest_says(r: &Container, line: &str) {
    let kind = &line[..line.rfind(' ').unwrap()];
    wait_for(
        GUEST,
        &format!("{}: {line:?} on the console", r.name),
        || {
            let logs = r.logs();
            let last = latest_boot(&logs).lines().rfind(|l| l.contains(kind));
            last.is_some_and(|l| l.ends_with(line)).then_some(())
        },
    );
}

/// Waits (bounded) until `launcher status` shows port `eth` in `state`.
fn port_is(r: &Container, eth: &str, state: &str) -> serde_json::Value {
    wait_for(
        GUEST,
        &format!("{}: {eth} {state} in status", r.name),
        || {
            let l = r.link(eth);
            (l["port_state"] == state).then_some(l)
        },
    )
}

/// r1 healthy, its ports as the sparse topology has them (eth2 a spare slot without a link),
/// both guests' cables up, and traffic across the sparse port.
fn lab_is_up(r1: &Container, r2: &Container, what: &str) {
    r1.healthy(BOOT);
    r2.healthy(BOOT);
    for (r, eth) in [(r1, "eth1"), (r1, "eth3"), (r2, "eth1"), (r2, "eth2")] {
        let l = port_is(r, eth, "up");
        assert_eq!(l["wired"], true, "{what}: {l}");
        assert_eq!(l["mtu"], 9500, "{what}: {l}");
        guest_says(r, &format!("tinylinux: carrier {eth} up"));
    }
    let gap = r1.link("eth2");
    assert_eq!(gap["port_state"], "absent", "{what}: {gap}");
    assert_eq!(gap["spare"], true, "{what}: {gap}");
    guest_says(r1, "tinylinux: carrier eth2 down");
    guest_says(r1, "lt-clablab: ping over eth3 ok");
    let l = r1.link("eth3");
    let (to, from) = (l["to_vm_packets"].as_u64(), l["from_vm_packets"].as_u64());
    assert!(
        to > Some(0) && from > Some(0),
        "{what}: traffic on eth3: {l}"
    );
}

#[test]
fn the_readme_shows_this_topology() {
    let readme = include_str!("../README.md");
    let yaml = TOPOLOGY.replace("NAME", "lab");
    let yaml = yaml.replace("IMAGE", "launcher-tinylinux:latest");
    for line in yaml.lines() {
        assert!(readme.contains(line), "README's topology lacks {line:?}");
    }
}

#[test]
fn clab_lab_sparse_links_health_traffic_cable_events_and_stop_start_with_parking() {
    require_docker();
    let image = TestImage::build("clablab");
    let lab = Lab::new();
    let topology = TOPOLOGY.replace("NAME", &lab.name);
    std::fs::write(lab.topo_file(), topology.replace("IMAGE", &image.tag)).unwrap();
    let park = Netns::new("clablab-park");
    // Deploy: the containers first (CLAB_INTFS counts the links: 2 each), the links after.
    let r1 = lab.deploy(&image, "r1", 2, R1_CONFIG);
    let r2 = lab.deploy(&image, "r2", 2, R2_CONFIG);
    link(&r1, "eth1", &r2, "eth1");
    link(&r1, "eth3", &r2, "eth2");
    lab_is_up(&r1, &r2, "the deploy");
    let logs = r1.logs();
    assert!(logs.contains("TINYLINUX-READY r1"), "the hostname: {logs}");
    let macs = r1.macs();
    assert!(
        macs.contains("eth1=") && macs.contains("eth2=") && macs.contains("eth3="),
        "r1's guest has 3 data ports (eth2 in the gap): {macs}"
    );

    // The cable's far end down (r2's eth2): both guests see that port down, traffic stops...
    r2.ip("link set eth2 down");
    guest_says(&r1, "tinylinux: carrier eth3 down");
    guest_says(&r2, "tinylinux: carrier eth2 down");
    port_is(&r1, "eth3", "down");
    guest_says(&r1, "lt-clablab: ping over eth3 fail");
    // ...and up again.
    r2.ip("link set eth2 up");
    guest_says(&r1, "tinylinux: carrier eth3 up");
    guest_says(&r2, "tinylinux: carrier eth2 up");
    guest_says(&r1, "lt-clablab: ping over eth3 ok");

    // The link deleted (both ends go): absent, the guests' ports down; made again: up.
    r1.ip("link del eth3");
    port_is(&r1, "eth3", "absent");
    port_is(&r2, "eth2", "absent");
    guest_says(&r1, "tinylinux: carrier eth3 down");
    guest_says(&r2, "tinylinux: carrier eth2 down");
    guest_says(&r1, "lt-clablab: ping over eth3 fail");
    link(&r1, "eth3", &r2, "eth2");
    lab_is_up(&r1, &r2, "the link made again");
    for r in [&r1, &r2] {
        assert_eq!(r.status()["restarts"], 0, "{}: no VM restart", r.name);
    }

    // containerlab's stop of r1: its ethN parked in another namespace, the container stopped
    // (exit 0); its start: the container started, ethN moved back into its new namespace and up.
    let before = r1.link("eth3")["eth_ifindex"].clone();
    for eth in ["eth1", "eth3"] {
        r1.ip(&format!("link set {eth} netns {}", park.name));
    }
    must(&format!("docker stop -t 120 {}", r1.name));
    assert_eq!(r1.exit_code(), "0", "{}", r1.logs());
    must(&format!("docker start {}", r1.name));
    for eth in ["eth1", "eth3"] {
        park.ip(&format!("link set {eth} netns {}", r1.pid()));
        r1.ip(&format!("link set {eth} up"));
    }
    lab_is_up(&r1, &r2, "stop and start with parking");
    assert_eq!(r1.macs(), macs, "same MACs after the stop and start");
    println!(
        "r1 eth3 ifindex before {before}, after {}",
        r1.link("eth3")["eth_ifindex"]
    );
    assert_eq!(r2.status()["restarts"], 0, "r2 rode it out");
}
