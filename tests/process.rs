//! The launcher as an ordinary process (not PID 1), with real qemu (TCG) booting
//! images/tinylinux in a throwaway network namespace: the open-file limit (Docker's and a login
//! shell's soft 1024; a hard limit too small for the NICs asked for), and qemu never outliving
//! the launcher (SIGKILL of the launcher; SIGHUP and SIGQUIT stop it gracefully).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// The limits line of `/proc/PID/limits` for open files: (soft, hard).
fn nofile_of(pid: i64) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[3].to_string(), w[4].to_string())
}

/// Whether `pid` is gone: no such process, or only a zombie left for its new parent to reap.
fn gone(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z'),
    }
}

#[test]
fn a_1024_open_file_limit_starts_qemu_with_its_taps_and_passes_traffic() {
    let ns = Netns::new("nofile");
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(&sc, "ip addr add 192.0.2.2/24 dev eth1\n").unwrap();
    // Two links of two queues: four taps, at 10..13 in qemu. One vCPU: the taps are the point,
    // and a second TCG vCPU only slows the guest on a busy two-core host.
    let cfg = tinylinux_config(
        &ns,
        "rn",
        &format!("startup_config = \"{}\"", sc.display()),
        "[nics]\nqueues = 2\n",
    );
    ns.veth_pair("eth1", "p1");
    ns.veth_pair("eth2", "p2");
    ns.ip("addr add 192.0.2.1/24 dev p1");
    // Soft and hard 1024: nothing to raise, every fd number must stay below 1024.
    let mut r = Running::start_under(
        &ns,
        &cfg,
        &[("CLAB_INTFS", "2")],
        &["prlimit", "--nofile=1024:1024"],
    );
    let st = wait_state(&ns, "ready", Duration::from_secs(120));
    // prlimit execs the launcher: the same pid, under 1024.
    assert_eq!(nofile_of(r.pid().into()), ("1024".into(), "1024".into()));
    let qemu = st["qemu_pid"].as_i64().unwrap();
    for n in 10..14 {
        let target = std::fs::read_link(format!("/proc/{qemu}/fd/{n}"))
            .unwrap_or_else(|e| panic!("qemu has no fd {n}: {e}\n{}", r.output()));
        assert_eq!(target.to_str(), Some("/dev/net/tun"), "fd {n}");
    }
    assert_eq!(nofile_of(qemu), ("1024".into(), "1024".into()));
    ns.wait_ping("192.0.2.2", Duration::from_secs(20), || r.output());
    let (code, _) = r.stop(Duration::from_secs(30));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn a_soft_limit_below_the_hard_one_is_raised_and_logged() {
    let ns = Netns::new("raise");
    let cfg = tinylinux_config(&ns, "rr", "", "");
    // eth1 never comes: the launcher waits for it (no qemu), which is enough to look.
    let mut r = Running::start_under(
        &ns,
        &cfg,
        &[("CLAB_INTFS", "1")],
        &["prlimit", "--nofile=1024:4096"],
    );
    wait_state(&ns, "waiting-for-interfaces", Duration::from_secs(20));
    assert_eq!(nofile_of(r.pid().into()), ("4096".into(), "4096".into()));
    let log = r.log();
    assert!(
        log.has(
            "raised the open-file limit (RLIMIT_NOFILE soft) to the hard limit",
            &[("from", "1024"), ("to", "4096")]
        ),
        "{log}"
    );
    let (code, _) = r.stop(Duration::from_secs(20));
    assert_eq!(code, 0, "{}", r.output());
}

#[test]
fn a_hard_limit_too_small_for_the_nics_exits_2_naming_it_and_touches_nothing() {
    let ns = Netns::new("nofile2");
    // 60 links of 4 queues: 240 taps, under a hard limit of 200.
    let cfg = tinylinux_config(&ns, "rs", "", "[nics]\nqueues = 4\n");
    let mut r = Running::start_under(
        &ns,
        &cfg,
        &[("CLAB_INTFS", "60")],
        &["prlimit", "--nofile=200:200"],
    );
    let code = r.wait_exit(Duration::from_secs(20));
    let log = r.log();
    assert_eq!(code, Some(2), "{log}");
    for part in [
        "RLIMIT_NOFILE) is 200",
        "hard limit 200",
        "240 taps",
        "--ulimit nofile=",
    ] {
        assert!(log.stderr.contains(part), "{part:?} not in: {}", log.stderr);
    }
    let links = ns.ip("-o link show");
    assert_eq!(links.lines().count(), 1, "only lo, no tap: {links}");
    assert!(!ns.dir.join("run").exists(), "no run folder");
    assert!(!ns.dir.join("console.log").exists(), "no console");
}

#[test]
fn a_sigkilled_launcher_takes_its_qemu_along() {
    let ns = Netns::new("pdeath");
    let cfg = tinylinux_config(&ns, "rk", "", "");
    let mut r = Running::start(&ns, &cfg, &[]);
    let st = wait_for(Duration::from_secs(60), "qemu running", || {
        status(&ns).filter(|s| s["state"] == "running" || s["state"] == "ready")
    });
    let qemu = st["qemu_pid"].as_i64().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{qemu}/cmdline")).unwrap();
    assert!(cmdline.contains("qemu-system"), "{cmdline}");
    assert!(kill(r.pid(), libc::SIGKILL));
    assert_eq!(
        r.wait_exit(Duration::from_secs(10)),
        None,
        "killed by a signal"
    );
    let t = Instant::now();
    while !gone(qemu) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "qemu {qemu} outlived its SIGKILLed launcher"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("qemu gone {:?} after the launcher", t.elapsed());
}

/// `sig` to a ready launcher: the ACPI powerdown path, exit 0.
fn stops_gracefully_on(sig: i32, name: &str) {
    let ns = Netns::new(&format!("sig{sig}"));
    let cfg = tinylinux_config(&ns, "rg", "", "");
    let mut r = Running::start(&ns, &cfg, &[]);
    let st = wait_state(&ns, "ready", Duration::from_secs(90));
    let qemu = st["qemu_pid"].as_i64().unwrap();
    assert!(kill(r.pid(), sig));
    let code = r.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{name}: a clean shutdown\n{}", r.output());
    let log = r.log();
    assert!(log.has("stop signal", &[("signal", name)]), "{log}");
    assert!(log.has("clean shutdown", &[("vm", "rg")]), "{log}");
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains("ACPI power button pressed, powering off"),
        "the guest powered off through ACPI:\n{console}"
    );
    assert!(gone(qemu), "qemu {qemu} is still alive");
}

#[test]
fn sighup_powers_off_gracefully_like_sigterm() {
    stops_gracefully_on(libc::SIGHUP, "SIGHUP");
}

#[test]
fn sigquit_powers_off_gracefully_like_sigterm() {
    stops_gracefully_on(libc::SIGQUIT, "SIGQUIT");
}
