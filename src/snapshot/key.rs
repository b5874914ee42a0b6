//! The key of a VM's snapshot: everything that must be identical in the qemu that loads it, or
//! the load fails (machine, vCPUs, memory and its backend, a NIC fewer) or, worse, succeeds
//! silently wrong (another MAC, a NIC more, another base disk under the overlay). It is read
//! from the qemu argv, which the launcher builds the same way for a boot and a restore, minus
//! what may differ (kernel, initrd, append, fd numbers, socket and file paths), plus the qemu
//! version and a fingerprint of each base disk. [`Key::differences`] says what differs, field by
//! field, in words.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What must match, field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// `qemu --version`'s first line.
    pub qemu: String,
    pub machine: String,
    pub accel: String,
    pub cpu: String,
    pub smp: String,
    pub memory: String,
    /// The `-object memory-backend-*` values (the RAM block names and sizes).
    pub memory_backend: Vec<String>,
    /// Every `-device`, in order (their order fixes their PCI addresses), `-global` and
    /// `-serial` included.
    pub devices: Vec<String>,
    /// The NICs' MACs, in order (their count is the NIC count).
    pub macs: Vec<String>,
    /// A fingerprint of each base disk under an overlay, in order.
    pub base_disks: Vec<String>,
}

impl Key {
    /// The key of `argv` run by `qemu_version`, over base disks with these fingerprints.
    pub fn of(argv: &[OsString], qemu_version: &str, base_disks: Vec<String>) -> Key {
        let mut k = Key {
            qemu: qemu_version.to_string(),
            base_disks,
            ..Key::default()
        };
        let args: Vec<String> = argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for pair in args.windows(2) {
            let (flag, v) = (pair[0].as_str(), pair[1].clone());
            match flag {
                "-machine" => k.machine = v,
                "-accel" => k.accel = v,
                "-cpu" => k.cpu = v,
                "-smp" => k.smp = v,
                "-m" => k.memory = v,
                // Where the RAM is mapped from (an fd number) is no part of what the stream
                // needs; the backend's type, id, size and sharing are.
                "-object" if v.starts_with("memory-backend") => k.memory_backend.push(
                    (v.split(',').filter(|p| !p.starts_with("mem-path=")))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                "-device" | "-global" | "-serial" => {
                    if let Some(mac) = v.split(',').find_map(|p| p.strip_prefix("mac=")) {
                        k.macs.push(mac.to_string());
                    }
                    k.devices.push(format!("{flag} {v}"));
                }
                _ => {}
            }
        }
        k
    }

    /// What differs between the key a snapshot was saved with and this one, one phrase per
    /// field; empty when they match.
    pub fn differences(&self, saved: &Key) -> Vec<String> {
        let mut out = Vec::new();
        let mut one = |what: &str, saved: &str, here: &str| {
            if saved != here {
                out.push(format!("{what}: saved {saved:?}, here {here:?}"));
            }
        };
        one("qemu", &saved.qemu, &self.qemu);
        one("machine", &saved.machine, &self.machine);
        one("accel", &saved.accel, &self.accel);
        one("cpu", &saved.cpu, &self.cpu);
        one("vCPUs", &saved.smp, &self.smp);
        one("memory", &saved.memory, &self.memory);
        one(
            "memory backend",
            &saved.memory_backend.join(" "),
            &self.memory_backend.join(" "),
        );
        if saved.macs.len() != self.macs.len() {
            out.push(format!(
                "NIC count: saved {}, here {}",
                saved.macs.len(),
                self.macs.len()
            ));
        } else if saved.macs != self.macs {
            out.push(format!(
                "NIC MACs: saved {}, here {}",
                saved.macs.join(" "),
                self.macs.join(" ")
            ));
        }
        if saved.devices != self.devices && saved.macs.len() == self.macs.len() {
            let first = saved
                .devices
                .iter()
                .zip(&self.devices)
                .find(|(a, b)| a != b);
            out.push(match first {
                Some((a, b)) => format!("devices: saved {a:?}, here {b:?}"),
                None => format!(
                    "device count: saved {}, here {}",
                    saved.devices.len(),
                    self.devices.len()
                ),
            });
        }
        if saved.base_disks != self.base_disks {
            out.push(format!(
                "base disks: saved {}, here {}",
                saved.base_disks.join(" "),
                self.base_disks.join(" ")
            ));
        }
        out
    }
}

/// How many bytes of a base disk are sampled, and where: its size plus 64 KiB at 16 evenly
/// spread offsets (the qcow2 header and tables included), hashed with FNV-1a. Cheap enough for
/// every restore of a multi-GiB image; it tells images apart, it is not a signature.
const SAMPLES: u64 = 16;
const SAMPLE: usize = 64 << 10;

/// The fingerprint of the base disk at `path`: `size:hash`.
pub fn fingerprint(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let mut h = Fnv::default();
    h.eat(&size.to_le_bytes());
    let mut buf = vec![0u8; SAMPLE];
    for i in 0..SAMPLES {
        let at = (size.saturating_sub(SAMPLE as u64)) * i / (SAMPLES - 1);
        f.seek(SeekFrom::Start(at))?;
        let mut n = 0;
        while n < SAMPLE {
            match f.read(&mut buf[n..])? {
                0 => break,
                r => n += r,
            }
        }
        h.eat(&buf[..n]);
    }
    Ok(format!("{size}:{:016x}", h.0))
}

struct Fnv(u64);
impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf29ce484222325)
    }
}
impl Fnv {
    fn eat(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= *x as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(mem: &str, nics: usize, extra_mac: Option<&str>) -> Vec<OsString> {
        let mut a: Vec<String> = [
            "qemu-system-x86_64",
            "-machine",
            "pc,memory-backend=ram0",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            mem,
            "-kernel",
            "/a/vmlinuz",
            "-append",
            "console=ttyS0",
            "-qmp",
            "unix:/run/x/qmp.sock,server=on,wait=off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push("-object".into());
        // The RAM's fd number follows the NICs: it differs with them, and is not compared.
        a.push(format!(
            "memory-backend-file,id=ram0,size={mem},mem-path=/proc/self/fd/{},share=on",
            10 + nics
        ));
        for i in 0..nics {
            a.push("-netdev".into());
            a.push(format!("tap,id=net{i},fd={}", 10 + i));
            a.push("-device".into());
            let mac = extra_mac
                .filter(|_| i == 0)
                .map_or(format!("0c:00:00:00:00:0{i}"), str::to_string);
            a.push(format!("virtio-net-pci,netdev=net{i},mac={mac}"));
        }
        a.into_iter().map(OsString::from).collect()
    }

    #[test]
    fn the_key_ignores_what_may_differ_and_keeps_the_device_abi() {
        let k = Key::of(
            &argv("256M", 2, None),
            "QEMU emulator version 7.2.22",
            vec![],
        );
        assert_eq!(k.machine, "pc,memory-backend=ram0");
        assert_eq!(
            (
                k.accel.as_str(),
                k.cpu.as_str(),
                k.smp.as_str(),
                k.memory.as_str()
            ),
            ("tcg", "max", "1", "256M")
        );
        assert_eq!(
            k.memory_backend,
            ["memory-backend-file,id=ram0,size=256M,share=on"]
        );
        assert_eq!(k.macs, ["0c:00:00:00:00:00", "0c:00:00:00:00:01"]);
        assert_eq!(k.devices.len(), 2);
        // Kernel line, fd numbers, socket paths: not in the key.
        let mut other = argv("256M", 2, None);
        for a in other.iter_mut() {
            *a = OsString::from(
                a.to_string_lossy()
                    .replace("console=ttyS0", "quiet")
                    .replace("fd=10", "fd=40")
                    .replace("/run/x", "/run/y"),
            );
        }
        assert!(Key::of(&other, "QEMU emulator version 7.2.22", vec![])
            .differences(&k)
            .is_empty());
    }

    #[test]
    fn the_guest_agent_port_is_device_abi_and_its_socket_path_is_not() {
        let with_agent = |run: &str| {
            let mut a = argv("256M", 1, None);
            for x in [
                "-chardev",
                &format!("socket,id=qga0,server=on,wait=off,path={run}/qga.sock"),
                "-device",
                "virtio-serial-pci,id=qga-serial",
                "-device",
                "virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0",
            ] {
                a.push(x.into());
            }
            Key::of(&a, "q", vec![])
        };
        let plain = Key::of(&argv("256M", 1, None), "q", vec![]);
        assert!(with_agent("/run/x")
            .differences(&with_agent("/run/y"))
            .is_empty());
        assert_eq!(
            with_agent("/run/x").differences(&plain),
            ["device count: saved 1, here 3"]
        );
    }

    #[test]
    fn differences_name_the_field_in_words() {
        let v = "QEMU emulator version 7.2.22";
        let saved = Key::of(&argv("256M", 2, None), v, vec!["1:a".into()]);
        let here = Key::of(&argv("512M", 3, None), v, vec!["1:a".into()]);
        assert_eq!(
            here.differences(&saved),
            [
                "memory: saved \"256M\", here \"512M\"",
                "memory backend: saved \"memory-backend-file,id=ram0,size=256M,share=on\", here \"memory-backend-file,id=ram0,size=512M,share=on\"",
                "NIC count: saved 2, here 3",
            ]
        );
        let here = Key::of(
            &argv("256M", 2, Some("0c:99:00:00:00:00")),
            "QEMU emulator version 8.0.0",
            vec!["1:b".into()],
        );
        let d = here.differences(&saved);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d[0].starts_with("qemu: saved \"QEMU emulator version 7.2.22\""),
            "{d:?}"
        );
        assert!(
            d[1].starts_with("NIC MACs: saved 0c:00:00:00:00:00 0c:00:00:00:00:01, here 0c:99"),
            "{d:?}"
        );
        assert!(
            d[2].starts_with("devices: saved \"-device virtio-net-pci,netdev=net0,mac=0c:00"),
            "{d:?}"
        );
        assert_eq!(d[3], "base disks: saved 1:a, here 1:b");
    }

    #[test]
    fn a_fingerprint_tells_images_apart_and_is_stable() {
        let dir = std::env::temp_dir().join(format!("lt-snapshot-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, vec![7u8; 3 << 20]).unwrap();
        let mut other = vec![7u8; 3 << 20];
        other[0] = 8;
        std::fs::write(&b, other).unwrap();
        let fa = fingerprint(&a).unwrap();
        assert_eq!(fa, fingerprint(&a).unwrap());
        assert!(fa.starts_with("3145728:"), "{fa}");
        assert_ne!(fa, fingerprint(&b).unwrap());
        std::fs::write(&b, b"tiny").unwrap();
        assert!(fingerprint(&b).unwrap().starts_with("4:"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
