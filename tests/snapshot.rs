//! Fast start with real qemu (TCG) and tinylinux: a node saved and restored in fresh network
//! namespaces (a restored pair of routers pings across the datapath), a snapshot that does not
//! fit refused with the reason (cold boot, or a failure by policy), and in Docker the way
//! containerlab drives it: `touch /snapshot-save` (refused cleanly while booting), `docker cp`,
//! a new container with the file mounted at /snapshot.tar and RESTORE_SNAPSHOT=1; and suspend on
//! `docker stop`, resume on `docker start`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Links `eth` in `a` and `eth` in `b` back to back, as containerlab does.
fn link(a: &Netns, b: &Netns, eth: &str) {
    let (ta, tb) = (format!("sa-{eth}"), format!("sb-{eth}"));
    must(&format!(
        "ip link add {ta} netns {} type veth peer name {tb} netns {}",
        a.name, b.name
    ));
    a.ip(&format!("link set {ta} name {eth}"));
    b.ip(&format!("link set {tb} name {eth}"));
    a.ip(&format!("link set {eth} up"));
    b.ip(&format!("link set {eth} up"));
}

/// `launcher snapshot save FILE` against the launcher in `ns`; its output and success.
fn save(ns: &Netns, file: &Path) -> (bool, String) {
    let out = ns
        .launcher(&["snapshot", "save", file.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A tinylinux router `name` at `ip` on eth1 that pings `peer` once a second forever, printing
/// PAIR-PING-OK on its console each time an answer came.
fn pair_router(ns: &Netns, name: &str, ip: &str, peer: &str) -> PathBuf {
    let sc = ns.dir.join("startup-config.cfg");
    std::fs::write(
        &sc,
        format!(
            "ip addr add {ip}/24 dev eth1\n(while :; do ping -c 1 -W 1 {peer} >/dev/null && echo PAIR-PING-OK; sleep 1; done) &\n"
        ),
    )
    .unwrap();
    tinylinux_config(
        ns,
        name,
        &format!("startup_config = \"{}\"", sc.display()),
        "",
    )
}

fn console(ns: &Netns) -> String {
    std::fs::read_to_string(ns.dir.join("console.log")).unwrap_or_default()
}

#[test]
fn a_saved_pair_restores_in_new_namespaces_and_pings_across_the_datapath() {
    let (a, b) = (Netns::new("snapshot-a"), Netns::new("snapshot-b"));
    link(&a, &b, "eth1");
    let env = [("CLAB_INTFS", "1")];
    let (ca, cb) = (
        pair_router(&a, "r1", "192.0.2.1", "192.0.2.2"),
        pair_router(&b, "r2", "192.0.2.2", "192.0.2.1"),
    );
    let mut ra = Running::start(&a, &ca, &env);
    let mut rb = Running::start(&b, &cb, &env);
    wait_state(&a, "ready", Duration::from_secs(180));
    wait_state(&b, "ready", Duration::from_secs(180));
    wait_for(
        Duration::from_secs(60),
        "r1 pings r2 before the save",
        || console(&a).contains("PAIR-PING-OK").then_some(()),
    );
    let (fa, fb) = (a.dir.join("r1.tar"), b.dir.join("r2.tar"));
    let (ok, out) = save(&a, &fa);
    assert!(
        ok && out.contains("Snapshot saved to"),
        "{out}\n{}",
        ra.output()
    );
    let (ok, out) = save(&b, &fb);
    assert!(ok, "{out}");
    // Saving paused the guest only briefly and resumed it: still ready.
    assert_eq!(status(&a).unwrap()["state"], "ready");
    assert!(
        ra.log()
            .has(&format!("Snapshot saved to {}", fa.display()), &[]),
        "{}",
        ra.output()
    );
    assert_eq!(ra.stop(Duration::from_secs(60)).0, 0, "{}", ra.output());
    assert_eq!(rb.stop(Duration::from_secs(60)).0, 0, "{}", rb.output());

    // New namespaces, new links, new taps: restored, not booted.
    let (a2, b2) = (Netns::new("snapshot-a2"), Netns::new("snapshot-b2"));
    link(&a2, &b2, "eth1");
    let (ca2, cb2) = (
        pair_router(&a2, "r1", "192.0.2.1", "192.0.2.2"),
        pair_router(&b2, "r2", "192.0.2.2", "192.0.2.1"),
    );
    let t0 = Instant::now();
    let mut ra2 = Running::start(
        &a2,
        &ca2,
        &[
            ("CLAB_INTFS", "1"),
            ("LAUNCHER_RESTORE", fa.to_str().unwrap()),
        ],
    );
    let mut rb2 = Running::start(
        &b2,
        &cb2,
        &[
            ("CLAB_INTFS", "1"),
            ("LAUNCHER_RESTORE", fb.to_str().unwrap()),
        ],
    );
    wait_state(&a2, "ready", Duration::from_secs(60));
    let ready = t0.elapsed();
    let log = ra2.log();
    assert!(
        log.has("restoring from snapshot instead of booting", &[]),
        "{log}"
    );
    assert!(
        log.transition("ready", "restored: the console answers"),
        "{log}"
    );
    // Its console pattern is its only probe: the console was asked (a carriage return).
    assert!(
        log.has(
            "restored from snapshot and resumed",
            &[("console", "asked")]
        ),
        "{log}"
    );
    // A restored guest never boots: no kernel banner, no ready marker on its new console.
    let c = console(&a2);
    assert!(
        !c.contains("Linux version") && !c.contains("TINYLINUX-READY"),
        "{c}"
    );
    // Traffic across tap - tc mirred - veth - tc mirred - tap between the restored pair.
    wait_state(&b2, "ready", Duration::from_secs(60));
    let pinged = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "two pings of r2 from the restored r1",
        || (console(&a2).matches("PAIR-PING-OK").count() >= 2).then_some(()),
    );
    println!(
        "restore to ready {ready:?}; to traffic {:?}",
        ready + pinged.elapsed()
    );
    assert_eq!(ra2.stop(Duration::from_secs(60)).0, 0, "{}", ra2.output());
    assert_eq!(rb2.stop(Duration::from_secs(60)).0, 0, "{}", rb2.output());
}

/// Boots a tinylinux `r1` in `ns` (`vm` added to its `[vm]`) to ready, saves it to `r1.tar` in
/// the namespace's folder, stops it (exit 0); returns the snapshot's path.
fn saved_r1(ns: &Netns, vm: &str) -> PathBuf {
    let cfg = tinylinux_config(ns, "r1", vm, "");
    let mut r = Running::start(ns, &cfg, &[]);
    wait_state(ns, "ready", Duration::from_secs(180));
    let file = ns.dir.join("r1.tar");
    let (ok, out) = save(ns, &file);
    assert!(ok, "{out}");
    assert_eq!(r.stop(Duration::from_secs(60)).0, 0);
    file
}

#[test]
fn a_snapshot_that_does_not_fit_is_refused_with_the_reason() {
    let ns = Netns::new("snapshot-key");
    let file = saved_r1(&ns, "");

    // One NIC more (a data link), with the policy `fail`: refused, nothing booted, exit 1.
    let ns2 = Netns::new("snapshot-key2");
    let peer = Netns::new("snapshot-key2p");
    link(&ns2, &peer, "eth1");
    let cfg2 = tinylinux_config(&ns2, "r1", "", "");
    let env = [
        ("CLAB_INTFS", "1"),
        ("LAUNCHER_RESTORE", file.to_str().unwrap()),
        ("LAUNCHER_SNAPSHOT_MISMATCH", "fail"),
    ];
    let mut r2 = Running::start(&ns2, &cfg2, &env);
    let code = r2.wait_exit(Duration::from_secs(60));
    let log = r2.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.stderr
            .contains("does not fit this node: VM r1: NIC count: saved 1, here 2"),
        "{log}"
    );
    assert!(!log.has("qemu started", &[]), "{log}");

    // Other memory, the default policy: the reason logged, then a cold boot to ready.
    let ns3 = Netns::new("snapshot-key3");
    let cfg3 = tinylinux_config(&ns3, "r1", "", "");
    edit_file(&cfg3, &[("memory = 256", "memory = 320")]);
    let mut r3 = Running::start(&ns3, &cfg3, &[("LAUNCHER_RESTORE", file.to_str().unwrap())]);
    wait_state(&ns3, "ready", Duration::from_secs(180));
    let log = r3.log();
    assert!(
        log.any(|e| e.level == "WARN"
            && e.message.starts_with("snapshot not restored")
            && e.message.contains("memory: saved \"256M\", here \"320M\"")
            && e.message.ends_with("booting cold")),
        "{log}"
    );
    assert!(console(&ns3).contains("TINYLINUX-READY"), "a cold boot");
    assert_eq!(r3.stop(Duration::from_secs(60)).0, 0);
}

/// A restored guest whose clock an agent is to set, and no agent answers (tinylinux runs none):
/// the node is ready as soon as its console answers, while the clock's bounded wait still runs
/// on its own. Before, the VM's supervision waited for it (ready, a stop, a reset: all only
/// after the agent's wait ran out).
#[test]
fn a_restore_is_ready_without_waiting_for_a_guest_agent_that_never_answers() {
    let ns = Netns::new("snapshot-clock");
    let file = saved_r1(&ns, "clock = \"guest-agent\"");

    let ns2 = Netns::new("snapshot-clock2");
    let cfg2 = tinylinux_config(&ns2, "r1", "clock = \"guest-agent\"", "");
    let mut r2 = Running::start(&ns2, &cfg2, &[("LAUNCHER_RESTORE", file.to_str().unwrap())]);
    wait_state(&ns2, "ready", Duration::from_secs(60));
    let unset = |l: &Log| {
        l.events
            .iter()
            .position(|e| e.message.starts_with("guest clock not set"))
    };
    wait_for(
        Duration::from_secs(90),
        "the guest agent's wait to run out",
        || unset(&r2.log()),
    );
    let log = r2.log();
    let ready = log
        .events
        .iter()
        .position(|e| e.is("state", &[("to", "ready")]))
        .expect("a ready transition");
    assert!(
        log.transition("ready", "restored: the console answers"),
        "{log}"
    );
    assert!(
        ready < unset(&log).unwrap(),
        "ready came before the clock's wait ended\n{log}"
    );
    assert_eq!(r2.stop(Duration::from_secs(60)).0, 0, "{}", r2.output());
}

// ---- Docker, the way containerlab drives it ----

/// launcher-tinylinux with the launcher under test (and the zstd of Dockerfile.base, for an
/// older local base image) as `lt-snapshot-tinylinux:PID`.
fn image() -> String {
    let tag = format!("lt-snapshot-tinylinux:{}", std::process::id());
    let ctx = std::env::temp_dir().join(format!("lt-snapshot-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(LAUNCHER, ctx.join("launcher")).unwrap();
    std::fs::copy(must("command -v zstd").trim(), ctx.join("zstd")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM launcher-tinylinux:latest\nCOPY zstd /usr/bin/zstd\nCOPY launcher /usr/local/bin/launcher\n",
    )
    .unwrap();
    must(&format!("docker build -q -t {tag} {}", ctx.display()));
    let _ = std::fs::remove_dir_all(&ctx);
    tag
}

/// Containers (and the image) removed at the end, whatever happens.
struct Docker {
    image: String,
    names: Vec<String>,
}

impl Docker {
    /// A router container named after `name`, its node name `r1` in both (containerlab names
    /// it so: the MACs derive from it, and a snapshot is one identity).
    fn run(&mut self, name: &str, args: &str) -> String {
        let name = self.create(name, args);
        must(&format!("docker start {name}"));
        name
    }

    /// A router container created, not started yet.
    fn create(&mut self, name: &str, args: &str) -> String {
        let name = format!("lt-snapshot-{name}-{}", std::process::id());
        let _ = sh(&format!("docker rm -f {name}"));
        must(&format!(
            "docker create --name {name} --hostname r1 --cap-add NET_ADMIN --device /dev/net/tun -e CLAB_INTFS=0 {args} {}",
            self.image
        ));
        self.names.push(name.clone());
        name
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = sh(&format!("docker rm -f {n}"));
        }
        let _ = sh(&format!("docker rmi {}", self.image));
    }
}

fn logs(c: &str) -> String {
    must(&format!("docker logs {c} 2>&1"))
}

fn healthy(c: &str, within: Duration) -> Duration {
    let t = Instant::now();
    wait_for(within, &format!("{c} healthy"), || {
        sh(&format!("docker exec {c} launcher health"))
            .status
            .success()
            .then_some(())
    });
    t.elapsed()
}

#[test]
fn containerlab_saves_with_snapshot_save_and_restores_a_new_container_from_snapshot_tar() {
    require_docker();
    let mut d = Docker {
        image: image(),
        names: vec![],
    };
    // A save asked for while the guest boots fails cleanly, with containerlab's line. The
    // trigger is in place before the container starts: a `docker exec touch` after the start
    // raced the guest's boot (tinylinux can be ready before a loaded docker runs the exec).
    let c1 = d.create("src", "");
    let empty = std::env::temp_dir().join(format!("lt-snapshot-trigger-{}", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    must(&format!(
        "docker cp {} {c1}:/snapshot-save",
        empty.display()
    ));
    let _ = std::fs::remove_file(&empty);
    must(&format!("docker start {c1}"));
    let refused = wait_for(
        Duration::from_secs(20),
        "the save refused while booting",
        || {
            let l = logs(&c1);
            let line = l
                .lines()
                .find(|l| l.contains("Snapshot save"))
                .map(str::to_string);
            std::thread::sleep(Duration::from_millis(100));
            line
        },
    );
    assert!(
        refused.contains("Snapshot save failed: VM tinylinux is ")
            && refused.contains(", not ready"),
        "{refused}"
    );
    assert!(
        !logs(&c1).contains("VM paused"),
        "a refused save never pauses the guest"
    );
    let cold = healthy(&c1, Duration::from_secs(240));
    must(&format!("docker exec {c1} touch /snapshot-save"));
    wait_for(
        Duration::from_secs(120),
        "Snapshot saved to /snapshot-output.tar",
        || {
            logs(&c1)
                .contains("Snapshot saved to /snapshot-output.tar")
                .then_some(())
        },
    );
    assert!(
        sh(&format!("docker exec {c1} launcher health"))
            .status
            .success(),
        "still ready after the save"
    );
    let dir = std::env::temp_dir().join(format!("lt-snapshot-clab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tinylinux.tar");
    must(&format!(
        "docker cp {c1}:/snapshot-output.tar {}",
        file.display()
    ));
    must(&format!("docker rm -f {c1}"));

    let c2 = d.run(
        "dst",
        &format!(
            "-v {}:/snapshot.tar:ro -e RESTORE_SNAPSHOT=1",
            file.display()
        ),
    );
    let restored = healthy(&c2, Duration::from_secs(60));
    let l = logs(&c2);
    assert!(
        l.contains("restoring from snapshot instead of booting"),
        "{l}"
    );
    assert!(!l.contains("TINYLINUX-READY"), "restored, not booted: {l}");
    println!("cold boot to healthy {cold:?}; restore to healthy {restored:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn suspend_on_docker_stop_and_resume_on_docker_start() {
    require_docker();
    let mut d = Docker {
        image: image(),
        names: vec![],
    };
    let c = d.run("suspend", "-e LAUNCHER_SUSPEND=1");
    healthy(&c, Duration::from_secs(240));
    let t = Instant::now();
    must(&format!("docker stop -t 10 {c}"));
    let stopped = t.elapsed();
    let code = must(&format!("docker inspect -f '{{{{.State.ExitCode}}}}' {c}"));
    let l = logs(&c);
    assert!(l.contains("suspended: the next start resumes"), "{l}");
    assert_eq!(code.trim(), "0", "{l}");
    assert!(
        stopped < Duration::from_secs(10),
        "within the stop time-out: {stopped:?}"
    );
    must(&format!("docker start {c}"));
    let resumed = healthy(&c, Duration::from_secs(60));
    let l = logs(&c);
    assert!(
        l.contains("restoring from snapshot instead of booting"),
        "{l}"
    );
    assert_eq!(
        l.matches("console: TINYLINUX-READY").count(),
        1,
        "booted once, resumed once: {l}"
    );
    println!("docker stop (suspend) {stopped:?}; docker start to healthy {resumed:?}");
}
