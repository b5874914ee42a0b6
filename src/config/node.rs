//! The node: a `[vm]` table (one VM) or `[[vm]]` entries (several, each with its own kernel,
//! disks, console, management and bootstrap), the split of the data ports between the VMs, the
//! internal networks joining them, what two VMs cannot share, and the node-wide settings. Never
//! validates a section itself (`hardware`, `sections` and `vm` do).

use super::bounds::MAX_DATA_PORT;
use super::env::EnvSettings;
use super::hardware::{self, NodeNics};
use super::schema::{
    BootstrapSection, ConsoleSection, DiskSection, File, KernelSection, MgmtSection, NicSection,
    VmNicSection, VmSection,
};
use super::sections;
use super::vm::{self, Shared, VmInput};
use super::{
    decode, resolve, ConfigError, InternalNet, Key, Management, Nics, Node, NodeSettings,
    Overrides, Ports, Protocol, VmPlan, MAX_INTERNAL,
};
use std::path::Path;
use std::time::Duration;

pub(super) fn build(
    mut f: File,
    origin: &Path,
    base: &Path,
    env: &EnvSettings,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    let entries = match f.vm.take() {
        None => return single(&f, &VmSection::default(), base, env, over),
        Some(v @ toml::Value::Table(_)) => {
            let vm: VmSection = decode(v, origin, "[vm]")?;
            return single(&f, &vm, base, env, over);
        }
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            return Err(
                Key::new("vm").invalid(other.type_str(), "expected a [vm] table or [[vm]] tables")
            )
        }
    };
    several(&f, entries, origin, base, env, over)
}

/// A node of one VM: the file's sections are the VM's.
fn single(
    f: &File,
    vm: &VmSection,
    base: &Path,
    env: &EnvSettings,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    let nics = node_nics(f, env)?;
    let shared = shared(f, base, env, over, &nics);
    let console = f.console.clone().unwrap_or_default();
    let plan = vm::build(
        VmInput {
            key: Key::new("vm"),
            sections: Key::root(),
            in_node: false,
            vm,
            kernel: f.kernel.as_ref(),
            disks: &f.disks,
            management: &f.management,
            console: &console,
            bootstrap: f.bootstrap.as_ref(),
            run_dir: resolve(base, &f.paths.run_dir),
            state_dir: resolve(base, &f.paths.state_dir),
            nics: nics.nics.clone(),
            internal: vec![],
            env: &env.first_vm,
        },
        &shared,
    )?;
    finish(f, &shared, vm.boot_delay, vec![plan], vec![])
}

fn shared<'a>(
    f: &'a File,
    base: &'a Path,
    env: &'a EnvSettings,
    over: &'a Overrides,
    nics: &'a NodeNics,
) -> Shared<'a> {
    Shared {
        base,
        env: &env.node,
        over,
        nics,
        restart: &f.restart,
    }
}

/// The node-wide settings: the first VM's identity and boot delay (BOOT_DELAY over it), the
/// file's health file and link settings.
fn finish(
    f: &File,
    shared: &Shared,
    first_boot_delay: u64,
    vms: Vec<VmPlan>,
    internal: Vec<InternalNet>,
) -> Result<Node, ConfigError> {
    let (base, nics) = (shared.base, shared.nics);
    let boot_delay = shared.env.boot_delay.get()?.unwrap_or(first_boot_delay);
    let install = f
        .install
        .as_ref()
        .map(|i| sections::install(i, &vms))
        .transpose()?;
    Ok(Node {
        settings: NodeSettings {
            identity: vms[0].identity().to_string(),
            health_file: resolve(base, &f.paths.health_file),
            reset_file: resolve(base, &f.paths.reset_file),
            connection_mode: sections::connection_mode(shared.env, shared.over)?,
            link_wait_timeout: nics.wait_timeout,
            links: nics.spec.clone(),
            on_missing_links: nics.on_missing_links,
            tap_mtu: nics.tap_mtu,
            boot_delay: Duration::from_secs(boot_delay),
        },
        vms,
        internal,
        install,
    })
}

/// `[nics]` and its variables: the data links, each numbered at most [`MAX_DATA_PORT`] (as
/// nics.count and CLAB_INTFS are) so a name such as eth4294967295 asks for no billion NICs.
fn node_nics(f: &File, env: &EnvSettings) -> Result<NodeNics, ConfigError> {
    let nics = hardware::nics(&f.nics, &env.node)?;
    if let Some(l) = nics.nics.links.iter().find(|l| l.index > MAX_DATA_PORT) {
        return Err(Key::new("nics").child("names").invalid(
            &l.eth,
            format!("data ports are numbered 1 to {MAX_DATA_PORT}"),
        ));
    }
    Ok(nics)
}

/// The data NICs of the VM at `key` taking `ports`: the node's layout, or its `[vm.nics]` over
/// the node's `[nics]`; the node's links on those ports.
fn vm_nics(
    key: &Key,
    file: &NicSection,
    own: Option<&VmNicSection>,
    node: &NodeNics,
    ports: &Ports,
) -> Result<Nics, ConfigError> {
    let links = node
        .nics
        .links
        .iter()
        .filter(|l| ports.contains(l.index))
        .cloned()
        .collect();
    match own {
        Some(own) => hardware::vm_nics(&key.child("nics"), file, own, ports.clone(), links),
        None => Ok(Nics {
            ports: ports.clone(),
            links,
            ..node.nics.clone()
        }),
    }
}

/// One `[[vm]]` entry, its sections decoded apart so a syntax error names the section.
struct Entry {
    vm: VmSection,
    kernel: Option<KernelSection>,
    disks: Vec<DiskSection>,
    bootstrap: Option<BootstrapSection>,
    console: ConsoleSection,
    management: Option<MgmtSection>,
    nics: Option<VmNicSection>,
    data: Option<toml::Value>,
    internal: Vec<String>,
}

impl Entry {
    fn decode(i: usize, key: &Key, entry: toml::Value, origin: &Path) -> Result<Self, ConfigError> {
        let toml::Value::Table(mut t) = entry else {
            return Err(key.invalid("", "expected a table"));
        };
        let mut sub = |k: &str| t.remove(k);
        let (kernel, disk, console) = (sub("kernel"), sub("disk"), sub("console"));
        let (management, bootstrap) = (sub("management"), sub("bootstrap"));
        let (data, internal, nics) = (sub("data"), sub("internal"), sub("nics"));
        let vm: VmSection = decode(toml::Value::Table(t), origin, key.as_str())?;
        let kernel = part(key, "kernel", kernel, origin)?;
        let disks = part(key, "disk", disk, origin)?.unwrap_or_default();
        let bootstrap = part(key, "bootstrap", bootstrap, origin)?;
        // vrnetlab's numbering: the first VM's console on telnet 5000, the next on 5001, ...;
        // each VM's console log named after it. Both unless the entry says otherwise.
        let mut console = match console {
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(key
                    .child("console")
                    .invalid(other.to_string(), "expected a table"))
            }
            None => toml::Table::new(),
        };
        console
            .entry("telnet_port")
            .or_insert(toml::Value::Integer(5000 + i as i64));
        console.entry("log").or_insert(toml::Value::String(format!(
            "/var/log/launcher/{}.console.log",
            vm.name
        )));
        let console =
            part(key, "console", Some(toml::Value::Table(console)), origin)?.unwrap_or_default();
        let management = part(key, "management", management, origin)?;
        let nics = part(key, "nics", nics, origin)?;
        let internal = part(key, "internal", internal, origin)?.unwrap_or_default();
        Ok(Entry {
            vm,
            kernel,
            disks,
            bootstrap,
            console,
            management,
            nics,
            data,
            internal,
        })
    }
}

/// Section `k` of an entry, when given.
fn part<T: serde::de::DeserializeOwned>(
    key: &Key,
    k: &str,
    v: Option<toml::Value>,
    origin: &Path,
) -> Result<Option<T>, ConfigError> {
    v.map(|v| decode(v, origin, key.child(k).as_str()))
        .transpose()
}

/// A node of several VMs.
fn several(
    f: &File,
    entries: Vec<toml::Value>,
    origin: &Path,
    base: &Path,
    env: &EnvSettings,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    if entries.is_empty() || entries.len() > 8 {
        return Err(Key::new("vm").invalid(entries.len(), "between 1 and 8 [[vm]] entries"));
    }
    nothing_per_vm_at_top_level(f)?;
    let nics = node_nics(f, env)?;
    let shared = shared(f, base, env, over, &nics);
    let no_env = Default::default();
    // Without a [vm.management], a VM has the file's; only the first VM forwards the
    // container's ports by default.
    let default_mgmt = MgmtSection {
        forwards: vec![],
        ..f.management.clone()
    };
    let (mut vms, mut selections, mut nets, mut first_boot_delay) =
        (Vec::new(), Vec::new(), Vec::new(), None);
    for (i, entry) in entries.into_iter().enumerate() {
        let key = Key::new("vm").index(i);
        let e = Entry::decode(i, &key, entry, origin)?;
        let ports = super::ports::data_ports(&key.child("data"), e.data.as_ref())?;
        let internal = internal_taps(&key.child("internal"), i, &e.internal, &mut nets)?;
        let plan = vm::build(
            VmInput {
                key: key.clone(),
                sections: key.clone(),
                in_node: true,
                vm: &e.vm,
                kernel: e.kernel.as_ref(),
                disks: &e.disks,
                management: e.management.as_ref().unwrap_or(if i == 0 {
                    &f.management
                } else {
                    &default_mgmt
                }),
                console: &e.console,
                // The file's [bootstrap] is the first VM's unless it has its own (the node's
                // dialog on its main console, as its management forwards).
                bootstrap: e
                    .bootstrap
                    .as_ref()
                    .or(f.bootstrap.as_ref().filter(|_| i == 0)),
                run_dir: resolve(base, &format!("{}/{}", f.paths.run_dir, e.vm.name)),
                state_dir: resolve(base, &format!("{}/{}", f.paths.state_dir, e.vm.name)),
                nics: vm_nics(&key, &f.nics, e.nics.as_ref(), &nics, &ports)?,
                internal,
                env: if i == 0 { &env.first_vm } else { &no_env },
            },
            &shared,
        )?;
        if vms.iter().any(|p: &VmPlan| p.name == plan.name) {
            return Err(key
                .child("name")
                .invalid(&plan.name, "two VMs with the same name"));
        }
        vms.push(plan);
        selections.push(ports);
        first_boot_delay.get_or_insert(e.vm.boot_delay);
    }
    super::ports::one_vm_per_port(&nics, &selections)?;
    if let Some(n) = nets.iter().find(|n| n.taps.len() < 2) {
        return Err(Key::new("vm[]")
            .child("internal")
            .invalid(&n.name, "an internal network joins at least two VMs"));
    }
    no_clashes(&vms)?;
    let first_boot_delay = first_boot_delay.expect("at least one [[vm]] entry");
    finish(f, &shared, first_boot_delay, vms, nets)
}

/// With [[vm]], what belongs to one VM lives in its entry (a top-level [bootstrap] is the first
/// VM's).
fn nothing_per_vm_at_top_level(f: &File) -> Result<(), ConfigError> {
    let top_level = [
        ("kernel", f.kernel.is_some()),
        ("disk", !f.disks.is_empty()),
        ("console", f.console.is_some()),
    ];
    match top_level.iter().find(|(_, set)| *set) {
        Some((k, _)) => Err(Key::new(k).invalid(
            "(top level)",
            format!("with [[vm]] entries, give each VM its own [vm.{k}]"),
        )),
        None => Ok(()),
    }
}

/// VM `i`'s internal-network taps (`i{i}-{net}`), each added to its network in `nets`.
fn internal_taps(
    key: &Key,
    i: usize,
    names: &[String],
    nets: &mut Vec<InternalNet>,
) -> Result<Vec<String>, ConfigError> {
    if names.len() > MAX_INTERNAL {
        return Err(key.invalid(
            names.len(),
            format!("at most {MAX_INTERNAL} internal networks per VM"),
        ));
    }
    let mut taps = Vec::new();
    for net in names {
        if net.is_empty()
            || net.len() > 11
            || !net.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(key.invalid(net, "an internal network name: 1-11 letters, digits or '_'"));
        }
        let tap = format!("i{i}-{net}");
        match nets.iter_mut().find(|n| &n.name == net) {
            Some(n) => n.taps.push(tap.clone()),
            None => nets.push(InternalNet {
                name: net.clone(),
                bridge: format!("int-{net}"),
                taps: vec![tap.clone()],
            }),
        }
        taps.push(tap);
    }
    Ok(taps)
}

/// What two VMs cannot share: telnet ports, forwarded ports, the management interface.
fn no_clashes(vms: &[VmPlan]) -> Result<(), ConfigError> {
    let mut telnet: Vec<(u16, usize)> = Vec::new();
    let mut fwd: Vec<(Protocol, u16, usize)> = Vec::new();
    let mut passthrough = None;
    for (i, p) in vms.iter().enumerate() {
        let key = Key::new("vm").index(i);
        let c = &p.console;
        if c.telnet_port > 0 {
            for port in c.telnet_port..=c.telnet_port + c.extra_serials as u16 {
                if let Some((_, j)) = telnet.iter().find(|(q, _)| *q == port) {
                    return Err(key
                        .child("console")
                        .child("telnet_port")
                        .invalid(port, format!("already used by vm[{j}]'s console")));
                }
                telnet.push((port, i));
            }
        }
        match &p.management {
            Management::User { forwards, .. } => {
                for f in forwards {
                    if let Some((_, _, j)) = fwd
                        .iter()
                        .find(|(pr, port, _)| *pr == f.proto && *port == f.host_port)
                    {
                        return Err(key
                            .child("management")
                            .child("forwards")
                            .invalid(f.host_port, format!("already forwarded to vm[{j}]")));
                    }
                    fwd.push((f.proto, f.host_port, i));
                }
            }
            Management::Passthrough { .. } => {
                if let Some(j) = passthrough {
                    return Err(key.child("management").child("mode").invalid(
                        "passthrough",
                        format!("vm[{j}] already takes over the management interface"),
                    ));
                }
                passthrough = Some(i);
            }
            Management::None => {}
        }
    }
    Ok(())
}
