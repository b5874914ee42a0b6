//! How the launcher stops and fails, with real qemu (TCG) booting images/tinylinux, each test in
//! its own network namespace: a stop while the guest still boots quits at once (exit 0); a
//! bootstrap that used up its restarts exits 1 with its reason (not the 137 of our own SIGKILL);
//! a lost QMP connection is retried, shown in status and health, and SIGTERM still stops.

mod common;
use common::*;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn stopping_a_router_still_booting_quits_at_once_and_exits_0() {
    let ns = Netns::new("earlystop");
    // The default 20 s shutdown timeout: a powerdown the guest cannot hear yet would wait it out.
    let cfg = tinylinux_config(&ns, "rb", "", "");
    let mut r = Running::start(&ns, &cfg, &[]);
    wait_for(Duration::from_secs(30), "qemu started", || {
        r.log().has("qemu started", &[("vm", "rb")]).then_some(())
    });
    let (code, took) = r.stop(Duration::from_secs(40));
    let log = r.log();
    println!("SIGTERM while booting to exit: {took:?}");
    assert_eq!(code, 0, "a stop while booting is a clean stop\n{log}");
    assert!(
        took < Duration::from_secs(8),
        "quit at once, not after the 20 s shutdown timeout: {took:?}\n{log}"
    );
    assert!(
        log.transition("stopping", "guest still booting: quitting qemu"),
        "{log}"
    );
    assert!(log.transition("stopped", ""), "{log}");
    assert!(!log.has("guest did not power off in time: QMP quit", &[]));
}

#[test]
fn a_bootstrap_that_never_matches_exits_1_with_its_reason_after_its_restarts() {
    let ns = Netns::new("bootfail");
    let cfg = tinylinux_config(
        &ns,
        "rx",
        "",
        "[bootstrap]\non_timeout = \"restart\"\nsteps = [{ expect = \"NEVER-SHOWS\", timeout = 2 }]\n[restart]\npolicy = \"on-failure\"\nmax = 1\nbackoff = 1\n",
    );
    let mut r = Running::start(&ns, &cfg, &[]);
    let code = r.wait_exit(Duration::from_secs(120));
    let log = r.log();
    assert_eq!(
        code,
        Some(1),
        "the launcher killed qemu: 1, not its SIGKILL's 137\n{log}"
    );
    assert!(
        log.transition("restarting", "restart 1/1"),
        "restarted once first\n{log}"
    );
    let failed = log
        .events
        .iter()
        .find(|e| e.is("state", &[("to", "failed")]))
        .unwrap_or_else(|| panic!("no transition to failed\n{log}"));
    let reason = failed.field("reason");
    assert!(
        reason.contains("NEVER-SHOWS") && reason.contains("timed out"),
        "the reason names the bootstrap step: {reason}"
    );
    assert!(
        reason.ends_with("restart policy on-failure: 1/1 restarts used"),
        "the reason names the policy: {reason}"
    );
    assert_eq!(ns.health(), "1 VM failed");
}

/// A proxy between the launcher and qemu's real QMP socket that the test can cut: the stand-in
/// for a QMP connection lost mid-run (qemu's own socket cannot be closed from outside).
struct QmpProxy {
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    path: PathBuf,
}

impl QmpProxy {
    /// Listens on `path` and forwards every connection to `real`.
    fn start(path: &Path, real: &Path) -> Self {
        let listener = UnixListener::bind(path).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (o, c, real) = (open.clone(), conns.clone(), real.to_path_buf());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !o.load(Ordering::SeqCst) {
                    return; // the listener is dropped: connecting is refused from now on
                }
                let (Ok(client), Ok(qemu)) = (client, UnixStream::connect(&real)) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(qemu.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), qemu.try_clone().unwrap()),
                    (qemu, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        QmpProxy {
            open,
            conns,
            path: path.to_path_buf(),
        }
    }

    /// Cuts every connection made so far.
    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Cuts every connection and stops listening.
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path).map(|mut s| s.flush());
        self.cut();
    }
}

#[test]
fn a_lost_qmp_connection_is_retried_shown_and_sigterm_still_stops() {
    let ns = Netns::new("qmplost");
    // qemu with its QMP socket moved aside (a fake in one respect only: where QMP listens), so
    // the launcher reaches it through a proxy the test cuts.
    let wrapper = ns.dir.join("qemu-qmp-aside.sh");
    std::fs::write(
        &wrapper,
        "#!/bin/sh\nfor a; do\n  shift\n  case \"$a\" in\n    unix:*qmp.sock,*) a=$(printf '%s' \"$a\" | sed 's/qmp\\.sock,/qmp.real,/') ;;\n  esac\n  set -- \"$@\" \"$a\"\ndone\nexec qemu-system-x86_64 \"$@\"\n",
    )
    .unwrap();
    must(&format!("chmod +x {}", wrapper.display()));
    let cfg = tinylinux_config(&ns, "rq", &format!("qemu = \"{}\"", wrapper.display()), "");
    let mut r = Running::start(&ns, &cfg, &[]);
    let run = ns.dir.join("run");
    wait_for(Duration::from_secs(30), "qemu's QMP socket", || {
        run.join("qmp.real").exists().then_some(())
    });
    let proxy = QmpProxy::start(&run.join("qmp.sock"), &run.join("qmp.real"));
    let st = wait_state(&ns, "ready", Duration::from_secs(90));
    let qemu_pid = st["qemu_pid"].as_i64().unwrap() as i32;

    // Cut once: the launcher reconnects and the VM is ready again.
    proxy.cut();
    wait_for(Duration::from_secs(20), "QMP reconnected", || {
        r.log().has("QMP reconnected", &[]).then_some(())
    });
    let log = r.log();
    assert!(log.has("QMP connection lost; reconnecting", &[]), "{log}");
    assert!(log.transition("ready", "QMP reconnected"), "{log}");
    wait_state(&ns, "ready", Duration::from_secs(5));

    // Cut for good: status and health say so.
    proxy.close();
    let st = wait_for(Duration::from_secs(10), "QMP loss in status", || {
        status(&ns).filter(|s| s["reason"] == "QMP connection lost; reconnecting")
    });
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["healthy"], false, "{st}");
    assert!(!ns.launcher(&["health"]).output().unwrap().status.success());
    assert_eq!(ns.health(), "1 VM running, not ready yet");

    // SIGTERM without QMP: no ACPI powerdown possible; SIGTERM to qemu (a clean quit of the
    // emulator, not of the guest): not a clean shutdown, exit 1, at once.
    let (code, took) = r.stop(Duration::from_secs(40));
    let log = r.log();
    assert_eq!(code, 1, "documented: a quit is not a clean shutdown\n{log}");
    assert!(took < Duration::from_secs(8), "{took:?}\n{log}");
    assert!(
        log.has("QMP quit failed: SIGTERM to qemu", &[]),
        "qemu was sent SIGTERM\n{log}"
    );
    assert!(
        log.any(|e| e.message == "qemu exited" && e.field("code") == "0"),
        "qemu quit on its SIGTERM (not SIGKILL)\n{log}"
    );
    assert!(!kill(qemu_pid, 0), "qemu {qemu_pid} is still alive");
}
