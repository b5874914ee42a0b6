//! Throwaway network namespaces behind RAII guards (deleted with everything in them on drop),
//! entering one from the current thread, and the shell helpers the tests use.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fails loudly (never skips) when the test cannot run here.
/// Root, a Docker engine and launcher-tinylinux, or a loud failure saying what is missing.
pub fn require_docker() {
    require_docker_image(
        "launcher-tinylinux:latest",
        "scripts/images.sh builds it (the test command runs it)",
    );
}

/// Root, a Docker engine and `image`, or a loud failure naming what is missing and `how` it
/// is made.
pub fn require_docker_image(image: &str, how: &str) {
    require_root();
    assert!(
        sh("docker info").status.success(),
        "no Docker engine: the README test command starts dockerd"
    );
    assert!(
        sh(&format!("docker image inspect {image}"))
            .status
            .success(),
        "image {image} is missing: {how}"
    );
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (network namespaces, tc, taps)"
    );
    for (tool, flag) in [
        ("ip", "-V"),
        ("tc", "-V"),
        ("ping", "-V"),
        ("ps", "--version"),
    ] {
        assert!(
            Command::new(tool).arg(flag).output().is_ok(),
            "{tool} is missing: run the README test command, which installs it"
        );
    }
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

/// Runs a shell command and panics with its output when it fails.
pub fn must(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A throwaway network namespace, deleted (with everything in it) on drop, with a temp dir.
pub struct Netns {
    pub name: String,
    pub dir: PathBuf,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = format!(
            "lt-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        must(&format!("ip netns add {name}"));
        must(&format!("ip -n {name} link set lo up"));
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Netns { name, dir }
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &str) -> String {
        must(&format!("ip -n {} {args}", self.name))
    }

    /// Makes `eth` in the namespace: a veth whose other end, `peer`, stays beside it, up (a
    /// cable with carrier).
    pub fn veth_pair(&self, eth: &str, peer: &str) {
        self.ip(&format!("link add {peer} type veth peer name {eth}"));
        self.ip(&format!("link set {peer} up"));
    }

    /// A shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> Output {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// Waits (bounded) until `addr` answers a ping sent from inside the namespace; on a
    /// time-out it fails showing `context()` (the launcher's output, say).
    pub fn wait_ping(&self, addr: &str, within: Duration, context: impl Fn() -> String) {
        let t = Instant::now();
        while !self
            .exec(&format!("ping -c 1 -W 1 {addr}"))
            .status
            .success()
        {
            assert!(
                t.elapsed() < within,
                "no ping from {} to {addr} within {within:?}\n{}",
                self.name,
                context()
            );
        }
    }

    /// Moves the calling thread into the namespace (until the guard drops); sockets opened
    /// meanwhile live in it.
    pub fn enter(&self) -> NsGuard {
        let orig = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let target = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        // SAFETY: setns on an open namespace fd only changes this thread's network namespace.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        NsGuard { orig }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&format!("ip netns pids {} | xargs -r kill -9", self.name));
        let _ = sh(&format!("ip netns del {}", self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Returns the thread to its original namespace on drop.
pub struct NsGuard {
    orig: std::fs::File,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: as in `Netns::enter`; `orig` is the thread's own namespace, still open.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}
