//! The tinylinux test guest (images/tinylinux): its build, a launcher config for it, a login
//! bootstrap, talking to it over telnet and HTTP, and its carrier log on the console.

use crate::common::Netns;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// A launcher.toml for tinylinux with every path inside `ns.dir`: `vm_extra` goes at the end of
/// `[vm]`, `extra` at the end of the file. Edit the result with `edit_file` (each key written
/// here appears exactly once: `shutdown_timeout = 20`, `memory = 256`, `forwards = []`, ...).
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

/// The guest's console from byte `from` on.
pub fn console_from(ns: &Netns, from: usize) -> String {
    let all = std::fs::read(ns.dir.join("console.log")).unwrap_or_default();
    String::from_utf8_lossy(all.get(from..).unwrap_or_default()).into_owned()
}

/// The guest's carrier log after console byte `from`: its "tinylinux: carrier" lines, from
/// those words on (a line may follow a prompt the console drew without a newline).
pub fn carrier_lines(ns: &Netns, from: usize) -> Vec<String> {
    const TAG: &str = "tinylinux: carrier eth";
    (console_from(ns, from).lines())
        .filter_map(|l| l.find(TAG).map(|at| l[at..].to_string()))
        .collect()
}

/// Waits (bounded) until the guest's last carrier word after console byte `from` is `want`
/// for every port. qemu starts every NIC with its link up and the launcher sets the absent
/// ports down over QMP as soon as it connects, which under load may come after the guest's
/// first carrier line: a port may say "up" once at boot before its "down". The failure shows
/// the carrier lines (not the whole boot log).
pub fn guest_ends_up_seeing(ns: &Netns, from: usize, want: &[(u32, &str)]) {
    let start = std::time::Instant::now();
    let last = |lines: &[String], n: u32| {
        let tag = format!("tinylinux: carrier eth{n} ");
        lines.iter().rfind(|l| l.contains(&tag)).cloned()
    };
    loop {
        let lines = carrier_lines(ns, from);
        let ok = (want.iter())
            .all(|(n, w)| last(&lines, *n) == Some(format!("tinylinux: carrier eth{n} {w}")));
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "after 30 s the guest's ports are not {want:?}; its carrier lines:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn console_len(ns: &Netns) -> usize {
    std::fs::metadata(ns.dir.join("console.log")).map_or(0, |m| m.len() as usize)
}
