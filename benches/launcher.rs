//! Benchmarks that print figures (not timed tests). Run as root: `cargo bench --bench launcher`.
//! - wiring N = 1, 8, 64, 128 interfaces: `launcher wire` against the same work done with
//!   `ip`/`tc` commands per interface (vrnetlab's tc-tap-ifup way), same run, ratio printed;
//! - the event path (benches/event_path): a new link's RTM_NEWLINK as our own listener
//!   receives it -> both filters read back, one link at a time and 64 at once (no qemu);
//!   `cargo bench --bench launcher -- event-path` runs only this;
//! - latency from an interface appearing to it being wired (launcher run, real qemu);
//! - launcher RSS and idle wake-ups while a VM runs; `launcher run` to qemu exec;
//!   SIGTERM-to-exit beyond qemu's own exit.

mod event_path;

use lab::*;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

/// The few helpers this bench needs, kept here (the root tests' `tests/common` is theirs): a
/// throwaway namespace, shell commands, `launcher status`, a tinylinux config.
mod lab {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::{Duration, Instant};

    pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");

    pub fn require_root() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the bench needs root (network namespaces, tc, taps)"
        );
    }

    /// Runs a shell command and panics with its output when it fails.
    pub fn must(cmd: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
        assert!(
            out.status.success(),
            "{cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f` returns Some, or panics after `timeout` with `what`.
    pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A throwaway network namespace with a temp dir, both removed on drop.
    pub struct Netns {
        pub name: String,
        pub dir: PathBuf,
    }

    impl Netns {
        pub fn new(tag: &str) -> Self {
            static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("lb-{tag}-{}-{seq}", std::process::id());
            must(&format!("ip netns add {name}"));
            must(&format!("ip -n {name} link set lo up"));
            let dir = std::env::temp_dir().join(&name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Netns { name, dir }
        }
        pub fn ip(&self, args: &str) -> String {
            must(&format!("ip -n {} {args}", self.name))
        }
        /// The launcher inside the namespace, its control socket in the temp dir.
        pub fn launcher(&self, args: &[&str]) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.name, LAUNCHER]).args(args);
            c.env("LAUNCHER_SOCKET", self.dir.join("control.sock"));
            c
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = must(&format!(
                "ip netns pids {} | xargs -r kill -9; ip netns del {}; true",
                self.name, self.name
            ));
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// `launcher status --json`, parsed; None while it does not answer.
    pub fn status(ns: &Netns) -> Option<serde_json::Value> {
        let out = ns.launcher(&["status", "--json"]).output().ok()?;
        out.status.success().then_some(())?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// A tinylinux launcher.toml (images/tinylinux/build) with every path in `ns.dir`.
    pub fn tinylinux_config(ns: &Netns, name: &str, vm_extra: &str) -> PathBuf {
        let b = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tinylinux/build");
        assert!(
            b.join("vmlinuz").exists(),
            "run images/tinylinux/build.sh first"
        );
        let d = ns.dir.display();
        let text = format!(
            "[vm]\nname = \"{name}\"\nmachine = \"q35\"\nmemory = 256\nshutdown_timeout = 20\n\
             boot_timeout = 120\n{vm_extra}\n[kernel]\npath = \"{k}\"\ninitrd = \"{i}\"\n\
             append = \"console=ttyS0 panic=-1 tl.mgmt=user tl.hostname={name}\"\n\
             [management]\nforwards = []\n[console]\nready_pattern = \"TINYLINUX-READY\"\n\
             log = \"{d}/console.log\"\n[paths]\nrun_dir = \"{d}/run\"\n\
             state_dir = \"{d}/state\"\nhealth_file = \"{d}/health\"\n",
            k = b.join("vmlinuz").display(),
            i = b.join("initramfs.cpio.gz").display(),
        );
        let p = ns.dir.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn wiring(n: usize) -> (f64, f64) {
    let mut launcher_ms = Vec::new();
    let mut tc_ms = Vec::new();
    for _ in 0..3 {
        // Ours: one `launcher wire` for all N pairs (taps made beforehand, as for the baseline).
        let ns = Netns::new("benchw");
        let mut batch = String::new();
        for i in 1..=n {
            batch.push_str(&format!(
                "link add p{i} type veth peer name eth{i}\ntuntap add dev tap{i} mode tap\n"
            ));
        }
        std::fs::write(ns.dir.join("batch"), &batch).unwrap();
        must(&format!(
            "ip -n {} -batch {}",
            ns.name,
            ns.dir.join("batch").display()
        ));
        let pairs: Vec<String> = (1..=n).map(|i| format!("eth{i}=tap{i}")).collect();
        let mut args = vec!["wire"];
        args.extend(pairs.iter().map(|s| s.as_str()));
        let t = Instant::now();
        let out = ns.launcher(&args).output().unwrap();
        launcher_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(ns);

        // Baseline: per interface, what vrnetlab's tc-tap-ifup runs.
        let ns = Netns::new("benchb");
        must(&format!("ip -n {} -batch {}", ns.name, {
            let p = ns.dir.join("batch");
            std::fs::write(&p, &batch).unwrap();
            p.display().to_string()
        }));
        let t = Instant::now();
        for i in 1..=n {
            for cmd in [
                format!("ip link set tap{i} up"),
                format!("ip link set eth{i} up"),
                format!("tc qdisc add dev eth{i} ingress"),
                format!("tc filter add dev eth{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev tap{i}"),
                format!("tc qdisc add dev tap{i} ingress"),
                format!("tc filter add dev tap{i} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev eth{i}"),
            ] {
                let st = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns.name])
                    .args(cmd.split_whitespace())
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "{cmd}");
            }
        }
        tc_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (median(launcher_ms), median(tc_ms))
}

/// The launcher's JSON log lines (LAUNCHER_LOG_FORMAT=json) whose message is `message`.
fn events(log: &std::path::Path, message: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["message"] == message)
        .collect()
}

/// An event's time ("2026-11-21T10:06:08.412143Z") in seconds since the epoch.
fn log_time(event: &serde_json::Value) -> Option<f64> {
    let ts = event["timestamp"].as_str()?;
    let out = must(&format!("date -d {ts} +%s.%N"));
    out.trim().parse().ok()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn proc_field(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    require_root();
    println!("== the event path: link appears -> wired, in the launcher's link watcher ==");
    {
        let ns = Netns::new("carrier-events");
        event_path::run(&ns.name);
    }
    if std::env::args().any(|a| a == "event-path") {
        return;
    }
    println!("== wiring: launcher wire (one process, netlink) vs ip/tc commands per interface ==");
    println!(
        "{:>5} {:>14} {:>14} {:>8}",
        "N", "launcher ms", "ip/tc ms", "ratio"
    );
    for n in [1, 8, 64, 128] {
        let (l, t) = wiring(n);
        println!("{n:>5} {l:>14.2} {t:>14.2} {:>7.1}x", t / l);
    }

    println!("== a VM running: tinylinux under TCG, 1 data link ==");
    let ns = Netns::new("benchvm");
    let stamp = ns.dir.join("qemu-exec-time");
    let wrapper = ns.dir.join("qemu.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ndate +%s.%N > {}\nexec qemu-system-x86_64 \"$@\"\n",
            stamp.display()
        ),
    )
    .unwrap();
    must(&format!("chmod +x {}", wrapper.display()));
    // qemu runs as the unprivileged qemu user (the sandbox): the stamp is made writable for it.
    std::fs::write(&stamp, "").unwrap();
    must(&format!("chmod 0666 {}", stamp.display()));
    ns.ip("link add p1 type veth peer name eth1");
    let cfg = tinylinux_config(&ns, "bench", &format!("qemu = \"{}\"", wrapper.display()));
    let log = ns.dir.join("out.log");
    let t0 = now();
    let mut child = ns
        .launcher(&["run", "--config", cfg.to_str().unwrap()])
        .env("CLAB_INTFS", "1")
        .env("LAUNCHER_LOG_FORMAT", "json")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for(Duration::from_secs(90), "ready", || {
        status(&ns).filter(|s| s["state"] == "ready")
    });
    let exec_at: f64 = std::fs::read_to_string(&stamp)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    println!(
        "launcher run -> qemu exec (interfaces already there): {:.1} ms (includes `ip netns exec`)",
        (exec_at - t0) * 1e3
    );
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "launcher RSS while the VM runs: {:.1} MiB (VmHWM {:.1} MiB)",
        proc_field(pid, "VmRSS:") as f64 / 1024.0,
        proc_field(pid, "VmHWM:") as f64 / 1024.0
    );
    let cs = |p| {
        proc_field(p, "voluntary_ctxt_switches:") + proc_field(p, "nonvoluntary_ctxt_switches:")
    };
    // Idle: nobody asks for status; the guest prints nothing.
    let before = cs(pid);
    std::thread::sleep(Duration::from_secs(10));
    let after = cs(pid);
    println!(
        "launcher wake-ups while idle: {:.2} per second (context switches over 10 s)",
        (after - before) as f64 / 10.0
    );

    // Latency from an interface appearing to it being wired: delete and re-create eth1.
    let mut lat = Vec::new();
    for _ in 0..20 {
        ns.ip("link del p1");
        std::thread::sleep(Duration::from_millis(50));
        let before = events(&log, "wired").len();
        let t = now();
        ns.ip("link add p1 type veth peer name eth1");
        let wired = wait_for(Duration::from_secs(5), "wired", || {
            let w = events(&log, "wired");
            (w.len() > before).then(|| w.last().unwrap().clone())
        });
        lat.push((log_time(&wired).unwrap() - t) * 1e3);
    }
    let mut sorted = lat.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "interface appears -> wired (incl. the `ip link add` process): median {:.2} ms, min {:.2} ms, max {:.2} ms over 20",
        median(lat),
        sorted[0],
        sorted[19]
    );

    // SAFETY: kill takes no pointers; `pid` is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let exited = now();
    let qemu_exit = events(&log, "qemu exited")
        .first()
        .and_then(log_time)
        .unwrap();
    println!(
        "SIGTERM -> launcher exit beyond qemu's own exit: {:.1} ms (exit code {:?})",
        (exited - qemu_exit) * 1e3,
        st.code()
    );
}
