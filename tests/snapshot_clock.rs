//! Fast start on the real Debian 12 + FRR guest (images/debian, qemu-guest-agent in it), one
//! cold boot: the guest agent comes up on the virtio port `vm.clock = "guest-agent"` adds; a
//! snapshot restored 20 s later has the guest's clock set to the host's by the launcher
//! (within 2 s), while the same snapshot restored with the clock left alone (`vm.clock` none,
//! the same agent port through `vm.extra_args` so the device ABI matches) lags by the
//! snapshot's age; and each restore is `ready` only once its probes passed again (SSH through
//! the forward, the console pattern).

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The cached Debian guest (kernel, initrd, qcow2), built by the README test command.
fn debian() -> PathBuf {
    let out = must(&format!(
        "{}/images/debian/build.sh 2>/dev/null | tail -1",
        env!("CARGO_MANIFEST_DIR")
    ));
    let qcow = PathBuf::from(out.trim());
    assert!(
        qcow.is_file(),
        "images/debian/build.sh printed no qcow2 ({out:?}): scripts/images.sh builds it"
    );
    qcow.parent().unwrap().to_path_buf()
}

/// The Debian guest's launcher.toml in `ns.dir`, `vm` added to `[vm]`.
fn config(ns: &Netns, name: &str, vm: &str) -> PathBuf {
    let (img, d) = (debian(), &ns.dir);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(root.join("images/debian/host.toml.in")).unwrap();
    let text = template
        .replace("{vm}", vm)
        .replace("{qcow2}", &img.join("disk.qcow2").display().to_string())
        .replace("{img}", &img.display().to_string())
        .replace(
            "{seed}",
            &root.join("images/debian/seed").display().to_string(),
        )
        .replace("{dir}", &d.display().to_string());
    let p = d.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// The guest's wall clock minus the host's, in ms, read through the guest agent at `sock`
/// (a plain client: 0xFF, guest-sync-delimited, then guest-get-time; bounded by `within`).
fn guest_clock_offset_ms(sock: &Path, within: Duration) -> i64 {
    wait_for(within, "the guest agent to answer guest-get-time", || {
        let s = UnixStream::connect(sock).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let id = 4242 + std::process::id() as u64;
        w.write_all(b"\xff").ok()?;
        w.write_all(
            format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n")
                .as_bytes(),
        )
        .ok()?;
        loop {
            let mut b = [0u8];
            r.read_exact(&mut b).ok()?;
            if b[0] != 0xff {
                continue;
            }
            let mut line = String::new();
            r.read_line(&mut line).ok()?;
            if line.contains(&format!("\"return\": {id}"))
                || line.contains(&format!("\"return\":{id}"))
            {
                break;
            }
        }
        w.write_all(b"{\"execute\":\"guest-get-time\"}\n").ok()?;
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let host = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        let guest = v["return"].as_i64()?;
        Some((guest - host) / 1_000_000)
    })
}

/// Restores `tar` with `cfg`; the launcher (ready), its time to ready.
fn restore(ns: &Netns, cfg: &Path, tar: &Path) -> (Running, Duration) {
    let t0 = Instant::now();
    let r = Running::start(ns, cfg, &[("LAUNCHER_RESTORE", tar.to_str().unwrap())]);
    wait_state(ns, "ready", Duration::from_secs(300));
    let took = t0.elapsed();
    let log = r.log();
    assert!(
        log.has("restoring from snapshot instead of booting", &[]),
        "{log}"
    );
    // Ready was earned again, after the resume: SSH through the forward (probed from scratch
    // for this qemu) answered. The console pattern counted as restored, with no carriage
    // return sent: the TCP probe checks this guest.
    let resumed = log.at(
        "restored from snapshot and resumed",
        &[("console", "counted")],
    );
    let ready = log.at("state", &[("to", "ready")]);
    assert!(resumed < ready, "{log}");
    assert!(log.transition("ready", "TCP port 22 answers"), "{log}");
    (r, took)
}

#[test]
fn the_guest_agent_sets_the_clock_of_a_restored_debian_guest() {
    let ns = Netns::new("clock");
    let agent_port = format!(
        "extra_args = [\"-chardev\", \"socket,id=qga0,server=on,wait=off,path={}/run/qga-test.sock\", \
         \"-device\", \"virtio-serial-pci,id=qga-serial\", \
         \"-device\", \"virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0\"]",
        ns.dir.display()
    );
    let with = config(&ns, "with", "clock = \"guest-agent\"");
    let without = config(&ns, "without", &agent_port);

    // The one cold boot.
    let mut cold = Running::start(&ns, &with, &[]);
    wait_state(&ns, "ready", Duration::from_secs(900));
    let agent = ns.dir.join("run/qga.sock");
    // qemu-ga started by itself on the port (its unit binds to /dev/virtio-ports/...).
    let off = guest_clock_offset_ms(&agent, Duration::from_secs(120));
    assert!(
        off.abs() < 5_000,
        "a cold-booted guest's clock is off by {off} ms"
    );
    let tar = ns.dir.join("lt-clock.tar");
    let out = ns
        .launcher(&["snapshot", "save", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", cold.output());
    let saved = Instant::now();
    assert_eq!(
        cold.stop(Duration::from_secs(180)).0,
        0,
        "{}",
        cold.output()
    );
    let wait = Duration::from_secs(20).saturating_sub(saved.elapsed());
    std::thread::sleep(wait);

    // The clock left alone: the guest lags by the snapshot's age.
    let (mut r, ready) = restore(&ns, &without, &tar);
    let age = saved.elapsed().as_millis() as i64;
    let lag = guest_clock_offset_ms(&ns.dir.join("run/qga-test.sock"), Duration::from_secs(60));
    println!(
        "without vm.clock: ready in {ready:?}, guest clock {lag} ms off, snapshot {age} ms old"
    );
    assert!(
        !r.log().has("guest clock set by the guest agent", &[]),
        "{}",
        r.output()
    );
    assert!(
        lag < -15_000 && lag > -(age + 5_000),
        "without vm.clock the guest should lag by about {age} ms: {lag} ms"
    );
    assert_eq!(r.stop(Duration::from_secs(180)).0, 0, "{}", r.output());

    // vm.clock = "guest-agent": set to the host's clock once the restored VM is ready (the
    // agent's work would slow the probed SSH down), so after the ready transition.
    let (mut r, ready) = restore(&ns, &with, &tar);
    let age = saved.elapsed().as_millis() as i64;
    wait_for(Duration::from_secs(60), "the guest clock to be set", || {
        r.log()
            .has("guest clock set by the guest agent", &[("vm", "debian")])
            .then_some(())
    });
    let log = r.log();
    let set = log.at("guest clock set by the guest agent", &[]);
    let ready_at = log.at("state", &[("to", "ready")]);
    assert!(ready_at < set, "the clock is set after ready: {log}");
    let off = guest_clock_offset_ms(&agent, Duration::from_secs(60));
    println!("vm.clock = guest-agent: ready in {ready:?}, guest clock {off} ms off, snapshot {age} ms old");
    assert!(
        off.abs() < 2_000,
        "the guest clock is {off} ms off the host's"
    );
    assert_eq!(r.stop(Duration::from_secs(180)).0, 0, "{}", r.output());
}
