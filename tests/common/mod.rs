//! Shared helpers for the root tests: throwaway network namespaces behind an RAII guard, raw
//! packet sockets and taps opened *inside* a namespace, and running the launcher binary there.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");

/// Fails loudly (never skips) when the test cannot run here.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
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
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    out
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

/// A throwaway network namespace, deleted (with everything in it) on drop.
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

    /// The health file's line (`paths.health_file` of the test configs: DIR/health).
    pub fn health(&self) -> String {
        std::fs::read_to_string(self.dir.join("health"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &str) -> String {
        must(&format!("ip -n {} {args}", self.name))
    }

    /// A shell command inside the namespace.
    pub fn exec(&self, cmd: &str) -> Output {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.name,
            cmd.replace('\'', "'\\''")
        ))
    }

    /// The launcher binary inside the namespace, with its control socket in our temp dir.
    pub fn launcher(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, LAUNCHER]).args(args);
        c.env("LAUNCHER_SOCKET", self.dir.join("control.sock"));
        c
    }

    /// Moves the calling thread into the namespace (until `leave`); sockets opened after this
    /// live in it.
    pub fn enter(&self) -> NsGuard {
        let orig = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let target = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        assert_eq!(
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
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
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Whether `fd` has something to read within `within`.
fn readable(fd: &OwnedFd, within: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, within.as_millis() as i32) > 0 }
}

pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no interface {name} in this namespace");
    i
}

/// A raw AF_PACKET socket bound to one interface (in the current thread's namespace), with
/// PACKET_AUXDATA so VLAN tags the kernel lifted out of the frame can be put back.
pub struct PacketSock {
    fd: OwnedFd,
    ifindex: u32,
}

const ETH_P_ALL: u16 = 0x0003;

impl PacketSock {
    pub fn open(ifname: &str) -> Self {
        let ifindex = ifindex(ifname);
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                ETH_P_ALL.to_be() as i32,
            );
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = ETH_P_ALL.to_be();
            sa.sll_ifindex = ifindex as i32;
            assert_eq!(
                libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32
                ),
                0
            );
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &one as *const _ as *const _,
                4,
            );
            let big: libc::c_int = 8 << 20;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &big as *const _ as *const _,
                4,
            );
            PacketSock { fd, ifindex }
        }
    }

    pub fn send(&self, frame: &[u8]) {
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const _,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            n as usize,
            frame.len(),
            "send on ifindex {}: {}",
            self.ifindex,
            std::io::Error::last_os_error()
        );
    }

    /// Frames received (not our own outgoing ones) until `quiet` passes with nothing new.
    pub fn recv_all(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut cbuf = [0u64; 32];
        loop {
            if !readable(&self.fd, quiet) {
                return out;
            }
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut _,
                iov_len: buf.len(),
            };
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = &mut sa as *mut _ as *mut _;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut _;
            msg.msg_controllen = std::mem::size_of_val(&cbuf);
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
            if sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = buf[..n as usize].to_vec();
            // Put back a VLAN tag the kernel handed over as metadata (PACKET_AUXDATA).
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        let aux = &*(libc::CMSG_DATA(c) as *const libc::tpacket_auxdata);
                        if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                            let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                                aux.tp_vlan_tpid
                            } else {
                                0x8100
                            };
                            let mut tag = tpid.to_be_bytes().to_vec();
                            tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                            frame.splice(12..12, tag);
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            out.push(frame);
        }
    }
}

/// A tap opened the way a VM would (IFF_TAP | IFF_NO_PI, no vnet header), in the current
/// thread's namespace: what we write the "VM" sends; what we read the "VM" receives.
pub struct TapSock {
    fd: OwnedFd,
}

impl TapSock {
    pub fn attach(name: &str) -> Self {
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("/dev/net/tun");
        let mut req = IfReq {
            name: [0; 16],
            flags: 0x0002 | 0x1000,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), 0x400454ca, &mut req) };
        assert_eq!(
            rc,
            0,
            "attach tap {name}: {}",
            std::io::Error::last_os_error()
        );
        TapSock { fd: f.into() }
    }

    pub fn send(&self, frame: &[u8]) {
        let n =
            unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr() as *const _, frame.len()) };
        assert_eq!(
            n as usize,
            frame.len(),
            "tap write: {}",
            std::io::Error::last_os_error()
        );
    }

    pub fn recv_all(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            if !readable(&self.fd, quiet) {
                return out;
            }
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len()) };
            assert!(n >= 0);
            out.push(buf[..n as usize].to_vec());
        }
    }
}

/// Waits until `f` returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The tinylinux build (images/tinylinux/build), built by the test command beforehand.
pub fn tinylinux_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tinylinux/build");
    assert!(
        d.join("vmlinuz").exists() && d.join("initramfs.cpio.gz").exists(),
        "{} is not built: run images/tinylinux/build.sh (the README test command does)",
        d.display()
    );
    d
}

/// A launcher.toml for tinylinux with every path inside `ns.dir`.
pub fn tinylinux_config(ns: &Netns, name: &str, vm_extra: &str, extra: &str) -> PathBuf {
    let b = tinylinux_dir();
    let d = &ns.dir;
    let text = format!(
        r#"[vm]
name = "{name}"
machine = "q35"
memory = 256
shutdown_timeout = 20
boot_timeout = 120
{extra_vm}
[kernel]
path = "{k}"
initrd = "{i}"
append = "console=ttyS0 panic=-1 tl.mgmt=user tl.hostname={name}"
[management]
forwards = []
[console]
ready_pattern = "TINYLINUX-READY"
log = "{d}/console.log"
[paths]
run_dir = "{d}/run"
state_dir = "{d}/state"
health_file = "{d}/health"
{extra}
"#,
        k = b.join("vmlinuz").display(),
        i = b.join("initramfs.cpio.gz").display(),
        d = d.display(),
        extra_vm = vm_extra,
    );
    let p = d.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `launcher status --json` of the launcher in `ns`, parsed; None while it does not answer.
pub fn status(ns: &Netns) -> Option<serde_json::Value> {
    let out = ns.launcher(&["status", "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A tinylinux bootstrap section (`[bootstrap]`, or `[vm.bootstrap]` in a `[[vm]]` entry) that
/// logs in as admin/admin, waits for the shell, then runs `then` (more TOML steps, each line
/// ending in a comma). It fails at once on a time-out.
pub fn login_bootstrap(section: &str, then: &str) -> String {
    format!(
        r##"
[{section}]
on_timeout = "fail"
attempts = 1
username = "admin"
password = "admin"
steps = [
  {{ expect = "login: ", timeout = 90 }},
  {{ send = "{{username}}" }},
  {{ expect = "Password: ", timeout = 10 }},
  {{ send = "{{password}}" }},
  {{ expect = "# ", timeout = 10 }},
{then}
]
"##
    )
}

/// Connects to a telnet console at `addr` (ip:port), from inside `ns` if given, and reads
/// (telnet negotiation, then the history) until `until` shows or 2 s pass quietly.
pub fn telnet_read(ns: Option<&Netns>, addr: &str, until: &str) -> String {
    use std::io::Read;
    let _g = ns.map(Netns::enter);
    let mut s = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("ip:port"),
        Duration::from_secs(3),
    )
    .unwrap_or_else(|e| panic!("telnet console at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains(until) {
            break;
        }
    }
    seen
}

/// Waits (bounded) until `launcher status` shows every data link wired; returns the status.
pub fn wait_all_wired(ns: &Netns, within: Duration) -> serde_json::Value {
    wait_for(within, "every data link wired", || {
        status(ns).filter(|s| {
            s["links"]
                .as_array()
                .is_some_and(|l| l.iter().all(|l| l["wired"] == true))
        })
    })
}

/// Waits (bounded) until `launcher status` shows state `want`; returns the status.
pub fn wait_state(ns: &Netns, want: &str, within: Duration) -> serde_json::Value {
    wait_for(within, &format!("state {want}"), || {
        status(ns).filter(|s| s["state"] == want)
    })
}

/// `GET /` over HTTP/1.0 to `addr` (ip:port), from inside `ns` if given; the whole response.
pub fn http_get(ns: Option<&Netns>, addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let _g = ns.map(Netns::enter);
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A launcher running in a namespace; killed (with its qemu) if the test fails half way.
pub struct Running {
    pub child: Option<Child>,
    pub log: std::path::PathBuf,
}

impl Running {
    pub fn start(ns: &Netns, config: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let log = ns.dir.join("launcher.out");
        let f = std::fs::File::create(&log).unwrap();
        let mut c = ns.launcher(&["run", "--config", config.to_str().unwrap()]);
        c.stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        Running {
            child: Some(c.spawn().unwrap()),
            log,
        }
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Waits (bounded) for the launcher to exit on its own; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        wait_for(within, "the launcher to exit", || child.try_wait().unwrap()).code()
    }
    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn stop(&mut self, within: Duration) -> (i32, Duration) {
        let t = Instant::now();
        // `ip netns exec` execs the launcher, so this pid is the launcher itself.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let mut child = self.child.take().unwrap();
        let code = wait_for(within, "the launcher to exit after SIGTERM", || {
            child.try_wait().unwrap()
        })
        .code()
        .unwrap_or(-1);
        (code, t.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("launcher output:\n{}", self.output());
        }
    }
}
