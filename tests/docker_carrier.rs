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

/// launcher-tinylinux:latest with this build's launcher binary and tinylinux initramfs; the
/// image (and its build folder) removed on drop.
struct Image {
    tag: String,
    dir: std::path::PathBuf,
}

impl Image {
    fn build() -> Self {
        let tag = format!("launcher-tinylinux:lt-carrier-{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("lt-carrier-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(LAUNCHER, dir.join("launcher")).unwrap();
        // The guest's kernel and initramfs go together (the modules match the kernel).
        for f in ["vmlinuz", "initramfs.cpio.gz"] {
            std::fs::copy(tinylinux_dir().join(f), dir.join(f)).unwrap();
        }
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM launcher-tinylinux:latest\nCOPY launcher /usr/local/bin/launcher\n\
             COPY vmlinuz initramfs.cpio.gz /opt/tinylinux/\n",
        )
        .unwrap();
        must(&format!("docker build -q -t {tag} {}", dir.display()));
        Image { tag, dir }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rmi -f {}", self.tag));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A router container removed on drop.
struct Router {
    name: String,
    config: std::path::PathBuf,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f {}", self.name));
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

impl Router {
    fn pid(&self) -> u32 {
        let pid = must(&format!(
            "docker inspect -f '{{{{.State.Pid}}}}' {}",
            self.name
        ));
        pid.trim().parse().unwrap()
    }
    fn logs(&self) -> String {
        must(&format!("docker logs {} 2>&1", self.name))
    }
    fn healthy(&self, within: Duration) {
        wait_for(within, &format!("{} healthy", self.name), || {
            let h = sh(&format!(
                "docker inspect -f '{{{{.State.Health.Status}}}}' {}",
                self.name
            ));
            (String::from_utf8_lossy(&h.stdout).trim() == "healthy").then_some(())
        });
    }
    fn status(&self) -> serde_json::Value {
        let out = must(&format!("docker exec {} launcher status --json", self.name));
        serde_json::from_str(&out).unwrap()
    }
    fn exit_code(&self) -> String {
        let c = must(&format!(
            "docker inspect -f '{{{{.State.ExitCode}}}}' {}",
            self.name
        ));
        c.trim().to_string()
    }
    /// The guest's NIC line (its MACs), the latest boot's.
    fn macs(&self) -> String {
        let logs = self.logs();
        let line = (logs.lines().rev()).find(|l| l.contains("tinylinux: ") && l.contains("NICs:"));
        let line = line.unwrap_or_default();
        line.split("NICs:")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
    /// containerlab's way: a veth made in `peer` (keeping `p1`), its other end moved into the
    /// router's namespace, renamed eth1 and brought up; the peer end addressed.
    fn link(&self, peer: &Netns) {
        let _ = peer.exec("ip link del p1");
        peer.ip("link add p1 type veth peer name lt-carrier-t1");
        peer.ip(&format!("link set lt-carrier-t1 netns {}", self.pid()));
        self.ip("link set lt-carrier-t1 name eth1");
        self.ip("link set eth1 up");
        peer.ip("addr add 192.0.2.1/24 dev p1");
        peer.ip("link set p1 up");
    }
    /// `ip ARGS` in the router's namespace.
    fn ip(&self, args: &str) -> String {
        must(&format!("nsenter -t {} -n ip {args}", self.pid()))
    }
}

/// Healthy, the same MACs as `macs`, eth1 wired and up in status, the guest's port up, pings
/// through eth1 reaching it.
fn back_as_before(r: &Router, peer: &Netns, macs: &str, what: &str) {
    r.healthy(Duration::from_secs(240));
    assert_eq!(r.macs(), macs, "same MACs after {what}");
    let st = wait_for(Duration::from_secs(30), "eth1 up in status", || {
        let st = r.status();
        (st["links"][0]["port_state"] == "up").then_some(st)
    });
    assert_eq!(st["links"][0]["wired"], true, "{what}: {st}");
    wait_for(Duration::from_secs(60), "pings through eth1", || {
        peer.exec("ping -c 1 -W 1 192.0.2.2")
            .status
            .success()
            .then_some(())
    });
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
    let image = Image::build();
    let peer = Netns::new("carrier-dpeer");
    let park = Netns::new("carrier-park");
    let config = std::env::temp_dir().join(format!("lt-carrier-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("startup-config.cfg"),
        "ip addr add 192.0.2.2/24 dev eth1\n",
    )
    .unwrap();
    let r = Router {
        name: format!("lt-carrier-{}", std::process::id()),
        config,
    };
    must(&format!(
        "docker run -d --name {} --hostname rc --cap-add NET_ADMIN --device /dev/net/tun \
         -e CLAB_INTFS=1 -v {}:/config {}",
        r.name,
        r.config.display(),
        image.tag
    ));
    r.link(&peer);
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
    r.link(&peer);
    back_as_before(&r, &peer, &macs, "docker restart");

    // docker kill + docker start: the launcher SIGKILLed (qemu goes with it).
    must(&format!("docker kill {}", r.name));
    must(&format!("docker start {}", r.name));
    r.link(&peer);
    back_as_before(&r, &peer, &macs, "docker kill and start");
}
