//! The qemu command line, as pure data: [`argv`] turns a validated [`VmPlan`], the [`Launch`]
//! that was decided and the run-time facts of [`Resolved`] into a `Vec<OsString>`, one private
//! function per section, every tap fd number from the VM's [`FdLayout`]. Nothing here opens a
//! file, reads the system or spawns a process.

use super::accel::Launch;
use super::fds::FdLayout;
use crate::config::{
    Clock, DataLink, Delivery, DiskInterface, DiskKind, Management, Protocol, Sandbox,
    StartupConfig, VmPlan,
};
use std::ffi::OsString;
use std::path::Path;

/// What the supervisor knows at start and the plan does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The management NIC's MAC: CLAB_MGMT_MAC, else in passthrough the container eth0's, so
    /// the VM is the address the lab tool handed out. None: the stable derived [`mac`].
    pub mgmt_mac: Option<String>,
    /// The kernel command line with its {templates} rendered. None: the plan's text as is.
    pub kernel_append: Option<String>,
    /// The startup config to hand over, when its file exists at start.
    pub startup_config: Option<StartupConfig>,
    /// The VM's data links, in port order: the plan's, or those present at start (CLAB_INTFS
    /// counts links, which may skip ports).
    pub links: Vec<DataLink>,
    /// The `-smbios` values with their {templates} rendered. None: the plan's text as is.
    pub smbios: Option<Vec<String>>,
    /// What vm.license says (uuid, clock base), when the file was read.
    pub license: Option<super::License>,
}

impl Resolved {
    /// Nothing resolved: the plan as written (derived MAC, kernel text as is, the startup
    /// config assumed present, the planned links). What `launcher check` shows.
    pub fn planned(plan: &VmPlan) -> Self {
        Resolved {
            mgmt_mac: plan.lab.mgmt_mac.clone(),
            kernel_append: None,
            startup_config: plan.startup_config.clone(),
            links: plan.nics.links.clone(),
            smbios: None,
            license: None,
        }
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

/// The id of the VM's RAM backend object (and so of its RAM block in a migration stream).
pub const RAM_ID: &str = "ram0";

/// Makes `argv` a restore: qemu starts paused, waiting for the migration stream that QMP
/// `migrate-incoming` hands it (the device ABI is the argv's, unchanged).
pub fn incoming_defer(argv: &mut Vec<OsString>) {
    argv.push("-incoming".into());
    argv.push("defer".into());
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

fn path_opt(prefix: &str, p: &Path) -> OsString {
    // qemu option values escape ',' by doubling it.
    let s = p.to_string_lossy().replace(',', ",,");
    OsString::from(format!("{prefix}{s}"))
}

/// The whole qemu argv (argv[0] included).
pub fn argv(plan: &VmPlan, launch: &Launch, resolved: &Resolved) -> Vec<OsString> {
    let mut a = Argv(Vec::new());
    let fds = FdLayout::of(plan, launch, &resolved.links);
    let seed = plan.mac_seed();
    machine(&mut a, plan, launch, &fds);
    identity(&mut a, plan, resolved);
    sandbox(&mut a, plan);
    qmp_and_serials(&mut a, plan);
    kernel(&mut a, plan, resolved);
    disks(&mut a, plan);
    management(&mut a, plan, resolved, &fds, &seed);
    internal_nics(&mut a, plan, &fds, &seed);
    data_nics(&mut a, plan, &resolved.links, launch, &fds, &seed);
    guest_agent(&mut a, plan);
    fw_cfg(&mut a, resolved);
    for x in &plan.machine.extra_args {
        a.push(x.clone());
    }
    a.0
}

/// The binary, its name, machine, accel, CPU and memory.
fn machine(a: &mut Argv, plan: &VmPlan, launch: &Launch, fds: &FdLayout) {
    a.push(plan.machine.qemu.clone());
    a.opt("-name", format!("{},debug-threads=on", plan.name));
    a.push("-nodefaults").push("-no-user-config");
    a.opt("-display", "none");
    // An explicit RAM backend: its id names the RAM block in a migration stream, so a saved
    // snapshot loads into any later qemu of the same plan (`-m` alone names it `pc.ram`).
    a.opt(
        "-machine",
        format!("{},memory-backend={RAM_ID}", plan.machine.machine_type),
    );
    a.opt("-accel", if launch.kvm { "kvm" } else { "tcg" });
    // `host` exists only under KVM; under TCG `max` is its closest equivalent (its
    // properties, e.g. vEOS's `host,level=9`, kept).
    let cpu = match plan.machine.cpu.strip_prefix("host") {
        Some(rest) if !launch.kvm && (rest.is_empty() || rest.starts_with(',')) => {
            format!("max{rest}")
        }
        _ => plan.machine.cpu.clone(),
    };
    a.opt("-cpu", cpu);
    a.opt(
        "-smp",
        match &plan.machine.smp_topology {
            Some(t) => format!("{},{t}", plan.machine.smp),
            None => plan.machine.smp.to_string(),
        },
    );
    a.opt("-m", format!("{}M", plan.machine.memory_mib));
    // The guest RAM is a memfd the launcher makes for each qemu and hands over at a fixed
    // number, mapped shared: a snapshot saves it straight from the launcher's side (the
    // migration stream skips it, `x-ignore-shared`), and a restore fills a fresh memfd before
    // qemu maps it, instead of qemu loading it page by page from the stream.
    a.opt(
        "-object",
        format!(
            "memory-backend-file,id={RAM_ID},size={}M,mem-path=/proc/self/fd/{},share=on",
            plan.machine.memory_mib,
            fds.ram()
        ),
    );
}

/// The uuid (the licence's over vm.uuid), the guest clock's base from the licence, SMBIOS.
fn identity(a: &mut Argv, plan: &VmPlan, resolved: &Resolved) {
    let license = resolved.license.as_ref();
    if let Some(u) = license.map(|l| &l.uuid).or(plan.machine.uuid.as_ref()) {
        a.opt("-uuid", u.clone());
    }
    if let Some(base) = license.and_then(|l| l.rtc_base.as_ref()) {
        a.opt("-rtc", format!("base={base}"));
    }
    for t in resolved.smbios.as_ref().unwrap_or(&plan.machine.smbios) {
        a.opt("-smbios", t.clone());
    }
}

/// qemu's own seccomp filter (qemu 7.2: `-sandbox help` lists these keys): besides its default
/// deny list, no obsolete syscalls, no set*uid/gid (it already runs as its user, see
/// `supervisor::privilege`), no fork/exec (no helper, script or bridge helper), no scheduler or
/// affinity changes. A denied call kills qemu (SIGSYS).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// `-sandbox` when the VM is sandboxed (vm.sandbox).
fn sandbox(a: &mut Argv, plan: &VmPlan) {
    if let Sandbox::On { .. } = plan.sandbox {
        a.opt("-sandbox", SANDBOX);
    }
}

/// The QMP socket and the serial ports.
fn qmp_and_serials(a: &mut Argv, plan: &VmPlan) {
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
}

/// The qemu guest agent's port (vm.clock = "guest-agent"): a virtio-serial controller and the
/// port `org.qemu.guest_agent.0` (the name the guest's qemu-ga unit binds to) on a socket qemu
/// listens on. After every NIC, so NICs keep the PCI addresses they have without it.
fn guest_agent(a: &mut Argv, plan: &VmPlan) {
    if plan.clock != Clock::GuestAgent {
        return;
    }
    a.opt(
        "-chardev",
        path_opt(
            "socket,id=qga0,server=on,wait=off,path=",
            &plan.agent_socket(),
        ),
    );
    a.opt("-device", "virtio-serial-pci,id=qga-serial");
    a.opt(
        "-device",
        "virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0",
    );
}

/// Direct kernel boot, with the resolved command line.
fn kernel(a: &mut Argv, plan: &VmPlan, resolved: &Resolved) {
    let Some(k) = &plan.boot.kernel else { return };
    a.opt("-kernel", k.path.clone());
    if let Some(i) = &k.initrd {
        a.opt("-initrd", i.clone());
    }
    let append = resolved.kernel_append.as_ref().unwrap_or(&k.append);
    if !append.is_empty() {
        a.opt("-append", append.clone());
    }
}

/// The `-drive` of disk `i`: a CD image, a folder as FAT, or a disk (its overlay if any).
///
/// A writable disk is either an overlay kept in the state dir across restarts or the image
/// itself written in place: both persist, so both honour the guest's flushes
/// (`cache=writeback`). `unsafe` would drop them and a host crash would lose what the guest
/// believed written; `none` needs O_DIRECT, which the state dir's filesystem (tmpfs, older
/// overlayfs) may refuse. CDs and FAT folders are read-only: no cache option.
fn drive(i: usize, d: &crate::config::Disk) -> OsString {
    match &d.kind {
        DiskKind::Cd { image, .. } => path_opt(
            &format!("if=none,id=disk{i},format=raw,media=cdrom,readonly=on,file="),
            image,
        ),
        // A folder (licences, day-0 configs; a templated one as rendered) as a FAT disk built
        // by qemu, read-only, with its volume label. An IDE or AHCI hard disk cannot be
        // read-only (qemu refuses it: "Block node is read-only"), so there the guest writes
        // to a throwaway overlay (snapshot=on) and the folder stays untouched.
        DiskKind::Fat { label, rendered } => {
            let ro = match d.interface {
                DiskInterface::Ide | DiskInterface::Sata => "snapshot=on",
                _ => "readonly=on",
            };
            let dir = rendered.as_ref().map_or(&d.path, |r| &r.dir);
            let mut drive = path_opt(
                &format!("if=none,id=disk{i},format=raw,{ro},file=fat:"),
                dir,
            );
            if let Some(l) = label {
                drive.push(format!(",file.label={l}"));
            }
            drive
        }
        DiskKind::Image { format, overlay } => {
            let (file, format) = match overlay {
                Some(o) => (o, "qcow2"),
                None => (&d.path, format.as_str()),
            };
            let mut drive = path_opt(&format!("if=none,id=disk{i},format={format},file="), file);
            drive.push(",cache=writeback,discard=unmap");
            drive
        }
    }
}

/// Every disk: its drive and the device on its interface.
fn disks(a: &mut Argv, plan: &VmPlan) {
    let (mut scsi, mut usb) = (false, false);
    // AHCI: one controller, six ports.
    let mut sata = 0u32;
    // IDE: two units per bus on pc (ide.0, ide.1); q35's AHCI has six buses of one unit.
    let q35 = plan.machine.machine_type.contains("q35");
    for (i, d) in plan.boot.disks.iter().enumerate() {
        a.opt("-drive", drive(i, d));
        match d.interface {
            DiskInterface::Virtio => a.opt("-device", format!("virtio-blk-pci,drive=disk{i}")),
            DiskInterface::Ide => {
                let ide = d.ide_unit.expect("config places every IDE disk");
                let at = if q35 {
                    format!("bus=ide.{ide}")
                } else {
                    format!("bus=ide.{},unit={}", ide / 2, ide % 2)
                };
                let dev = if d.is_cd() { "ide-cd" } else { "ide-hd" };
                a.opt("-device", format!("{dev},drive=disk{i},{at}"))
            }
            DiskInterface::Scsi => {
                if !scsi {
                    scsi = true;
                    a.opt("-device", "virtio-scsi-pci,id=scsi0");
                }
                let dev = if d.is_cd() { "scsi-cd" } else { "scsi-hd" };
                a.opt("-device", format!("{dev},drive=disk{i},bus=scsi0.0"))
            }
            DiskInterface::Sata => {
                if sata == 0 {
                    a.opt("-device", "ahci,id=ahci0");
                }
                let dev = if d.is_cd() { "ide-cd" } else { "ide-hd" };
                sata += 1;
                a.opt(
                    "-device",
                    format!("{dev},drive=disk{i},bus=ahci0.{}", sata - 1),
                )
            }
            DiskInterface::Usb => {
                if !usb {
                    usb = true;
                    a.opt("-device", "qemu-xhci,id=xhci");
                }
                a.opt("-device", format!("usb-storage,drive=disk{i},bus=xhci.0"))
            }
        };
    }
}

/// The management NIC: user networking with its forwards, or the passthrough tap.
fn management(a: &mut Argv, plan: &VmPlan, resolved: &Resolved, fds: &FdLayout, seed: &str) {
    match &plan.management {
        Management::None => {}
        Management::User {
            model,
            forwards,
            tftp_root,
            subnet,
        } => {
            let guest = subnet.guest();
            let mut nd = format!("user,id=mgmt,net={subnet},dhcpstart={guest}");
            if let Some(t) = tftp_root {
                nd.push_str(&path_opt(",tftp=", t).to_string_lossy());
            }
            for f in forwards {
                let p = match f.proto {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                nd.push_str(&format!(
                    ",hostfwd={p}::{}-{guest}:{}",
                    f.host_port, f.guest_port
                ));
            }
            a.opt("-netdev", nd);
            let m = resolved.mgmt_mac.clone().unwrap_or_else(|| mac(seed, 0));
            a.opt("-device", format!("{model},netdev=mgmt,mac={m}"));
        }
        Management::Passthrough { model, .. } => {
            let m = resolved.mgmt_mac.clone().unwrap_or_else(|| mac(seed, 0));
            a.opt("-netdev", format!("tap,id=mgmt,fd={}", fds.mgmt()));
            a.opt("-device", format!("{model},netdev=mgmt,mac={m}"));
        }
    }
}

/// Internal links to the node's other VMs (vMX control <-> forwarding plane), right after
/// management, before the data ports.
fn internal_nics(a: &mut Argv, plan: &VmPlan, fds: &FdLayout, seed: &str) {
    for k in 0..plan.internal.len() {
        a.opt("-netdev", format!("tap,id=int{k},fd={}", fds.internal(k)));
        a.opt(
            "-device",
            format!(
                "{},netdev=int{k},mac={}",
                plan.nics.model,
                mac(seed, 0x200 + k as u32)
            ),
        );
    }
}

/// Where the data NICs sit: past `nics_per_bridge` slots they sit on PCI bridges, that many
/// per bridge (a root bus has too few free slots for dozens of ports).
struct Slots {
    per: u32,
    bridged: bool,
    /// vrnetlab's numbering (nics.bridges set): position slot + shift.
    vrnetlab: Option<u32>,
}

impl Slots {
    /// ", bus=..., addr=..." of NIC slot `slot` (1-based, offset slots included), or nothing.
    fn place(&self, slot: u32) -> String {
        if let Some(shift) = self.vrnetlab {
            let p = slot + shift;
            format!(
                ",bus=pci.{},addr=0x{:x}",
                p / self.per + 1,
                p % self.per + 1
            )
        } else if self.bridged {
            format!(
                ",bus=pci.{},addr=0x{:x}",
                (slot - 1) / self.per + 1,
                (slot - 1) % self.per + 1
            )
        } else {
            String::new()
        }
    }
}

/// The MAC index of root-bus dummy k is this + k (reserved slots: 0x100 + k; internal NICs:
/// 0x200 + k).
const DUMMY_MAC: u32 = 0x180;

/// Data NICs in ethN order, up to the highest link's port or nics.slots; a port without a link
/// gets a NIC with no backend so the guest's port N still is the container's ethN. Slots:
/// `nic_offset` empty ones first, then data NIC N in slot offset + N.
fn data_nics(
    a: &mut Argv,
    plan: &VmPlan,
    links: &[DataLink],
    launch: &Launch,
    fds: &FdLayout,
    seed: &str,
) {
    let highest = links.iter().map(|l| l.index).max().unwrap_or(0);
    let max = highest.max(plan.nics.slots);
    let off = plan.nics.offset;
    let per = plan.nics.per_bridge.max(1);
    let vrnetlab = plan.nics.bridges > 0;
    let slots = Slots {
        per,
        bridged: vrnetlab || max + off > per,
        vrnetlab: vrnetlab.then_some(plan.nics.pci_shift),
    };
    let bridges = if vrnetlab {
        plan.nics
            .bridges
            .max((max + off + plan.nics.pci_shift) / per + 1)
    } else {
        (max + off).div_ceil(per)
    };
    // vrnetlab's dummies: root-bus NICs after management and the internal NICs (qemu gives
    // each the next free root slot), before the bridges, so the data NICs keep their slots.
    for k in 1..=plan.nics.dummies {
        let m = &plan.nics.dummy_model;
        a.opt(
            "-device",
            format!("{m},id=dummy{k},mac={}", mac(seed, DUMMY_MAC + k)),
        );
    }
    if slots.bridged {
        for b in 1..=bridges {
            a.opt(
                "-device",
                format!("pci-bridge,chassis_nr={b},id=pci.{b},shpc=off"),
            );
        }
    }
    let model = &plan.nics.model;
    for k in 1..=off {
        let (mac, at) = (mac(seed, 0x100 + k), slots.place(k));
        let m = &plan.nics.offset_model;
        a.opt("-device", format!("{m},id=reserved{k},mac={mac}{at}"));
    }
    let q = launch.queues;
    let mq = if q > 1 {
        format!(",mq=on,vectors={}", 2 * q + 2)
    } else {
        String::new()
    };
    let mut pos = 0usize;
    for index in 1..=max {
        let (mac, at) = (mac(seed, index), slots.place(index + off));
        if links.get(pos).is_some_and(|l| l.index == index) {
            // With vhost-net the vhost fds come open from the launcher (`vhostfd=`/`vhostfds=`,
            // from the layout): qemu never opens /dev/vhost-net itself.
            let fd = fds.netdev_fd_arg(pos);
            a.opt("-netdev", format!("tap,id=net{index},{fd}"));
            a.opt(
                "-device",
                format!("{model},netdev=net{index},mac={mac}{mq}{at}"),
            );
            pos += 1;
        } else {
            a.opt(
                "-device",
                format!("{model},id=placeholder{index},mac={mac}{at}"),
            );
        }
    }
}

/// The startup config reaches the guest as an fw_cfg entry when it exists, unless the
/// bootstrap types it on the console.
fn fw_cfg(a: &mut Argv, resolved: &Resolved) {
    if let Some(sc) = resolved
        .startup_config
        .as_ref()
        .filter(|sc| sc.via == Delivery::FwCfg)
    {
        a.opt(
            "-fw_cfg",
            path_opt("name=opt/launcher/startup-config,file=", &sc.path),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Env, Overrides};
    use std::path::Path;

    #[test]
    fn macs_are_stable_and_distinct() {
        assert_eq!(mac("r1", 1), mac("r1", 1));
        assert_ne!(mac("r1", 1), mac("r2", 1));
        assert_ne!(mac("r1", 1), mac("r1", 2));
        assert_eq!(mac("r1", 300).len(), 17);
        // Locally administered, unicast: first octet 0c has bit 0 clear.
        assert_eq!(u8::from_str_radix(&mac("x", 0)[..2], 16).unwrap() & 1, 0);
    }

    /// The run-time facts of the golden cases: a passthrough MAC read from eth0, the rest as
    /// planned (the startup config file exists).
    fn golden_resolved(plan: &VmPlan) -> Resolved {
        let mut r = Resolved::planned(plan);
        if let Management::Passthrough { .. } = plan.management {
            r.mgmt_mac = Some("02:42:ac:14:14:03".into());
        }
        r
    }

    /// The fd numbers of the `-netdev tap` arguments.
    fn netdev_fds(argv: &[String]) -> Vec<i32> {
        let mut out = Vec::new();
        for w in argv.windows(2).filter(|w| w[0] == "-netdev") {
            for kv in w[1].split(',') {
                match kv.split_once('=') {
                    Some(("fd" | "vhostfd", n)) => out.push(n.parse().unwrap()),
                    Some(("fds" | "vhostfds", ns)) => {
                        out.extend(ns.split(':').map(|n| n.parse::<i32>().unwrap()))
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Every fd number in the argv is bound exactly once, and every bound number is in the
    /// argv, when the taps are handed over as the layout asks.
    fn argv_and_binding_agree(plan: &VmPlan, launch: &Launch, links: &[DataLink], argv: &[String]) {
        let layout = FdLayout::of(plan, launch, links);
        let mgmt = matches!(plan.management, Management::Passthrough { .. }).then_some(1000);
        let internal: Vec<i32> = (0..plan.internal.len() as i32).map(|k| 2000 + k).collect();
        let data: Vec<Vec<i32>> = (0..links.len() as i32)
            .map(|pos| {
                (0..launch.queues as i32)
                    .map(|j| 3000 + 100 * pos + j)
                    .collect()
            })
            .collect();
        let bound = layout.bind(mgmt, &internal, &data).unwrap();
        let mut numbers: Vec<i32> = bound.iter().map(|(n, _)| *n).collect();
        numbers.extend(layout.vhost_numbers());
        assert_eq!(
            layout.vhost_numbers().is_empty(),
            !launch.vhost || links.is_empty()
        );
        numbers.sort();
        let mut in_argv = netdev_fds(argv);
        in_argv.sort();
        assert_eq!(numbers, in_argv, "{}: argv and binding disagree", plan.name);
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            bound.len() + layout.vhost_numbers().len(),
            "{}: a number bound twice",
            plan.name
        );
        // The RAM's memfd comes last, above every tap and vhost-net number.
        assert!(numbers.last().is_none_or(|&n| n < layout.ram()));
        assert_eq!(layout.max_fd(), layout.ram());
        let ram = format!("mem-path=/proc/self/fd/{},share=on", layout.ram());
        let mapped = argv.iter().filter(|a| a.contains(&ram));
        assert_eq!(mapped.count(), 1, "{}: the RAM at {ram}", plan.name);
    }

    fn golden(name: &str, toml: &str, env: &[(&str, &str)], kvm: bool) {
        golden_present(name, toml, env, kvm, None)
    }

    /// A golden case; with `present`, the data ports found at start (CLAB_INTFS counts links).
    fn golden_present(
        name: &str,
        toml: &str,
        env: &[(&str, &str)],
        kvm: bool,
        present: Option<&[u32]>,
    ) {
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
        let found = present.map(|p| node.links_present(p).unwrap());
        // One argv per VM, a blank line between.
        let mut all = Vec::new();
        for (i, plan) in node.vms.iter().enumerate() {
            let launch = Launch::assumed(plan, kvm, kvm);
            let mut resolved = golden_resolved(plan);
            if let Some(found) = &found {
                resolved.links = found[i].clone();
            }
            let got: Vec<String> = argv(plan, &launch, &resolved)
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect();
            argv_and_binding_agree(plan, &launch, &resolved.links, &got);
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
    fn sandbox_is_qemu_seccomp_filter_unless_turned_off() {
        let args = |vm: &str| {
            let toml = format!("[vm]\n{vm}\n[kernel]\npath=\"/k\"\n");
            let node = crate::config::parse_with(&toml, &[]).unwrap();
            let plan = &node.vms[0];
            let launch = Launch::assumed(plan, false, false);
            argv(plan, &launch, &Resolved::planned(plan))
        };
        let on = args("");
        let at = on.iter().position(|a| a == "-sandbox").expect("-sandbox");
        assert_eq!(on[at + 1], SANDBOX);
        assert!(!args("sandbox = false").iter().any(|a| a == "-sandbox"));
    }

    #[test]
    fn the_guest_agent_port_comes_after_every_nic() {
        let args = |vm: &str| {
            let toml = format!("[vm]\n{vm}\n[kernel]\npath=\"/k\"\n");
            let node = crate::config::parse_with(&toml, &[("CLAB_INTFS", "2")]).unwrap();
            let plan = &node.vms[0];
            let launch = Launch::assumed(plan, false, false);
            argv(plan, &launch, &Resolved::planned(plan))
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        let none = args("");
        assert!(!none.iter().any(|a| a.contains("guest_agent")));
        let qga = args("clock = \"guest-agent\"");
        let at = |what: &str| qga.iter().rposition(|a| a.contains(what)).unwrap();
        let port = at("name=org.qemu.guest_agent.0");
        assert_eq!(qga[port - 1], "-device");
        assert!(qga[port].contains("chardev=qga0"), "{}", qga[port]);
        assert!(at("virtio-serial-pci") < port && at("net2") < at("virtio-serial-pci"));
        let chardev = at("id=qga0,");
        assert!(qga[chardev].starts_with("socket,") && qga[chardev].contains("server=on"));
    }

    #[test]
    fn persisted_disks_honour_guest_flushes() {
        let toml = "[vm]\nname=\"r\"\n[[disk]]\npath=\"/images/a.qcow2\"\n[[disk]]\npath=\"b.img\"\nformat=\"raw\"\noverlay=false\n[[disk]]\npath=\"/config/lic\"\nformat=\"fat\"\n[management]\nmode=\"none\"\n";
        let node = crate::config::parse_with(toml, &[]).unwrap();
        let vm = &node.vms[0];
        let drives: Vec<String> = vm
            .boot
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| drive(i, d).to_string_lossy().into_owned())
            .collect();
        // The overlay (kept in the state dir) and the image written in place both persist.
        for d in &drives[..2] {
            assert!(d.contains(",cache=writeback,"), "{d}");
            assert!(!d.contains("unsafe"), "{d}");
        }
        // The FAT folder is read-only: no cache option at all.
        assert!(drives[2].contains("readonly=on") && !drives[2].contains("cache="));
    }

    #[test]
    fn a_fat_folder_on_ide_is_a_throwaway_overlay_not_read_only() {
        // qemu refuses a read-only drive on ide-hd; virtio and scsi take it read-only.
        let toml = "[vm]\nname=\"r\"\n[[disk]]\npath=\"/config/lic\"\nformat=\"fat\"\ninterface=\"ide\"\n[[disk]]\npath=\"/config/b\"\nformat=\"fat\"\ninterface=\"scsi\"\n[management]\nmode=\"none\"\n";
        let node = crate::config::parse_with(toml, &[]).unwrap();
        let d = &node.vms[0].boot.disks;
        let ide = drive(0, &d[0]).to_string_lossy().into_owned();
        assert!(
            ide.contains(",snapshot=on,") && !ide.contains("readonly"),
            "{ide}"
        );
        let scsi = drive(1, &d[1]).to_string_lossy().into_owned();
        assert!(
            scsi.contains(",readonly=on,") && !scsi.contains("snapshot"),
            "{scsi}"
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

    /// The hardware keys of vendor platforms: smp topology, disks on AHCI and USB (a FAT
    /// folder on each), virtio NICs reserved before e1000 data NICs.
    #[test]
    fn golden_platform_sata_usb_topology() {
        golden(
            "sata-usb",
            "[vm]\nname=\"pf\"\nsmp=\"4,sockets=1,cores=4,threads=1\"\n[[disk]]\npath=\"/images/n9k.qcow2\"\ninterface=\"sata\"\n[[disk]]\npath=\"/config/lic\"\nformat=\"fat\"\ninterface=\"sata\"\n[[disk]]\npath=\"/config/usb\"\nformat=\"fat\"\ninterface=\"usb\"\nlabel=\"vmm-data\"\ntemplate=true\narchive=\"vmm-config.tgz\"\n[[disk]]\npath=\"/images/meta.img\"\nformat=\"raw\"\ninterface=\"usb\"\noverlay=false\n[nics]\nmodel=\"e1000\"\ncount=2\noffset=2\noffset_model=\"virtio-net-pci\"\n[management]\nforwards=[\"tcp:22\"]\n",
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

    /// KVM with vhost-net and 4 queues: every data tap's vhost-net fds come open at numbers
    /// after the taps (`vhostfds=`), none opened by qemu.
    #[test]
    fn golden_multi_queue_vhost() {
        golden(
            "multi-queue-vhost",
            "[vm]\nname=\"mq\"\nsmp=4\n[kernel]\npath=\"k\"\n[nics]\ncount=2\nqueues=4\n[management]\nmode=\"none\"\n",
            &[],
            true,
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
    fn golden_sparse_links_found_at_start() {
        // CLAB_INTFS=2 counts links: eth1 and eth3 are there, port 2 keeps its NIC slot.
        golden_present(
            "sparse",
            "[vm]\nname=\"sparse\"\n[kernel]\npath=\"k\"\n[management]\nforwards=[]\n",
            &[("CLAB_INTFS", "2")],
            false,
            Some(&[1, 3]),
        );
    }

    #[test]
    fn golden_sparse_links_in_fixed_slots() {
        // nics.slots = 4: ports 2 and 4 are placeholders, whatever is present.
        golden_present(
            "sparse-slots",
            "[vm]\nname=\"slots\"\n[kernel]\npath=\"k\"\n[nics]\nslots=4\n[management]\nforwards=[]\n",
            &[("CLAB_INTFS", "2")],
            false,
            Some(&[1, 3]),
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

    /// The argv of the one VM of `toml`, without the vendor's files.
    fn args(toml: &str) -> Vec<String> {
        let node = parse(
            toml,
            Path::new("/etc/launcher/launcher.toml"),
            Path::new("/etc/launcher"),
            &Env::new(),
            &Overrides::default(),
        )
        .unwrap();
        let plan = &node.vms[0];
        let got = argv(
            plan,
            &Launch::assumed(plan, false, false),
            &golden_resolved(plan),
        );
        got.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    /// The `-device` values of the one VM of `toml`.
    fn devices(toml: &str) -> Vec<String> {
        args(toml)
            .windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn dummies_sit_on_the_root_bus_before_the_bridges_and_keep_the_data_slots() {
        let d = devices(
            "[vm]\nname=\"x\"\n[kernel]\npath=\"k\"\n[nics]\nmodel=\"e1000\"\ncount=2\nbridges=1\ndummies=2\ndummy_model=\"virtio-net-pci\"\n",
        );
        let at = |p: &str| d.iter().position(|x| x.starts_with(p)).unwrap();
        assert!(at("e1000,netdev=mgmt") < at("virtio-net-pci,id=dummy1"));
        assert!(at("virtio-net-pci,id=dummy2") < at("pci-bridge"));
        assert!(!d[at("virtio-net-pci,id=dummy1")].contains("bus="));
        assert!(d[at("e1000,netdev=net1")].ends_with(",bus=pci.1,addr=0x2"));
        assert!(d[at("e1000,netdev=net2")].ends_with(",bus=pci.1,addr=0x3"));
    }

    #[test]
    fn an_ide_cd_sits_at_the_position_it_asks_for() {
        let disks = "[[disk]]\npath=\"/a.qcow2\"\ninterface=\"ide\"\n[[disk]]\npath=\"/cd\"\nformat=\"iso\"\ninterface=\"ide\"\nide_unit=2\n";
        let d = devices(&format!("[vm]\nname=\"x\"\n{disks}"));
        assert!(
            d.contains(&"ide-hd,drive=disk0,bus=ide.0,unit=0".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"ide-cd,drive=disk1,bus=ide.1,unit=0".to_string()),
            "{d:?}"
        );
        let d = devices(&format!("[vm]\nname=\"x\"\nmachine=\"q35\"\n{disks}"));
        assert!(
            d.contains(&"ide-cd,drive=disk1,bus=ide.2".to_string()),
            "{d:?}"
        );
    }

    #[test]
    fn the_user_network_takes_its_subnet() {
        let got = args(
            "[vm]\nname=\"x\"\n[kernel]\npath=\"k\"\n[management]\nforwards=[\"tcp:22\"]\nsubnet=\"169.254.127.0/24\"\n",
        );
        assert!(got.contains(
            &"user,id=mgmt,net=169.254.127.0/24,dhcpstart=169.254.127.15,hostfwd=tcp::22-169.254.127.15:22"
                .to_string()
        ), "{got:?}");
    }
}
