//! The qemu command line, as pure data: [`argv`] turns a validated [`VmPlan`] plus the accel that
//! was decided and the fixed fd numbers of the taps into a `Vec<OsString>`. Nothing here opens a
//! file or spawns a process; [`decide_accel`] takes what the caller read from the system.

use crate::config::{Accel, Delivery, DiskInterface, DiskKind, Management, Protocol, VmPlan};
use std::ffi::OsString;

/// Tap fds are handed to qemu at `TAP_FD_BASE + position` (position in `plan.nics.links`).
pub const TAP_FD_BASE: i32 = 10;

/// The management tap's fd in passthrough mode.
pub const MGMT_TAP_FD: i32 = 9;

/// Internal-network tap k (see `config::InternalNet`) is handed to qemu at this + k (3..=8).
pub const INTERNAL_FD_BASE: i32 = 3;

/// The guest's management address in user mode (vrnetlab's convention).
pub const GUEST_MGMT_IP: &str = "10.0.0.15";

/// The acceleration actually used, with the reason when it differs from what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelChoice {
    pub kvm: bool,
    /// vhost-net for the data taps (only with KVM and a usable /dev/vhost-net).
    pub vhost: bool,
    pub warning: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("accel = \"kvm\" was asked for, but {0}")]
pub struct AccelError(String);

/// Decides KVM or TCG. `kvm_opens`: /dev/kvm could be opened read-write; `cpuinfo`: the text
/// of /proc/cpuinfo. A PVM-only KVM (a /dev/kvm without vmx/svm in cpuinfo) hangs real guests,
/// so `auto` picks TCG there.
pub fn decide_accel(
    asked: Accel,
    kvm_opens: bool,
    cpuinfo: &str,
) -> Result<AccelChoice, AccelError> {
    let virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match asked {
        Accel::Tcg => Ok(AccelChoice {
            kvm: false,
            vhost: false,
            warning: None,
        }),
        Accel::Kvm if kvm_opens => Ok(AccelChoice {
            kvm: true,
            vhost: false,
            warning: None,
        }),
        Accel::Kvm => Err(AccelError(
            "/dev/kvm cannot be opened (pass --device /dev/kvm)".into(),
        )),
        Accel::Auto => {
            let why = match (kvm_opens, virt) {
                (true, true) => return Ok(AccelChoice { kvm: true, vhost: false, warning: None }),
                (false, _) => "/dev/kvm cannot be opened",
                (true, false) => "/dev/kvm opens but /proc/cpuinfo shows no vmx/svm (a PVM-only or nested-less KVM hangs guests)",
            };
            Ok(AccelChoice {
                kvm: false,
                vhost: false,
                warning: Some(format!(
                    "using TCG software emulation, the VM will be slow: {why}"
                )),
            })
        }
    }
}

/// Queues per data NIC: as configured, or with 0 (auto) one per vCPU when vhost-net is on
/// (virtio-net only), else one.
pub fn queues(plan: &VmPlan, accel: &AccelChoice) -> u32 {
    match plan.nics.queues {
        0 if accel.vhost && plan.nics.model.starts_with("virtio-net") => plan.machine.smp.min(16),
        0 => 1,
        n => n,
    }
}

/// A stable, locally administered unicast MAC for NIC `index` (0 = management) of VM `name`:
/// the same after a restart, different between routers.
pub fn mac(name: &str, index: u32) -> String {
    // FNV-1a, 64 bit: small, stable across Rust versions (unlike DefaultHasher).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let b = h.to_be_bytes();
    format!(
        "0c:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0],
        b[1],
        b[2],
        (index >> 8) & 0xff,
        index & 0xff
    )
}

struct Argv(Vec<OsString>);

impl Argv {
    fn push(&mut self, a: impl Into<OsString>) -> &mut Self {
        self.0.push(a.into());
        self
    }
    fn opt(&mut self, flag: &str, value: impl Into<OsString>) -> &mut Self {
        self.push(flag).push(value)
    }
}

fn path_opt(prefix: &str, p: &std::path::Path) -> OsString {
    // qemu option values escape ',' by doubling it.
    let s = p.to_string_lossy().replace(',', ",,");
    OsString::from(format!("{prefix}{s}"))
}

/// The whole qemu argv (argv[0] included). `mgmt_mac`: in passthrough mode, the MAC of the
/// container's management interface (read at run time), else one derived from the plan.
pub fn argv(plan: &VmPlan, accel: &AccelChoice, mgmt_mac: Option<&str>) -> Vec<OsString> {
    let mut a = Argv(Vec::new());
    let seed = plan.mac_seed();
    a.push(plan.machine.qemu.clone());
    a.opt("-name", format!("{},debug-threads=on", plan.name));
    a.push("-nodefaults").push("-no-user-config");
    a.opt("-display", "none");
    a.opt("-machine", plan.machine.machine_type.clone());
    a.opt("-accel", if accel.kvm { "kvm" } else { "tcg" });
    // `host` exists only under KVM; under TCG `max` is its closest equivalent.
    let cpu = if !accel.kvm && plan.machine.cpu == "host" {
        "max".to_string()
    } else {
        plan.machine.cpu.clone()
    };
    a.opt("-cpu", cpu);
    a.opt("-smp", plan.machine.smp.to_string());
    a.opt("-m", format!("{}M", plan.machine.memory_mib));
    if let Some(u) = &plan.machine.uuid {
        a.opt("-uuid", u.clone());
    }
    for t in &plan.machine.smbios {
        a.opt("-smbios", t.clone());
    }
    a.opt(
        "-qmp",
        path_opt("unix:", &plan.qmp_socket())
            .into_string()
            .unwrap_or_default()
            + ",server=on,wait=off",
    );
    // The launcher listens on the serial socket; qemu connects to it, so no output is lost and
    // the console outlives a qemu restart.
    for n in 0..=plan.console.extra_serials {
        a.opt(
            "-chardev",
            path_opt(
                &format!("socket,id=serial{n},server=off,path="),
                &plan.serial_socket(n),
            ),
        );
        a.opt("-serial", format!("chardev:serial{n}"));
    }

    if let Some(k) = &plan.boot.kernel {
        a.opt("-kernel", k.path.clone());
        if let Some(i) = &k.initrd {
            a.opt("-initrd", i.clone());
        }
        if !k.append.is_empty() {
            a.opt("-append", k.append.clone());
        }
    }

    let mut scsi = false;
    // IDE: two units per bus on pc (ide.0, ide.1); q35's AHCI has six buses of one unit.
    let mut ide = 0u32;
    let q35 = plan.machine.machine_type.contains("q35");
    for (i, d) in plan.boot.disks.iter().enumerate() {
        let drive = match &d.kind {
            DiskKind::Cd { image, .. } => path_opt(
                &format!("if=none,id=disk{i},format=raw,media=cdrom,readonly=on,file="),
                image,
            ),
            // A folder (licences, day-0 configs) as a read-only FAT disk, built by qemu.
            DiskKind::Fat => path_opt(
                &format!("if=none,id=disk{i},format=raw,readonly=on,file=fat:"),
                &d.path,
            ),
            DiskKind::Image { format, overlay } => {
                let (file, format) = match overlay {
                    Some(o) => (o, "qcow2"),
                    None => (&d.path, format.as_str()),
                };
                let mut drive =
                    path_opt(&format!("if=none,id=disk{i},format={format},file="), file);
                drive.push(",cache=unsafe,discard=unmap");
                drive
            }
        };
        a.opt("-drive", drive);
        match d.interface {
            DiskInterface::Virtio => a.opt("-device", format!("virtio-blk-pci,drive=disk{i}")),
            DiskInterface::Ide => {
                let at = if q35 {
                    format!("bus=ide.{ide}")
                } else {
                    format!("bus=ide.{},unit={}", ide / 2, ide % 2)
                };
                ide += 1;
                a.opt(
                    "-device",
                    format!(
                        "{},drive=disk{i},{at}",
                        if d.is_cd() { "ide-cd" } else { "ide-hd" },
                    ),
                )
            }
            DiskInterface::Scsi => {
                if !scsi {
                    scsi = true;
                    a.opt("-device", "virtio-scsi-pci,id=scsi0");
                }
                let dev = if d.is_cd() { "scsi-cd" } else { "scsi-hd" };
                a.opt("-device", format!("{dev},drive=disk{i},bus=scsi0.0"))
            }
        };
    }

    match &plan.management {
        Management::None => {}
        Management::User {
            model,
            forwards,
            tftp_root,
        } => {
            let mut nd = String::from("user,id=mgmt,net=10.0.0.0/24,dhcpstart=10.0.0.15");
            if let Some(t) = tftp_root {
                nd.push_str(&path_opt(",tftp=", t).to_string_lossy());
            }
            for f in forwards {
                let p = match f.proto {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                nd.push_str(&format!(
                    ",hostfwd={p}::{}-{GUEST_MGMT_IP}:{}",
                    f.host_port, f.guest_port
                ));
            }
            a.opt("-netdev", nd);
            a.opt(
                "-device",
                format!("{model},netdev=mgmt,mac={}", mac(&seed, 0)),
            );
        }
        Management::Passthrough { model, .. } => {
            // The container's eth0 MAC when the supervisor has read it, so the VM is the
            // address the lab tool handed out.
            let m = mgmt_mac.map_or_else(|| mac(&seed, 0), str::to_string);
            a.opt("-netdev", format!("tap,id=mgmt,fd={MGMT_TAP_FD}"));
            a.opt("-device", format!("{model},netdev=mgmt,mac={m}"));
        }
    }

    // Internal links to the node's other VMs (vMX control <-> forwarding plane), right after
    // management, before the data ports.
    for k in 0..plan.internal.len() as u32 {
        a.opt(
            "-netdev",
            format!("tap,id=int{k},fd={}", INTERNAL_FD_BASE + k as i32),
        );
        a.opt(
            "-device",
            format!(
                "{},netdev=int{k},mac={}",
                plan.nics.model,
                mac(&seed, 0x200 + k)
            ),
        );
    }

    // Data NICs in ethN order; a gap in the numbering gets a NIC with no backend so the guest's
    // port N still is the container's ethN. Past `nics_per_bridge` NICs, they sit on PCI
    // bridges, that many per bridge (a root bus has too few free slots for dozens of ports).
    // Slots: `nic_offset` empty ones first, then data NIC N in slot offset + N.
    let max = plan.nics.links.iter().map(|l| l.index).max().unwrap_or(0);
    let off = plan.nics.offset;
    let per = plan.nics.per_bridge.max(1);
    let bridged = max + off > per;
    if bridged {
        for b in 1..=(max + off).div_ceil(per) {
            a.opt(
                "-device",
                format!("pci-bridge,chassis_nr={b},id=pci.{b},shpc=off"),
            );
        }
    }
    // Where NIC slot `slot` (1-based, offset slots included) sits.
    let place = |slot: u32| -> String {
        if bridged {
            format!(
                ",bus=pci.{},addr=0x{:x}",
                (slot - 1) / per + 1,
                (slot - 1) % per + 1
            )
        } else {
            String::new()
        }
    };
    let vhost = if accel.vhost { ",vhost=on" } else { "" };
    let q = queues(plan, accel);
    // Tap fds: TAP_FD_BASE + position * queues + queue.
    let fds = |pos: usize| -> String {
        let first = TAP_FD_BASE + pos as i32 * q as i32;
        if q == 1 {
            format!("fd={first}")
        } else {
            let list: Vec<String> = (0..q as i32).map(|i| (first + i).to_string()).collect();
            format!("fds={}", list.join(":"))
        }
    };
    let mq = if q > 1 {
        format!(",mq=on,vectors={}", 2 * q + 2)
    } else {
        String::new()
    };
    for k in 1..=off {
        let slot = place(k);
        a.opt(
            "-device",
            format!(
                "{},id=reserved{k},mac={}{slot}",
                plan.nics.model,
                mac(&seed, 0x100 + k)
            ),
        );
    }
    let mut pos = 0usize;
    for index in 1..=max {
        let mac = mac(&seed, index);
        match plan.nics.links.get(pos).filter(|l| l.index == index) {
            Some(_) => {
                a.opt("-netdev", format!("tap,id=net{index},{}{vhost}", fds(pos)));
                a.opt(
                    "-device",
                    format!(
                        "{},netdev=net{index},mac={mac}{mq}{}",
                        plan.nics.model,
                        place(index + off)
                    ),
                );
                pos += 1;
            }
            None => {
                a.opt(
                    "-device",
                    format!(
                        "{},id=placeholder{index},mac={mac}{}",
                        plan.nics.model,
                        place(index + off)
                    ),
                );
            }
        }
    }

    // The startup config reaches the guest as an fw_cfg entry, unless the bootstrap types it
    // on the console.
    if let Some(sc) = plan
        .startup_config
        .as_ref()
        .filter(|sc| sc.via == Delivery::FwCfg)
    {
        a.opt(
            "-fw_cfg",
            path_opt("name=opt/launcher/startup-config,file=", &sc.path),
        );
    }
    for x in &plan.machine.extra_args {
        a.push(x.clone());
    }
    a.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Env, Overrides};
    use std::path::Path;

    const CPUINFO_VMX: &str = "processor : 0\nflags\t\t: fpu vme de pse vmx sse\n";
    const CPUINFO_PLAIN: &str = "processor : 0\nflags\t\t: fpu vme de pse sse hypervisor\n";

    #[test]
    fn accel_auto() {
        assert!(decide_accel(Accel::Auto, true, CPUINFO_VMX).unwrap().kvm);
        let pvm = decide_accel(Accel::Auto, true, CPUINFO_PLAIN).unwrap();
        assert!(!pvm.kvm);
        assert!(pvm.warning.unwrap().contains("no vmx/svm"));
        let none = decide_accel(Accel::Auto, false, CPUINFO_VMX).unwrap();
        assert!(!none.kvm && none.warning.unwrap().contains("cannot be opened"));
        assert!(decide_accel(Accel::Kvm, false, CPUINFO_VMX).is_err());
        assert_eq!(
            decide_accel(Accel::Tcg, true, CPUINFO_VMX).unwrap(),
            AccelChoice {
                kvm: false,
                vhost: false,
                warning: None
            }
        );
    }

    #[test]
    fn macs_are_stable_and_distinct() {
        assert_eq!(mac("r1", 1), mac("r1", 1));
        assert_ne!(mac("r1", 1), mac("r2", 1));
        assert_ne!(mac("r1", 1), mac("r1", 2));
        assert_eq!(mac("r1", 300).len(), 17);
        // Locally administered, unicast: first octet 0c has bit 0 clear.
        assert_eq!(u8::from_str_radix(&mac("x", 0)[..2], 16).unwrap() & 1, 0);
    }

    fn golden(name: &str, toml: &str, env: &[(&str, &str)], kvm: bool) {
        let env: Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let node = parse(
            toml,
            Path::new("/etc/launcher/launcher.toml"),
            Path::new("/etc/launcher"),
            &env,
            &Overrides::default(),
        )
        .unwrap();
        // One argv per VM, a blank line between.
        let mut all = Vec::new();
        for plan in node.vms {
            let mgmt_mac = matches!(plan.management, Management::Passthrough { .. })
                .then_some("02:42:ac:14:14:03");
            let got: Vec<String> = argv(
                &plan,
                &AccelChoice {
                    kvm,
                    vhost: kvm,
                    warning: None,
                },
                mgmt_mac,
            )
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
            all.push(got.join("\n") + "\n");
        }
        let got = all.join("\n");
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.argv"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(got, want, "argv differs from {}", path.display());
    }

    #[test]
    fn golden_tinylinux_kernel_boot() {
        golden(
            "tinylinux",
            "[vm]\nname=\"r1\"\nmemory=256\n[kernel]\npath=\"build/vmlinuz\"\ninitrd=\"build/initramfs.cpio.gz\"\nappend=\"console=ttyS0\"\n[management]\nforwards=[\"tcp:22\",\"udp:161\",\"tcp:2022:22\"]\n",
            &[("CLAB_INTFS", "2")],
            false,
        );
    }

    #[test]
    fn golden_vmx_like_disks_kvm() {
        golden(
            "disks-kvm",
            "[vm]\nname=\"vmx1\"\ncpu=\"host\"\nsmp=4\nmemory=4096\n[[disk]]\npath=\"/images/vmx.qcow2\"\n[[disk]]\npath=\"cfg.img\"\nformat=\"raw\"\ninterface=\"ide\"\noverlay=false\n[[disk]]\npath=\"d3.qcow2\"\ninterface=\"scsi\"\n[[disk]]\npath=\"/config/day0\"\nformat=\"iso\"\nlabel=\"cidata\"\n[nics]\nmodel=\"e1000\"\ncount=3\n[management]\nmode=\"none\"\n",
            &[("QEMU_ADDITIONAL_ARGS", "-device 'pvpanic' -rtc base=utc")],
            true,
        );
    }

    #[test]
    fn golden_platform_files_and_offset() {
        golden(
            "files-offset",
            "[vm]\nname=\"veos\"\nuuid=\"12345678-9abc-def0-1234-56789abcdef0\"\nsmbios=[\"type=1,product=vEOS-lab\"]\n[[disk]]\npath=\"veos.qcow2\"\n[[disk]]\npath=\"/config/licences\"\nformat=\"fat\"\ninterface=\"ide\"\n[nics]\ncount=2\noffset=1\n[management]\nforwards=[\"tcp:22\"]\ntftp_root=\"/config/tftp\"\n",
            &[],
            false,
        );
    }

    #[test]
    fn golden_multi_queue() {
        golden(
            "multi-queue",
            "[vm]\nname=\"mq\"\nsmp=4\n[kernel]\npath=\"k\"\n[nics]\ncount=2\nqueues=4\n[management]\nmode=\"none\"\n",
            &[],
            false,
        );
    }

    #[test]
    fn golden_four_serial_ports() {
        golden(
            "xrv9k-serials",
            "[vm]\nname=\"xrv9k\"\n[[disk]]\npath=\"/images/xrv9k.qcow2\"\n[console]\nextra_serials=3\n[management]\nmode=\"none\"\n",
            &[],
            false,
        );
    }

    #[test]
    fn golden_sixty_nics_on_pci_bridges() {
        golden(
            "sixty-nics",
            "[vm]\nname=\"big\"\nmachine=\"q35\"\n[kernel]\npath=\"k\"\n[management]\nforwards=[]\n",
            &[("CLAB_INTFS", "60")],
            false,
        );
    }

    #[test]
    fn golden_two_vms_vmx_like() {
        golden(
            "two-vms",
            r#"
[nics]
count = 2
[[vm]]
name = "vcp"
memory = 2048
data = "none"
internal = ["int"]
[[vm.disk]]
path = "/images/vcp.qcow2"
[[vm]]
name = "vfp"
memory = 4096
smp = 3
data = "all"
internal = ["int"]
[[vm.disk]]
path = "/images/vfp.img"
format = "raw"
"#,
            &[("QEMU_MEMORY", "3072")],
            false,
        );
    }

    #[test]
    fn golden_passthrough_vmxnet3() {
        golden(
            "passthrough-vmxnet3",
            "[vm]\nname=\"vsrx\"\n[[disk]]\npath=\"/images/vsrx.qcow2\"\n[nics]\nmodel=\"vmxnet3\"\ncount=2\n[management]\nmodel=\"e1000\"\n",
            &[("CLAB_MGMT_PASSTHROUGH", "true")],
            false,
        );
    }

    #[test]
    fn golden_host_cpu_under_tcg_and_gaps() {
        golden(
            "gaps-tcg",
            "[vm]\nname=\"csr\"\ncpu=\"host\"\nstartup_config=\"/config/startup-config.cfg\"\n[[disk]]\npath=\"csr,1.qcow2\"\n[nics]\nnames=[\"eth1\",\"eth4\"]\n[management]\nforwards=[]\n",
            &[],
            false,
        );
    }
}
