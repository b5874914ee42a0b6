//! Console and bootstrap on real qemu + tinylinux: the bootstrap logs in and applies a startup
//! config over the console while a human types on telnet; readiness waits for it; telnet (two
//! clients) and `launcher console` see the same output; a bootstrap time-out takes its action;
//! the console log rotates at its size and status says where it is.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Log in, set the host name, send the startup config line by line, check both took.
const AFTER_LOGIN: &str = r##"  { send = "hostname {hostname}" },
  { expect = "# ", timeout = 10 },
  { send_config = "# ", timeout = 10 },
  { send = "echo CHECK-$(hostname)-$(ip -o addr show dev lo | grep -c 198.51.100.7)" },
  { expect = "CHECK-r-sc-1", timeout = 10 },"##;

/// A telnet client inside the namespace, collecting what it reads on a thread.
struct Telnet {
    stream: TcpStream,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Telnet {
    fn connect(ns: &Netns) -> Self {
        let _g = ns.enter();
        let stream = wait_for(Duration::from_secs(10), "telnet port", || {
            TcpStream::connect("127.0.0.1:5000").ok()
        });
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut r, s2) = (stream.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Telnet { stream, seen }
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

#[test]
fn bootstrap_logs_in_and_applies_the_startup_config_while_a_human_types() {
    let ns = Netns::new("boot");
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(&sc, "hostname r-sc\nip addr add 198.51.100.7/32 dev lo\n").unwrap();
    let cfg = tinylinux_config(
        &ns,
        "rb",
        &format!("startup_config = \"{}\"", sc.display()),
        &login_bootstrap("bootstrap", AFTER_LOGIN),
    );
    let mut l = Running::start(&ns, &cfg, &[]);
    // A human on telnet types all through the bootstrap.
    let mut human = Telnet::connect(&ns);
    let t = Instant::now();
    let mut states = Vec::new();
    while t.elapsed() < Duration::from_secs(90) {
        let _ = human.stream.write_all(b"HUMAN-NOISE-xyz\r");
        if let Some(s) = status(&ns) {
            let st = s["state"].as_str().unwrap().to_string();
            if states.last() != Some(&st) {
                states.push(st.clone());
            }
            if st == "ready" {
                assert_eq!(s["reason"], "bootstrap finished", "{s}");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("states: {states:?}");
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap_or_default();
    assert_eq!(
        states.last().map(String::as_str),
        Some("ready"),
        "{}\nconsole.log:\n{console:?}",
        l.output()
    );
    assert!(
        states.iter().any(|s| s == "running"),
        "running came before ready: {states:?}"
    );
    let console = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        console.contains("CHECK-r-sc-1"),
        "startup config applied over the console:\n{console}"
    );
    // Human input reached the VM only after the bootstrap's last step, never during it.
    let done_at = console.find("CHECK-r-sc-1").unwrap();
    if let Some(noise_at) = console.find("HUMAN-NOISE") {
        assert!(
            noise_at > done_at,
            "human input reached the VM during the bootstrap:\n{console}"
        );
    }
    // Readers saw everything meanwhile.
    assert!(human.text().contains("CHECK-r-sc-1"));
    // After the bootstrap, the human may type.
    human.stream.write_all(b"echo HUMAN-$((40+2))\r").unwrap();
    wait_for(Duration::from_secs(10), "human command echoed", || {
        human.text().contains("HUMAN-42").then_some(())
    });
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}

#[test]
fn telnet_clients_and_launcher_console_see_the_same_output() {
    let ns = Netns::new("tel");
    let cfg = tinylinux_config(&ns, "rt", "", "");
    let mut l = Running::start(&ns, &cfg, &[]);
    wait_for(Duration::from_secs(90), "ready", || {
        status(&ns).filter(|s| s["state"] == "ready")
    });
    let mut a = Telnet::connect(&ns);
    let b = Telnet::connect(&ns);
    // Both got the recent history on attach (the login prompt).
    wait_for(Duration::from_secs(5), "history", || {
        (a.text().contains("login:") && b.text().contains("login:")).then_some(())
    });
    let mut console: Child = ns
        .launcher(&["console"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cin = console.stdin.take().unwrap();
    let mut cout = console.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = cout.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Log in through telnet client a; everyone sees the shell's answer.
    a.stream.write_all(b"admin\r").unwrap();
    wait_for(Duration::from_secs(10), "password prompt", || {
        a.text().contains("Password").then_some(())
    });
    a.stream.write_all(b"admin\r").unwrap();
    wait_for(Duration::from_secs(10), "shell prompt", || {
        a.text().contains("rt# ").then_some(())
    });
    // Then type through `launcher console`.
    cin.write_all(b"echo MARK-$((6*7))\r").unwrap();
    let marked = |t: &str| t.contains("MARK-42");
    wait_for(
        Duration::from_secs(10),
        "all clients see the output",
        || {
            let c = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
            (marked(&a.text()) && marked(&b.text()) && marked(&c)).then_some(())
        },
    );
    // Ctrl-] detaches `launcher console` with exit 0.
    cin.write_all(&[0x1d]).unwrap();
    let st = wait_for(Duration::from_secs(5), "console detach", || {
        console.try_wait().unwrap()
    });
    assert!(st.success());
    let log = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(log.contains("MARK-42"));
    assert!(
        l.log().has_line("console: MARK-42"),
        "docker logs get console lines too"
    );
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}

#[test]
fn a_bootstrap_that_times_out_takes_its_configured_action() {
    // retry twice, then give up: exit 1, no qemu restart.
    let ns = Netns::new("btime");
    let cfg = tinylinux_config(
        &ns,
        "rf",
        "",
        "[bootstrap]\non_timeout = \"retry\"\nattempts = 2\nsteps = [{ expect = \"NEVER-SHOWS\", timeout = 2 }]\n",
    );
    let mut l = Running::start(&ns, &cfg, &[]);
    let code = l.wait_exit(Duration::from_secs(90));
    let out = l.log();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.any(|e| e.message == "bootstrap: retrying from the first step"
            && e.field("error").ends_with("on attempt 1")),
        "{out}"
    );
    assert!(
        out.any(|e| e.message == "bootstrap failed"
            && e.field("error")
                .ends_with("timed out after 2s on attempt 2")),
        "{out}"
    );
    assert!(
        !out.transition("restarting", ""),
        "fail does not restart qemu: {out}"
    );
    assert_eq!(ns.health(), "1 VM failed");
    drop(l);

    // restart: qemu is restarted per the restart policy.
    let ns = Netns::new("brest");
    let cfg = tinylinux_config(
        &ns,
        "rr",
        "",
        "[bootstrap]\non_timeout = \"restart\"\nsteps = [{ expect = \"NEVER-SHOWS\", timeout = 2 }]\n[restart]\nmax = 1\nbackoff = 0\n",
    );
    let mut l = Running::start(&ns, &cfg, &[]);
    let code = l.wait_exit(Duration::from_secs(120));
    let out = l.log();
    assert!(out.transition("restarting", "restart 1/1"), "{out}");
    // The launcher killed qemu itself: 1, not its SIGKILL's 137.
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn extra_serial_ports_have_their_own_log_and_telnet_port() {
    let ns = Netns::new("serials");
    let cfg = tinylinux_config(&ns, "rs", "", "");
    edit_file(
        &cfg,
        &[
            ("tl.hostname=rs", "tl.hostname=rs tl.serials=3"),
            ("[console]", "[console]\nextra_serials = 3"),
        ],
    );
    let mut l = Running::start(&ns, &cfg, &[]);
    wait_for(Duration::from_secs(90), "ready", || {
        status(&ns).filter(|s| s["state"] == "ready")
    });
    for n in 1..=3u16 {
        let _g = ns.enter();
        let mut t = TcpStream::connect(("127.0.0.1", 5000 + n)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let want = format!("hello on ttyS{n}");
        while !String::from_utf8_lossy(&got).contains(&want) {
            let k = t.read(&mut buf).expect("telnet read");
            assert!(k > 0, "ttyS{n} telnet closed");
            got.extend_from_slice(&buf[..k]);
        }
        let log = std::fs::read_to_string(ns.dir.join(format!("console.ttyS{n}.log"))).unwrap();
        assert!(log.contains(&want), "{log}");
    }
    assert!(l.log().has_line("ttyS2: tinylinux: hello on ttyS2"));
    let main_log = std::fs::read_to_string(ns.dir.join("console.log")).unwrap();
    assert!(
        !main_log.contains("hello on ttyS1"),
        "ttyS1 output stays off the main console"
    );
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}

#[test]
fn console_logs_rotate_at_their_size_and_status_shows_where_they_are() {
    let ns = Netns::new("logrot");
    let cfg = tinylinux_config(&ns, "rl", "", "");
    edit_file(
        &cfg,
        &[("[console]", "[console]\nlog_max_size = 4096\nlog_keep = 2")],
    );
    let mut l = Running::start(&ns, &cfg, &[]);
    let st = wait_for(Duration::from_secs(90), "ready", || {
        status(&ns).filter(|s| s["state"] == "ready")
    });
    let log = ns.dir.join("console.log");
    // The kernel's boot messages alone are well past 4 KiB.
    assert!(
        ns.dir.join("console.log.1").exists(),
        "console.log.1 after boot"
    );
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size <= 4096, "console.log is {size} bytes");
    let mut logs: Vec<String> = std::fs::read_dir(&ns.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("console.log"))
        .collect();
    logs.sort();
    assert_eq!(logs, ["console.log", "console.log.1", "console.log.2"]);
    for n in &logs {
        let len = std::fs::metadata(ns.dir.join(n)).unwrap().len();
        assert!(len <= 4096, "{n} is {len} bytes");
    }
    // The newest output (the ready line) is in console.log or just rotated out of it.
    let newest = [ns.dir.join("console.log.1"), log.clone()]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(newest.contains("TINYLINUX-READY"), "{newest}");
    let path = log.display().to_string();
    assert_eq!(st["vms"][0]["logs"][0], path.as_str(), "{st}");
    let human = ns.launcher(&["status"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(human.contains(&format!("logs: {path}\n")), "{human}");
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}

/// The launcher's resident memory in KiB (VmRSS of /proc/PID/status).
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_telnet_flood_towards_a_guest_that_does_not_read_leaves_the_launcher_bounded() {
    // The misbehaving part is the point: qemu is stopped (SIGSTOP), so nothing reads the serial
    // socket, while a telnet client (no login on port 5000) sends up to 50 MB.
    let ns = Netns::new("flood");
    let cfg = tinylinux_config(&ns, "rfl", "", "");
    let mut l = Running::start(&ns, &cfg, &[]);
    let s = wait_state(&ns, "ready", Duration::from_secs(90));
    let qemu = i32::try_from(s["qemu_pid"].as_i64().expect("qemu_pid")).unwrap();
    let before = rss_kib(l.pid());
    assert!(kill(qemu, libc::SIGSTOP));
    let mut t = Telnet::connect(&ns);
    t.stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let (mut sent, start) = (0usize, Instant::now());
    while sent < 50 << 20 && start.elapsed() < Duration::from_secs(60) {
        match t.stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // the launcher stopped reading us: backpressure
        }
    }
    let answered = status(&ns);
    let after = rss_kib(l.pid());
    println!(
        "sent {} KiB; launcher VmRSS {before} -> {after} KiB",
        sent >> 10
    );
    kill(qemu, libc::SIGCONT);
    drop(t);
    assert!(
        answered.is_some(),
        "launcher status answers during the flood"
    );
    assert!(
        after < before + 16 * 1024,
        "VmRSS grew from {before} to {after} KiB after {} KiB sent",
        sent >> 10
    );
    assert!(sent < 50 << 20, "the launcher read all 50 MB");
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}

/// The launcher's CPU time so far, in clock ticks (utime + stime of /proc/PID/stat).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Sets `pid`'s RLIMIT_NOFILE soft limit; returns the previous limits.
fn set_nofile(pid: i32, soft: Option<u64>, restore: Option<libc::rlimit>) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `old` is a valid rlimit for the kernel to fill.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit read");
    let new = match (soft, restore) {
        (_, Some(r)) => r,
        (Some(s), None) => libc::rlimit {
            rlim_cur: s,
            rlim_max: old.rlim_max,
        },
        (None, None) => return old,
    };
    // SAFETY: `new` is a valid rlimit; a null old limit is allowed.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit set");
    old
}

#[test]
fn accept_errors_back_off_instead_of_spinning() {
    // No fd left (RLIMIT_NOFILE lowered under the launcher's feet): every accept fails with
    // EMFILE while telnet and control clients wait in the backlog.
    let ns = Netns::new("emfile");
    let cfg = tinylinux_config(&ns, "rem", "", "");
    let mut l = Running::start(&ns, &cfg, &[]);
    wait_state(&ns, "ready", Duration::from_secs(90));
    let pid = l.pid();
    let old = set_nofile(pid, Some(3), None);
    let clients: Vec<TcpStream> = {
        let _g = ns.enter();
        (0..4)
            .map(|_| TcpStream::connect("127.0.0.1:5000").unwrap())
            .collect()
    };
    let ctl = std::os::unix::net::UnixStream::connect(ns.dir.join("control.sock")).unwrap();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    set_nofile(pid, None, Some(old));
    drop((clients, ctl));
    let failed = |m: &str| l.log().events.iter().filter(|e| e.message == m).count();
    let (telnet, control) = (
        failed("telnet console: accept failed"),
        failed("control socket cannot accept"),
    );
    println!("3 s of EMFILE: {used} ticks, {telnet} telnet and {control} control accept failures");
    assert!(telnet >= 1 && control >= 1, "{}", l.output());
    assert!(
        telnet <= 20 && control <= 20,
        "accept retried without backing off"
    );
    assert!(
        used < 50,
        "{used} clock ticks of CPU in 3 s: the accept loops spin"
    );
    // With fds again, the launcher serves as before.
    wait_for(Duration::from_secs(10), "status after EMFILE", || {
        status(&ns)
    });
    assert_eq!(l.stop(Duration::from_secs(30)).0, 0);
}
