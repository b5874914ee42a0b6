//! The section builders for the emulated hardware: `[vm]` (the machine), `[kernel]` and
//! `[[disk]]` (what it boots), `[nics]` (the data NICs and the links behind them). Each takes
//! its schema section, the key it lives under and the environment that overrides it, and returns
//! the validated part of the plan. Never looks at another section (that is `vm`) and never at
//! the system.

use super::bounds::{seconds, MAX_DATA_PORT, MAX_TIMEOUT_S};
use super::env::{NodeEnv, Var, VmEnv};
use super::schema::{DiskSection, KernelSection, NicSection, SmpValue, VmNicSection, VmSection};
use super::{
    check_template, choice, resolve, valid_ifname, Accel, Boot, ConfigError, DataLink, Disk,
    DiskInterface, Kernel, Key, LinkSpec, Machine, Nics, OnMissingLinks, Ports,
};
use std::path::Path;
use std::time::Duration;

/// vm.name: letters, digits, '-', '_' or '.'.
pub(super) fn vm_name(key: &Key, name: &str) -> Result<String, ConfigError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(key
            .child("name")
            .invalid(name, "use letters, digits, '-', '_' or '.'"));
    }
    Ok(name.to_string())
}

/// `[vm]`'s machine keys, QEMU_* and LAUNCHER_ACCEL over them.
pub(super) fn machine(
    key: &Key,
    vm: &VmSection,
    env: &VmEnv,
    accel: &Var<Accel>,
) -> Result<Machine, ConfigError> {
    if vm.qemu.is_empty() {
        return Err(key
            .child("qemu")
            .invalid(&vm.qemu, "must name the qemu binary"));
    }
    if vm.machine.is_empty() || vm.machine.contains(char::is_whitespace) {
        return Err(key
            .child("machine")
            .invalid(&vm.machine, "must be a qemu machine type such as pc or q35"));
    }
    let smp_file = match &vm.smp {
        SmpValue::Count(n) => n.to_string(),
        SmpValue::Text(t) => t.clone(),
    };
    let (smp_text, smp_key) = over(env.smp.clone(), smp_file, "QEMU_SMP", key.child("smp"));
    let (smp, smp_topology) = smp_topology(&smp_key, &smp_text)?;
    let (memory, mem_key) = over(
        env.memory.get()?,
        vm.memory,
        "QEMU_MEMORY",
        key.child("memory"),
    );
    if !(16..=1 << 22).contains(&memory) {
        return Err(mem_key.invalid(memory, "memory in MiB must be between 16 and 4194304"));
    }
    let (cpu, cpu_key) = over(
        env.cpu.clone(),
        vm.cpu.clone(),
        "QEMU_CPU",
        key.child("cpu"),
    );
    if cpu.is_empty() || cpu.contains(char::is_whitespace) {
        return Err(cpu_key.invalid(&cpu, "must be a qemu CPU model without spaces"));
    }
    let accel = match accel.get()? {
        Some(a) => a,
        None => choice(
            &key.child("accel"),
            &vm.accel,
            &[
                ("auto", Accel::Auto),
                ("kvm", Accel::Kvm),
                ("tcg", Accel::Tcg),
            ],
        )?,
    };
    let mut extra_args = vm.extra_args.clone();
    extra_args.extend(env.additional_args.get()?.unwrap_or_default());
    if let Some((i, why)) = super::qemu_args::refused(&extra_args) {
        let key = match vm.extra_args.len() {
            n if i < n => key.child("extra_args").index(i),
            _ => Key::new("QEMU_ADDITIONAL_ARGS"),
        };
        return Err(key.invalid(&extra_args[i], why));
    }
    if let Some(u) = &vm.uuid {
        let lens: Vec<usize> = u.split('-').map(str::len).collect();
        if lens != [8, 4, 4, 4, 12] || !u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return Err(key
                .child("uuid")
                .invalid(u, "expected 8-4-4-4-12 hex digits"));
        }
    }
    for (i, t) in vm.smbios.iter().enumerate() {
        // Spaces are the value's own (SR OS's TIMOS line); no line breaks.
        let key = key.child("smbios").index(i);
        if !t.starts_with("type=") || t.contains(char::is_control) {
            return Err(key.invalid(t, "expected a qemu -smbios value such as type=1,product=X"));
        }
        check_template(&key, t)?;
    }
    Ok(Machine {
        qemu: vm.qemu.clone().into(),
        machine_type: vm.machine.clone(),
        cpu,
        smp,
        smp_topology,
        memory_mib: memory,
        accel,
        uuid: vm.uuid.clone(),
        smbios: vm.smbios.clone(),
        license: None,
        extra_args,
    })
}

/// `vm.smp` or QEMU_SMP (under `key`): a vCPU count (`4`), or qemu's `-smp` text with the count
/// first or left out (`4,sockets=1,cores=4,threads=1`, `cores=4,threads=1,sockets=1`, as
/// vrnetlab passes it): the count (given, else the product of the topology) and the topology.
fn smp_topology(key: &Key, text: &str) -> Result<(u32, Option<String>), ConfigError> {
    const KEYS: &[&str] = &["sockets", "dies", "clusters", "cores", "threads", "maxcpus"];
    let bad = |why: &str| key.invalid(text, why.to_string());
    let mut parts = text.split(',').map(str::trim).peekable();
    let first_is_count = parts.peek().is_some_and(|p| !p.contains('='));
    let mut count: Option<u32> = None;
    if first_is_count {
        let c = parts.next().unwrap_or_default();
        count = Some(c.parse().map_err(|_| {
            bad("expected a number of vCPUs, or qemu's -smp text such as 4,sockets=1,cores=4,threads=1")
        })?);
    }
    let mut topology = Vec::new();
    let mut product = 1u32;
    let mut maxcpus = None;
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| bad("expected key=value after the count"))?;
        let n: u32 = v
            .parse()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| bad(&format!("{k}={v}: expected a number from 1 to 256")))?;
        match k {
            "cpus" if count.is_none() => count = Some(n),
            "cpus" => return Err(bad("the vCPU count is given twice")),
            "maxcpus" => maxcpus = Some(n),
            k if KEYS.contains(&k) => product = product.saturating_mul(n),
            _ => {
                return Err(bad(&format!(
                    "{k}: qemu's -smp takes cpus, {}",
                    KEYS.join(", ")
                )))
            }
        }
        if k != "cpus" {
            topology.push(format!("{k}={n}"));
        }
    }
    let count = count.unwrap_or(product);
    if !(1..=256).contains(&count) {
        return Err(bad("vCPUs must be between 1 and 256"));
    }
    let full = ["sockets", "cores", "threads"]
        .iter()
        .all(|k| topology.iter().any(|t| t.starts_with(&format!("{k}="))));
    if full && product != maxcpus.unwrap_or(count) {
        return Err(bad(&format!(
            "the topology gives {product} vCPUs, not {}",
            maxcpus.unwrap_or(count)
        )));
    }
    Ok((count, (!topology.is_empty()).then(|| topology.join(","))))
}

/// The variable's value and its name when set, else the file's value and key.
fn over<T>(var: Option<T>, file: T, name: &str, key: Key) -> (T, Key) {
    match var {
        Some(v) => (v, Key::new(name)),
        None => (file, key),
    }
}

/// `[kernel]` and `[[disk]]`: what the VM boots. Overlays and CD images live in `state_dir`; a
/// machine has room for so many IDE devices (`machine_type`).
pub(super) fn boot(
    key: &Key,
    kernel: Option<&KernelSection>,
    disks: &[DiskSection],
    machine_type: &str,
    base: &Path,
    state_dir: &Path,
) -> Result<Boot, ConfigError> {
    let kernel = match kernel {
        None => None,
        Some(k) => {
            let key = key.child("kernel");
            if k.path.is_empty() {
                return Err(key.child("path").invalid("", "must name a kernel image"));
            }
            // The command line may carry the management address ({mgmt_ip}, ...), filled in
            // at run time like the bootstrap's templates.
            check_template(&key.child("append"), &k.append)?;
            Some(Kernel {
                path: resolve(base, &k.path),
                initrd: k.initrd.as_deref().map(|i| resolve(base, i)),
                append: k.append.clone(),
            })
        }
    };
    let disk_key = key.child("disk");
    let mut disks = disks
        .iter()
        .enumerate()
        .map(|(i, d)| super::disk::disk(&disk_key.index(i), i, d, base, state_dir))
        .collect::<Result<Vec<Disk>, _>>()?;
    let ide = disks
        .iter()
        .filter(|d| d.interface == DiskInterface::Ide)
        .count();
    let ide_max = if machine_type.contains("q35") { 6 } else { 4 };
    if ide > ide_max {
        return Err(disk_key.invalid(
            format!("{ide} on ide"),
            format!(
                "machine {machine_type} has room for {ide_max} IDE disks or CD-ROMs; put the others on virtio or scsi",
            ),
        ));
    }
    super::disk::ide_units(&disk_key, &mut disks, ide_max)?;
    let sata = disks
        .iter()
        .filter(|d| d.interface == DiskInterface::Sata)
        .count();
    if sata > 6 {
        return Err(disk_key.invalid(
            format!("{sata} on sata"),
            "an AHCI controller has 6 ports; put the others on virtio or scsi",
        ));
    }
    if kernel.is_none() && disks.is_empty() {
        return Err(disk_key.invalid(
            "[]",
            "nothing to boot: give at least one [[disk]] or a [kernel]",
        ));
    }
    Ok(Boot { kernel, disks })
}

/// `[nics]` with CLAB_INTFS and CLAB_INTF_PREFIX: the node's data NICs and every data link
/// (explicit names, else CLAB_INTFS, else nics.count), and the link settings of the node.
pub(super) struct NodeNics {
    pub(super) nics: Nics,
    pub(super) spec: LinkSpec,
    pub(super) wait_timeout: Duration,
    pub(super) on_missing_links: OnMissingLinks,
    pub(super) tap_mtu: u32,
}

pub(super) fn nics(n: &NicSection, env: &NodeEnv) -> Result<NodeNics, ConfigError> {
    let key = Key::new("nics");
    let prefix = env.intf_prefix.get()?.unwrap_or_else(|| n.prefix.clone());
    valid_ifname(&key.child("prefix"), &prefix)?;
    valid_ifname(&key.child("tap_prefix"), &n.tap_prefix)?;
    let (links, spec) = links(&key, n, env, &prefix)?;
    for l in &links {
        valid_ifname(&key.child("tap_prefix"), &l.tap)?;
        valid_ifname(&key.child("prefix"), &l.eth)?;
    }
    let on_missing_links = choice(
        &key.child("on_timeout"),
        &n.on_timeout,
        &[
            ("fail", OnMissingLinks::Fail),
            ("continue", OnMissingLinks::Continue),
        ],
    )?;
    Ok(NodeNics {
        nics: nic_layout(&key, n, Ports::All, links)?,
        spec,
        wait_timeout: Duration::from_secs(n.wait_timeout),
        on_missing_links,
        tap_mtu: n.mtu,
    })
}

/// The layout keys of `[nics]` (or of a `[vm.nics]` over them, at `key`): the models, the
/// reserved slots and dummies, bridges, queues and slots, for these ports and links.
fn nic_layout(
    key: &Key,
    n: &NicSection,
    ports: Ports,
    links: Vec<DataLink>,
) -> Result<Nics, ConfigError> {
    let offset_model = n.offset_model.clone().unwrap_or_else(|| n.model.clone());
    let dummy_model = n.dummy_model.clone().unwrap_or_else(|| n.model.clone());
    for (k, m) in [
        ("model", &n.model),
        ("offset_model", &offset_model),
        ("dummy_model", &dummy_model),
    ] {
        if m.is_empty() || m.starts_with(',') || m.contains(char::is_whitespace) {
            return Err(key.child(k).invalid(
                m,
                "must be a qemu NIC device such as virtio-net-pci or e1000, optionally with ,key=value properties",
            ));
        }
    }
    layout(key, n)?;
    Ok(Nics {
        model: n.model.clone(),
        offset: n.offset,
        offset_model,
        dummies: n.dummies,
        dummy_model,
        queues: n.queues,
        per_bridge: n.per_bridge,
        bridges: n.bridges,
        pci_shift: n.pci_shift,
        slots: n.slots,
        ports,
        links,
    })
}

/// A `[[vm]]` entry's NIC layout: its `[vm.nics]` (at `key`) over the node's `[nics]` `n`,
/// for its ports and links.
pub(super) fn vm_nics(
    key: &Key,
    n: &NicSection,
    own: &VmNicSection,
    ports: Ports,
    links: Vec<DataLink>,
) -> Result<Nics, ConfigError> {
    fn set<T>(slot: &mut T, v: Option<T>) {
        if let Some(v) = v {
            *slot = v;
        }
    }
    let (mut m, o) = (n.clone(), own.clone());
    set(&mut m.model, o.model);
    set(&mut m.per_bridge, o.per_bridge);
    set(&mut m.bridges, o.bridges);
    set(&mut m.pci_shift, o.pci_shift);
    set(&mut m.queues, o.queues);
    set(&mut m.offset, o.offset);
    set(&mut m.offset_model, o.offset_model.map(Some));
    set(&mut m.dummies, o.dummies);
    set(&mut m.dummy_model, o.dummy_model.map(Some));
    set(&mut m.slots, o.slots);
    nic_layout(key, &m, ports, links)
}

/// nics.offset, nics.dummies, nics.queues, nics.per_bridge, nics.mtu, nics.slots and nics.wait_timeout.
fn layout(key: &Key, n: &NicSection) -> Result<(), ConfigError> {
    seconds(&key.child("wait_timeout"), n.wait_timeout, 0, MAX_TIMEOUT_S)?;
    if n.slots > MAX_DATA_PORT {
        return Err(key.child("slots").invalid(
            n.slots,
            format!("at most {MAX_DATA_PORT} data NIC slots (0 = up to the highest port)"),
        ));
    }
    if n.offset > 8 {
        return Err(key
            .child("offset")
            .invalid(n.offset, "at most 8 empty NIC slots before data NIC 1"));
    }
    if n.dummies > 8 {
        return Err(key
            .child("dummies")
            .invalid(n.dummies, "at most 8 dummy NICs on the root bus"));
    }
    if n.queues > 16 {
        return Err(key
            .child("queues")
            .invalid(n.queues, "at most 16 queues per NIC (0 = auto)"));
    }
    if n.queues > 1 && !n.model.starts_with("virtio-net") {
        return Err(key.child("queues").invalid(
            n.queues,
            format!("multi-queue needs a virtio-net NIC, not {}", n.model),
        ));
    }
    if !(1..=31).contains(&n.per_bridge) {
        return Err(key
            .child("per_bridge")
            .invalid(n.per_bridge, "a PCI bridge has slots 1 to 31"));
    }
    if n.bridges > 20 {
        return Err(key
            .child("bridges")
            .invalid(n.bridges, "at most 20 PCI bridges (0 = only when needed)"));
    }
    if n.pci_shift > 8 {
        return Err(key
            .child("pci_shift")
            .invalid(n.pci_shift, "at most 8 positions"));
    }
    if !(68..=65535).contains(&n.mtu) {
        return Err(key
            .child("mtu")
            .invalid(n.mtu, "must be between 68 and 65535"));
    }
    Ok(())
}

/// The data links, in port order: from nics.names, else CLAB_INTFS (any N ports, found at run
/// time; planned as ports 1..N) or nics.count (ports 1..N). None above nics.slots.
fn links(
    key: &Key,
    n: &NicSection,
    env: &NodeEnv,
    prefix: &str,
) -> Result<(Vec<DataLink>, LinkSpec), ConfigError> {
    let link = |index: u32, eth: String| DataLink {
        index,
        eth,
        tap: format!("{}{index}", n.tap_prefix),
    };
    let above_slots = |index: u32| n.slots > 0 && index > n.slots;
    let slots_reason = |what: &str| format!("{what} above nics.slots = {}", n.slots);
    let mut links = Vec::new();
    if n.names.is_empty() {
        let intfs = env.intfs.get()?;
        let (count, count_key) = over(intfs, n.count, "CLAB_INTFS", key.child("count"));
        if count > MAX_DATA_PORT {
            return Err(
                count_key.invalid(count, format!("at most {MAX_DATA_PORT} data interfaces"))
            );
        }
        if above_slots(count) {
            return Err(count_key.invalid(count, slots_reason("more data interfaces than slots:")));
        }
        // The lab tool's CLAB_INTFS counts links, which may skip ports; a file's count names
        // ports 1..N.
        let spec = match intfs {
            Some(n_links) if n_links > 0 => LinkSpec::AnyIndex {
                n: n_links,
                prefix: prefix.to_string(),
                tap_prefix: n.tap_prefix.clone(),
            },
            _ => LinkSpec::Listed,
        };
        let links = (1..=count)
            .map(|index| link(index, format!("{prefix}{index}")))
            .collect();
        return Ok((links, spec));
    }
    for (i, name) in n.names.iter().enumerate() {
        let key = key.child("names").index(i);
        valid_ifname(&key, name)?;
        let index = name
            .strip_prefix(prefix)
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| key.invalid(name, format!("expected {prefix}N with N >= 1")))?;
        if links.iter().any(|l: &DataLink| l.index == index) {
            return Err(key.invalid(name, "listed twice"));
        }
        if above_slots(index) {
            return Err(key.invalid(name, slots_reason("a port")));
        }
        links.push(link(index, name.clone()));
    }
    links.sort_by_key(|l| l.index);
    Ok((links, LinkSpec::Listed))
}
