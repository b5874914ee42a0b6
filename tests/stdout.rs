//! A stdout nobody drains (a stuck Docker log driver, a paused pipe) never stalls the launcher:
//! with real qemu booting images/tinylinux and the launcher's stdout a pipe this test never
//! reads (shrunk to one page, so it is full at once), status still answers (and counts the
//! log lines dropped), the node gets ready, and SIGTERM stops it with exit 0.

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Kills the launcher (and so its qemu) if the test fails half way.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Bytes waiting in the pipe (read end `fd`).
fn queued(fd: i32) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

#[test]
fn a_stdout_nobody_reads_never_stalls_status_readiness_or_shutdown() {
    let ns = Netns::new("stuckout");
    let cfg = tinylinux_config(&ns, "r1", "", "");
    let stderr = ns.dir.join("launcher.err");
    let mut c = ns.launcher(&["run", "--config", cfg.to_str().unwrap()]);
    c.stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .stdin(Stdio::null())
        .env("LAUNCHER_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug");
    let mut guard = Guard(Some(c.spawn().unwrap()));
    let child = guard.0.as_mut().unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let pipe = child.stdout.take().unwrap();
    // One page: the launcher's debug log and the guest's boot fill it at once.
    // SAFETY: F_SETPIPE_SZ on a pipe fd this test owns; no pointer involved.
    unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };

    let t = Instant::now();
    let mut slowest = Duration::ZERO;
    wait_for(Duration::from_secs(120), "the node ready", || {
        let asked = Instant::now();
        let st = status(&ns);
        slowest = slowest.max(asked.elapsed());
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "status took {:?} (stdout full: {} bytes queued)",
            asked.elapsed(),
            queued(pipe.as_raw_fd())
        );
        std::thread::sleep(Duration::from_millis(200));
        (st?["state"] == "ready").then_some(())
    });
    println!("ready after {:?}, slowest status {slowest:?}", t.elapsed());
    // More log lines than the queue holds (each telnet client logs one or two lines),
    // then status says how many stdout lost so far.
    let churn = ns.exec(
        "exec bash -c 'for i in $(seq 5000); do exec 3<>/dev/tcp/127.0.0.1/5000; exec 3>&-; done'",
    );
    assert!(churn.status.success(), "telnet churn: {churn:?}");
    let dropped = wait_for(
        Duration::from_secs(20),
        "status to count dropped lines",
        || {
            status(&ns)?["log_lines_dropped"]
                .as_u64()
                .filter(|&n| n > 0)
        },
    );
    println!("status: {dropped} log lines dropped");
    assert_eq!(ns.health(), "0 running");
    let full = queued(pipe.as_raw_fd());
    // Full: the next line (a JSON event, ~150 bytes and more) no longer fits.
    assert!(
        full > 3500,
        "stdout was never full ({full} bytes): the test shows nothing"
    );

    // SIGTERM: ACPI power-off (shutdown_timeout 20 s) plus the bounded exit flush.
    let t = Instant::now();
    kill(pid, libc::SIGTERM);
    let mut child = guard.0.take().unwrap();
    let code = wait_for(Duration::from_secs(40), "the launcher to exit", || {
        child.try_wait().unwrap()
    })
    .code();
    let err = std::fs::read_to_string(&stderr).unwrap();
    println!("stopped in {:?}; stderr:\n{err}", t.elapsed());
    assert_eq!(code, Some(0), "stderr:\n{err}");
    assert!(err.contains("stdout was not drained"), "stderr:\n{err}");
    drop(pipe);
}
