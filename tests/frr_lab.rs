//! The Debian 12 + FRR guest (images/debian) end to end, in Docker, wired the containerlab way:
//! two router containers, r1 in user-mode management, r2 in management passthrough, linked by
//! eth1 (a plain link) and eth2 + eth3 (an LACP bond made by cloud-init from the seed's
//! network-config). Each protocol is asserted from the guests' own tools over SSH (password
//! login as the lab user, from the Docker host): vtysh (OSPF, IS-IS, BGP over loopbacks, BFD),
//! lldpcli, /proc/net/bonding. A link cut (eth1 deleted, then re-added) is seen by OSPF and BFD
//! and recovers; `docker stop` powers the guest off through ACPI, exit 0. Prints one benchmark
//! line: cold boot to ready and to each protocol up, and the power-off time.
//! And the seed itself: the launcher's ISO writer, read by the kernel's own isofs.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const IMAGE: &str = "launcher-debian:latest";

/// Root, a Docker engine, the Debian image and an ssh client, or a loud failure saying what is
/// missing.
fn require_lab_tools() {
    require_docker_image(
        IMAGE,
        "scripts/images.sh builds it (images/debian/image.sh)",
    );
    assert!(
        sh("command -v ssh").status.success(),
        "no ssh client (apt-get install openssh-client)"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The seed as cloud-init finds it: the launcher's CD image of `images/debian/seed`, rendered,
/// is an iso9660 volume labelled cidata to blkid (what ds-identify and cloud-init's NoCloud
/// search run). That the guest's real cloud-init reads it (Rock Ridge names `user-data`,
/// `meta-data`, `network-config`) is the lab test's hostname, user and bond. (This host's
/// kernel has no isofs to mount it here; the guest's has.)
#[test]
fn seed_cd_is_a_cidata_iso9660_volume_to_blkid() {
    require_root();
    let dir = std::env::temp_dir().join(format!("lt-debian-seed-{}", std::process::id()));
    let img = dir.join("seed.iso");
    std::fs::create_dir_all(&dir).unwrap();
    let mut v = ::launcher::template::Values::new();
    for (k, val) in [
        ("hostname", "r9"),
        ("username", "admin"),
        ("password", "secret"),
        ("mgmt_ip", "10.0.0.15/24"),
        ("mgmt_gateway", "10.0.0.2"),
    ] {
        v.insert(k, val.into());
    }
    // The templated CD's path in the launcher: the folder rendered, then written.
    let seed = repo().join("images/debian/seed");
    let entries = ::launcher::disks::render::render_tree(&seed, &v).unwrap();
    ::launcher::disks::iso::write_image(&seed, "cidata", &entries, &img).unwrap();
    let probe = must(&format!("blkid -p -o export {}", img.display()));
    let bytes = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(probe.contains("TYPE=iso9660"), "{probe}");
    assert!(probe.to_lowercase().contains("label=cidata"), "{probe}");
    for text in [
        &b"local-hostname: r9"[..],
        b"addresses: [10.0.0.15/24]",
        b"plain_text_passwd: \"secret\"",
    ] {
        let found = bytes.windows(text.len()).any(|w| w == text);
        assert!(found, "{}", String::from_utf8_lossy(text));
    }
}

/// One router container and its files (startup config, seed override).
struct Lab {
    name: String,
    dir: PathBuf,
}

impl Lab {
    fn c(&self, r: &str) -> String {
        format!("{}-{r}", self.name)
    }
    fn pid(&self, r: &str) -> String {
        must(&format!(
            "docker inspect -f '{{{{.State.Pid}}}}' {}",
            self.c(r)
        ))
        .trim()
        .to_string()
    }
    fn ip(&self, r: &str) -> String {
        must(&format!(
            "docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' {}",
            self.c(r)
        ))
        .trim()
        .to_string()
    }
    /// One link the containerlab way: a veth pair in the host, each end moved into a
    /// container and renamed `eth{port}`.
    fn link(&self, port: u32) {
        let (p1, p2) = (self.pid("r1"), self.pid("r2"));
        let (a, b) = (format!("lt-deb{port}a"), format!("lt-deb{port}b"));
        must(&format!(
            "ip link add {a} type veth peer name {b} && ip link set {a} netns {p1} && ip link set {b} netns {p2} \
             && nsenter -t {p1} -n ip link set {a} name eth{port} mtu 9500 up \
             && nsenter -t {p2} -n ip link set {b} name eth{port} mtu 9500 up"
        ));
    }
    /// Runs `cmd` in router `r`'s guest over SSH, as the lab user with the lab password.
    fn ssh(&self, r: &str, cmd: &str) -> Option<String> {
        let out = std::process::Command::new("ssh")
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("admin@{}", self.ip(r)))
            .arg(format!("timeout 120 sh -c {}", shell_quote(cmd)))
            .env("SSH_ASKPASS", self.dir.join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f {} {}", self.c("r1"), self.c("r2")));
        for p in 1..=3 {
            let _ = sh(&format!("ip link del lt-deb{p}a"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// FRR's configuration for router `n` (1 or 2) of the lab: loopback 10.255.0.n, eth1 and
/// bond0 in OSPF (point-to-point, 1 s hellos) and IS-IS, BFD on both, iBGP over loopbacks.
fn frr_conf(n: u32) -> String {
    let peer = 3 - n;
    let mut c = format!(
        "frr defaults traditional\nhostname r{n}\nservice integrated-vtysh-config\n!\n\
         bfd\n profile lab\n  receive-interval 1000\n  transmit-interval 1000\n  detect-multiplier 5\n!\n\
         interface lo\n ip address 10.255.0.{n}/32\n ip ospf area 0\n ip router isis lab\n isis passive\n!\n"
    );
    for (ifname, net) in [("eth1", 1), ("bond0", 2)] {
        c += &format!(
            "interface {ifname}\n ip address 10.{net}.12.{n}/24\n ip ospf area 0\n ip ospf network point-to-point\n \
             ip ospf hello-interval 1\n ip ospf dead-interval 4\n ip ospf bfd\n ip ospf bfd profile lab\n \
             ip router isis lab\n isis network point-to-point\n isis hello-interval 1\n isis bfd\n isis bfd profile lab\n!\n"
        );
    }
    c += &format!(
        "router ospf\n ospf router-id 10.255.0.{n}\n!\n\
         router isis lab\n net 49.0001.0000.0000.000{n}.00\n is-type level-2-only\n!\n\
         router bgp 65000\n bgp router-id 10.255.0.{n}\n no bgp ebgp-requires-policy\n \
         neighbor 10.255.0.{peer} remote-as 65000\n neighbor 10.255.0.{peer} update-source lo\n \
         address-family ipv4 unicast\n  network 10.255.0.{n}/32\n exit-address-family\n!\n"
    );
    c
}

/// The seed for a lab router: the image's user-data and meta-data, and a network-config that
/// adds the LACP bond over eth2 and eth3.
fn seed(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["user-data", "meta-data"] {
        std::fs::copy(repo().join("images/debian/seed").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("network-config"),
        "version: 2\nethernets:\n  eth0:\n    addresses: [{mgmt_ip}]\n    gateway4: {mgmt_gateway}\n  eth2: {}\n  eth3: {}\n\
         bonds:\n  bond0:\n    interfaces: [eth2, eth3]\n    parameters:\n      mode: 802.3ad\n      lacp-rate: fast\n      mii-monitor-interval: 100\n",
    )
    .unwrap();
}

/// What one poll of a guest shows: each protocol's state, from its own tools.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Up {
    ospf: usize,
    isis: usize,
    bgp: bool,
    bfd: usize,
    lldp: usize,
    bond: bool,
}

const PROBE: &str = "echo @@ospf; sudo vtysh -c 'show ip ospf neighbor'; echo @@isis; sudo vtysh -c 'show isis neighbor'; \
     echo @@bgp; sudo vtysh -c 'show bgp summary json'; echo @@bfd; sudo vtysh -c 'show bfd peers brief'; \
     echo @@lldp; sudo lldpcli show neighbors summary; echo @@bond; sudo cat /proc/net/bonding/bond0; echo @@end";

fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("@@{name}\n"))
        .map_or(out.len(), |i| i + name.len() + 3);
    let rest = &out[start..];
    &rest[..rest.find("\n@@").unwrap_or(rest.len())]
}

fn parse(out: &str) -> Up {
    let count = |s: &str, pred: &dyn Fn(&str) -> bool| s.lines().filter(|l| pred(l)).count();
    let bgp: serde_json::Value = serde_json::from_str(section(out, "bgp")).unwrap_or_default();
    let bond = section(out, "bond");
    let aggs: Vec<&str> = bond
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Aggregator ID:"))
        .collect();
    Up {
        ospf: count(section(out, "ospf"), &|l| l.contains("Full/")),
        isis: count(section(out, "isis"), &|l| {
            l.split_whitespace().any(|w| w == "Up")
        }),
        bgp: bgp["ipv4Unicast"]["peers"]["10.255.0.2"]["state"] == "Established"
            || bgp["ipv4Unicast"]["peers"]["10.255.0.1"]["state"] == "Established",
        bfd: count(section(out, "bfd"), &|l| l.contains(" up")),
        lldp: count(section(out, "lldp"), &|l| l.contains("SysName:")),
        // 802.3ad, a partner, and both slaves in the bond's one aggregator (the bond's own
        // line plus one per slave; the kernel shows the LACP details to CAP_NET_ADMIN only).
        bond: bond.contains("802.3ad")
            && !bond.contains("Partner Mac Address: 00:00:00:00:00:00")
            && bond.contains("Partner Mac Address:")
            && aggs.len() == 3
            && aggs.iter().all(|a| *a == aggs[0]),
    }
}

#[test]
fn frr_lab_protocols_come_up_and_survive_a_link_cut() {
    require_lab_tools();
    let lab = Lab {
        name: format!("lt-debian-{}", std::process::id()),
        dir: std::env::temp_dir().join(format!("lt-debian-{}", std::process::id())),
    };
    std::fs::create_dir_all(&lab.dir).unwrap();
    std::fs::write(lab.dir.join("askpass"), "#!/bin/sh\necho admin\n").unwrap();
    must(&format!("chmod 755 {}", lab.dir.join("askpass").display()));
    for n in [1u32, 2] {
        let d = lab.dir.join(format!("r{n}"));
        seed(&d.join("seed"));
        std::fs::write(d.join("startup-config.cfg"), frr_conf(n)).unwrap();
    }
    let t0 = Instant::now();
    for (r, mode) in [
        ("r1", ""),
        (
            "r2",
            "-e CLAB_MGMT_PASSTHROUGH=true -e LAUNCHER_CONFIG=/etc/launcher/passthrough.toml",
        ),
    ] {
        let d = lab.dir.join(r);
        must(&format!(
            "docker run -d --name {} --hostname {r} --cap-add NET_ADMIN --device /dev/net/tun \
             -e CLAB_INTFS=3 {mode} -v {}:/config -v {}:/etc/launcher/seed:ro {IMAGE}",
            lab.c(r),
            d.display(),
            d.join("seed").display()
        ));
    }
    for port in 1..=3 {
        lab.link(port);
    }

    // Ready: cloud-init finished and (r1, user mode) SSH answered through the forward.
    let healthy = |r: &str| {
        sh(&format!("docker exec {} launcher health", lab.c(r)))
            .status
            .success()
    };
    wait_for(Duration::from_secs(1800), "r1 and r2 ready", || {
        std::thread::sleep(Duration::from_secs(2));
        (healthy("r1") && healthy("r2")).then_some(())
    });
    let ready = t0.elapsed();

    // SSH with the lab password from the Docker host, both management modes; the hostname
    // came from the seed's templates.
    for r in ["r1", "r2"] {
        let host = wait_for(Duration::from_secs(300), "SSH login", || {
            std::thread::sleep(Duration::from_secs(2));
            lab.ssh(r, "hostname")
        });
        assert_eq!(host.trim(), r);
    }

    // Each protocol up, timed from the cold start.
    let mut first: [Option<Duration>; 6] = [None; 6];
    let want = Up {
        ospf: 2,
        isis: 2,
        bgp: true,
        bfd: 2,
        lldp: 3,
        bond: true,
    };
    let last = wait_for(Duration::from_secs(600), "every protocol up on r1", || {
        std::thread::sleep(Duration::from_secs(2));
        let up = parse(&lab.ssh("r1", PROBE)?);
        let flags = [
            up.ospf >= want.ospf,
            up.isis >= want.isis,
            up.bgp,
            up.bfd >= want.bfd,
            up.lldp >= want.lldp,
            up.bond,
        ];
        for (f, ok) in first.iter_mut().zip(flags) {
            if ok && f.is_none() {
                *f = Some(t0.elapsed());
            }
        }
        (up == want).then_some(up)
    });
    let r2 = parse(&lab.ssh("r2", PROBE).expect("r2 answers"));
    assert_eq!(r2, last, "r2 sees the same from its side");

    // A link cut: eth1 deleted (both ends), seen by OSPF and BFD; BGP stays up over the bond.
    must(&format!("nsenter -t {} -n ip link del eth1", lab.pid("r1")));
    let cut = Instant::now();
    let down = wait_for(
        Duration::from_secs(120),
        "OSPF and BFD to drop eth1",
        || {
            std::thread::sleep(Duration::from_secs(1));
            let up = parse(&lab.ssh("r1", PROBE)?);
            (up.ospf == 1 && up.bfd == 1).then_some(up)
        },
    );
    let seen = cut.elapsed();
    assert!(down.bgp && down.bond, "{down:?}");
    lab.link(1);
    let back = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "eth1 back in OSPF, IS-IS and BFD",
        || {
            std::thread::sleep(Duration::from_secs(1));
            let up = parse(&lab.ssh("r1", PROBE)?);
            (up.ospf == 2 && up.isis == 2 && up.bfd == 2).then_some(())
        },
    );
    let recovered = back.elapsed();

    // docker stop: ACPI powerdown (systemd shuts down), exit 0 within the shutdown timeout.
    let t = Instant::now();
    must(&format!("docker stop -t 90 {}", lab.c("r1")));
    let off = t.elapsed();
    let code = must(&format!(
        "docker inspect -f '{{{{.State.ExitCode}}}}' {}",
        lab.c("r1")
    ));
    assert_eq!(
        code.trim(),
        "0",
        "{}",
        must(&format!("docker logs {} 2>&1 | tail -40", lab.c("r1")))
    );
    assert!(off < Duration::from_secs(60), "power-off took {off:?}");
    let logs = must(&format!("docker logs {} 2>&1", lab.c("r1")));
    assert!(
        logs.contains("reboot: Power down"),
        "the guest powered itself off"
    );

    let s = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.0}s", d.as_secs_f64()));
    println!(
        "BENCH frr_lab (2 routers, TCG, 1 vCPU each, cold): ready {:.0}s; OSPF Full {}, IS-IS Up {}, BGP Established {}, BFD up {}, LLDP {}, LACP bond {}; \
         link cut seen in {:.1}s, recovered in {:.1}s; docker stop (ACPI) {:.1}s",
        ready.as_secs_f64(),
        s(first[0]),
        s(first[1]),
        s(first[2]),
        s(first[3]),
        s(first[4]),
        s(first[5]),
        seen.as_secs_f64(),
        recovered.as_secs_f64(),
        off.as_secs_f64()
    );
}
