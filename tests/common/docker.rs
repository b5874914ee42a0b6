//! Router containers under real Docker: the tinylinux image with this build's launcher and
//! guest on top ([`TestImage`]), a container removed on drop with what the tests ask of it
//! (its pid and namespace, logs, Docker health, `launcher status`, the guest's MACs)
//! ([`Container`]), and the guest's console since its latest boot ([`latest_boot`]).

use super::*;
use std::path::PathBuf;
use std::time::Duration;

/// launcher-tinylinux:latest with this build's launcher binary and tinylinux guest (kernel and
/// initramfs) on top, tagged `launcher-tinylinux:lt-<tag>-<pid>`; the image and its build
/// folder removed on drop.
pub struct TestImage {
    pub tag: String,
    dir: PathBuf,
}

impl TestImage {
    pub fn build(tag: &str) -> Self {
        let pid = std::process::id();
        let image = format!("launcher-tinylinux:lt-{tag}-{pid}");
        let dir = std::env::temp_dir().join(format!("lt-{tag}-img-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(LAUNCHER, dir.join("launcher")).unwrap();
        // The guest's kernel and initramfs go together (the modules match the kernel).
        for f in ["vmlinuz", "initramfs.cpio.gz"] {
            std::fs::copy(tinylinux_dir().join(f), dir.join(f)).unwrap();
        }
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM launcher-tinylinux:latest\nCOPY launcher /usr/local/bin/launcher\n\
             COPY vmlinuz initramfs.cpio.gz /opt/tinylinux/\n",
        )
        .unwrap();
        must(&format!("docker build -q -t {image} {}", dir.display()));
        TestImage { tag: image, dir }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rmi -f {}", self.tag));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A router container (made by the test), removed on drop with the folders in `dirs`.
pub struct Container {
    pub name: String,
    pub dirs: Vec<PathBuf>,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f {}", self.name));
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Container {
    /// `docker inspect -f FORMAT`, trimmed.
    pub fn inspect(&self, format: &str) -> String {
        let out = must(&format!("docker inspect -f '{format}' {}", self.name));
        out.trim().to_string()
    }
    /// The container's init pid (its network namespace's handle).
    pub fn pid(&self) -> u32 {
        self.inspect("{{.State.Pid}}").parse().unwrap()
    }
    /// stdout and stderr: the launcher's log and the guest's console.
    pub fn logs(&self) -> String {
        must(&format!("docker logs {} 2>&1", self.name))
    }
    /// Waits (bounded) until Docker's health reads `healthy`, what containerlab waits for.
    pub fn healthy(&self, within: Duration) {
        wait_for(within, &format!("{} healthy", self.name), || {
            let h = sh(&format!(
                "docker inspect -f '{{{{.State.Health.Status}}}}' {}",
                self.name
            ));
            (String::from_utf8_lossy(&h.stdout).trim() == "healthy").then_some(())
        });
    }
    /// `launcher status --json` through `docker exec`.
    pub fn status(&self) -> serde_json::Value {
        let out = must(&format!("docker exec {} launcher status --json", self.name));
        serde_json::from_str(&out).unwrap()
    }
    /// The status row of data link `eth`.
    pub fn link(&self, eth: &str) -> serde_json::Value {
        let st = self.status();
        let rows = st["links"].as_array().cloned().unwrap_or_default();
        let row = rows.into_iter().find(|l| l["eth"] == eth);
        row.unwrap_or_else(|| panic!("{}: no link {eth} in status: {st}", self.name))
    }
    pub fn exit_code(&self) -> String {
        self.inspect("{{.State.ExitCode}}")
    }
    /// The guest's NIC line (its MACs), the latest boot's.
    pub fn macs(&self) -> String {
        let logs = self.logs();
        let line = (logs.lines().rev()).find(|l| l.contains("tinylinux: ") && l.contains("NICs:"));
        let line = line.unwrap_or_default();
        // Only its `ethN=MAC/qN` words: kernel chatter may land in the middle of the line
        // ("eth1=0c:..:01/q1[    5.68] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: ..." was seen).
        (line.split("NICs:").nth(1).unwrap_or_default())
            .split_whitespace()
            .map(|w| w.split('[').next().unwrap_or_default())
            .filter(|w| w.starts_with("eth") && w.contains('='))
            .collect::<Vec<_>>()
            .join(" ")
    }
    /// `ip ARGS` in the container's network namespace.
    pub fn ip(&self, args: &str) -> String {
        must(&format!("nsenter -t {} -n ip {args}", self.pid()))
    }
}

/// The console since the guest's latest boot (from its latest NIC line on), so a line printed
/// before a restart cannot answer for the boot after it.
pub fn latest_boot(logs: &str) -> &str {
    match logs.rfind("NICs:") {
        Some(at) => &logs[at..],
        None => "",
    }
}
