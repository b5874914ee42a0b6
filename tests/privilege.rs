//! Least privilege (issue 16), with real qemu (TCG) and tinylinux: qemu runs as its own user
//! with no capability, no_new_privs and its seccomp filter, across a restart, with a CD image,
//! an overlay and a multi-queue data link that passes traffic; the launcher keeps exactly the
//! capabilities its log line names; a qemu that tries to start a helper is killed by its
//! sandbox; and the same lines in a Docker container run with `--cap-add NET_ADMIN`.

mod common;
use common::*;
use std::collections::HashMap;
use std::time::Duration;

/// The fields of `/proc/PID/status` (or of one thread's), by name.
fn proc_status(path: &str) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn hex(s: &HashMap<String, String>, k: &str) -> u64 {
    u64::from_str_radix(&s[k], 16).unwrap_or_else(|e| panic!("{k} = {:?}: {e}", s[k]))
}

/// The lines printed in the report: Uid, Gid, Groups, the capability sets, NoNewPrivs, Seccomp.
fn cap_lines(s: &HashMap<String, String>) -> String {
    let keys = [
        "Uid",
        "Gid",
        "Groups",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    keys.iter()
        .map(|k| format!("{k}:\t{}", s.get(*k).map(String::as_str).unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// qemu confined: every uid and gid not root, all five capability sets empty, no_new_privs,
/// a seccomp filter (mode 2).
fn assert_confined(s: &HashMap<String, String>) {
    let shown = cap_lines(s);
    for k in ["Uid", "Gid"] {
        assert!(
            s[k].split_whitespace().all(|id| id != "0"),
            "qemu {k} has root in it:\n{shown}"
        );
    }
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(hex(s, k), 0, "qemu {k} is not empty:\n{shown}");
    }
    assert_eq!(s["NoNewPrivs"], "1", "{shown}");
    assert_eq!(s["Seccomp"], "2", "{shown}");
}

fn qemu_pid(ns: &Netns) -> i32 {
    let st = status(ns).expect("status");
    st["qemu_pid"].as_i64().expect("a qemu pid") as i32
}

fn ping(ns: &Netns, addr: &str, within: Duration) {
    ns.wait_ping(addr, within, || "over the data link".into());
}

#[test]
fn qemu_runs_unprivileged_and_the_launcher_keeps_what_it_logs_across_a_restart() {
    let ns = Netns::new("priv-run");
    let d = &ns.dir;
    // A CD image from a folder, and an overlay over a qcow2 image: both qemu's to reach.
    std::fs::create_dir_all(d.join("day0")).unwrap();
    std::fs::write(d.join("day0/config.txt"), "hello\n").unwrap();
    must(&format!(
        "qemu-img create -q -f qcow2 {}/base.qcow2 8M",
        d.display()
    ));
    let sc = d.join("startup-config.cfg");
    std::fs::write(&sc, "ip addr add 192.0.2.2/24 dev eth1\n").unwrap();
    let cfg = tinylinux_config(
        &ns,
        "rp",
        &format!("smp = 2\nstartup_config = \"{}\"", sc.display()),
        &format!(
            "[nics]\nqueues = 2\n[restart]\npolicy = \"on-failure\"\nmax = 1\nbackoff = 1\n\
             [[disk]]\npath = \"{d}/base.qcow2\"\n[[disk]]\npath = \"{d}/day0\"\nformat = \"iso\"\n",
            d = d.display()
        ),
    );
    // Management ports below 1024, which qemu binds itself (slirp's host forwards).
    edit_file(
        &cfg,
        &[("forwards = []", "forwards = [\"tcp:22\", \"tcp:2080:80\"]")],
    );
    ns.ip("link add p1 type veth peer name eth1");
    ns.ip("link set p1 up");
    ns.ip("addr add 192.0.2.1/24 dev p1");
    let mut r = Running::start(&ns, &cfg, &[("CLAB_INTFS", "1")]);
    wait_state(&ns, "ready", Duration::from_secs(150));
    ping(&ns, "192.0.2.2", Duration::from_secs(30));
    let start = ns
        .exec("cat /proc/sys/net/ipv4/ip_unprivileged_port_start")
        .stdout;
    assert_eq!(String::from_utf8_lossy(&start).trim(), "22");
    assert!(
        r.log().any(|e| e.level == "WARN"
            && e.message.contains("ip_unprivileged_port_start")
            && e.field("to") == "22"),
        "{}",
        r.output()
    );

    let pid = qemu_pid(&ns);
    let q = proc_status(&format!("/proc/{pid}/status"));
    println!("qemu (pid {pid}):\n{}", cap_lines(&q));
    assert_confined(&q);
    let uid: u32 = q["Uid"].split_whitespace().next().unwrap().parse().unwrap();
    // What qemu writes is its own; what it reads, its group's.
    let owner = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    let overlay = d.join("state/base-overlay.qcow2");
    assert_eq!(owner(&overlay).0, uid, "{}", overlay.display());
    assert_eq!(owner(&overlay).2, 0o660);
    assert_eq!(owner(&d.join("run")).2, 0o1770);
    assert_eq!(owner(&d.join("run/qmp.sock")).0, uid);

    // The launcher: exactly what its one log line says, in every thread.
    let log = r.log();
    let line = log
        .events
        .iter()
        .find(|e| {
            e.message
                .starts_with("the launcher keeps only these capabilities")
        })
        .unwrap_or_else(|| panic!("no capability line:\n{log}"));
    let eff = u64::from_str_radix(&line.field("effective"), 16).unwrap();
    let bnd = u64::from_str_radix(&line.field("bounding"), 16).unwrap();
    assert_eq!(line.field("kept"), "kill,setgid,setuid,setpcap,net_admin");
    let l = proc_status(&format!("/proc/{}/status", r.pid()));
    println!("launcher (pid {}):\n{}", r.pid(), cap_lines(&l));
    assert_eq!((hex(&l, "CapEff"), hex(&l, "CapPrm")), (eff, eff));
    assert_eq!(hex(&l, "CapBnd"), bnd);
    assert_eq!(
        bnd, eff,
        "every VM is sandboxed: the bounding set is what is kept"
    );
    assert_eq!((hex(&l, "CapInh"), hex(&l, "CapAmb")), (0, 0));
    for t in std::fs::read_dir(format!("/proc/{}/task", r.pid())).unwrap() {
        let t = proc_status(&format!("{}/status", t.unwrap().path().display()));
        assert_eq!(
            hex(&t, "CapEff") & !eff,
            0,
            "a thread holds more:\n{}",
            cap_lines(&t)
        );
        assert_eq!(
            hex(&t, "CapPrm") & !eff,
            0,
            "a thread holds more:\n{}",
            cap_lines(&t)
        );
    }

    // A restart after the drop: spawned as the same user, taps kept, traffic again.
    kill(pid, libc::SIGKILL);
    let st = wait_for(Duration::from_secs(150), "ready after restart", || {
        status(&ns).filter(|s| s["state"] == "ready" && s["restarts"] == 1)
    });
    let again = st["qemu_pid"].as_i64().unwrap() as i32;
    assert_ne!(again, pid);
    assert_confined(&proc_status(&format!("/proc/{again}/status")));
    ping(&ns, "192.0.2.2", Duration::from_secs(30));
    let (code, _) = r.stop(Duration::from_secs(40));
    assert_eq!(code, 0, "{}", r.output());
}

/// A config whose qemu starts a helper process (`-netdev bridge` runs qemu-bridge-helper).
fn spawning_config(ns: &Netns, name: &str, sandbox: bool) -> std::path::PathBuf {
    tinylinux_config(
        ns,
        name,
        &format!(
            "sandbox = {sandbox}\nextra_args = [\"-netdev\", \"bridge,id=helper,br=lt-priv-nobr\"]"
        ),
        "[restart]\npolicy = \"never\"\n",
    )
}

#[test]
fn a_qemu_that_starts_a_helper_is_killed_by_its_sandbox() {
    let ns = Netns::new("priv-spawn");
    let mut r = Running::start(&ns, &spawning_config(&ns, "rs", true), &[]);
    let code = r.wait_exit(Duration::from_secs(60));
    // SIGSYS (31): the seccomp filter killed qemu at its fork.
    assert_eq!(code, Some(128 + libc::SIGSYS), "{}", r.output());
    assert!(
        r.log().transition("failed", "qemu exited with 159"),
        "{}",
        r.output()
    );
    drop(r);
    // Without the sandbox the same qemu runs its helper (which fails on its own: no bridge),
    // and says so, with a warning from the launcher.
    let mut r = Running::start(&ns, &spawning_config(&ns, "ru", false), &[]);
    let code = r.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{}", r.output());
    let log = r.log();
    assert!(
        log.stderr.contains("bridge helper failed")
            || log.lines.iter().any(|l| l.contains("bridge helper failed")),
        "{log}"
    );
    assert!(
        log.any(|e| e.level == "WARN" && e.message.contains("vm.sandbox = false")),
        "{log}"
    );
}

/// The `RUN` instruction of Dockerfile.base that creates qemu's user (with its continuation
/// lines), so the Docker test builds the very recipe the base image uses.
fn user_recipe() -> String {
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile.base")).unwrap();
    let mut out = Vec::new();
    for l in base
        .lines()
        .skip_while(|l| !(l.starts_with("RUN") && l.contains("launcher-qemu")))
    {
        out.push(l);
        if !l.ends_with('\\') {
            break;
        }
    }
    assert!(
        !out.is_empty(),
        "Dockerfile.base creates no launcher-qemu user"
    );
    out.join("\n")
}

/// A host veth end, deleted on drop (with its peer, wherever that is).
struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sh(&format!("ip link del {} 2>/dev/null", self.0));
    }
}

/// A container image and a container named for this helper, removed on drop.
struct Container {
    name: String,
    image: String,
    dir: std::path::PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f {} >/dev/null 2>&1", self.name));
        let _ = sh(&format!("docker rmi -f {} >/dev/null 2>&1", self.image));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn in_docker_with_net_admin_only_qemu_is_confined_and_the_launcher_keeps_what_it_logs() {
    require_docker();
    let id = std::process::id();
    let c = Container {
        name: format!("lt-priv-c{id}"),
        image: format!("lt-priv-img:{id}"),
        dir: std::env::temp_dir().join(format!("lt-priv-docker-{id}")),
    };
    std::fs::create_dir_all(&c.dir).unwrap();
    // The tinylinux image with this build's launcher and the base image's user recipe.
    std::fs::copy(LAUNCHER, c.dir.join("launcher")).unwrap();
    std::fs::write(
        c.dir.join("Dockerfile"),
        format!(
            "FROM launcher-tinylinux:latest\n{}\nCOPY launcher /usr/local/bin/launcher\n",
            // The base image's recipe, run only where the user is missing: a
            // launcher-tinylinux built from the current base has it already.
            user_recipe().replacen("RUN ", "RUN id launcher-qemu >/dev/null 2>&1 || ( ", 1) + " )"
        ),
    )
    .unwrap();
    must(&format!(
        "docker build -q --network none -t {} {} >/dev/null",
        c.image,
        c.dir.display()
    ));
    must(&format!(
        "docker run -d --name {} --cap-add NET_ADMIN --device /dev/net/tun \
         -e CLAB_INTFS=1 -e LAUNCHER_LOG_FORMAT=json {}",
        c.name, c.image
    ));
    // One data link moved in as eth1, the way containerlab does it (the peer goes with the
    // container's namespace when it is removed).
    let pid = must(&format!(
        "docker inspect -f '{{{{.State.Pid}}}}' {}",
        c.name
    ));
    let (a, b) = (format!("lt-priv-a{id}"), format!("lt-priv-b{id}"));
    must(&format!(
        "ip link add {a} type veth peer name {b} && ip link set {b} netns {pid} && \
         nsenter -t {pid} -n ip link set {b} name eth1 up && ip link set {a} up",
        pid = pid.trim()
    ));
    let _veth = Veth(a);
    let exec = |cmd: &str| sh(&format!("docker exec {} {cmd}", c.name));
    wait_for(Duration::from_secs(240), "the container healthy", || {
        exec("launcher health").status.success().then_some(())
    });
    let st: serde_json::Value =
        serde_json::from_slice(&exec("launcher status --json").stdout).unwrap();
    let qemu = st["qemu_pid"].as_i64().expect("qemu pid");
    let read = |pid: i64| {
        let out = exec(&format!("cat /proc/{pid}/status"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect::<HashMap<String, String>>()
    };
    let q = read(qemu);
    let l = read(1);
    println!("in Docker, qemu (pid {qemu}):\n{}", cap_lines(&q));
    println!("in Docker, the launcher (pid 1):\n{}", cap_lines(&l));
    assert_confined(&q);
    assert_eq!(q["Uid"].split_whitespace().next(), Some("64711"));
    let logs = must(&format!("docker logs {} 2>&1", c.name));
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the launcher keeps only these capabilities"))
        })
        .unwrap_or_else(|| panic!("no capability line in docker logs:\n{logs}"));
    println!("{line}");
    let f = &line["fields"];
    assert_eq!(f["kept"], "kill,setgid,setuid,setpcap,net_admin");
    let eff = u64::from_str_radix(f["effective"].as_str().unwrap(), 16).unwrap();
    assert_eq!(
        (hex(&l, "CapEff"), hex(&l, "CapPrm"), hex(&l, "CapBnd")),
        (eff, eff, eff)
    );
    assert!(logs.contains("\"user\":\"launcher-qemu\""), "{logs}");
}
