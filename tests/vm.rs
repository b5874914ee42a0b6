//! The launcher with real qemu (TCG) booting images/tinylinux, each test in its own network
//! namespace: lifecycle and status, ACPI shutdown on SIGTERM (and a guest that ignores it, a
//! second SIGTERM), restart after kill -9, orphan reaping, sixty data NICs, the TCP readiness
//! probe, multi-queue taps, platform files. Interfaces coming and going: tests/vm_links.rs;
//! bad configs: tests/bad_input.rs.

mod common;
use common::*;
use std::time::Duration;

fn state(ns: &Netns) -> Option<String> {
    status(ns).map(|s| s["state"].as_str().unwrap_or_default().to_string())
}

fn pid_alive(pid: i64) -> bool {
    kill(pid as i32, 0)
}

#[test]
fn boots_to_ready_then_sigterm_powers_off_through_acpi() {
    let ns = Netns::new("boot");
    ns.veth_pair("eth1", "p1");
    ns.veth_pair("eth2", "p2");
    let cfg = tinylinux_config(&ns, "r1", "", "");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "2")]);
    // Status answers while booting, then shows running, then ready.
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(90), "ready", || {
        let s = state(&ns)?;
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        (s == "ready").then_some(())
    });
    println!("states seen: {seen:?}");
    assert!(
        seen.iter().any(|s| s == "running" || s == "booting"),
        "no boot state before ready: {seen:?}"
    );
    let st = status(&ns).unwrap();
    assert_eq!(st["healthy"], true);
    assert_eq!(
        st["accel"], "tcg",
        "this machine's KVM is PVM-only: auto must pick TCG"
    );
    let links = st["links"].as_array().unwrap();
    assert_eq!(links.len(), 2);
    assert!(links.iter().all(|l| l["wired"] == true), "{st}");
    assert_eq!(ns.health(), "0 running");
    let health = ns.launcher(&["health"]).output().unwrap();
    assert!(health.status.success());
    let log = r.log();
    assert!(
        log.events
            .iter()
            .filter(|e| e.level == "WARN" && e.message.starts_with("using TCG"))
            .count()
            == 1,
        "one warning line says why TCG:\n{log}"
    );
    // The guest's NICs got the MACs derived from the name, in ethN order.
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(console.contains("TINYLINUX-READY r1"), "{console}");

    let qemu_pid = st["qemu_pid"].as_i64().unwrap();
    let (code, took) = r.stop(Duration::from_secs(30));
    println!("SIGTERM to exit: {took:?}");
    assert_eq!(code, 0, "clean shutdown exits 0\n{}", r.output());
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains("ACPI power button pressed, powering off"),
        "the guest powered off through ACPI:\n{console}"
    );
    assert!(!pid_alive(qemu_pid), "qemu {qemu_pid} is still alive");
    assert!(r.log().has("clean shutdown", &[("vm", "r1")]));
}

#[test]
fn qemu_killed_is_restarted_per_policy_and_then_given_up() {
    let ns = Netns::new("restart");
    let cfg = tinylinux_config(
        &ns,
        "r2",
        "",
        "[restart]\npolicy = \"on-failure\"\nmax = 1\nbackoff = 1\n",
    );
    let mut r = Running::start(&ns, &cfg, &[]);
    let st = wait_state(&ns, "ready", Duration::from_secs(90));
    let first = st["qemu_pid"].as_i64().unwrap();
    kill(first as i32, libc::SIGKILL);
    // Visible in status: restarting, then ready again with restarts = 1 and a new pid.
    let st = wait_for(Duration::from_secs(90), "ready after restart", || {
        status(&ns).filter(|s| s["state"] == "ready" && s["restarts"] == 1)
    });
    let second = st["qemu_pid"].as_i64().unwrap();
    assert_ne!(first, second);
    assert!(
        r.log().transition("restarting", "restart 1/1"),
        "{}",
        r.output()
    );
    // The console log carried on across the restart: two boots in one file.
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert_eq!(console.matches("TINYLINUX-READY").count(), 2, "{console}");
    // Over the limit: the launcher gives up with 128+9 so Docker's restart policy applies.
    kill(second as i32, libc::SIGKILL);
    let code = r.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(137), "{}", r.output());
    assert_eq!(ns.health(), "1 VM failed");
}

#[test]
fn a_hundred_orphaned_grandchildren_are_reaped() {
    let ns = Netns::new("orphans");
    // qemu is started through a wrapper that leaves 100 double-forked (orphaned) children
    // behind, then execs the real qemu. Orphans are re-parented to the launcher.
    let wrapper = ns.dir.join("qemu-wrapper.sh");
    std::fs::write(&wrapper, "#!/bin/sh\ni=0\nwhile [ $i -lt 100 ]; do (sleep 1 &) ; i=$((i+1)); done\nexec qemu-system-x86_64 \"$@\"\n").unwrap();
    must(&format!("chmod +x {}", wrapper.display()));
    let cfg = tinylinux_config(&ns, "r3", &format!("qemu = \"{}\"", wrapper.display()), "");
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_state(&ns, "ready", Duration::from_secs(90));
    let launcher = r.pid();
    // By now every sleep has ended: no zombie child may remain under the launcher.
    let zombies = wait_for(Duration::from_secs(10), "orphans reaped", || {
        let out = must(&format!("ps -o stat=,pid= --ppid {launcher} || true"));
        let z: Vec<String> = out
            .lines()
            .filter(|l| l.trim_start().starts_with('Z'))
            .map(String::from)
            .collect();
        z.is_empty().then_some(z)
    });
    assert!(zombies.is_empty());
    let children = must(&format!("ps -o comm= --ppid {launcher} || true"));
    assert_eq!(
        children.lines().filter(|l| l.contains("sleep")).count(),
        0,
        "{children}"
    );
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}

#[test]
fn a_guest_ignoring_acpi_is_quit_after_the_shutdown_timeout() {
    let ns = Netns::new("noacpi");
    let cfg = tinylinux_config(&ns, "r8", "", "");
    edit_file(
        &cfg,
        &[
            ("tl.hostname=r8", "tl.hostname=r8 tl.acpi=off"),
            ("shutdown_timeout = 20", "shutdown_timeout = 2"),
        ],
    );
    let mut r = Running::start(&ns, &cfg, &[]);
    let st = wait_state(&ns, "ready", Duration::from_secs(90));
    let qemu_pid = st["qemu_pid"].as_i64().unwrap();
    let (code, took) = r.stop(Duration::from_secs(30));
    println!("SIGTERM to exit with a deaf guest: {took:?}");
    assert_eq!(code, 1, "not a clean shutdown: exit 1\n{}", r.output());
    assert!(
        took >= Duration::from_secs(2),
        "waited the shutdown timeout: {took:?}"
    );
    assert!(
        r.log()
            .has("guest did not power off in time: QMP quit", &[]),
        "{}",
        r.output()
    );
    assert!(!pid_alive(qemu_pid));
}

#[test]
fn a_second_sigterm_skips_to_quit() {
    let ns = Netns::new("twice");
    let cfg = tinylinux_config(&ns, "r9", "", "");
    edit_file(
        &cfg,
        &[
            ("tl.hostname=r9", "tl.hostname=r9 tl.acpi=off"),
            ("shutdown_timeout = 20", "shutdown_timeout = 60"),
        ],
    );
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_state(&ns, "ready", Duration::from_secs(90));
    kill(r.pid(), libc::SIGTERM);
    wait_state(&ns, "stopping", Duration::from_secs(5));
    let (code, took) = r.stop(Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(10),
        "the second SIGTERM did not wait for the 60 s timeout: {took:?}"
    );
    assert_eq!(code, 1, "{}", r.output());
    assert!(
        r.log()
            .has("second stop signal: quitting qemu now", &[("vm", "r9")]),
        "{}",
        r.output()
    );
}

#[test]
fn sixty_data_nics_boot_on_pci_bridges() {
    let ns = Netns::new("sixty");
    let mut batch = String::new();
    for i in 1..=60 {
        batch.push_str(&format!("link add p{i} type veth peer name eth{i}\n"));
    }
    std::fs::write(ns.dir.join("batch"), batch).unwrap();
    must(&format!(
        "ip -n {} -batch {}",
        ns.name,
        ns.dir.join("batch").display()
    ));
    let cfg = tinylinux_config(&ns, "r60", "", "");
    edit_file(&cfg, &[("tl.hostname=r60", "tl.hostname=r60 tl.nics=61")]);
    let check = ns
        .launcher(&["check", "--config", cfg.to_str().unwrap()])
        .env("CLAB_INTFS", "60")
        .output()
        .unwrap();
    let argv = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        argv.matches("pci-bridge,").count(),
        3,
        "60 NICs, 26 per bridge: 3 bridges"
    );
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "60")]);
    let st = wait_state(&ns, "ready", Duration::from_secs(180));
    assert!(st["links"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["wired"] == true));
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    let line = console
        .lines()
        .find(|l| l.contains("NICs:"))
        .unwrap_or_default();
    assert!(
        line.contains("tinylinux: 61 NICs:"),
        "the guest sees management + 60 data NICs: {line}"
    );
    assert!(line.contains(&format!("eth60={}", "0c:")), "{line}");
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}

#[test]
fn readiness_waits_for_the_tcp_probe_through_the_management_forward() {
    let ns = Netns::new("tcpready");
    let cfg = tinylinux_config(&ns, "rp", "", "");
    // Container port 8080 forwards to guest port 8081, where nothing listens at boot.
    edit_file(
        &cfg,
        &[
            ("forwards = []", "forwards = [\"tcp:8080:8081\"]"),
            ("[console]", "[console]\nready_tcp = 8080"),
        ],
    );
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_for(Duration::from_secs(90), "the ready marker", || {
        std::fs::read_to_string(ns.dir.join("console.log"))
            .ok()?
            .contains("TINYLINUX-READY")
            .then_some(())
    });
    // slirp accepts every connection on 8080 by itself: the probe must not be fooled.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        state(&ns).as_deref(),
        Some("running"),
        "ready before the port answered"
    );
    // Start a banner service (as SSH is) by hand on the console.
    let _g = ns.enter();
    let mut t = std::net::TcpStream::connect("127.0.0.1:5000").unwrap();
    for line in [
        "admin\r",
        "admin\r",
        "nc -ll -p 8081 -e /bin/echo SSH-2.0-tinylinux &\r",
    ] {
        std::thread::sleep(Duration::from_millis(700));
        std::io::Write::write_all(&mut t, line.as_bytes()).unwrap();
    }
    drop(_g);
    let st = wait_state(&ns, "ready", Duration::from_secs(30));
    assert_eq!(st["reason"], "TCP port 8080 answers", "{st}");
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}

#[test]
fn multi_queue_taps_carry_traffic() {
    let ns = Netns::new("mq");
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(&sc, "ip addr add 192.0.2.2/24 dev eth1\n").unwrap();
    let cfg = tinylinux_config(
        &ns,
        "rq",
        &format!("smp = 2\nstartup_config = \"{}\"", sc.display()),
        "[nics]\nqueues = 2\n",
    );
    ns.ip("link add p1 type veth peer name eth1");
    ns.ip("link set p1 up");
    ns.ip("addr add 192.0.2.1/24 dev p1");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_state(&ns, "ready", Duration::from_secs(120));
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    let line = console
        .lines()
        .find(|l| l.contains("NICs:"))
        .unwrap_or_default();
    assert!(
        line.contains("eth1=")
            && line
                .split_whitespace()
                .any(|w| w.starts_with("eth1=") && w.ends_with("/q2")),
        "eth1 has 2 queues: {line}"
    );
    let queues = ns
        .exec("ls /sys/class/net/tap1/queues | grep -c tx-")
        .stdout;
    assert_eq!(
        String::from_utf8_lossy(&queues).trim(),
        "2",
        "tap1 is multi-queue on the host side"
    );
    ns.wait_ping("192.0.2.2", Duration::from_secs(20), || {
        "over the multi-queue link".into()
    });
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}

#[test]
fn platform_files_reach_the_guest_and_the_nic_offset_holds() {
    let ns = Netns::new("files");
    let tftp = ns.dir.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(tftp.join("license.key"), "LICENSE-4242\n").unwrap();
    // A folder handed over as a read-only FAT disk (the guest's vda, one partition).
    let lic = ns.dir.join("licences");
    std::fs::create_dir_all(&lic).unwrap();
    std::fs::write(lic.join("vmx.lic"), "DISK-LICENCE-77\n").unwrap();
    // And a folder as a CD-ROM (ISO 9660 written by the launcher), on virtio-scsi: sr0.
    let day0 = ns.dir.join("day0");
    std::fs::create_dir_all(&day0).unwrap();
    std::fs::write(day0.join("iosxe_config.txt"), "hostname DAY0-CD-5\n").unwrap();
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(
        &sc,
        "echo DMI $(cat /sys/class/dmi/id/product_name) $(cat /sys/class/dmi/id/product_uuid)\n\
         cd /tmp && tftp -g -r license.key 10.0.0.2 && echo TFTP $(cat license.key)\n\
         mkdir -p /mnt && mount -t vfat -o ro /dev/vda1 /mnt && echo FAT $(cat /mnt/vmx.lic)\n\
         mkdir -p /cd && mount -t iso9660 -o ro /dev/sr0 /cd && echo CD $(cat /cd/iosxe_config.txt)\n",
    )
    .unwrap();
    let cfg = tinylinux_config(
        &ns,
        "rfiles",
        &format!(
            "uuid = \"12345678-9abc-def0-1234-56789abcdef0\"\nsmbios = [\"type=1,product=tinylinux-lab\"]\nstartup_config = \"{}\"",
            sc.display()
        ),
        &format!(
            "[nics]\noffset = 1\n[[disk]]\npath = \"{}\"\nformat = \"fat\"\n[[disk]]\npath = \"{}\"\nformat = \"iso\"\ninterface = \"scsi\"\n",
            lic.display(),
            day0.display()
        ),
    );
    edit_file(
        &cfg,
        &[(
            "forwards = []",
            &format!("forwards = []\ntftp_root = \"{}\"", tftp.display()),
        )],
    );
    ns.ip("link add p1 type veth peer name eth1");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_state(&ns, "ready", Duration::from_secs(90));
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains("DMI tinylinux-lab 12345678-9abc-def0-1234-56789abcdef0"),
        "{console}"
    );
    assert!(console.contains("TFTP LICENSE-4242"), "{console}");
    assert!(console.contains("FAT DISK-LICENCE-77"), "{console}");
    assert!(console.contains("CD hostname DAY0-CD-5"), "{console}");
    // Management, one empty slot, then data NIC 1 (its MAC ends in :00:01) as the guest's eth2.
    let line = console
        .lines()
        .find(|l| l.contains("NICs:"))
        .unwrap_or_default()
        .to_string();
    let eth2 = line
        .split_whitespace()
        .find(|w| w.starts_with("eth2="))
        .unwrap_or_default();
    assert!(
        line.contains("tinylinux: 3 NICs:") && eth2.contains(":00:01/"),
        "{line}"
    );
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0);
}
