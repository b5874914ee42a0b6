//! Configuration: the TOML schema, the containerlab/vrnetlab environment overrides, validation,
//! and the resulting [`Plan`]. Everything here is pure: the caller reads the file and hands over
//! its text, the environment as a map, and the CLI overrides; nothing on the system is touched.
//! Every error names the key or variable and the bad value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error: which key (or environment variable), which value, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key} = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

fn invalid(key: &str, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The environment as seen by the launcher (a plain map so tests need no process env).
pub type Env = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// The file schema. `deny_unknown_fields` everywhere: a typo is an error, never a silent default.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    /// `[vm]` (one VM) or `[[vm]]` (several, each with its own kernel, disks, console,
    /// management, bootstrap): decoded in [`build_node`] so errors can name the entry.
    vm: Option<toml::Value>,
    kernel: Option<KernelSection>,
    #[serde(default, rename = "disk")]
    disks: Vec<DiskSection>,
    #[serde(default)]
    nics: NicSection,
    #[serde(default)]
    management: MgmtSection,
    #[serde(default)]
    restart: RestartSection,
    console: Option<ConsoleSection>,
    #[serde(default)]
    paths: PathsSection,
    bootstrap: Option<BootstrapSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapSection {
    #[serde(default = "default_on_boot_timeout")]
    on_timeout: String,
    #[serde(default = "default_attempts")]
    attempts: u32,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    steps: Vec<StepSection>,
}
fn default_on_boot_timeout() -> String {
    "retry".into()
}
fn default_attempts() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSection {
    expect: Option<String>,
    send: Option<String>,
    send_config: Option<String>,
    wait: Option<f64>,
    timeout: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct VmSection {
    name: String,
    qemu: String,
    machine: String,
    cpu: String,
    smp: u32,
    memory: u64,
    accel: String,
    extra_args: Vec<String>,
    boot_timeout: u64,
    shutdown_timeout: u64,
    boot_delay: u64,
    startup_config: Option<String>,
    uuid: Option<String>,
    smbios: Vec<String>,
}

impl Default for VmSection {
    fn default() -> Self {
        Self {
            name: "router".into(),
            qemu: "qemu-system-x86_64".into(),
            machine: "pc".into(),
            cpu: "max".into(),
            smp: 1,
            memory: 1024,
            accel: "auto".into(),
            extra_args: vec![],
            boot_timeout: 600,
            shutdown_timeout: 30,
            boot_delay: 0,
            startup_config: None,
            uuid: None,
            smbios: vec![],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelSection {
    path: String,
    initrd: Option<String>,
    #[serde(default)]
    append: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskSection {
    path: String,
    #[serde(default = "default_format")]
    format: String,
    /// virtio for disks, ide for a CD image.
    interface: Option<String>,
    #[serde(default = "yes")]
    overlay: bool,
    /// The volume label of a CD image (format = "iso").
    label: Option<String>,
}
fn default_format() -> String {
    "qcow2".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NicSection {
    model: String,
    count: u32,
    names: Vec<String>,
    prefix: String,
    tap_prefix: String,
    wait_timeout: u64,
    on_timeout: String,
    mtu: u32,
    per_bridge: u32,
    queues: u32,
    offset: u32,
}

impl Default for NicSection {
    fn default() -> Self {
        Self {
            model: "virtio-net-pci".into(),
            count: 0,
            names: vec![],
            prefix: "eth".into(),
            tap_prefix: "tap".into(),
            wait_timeout: 120,
            on_timeout: "fail".into(),
            mtu: 9500,
            per_bridge: 26,
            queues: 0,
            offset: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MgmtSection {
    mode: String,
    model: Option<String>,
    /// Passthrough: the container interface the VM takes over, and the tap it gets.
    interface: String,
    tap: String,
    forwards: Vec<String>,
    tftp_root: Option<String>,
}

impl Default for MgmtSection {
    fn default() -> Self {
        Self {
            mode: "user".into(),
            model: None,
            interface: "eth0".into(),
            tap: "tap0".into(),
            tftp_root: None,
            forwards: DEFAULT_FORWARDS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// vrnetlab's management forwards: the container's ports that reach the guest.
pub const DEFAULT_FORWARDS: &[&str] = &[
    "tcp:22",
    "tcp:80",
    "tcp:443",
    "tcp:830",
    "tcp:6030",
    "tcp:8080",
    "tcp:9339",
    "tcp:32767",
    "tcp:50051",
    "tcp:57400",
    "udp:161",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RestartSection {
    policy: String,
    max: u32,
    backoff: u64,
}

impl Default for RestartSection {
    fn default() -> Self {
        Self {
            policy: "on-failure".into(),
            max: 3,
            backoff: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConsoleSection {
    log: String,
    ready_pattern: Option<String>,
    ready_tcp: Option<u16>,
    telnet_port: u16,
    extra_serials: u32,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            log: "/var/log/launcher/console.log".into(),
            ready_pattern: None,
            ready_tcp: None,
            telnet_port: 5000,
            extra_serials: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PathsSection {
    run_dir: String,
    state_dir: String,
    health_file: String,
}

impl Default for PathsSection {
    fn default() -> Self {
        Self {
            run_dir: "/run/launcher".into(),
            state_dir: "/var/lib/launcher".into(),
            health_file: "/health".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The validated plan.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub path: PathBuf,
    pub initrd: Option<PathBuf>,
    pub append: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskInterface {
    Virtio,
    Ide,
    Scsi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub format: String,
    pub interface: DiskInterface,
    /// When set, qemu runs on `overlay` (a qcow2 backed by `path`), kept across restarts.
    pub overlay: Option<PathBuf>,
    /// A CD image (format = "iso"): the launcher writes the files of the folder `path` to
    /// `image` at every start, labelled `label`; qemu shows it as a CD-ROM.
    pub cd: Option<(PathBuf, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Fail,
    Continue,
}

/// One data interface: the container side, the tap, and the guest port number (ethN -> N).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLink {
    pub index: u32,
    pub eth: String,
    pub tap: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: Protocol,
    pub host_port: u16,
    pub guest_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Management {
    None,
    User {
        model: String,
        forwards: Vec<Forward>,
        /// Served to the guest over TFTP (licences, configs), as vrnetlab does for some platforms.
        tftp_root: Option<PathBuf>,
    },
    /// The VM takes over the container's management interface: `interface` is wired to `tap`
    /// with tc (the launcher's telnet ports excepted) and the VM's NIC gets `interface`'s MAC,
    /// which the supervisor fills in (`mac`) once it has read it.
    Passthrough {
        model: String,
        interface: String,
        tap: String,
        mac: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure { max: u32, backoff: Duration },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub hostname: Option<String>,
}

/// What a bootstrap time-out leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    Retry,
    Restart,
    Fail,
}

/// One bootstrap step (see `bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Expect { pattern: String, timeout: Duration },
    Send(String),
    SendConfig { prompt: String, timeout: Duration },
    Wait(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub steps: Vec<Step>,
    pub on_timeout: BootAction,
    pub attempts: u32,
}

/// Everything the launcher needs, validated, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub qemu: PathBuf,
    pub machine: String,
    pub cpu: String,
    pub smp: u32,
    pub memory_mib: u64,
    pub accel: Accel,
    pub kernel: Option<Kernel>,
    pub disks: Vec<Disk>,
    pub nic_model: String,
    /// NIC slots kept empty before data NIC 1 (a platform whose first data port is not the
    /// first NIC after management).
    pub nic_offset: u32,
    /// Queues per data NIC: 0 = auto (vCPUs with vhost-net, else 1).
    pub nic_queues: u32,
    /// Data NICs per PCI bridge once there are more than this many.
    pub nics_per_bridge: u32,
    pub links: Vec<DataLink>,
    pub link_wait: Duration,
    pub on_timeout: OnTimeout,
    pub min_tap_mtu: u32,
    pub management: Management,
    pub extra_args: Vec<String>,
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub boot_delay: Duration,
    pub restart: RestartPolicy,
    pub console_log: PathBuf,
    pub ready_pattern: Option<String>,
    pub telnet_port: u16,
    /// Serial ports besides the console (ttyS1..); each has its log and telnet port.
    pub extra_serials: u32,
    /// Ready only once this container port answers (through the management forward).
    pub ready_tcp: Option<u16>,
    pub bootstrap: Option<Bootstrap>,
    pub startup_config: Option<PathBuf>,
    pub uuid: Option<String>,
    pub smbios: Vec<String>,
    pub run_dir: PathBuf,
    pub health_file: PathBuf,
    pub credentials: Credentials,
    /// In a node of several VMs: this VM's name (its MACs derive from hostname/name).
    pub instance: Option<String>,
    /// Taps of the internal networks this VM joins, in NIC order (right after management).
    pub internal: Vec<String>,
}

impl Plan {
    /// Who this router is: the hostname (--hostname, HOSTNAME: Docker and containerlab set it
    /// per container) or else vm.name. MAC addresses and status derive from it.
    pub fn identity(&self) -> &str {
        self.credentials.hostname.as_deref().unwrap_or(&self.name)
    }
    /// What this VM's MAC addresses derive from: the router's identity, and in a node of
    /// several VMs the VM's name too.
    pub fn mac_seed(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}/{i}", self.identity()),
            None => self.identity().to_string(),
        }
    }
    /// The label in logs of serial port `n` (0 = the console): "console", "ttyS1", and with
    /// several VMs the VM's name too ("console vfp", "vfp ttyS1").
    pub fn serial_label(&self, n: u32) -> String {
        match (&self.instance, n) {
            (Some(i), 0) => format!("console {i}"),
            (None, 0) => "console".into(),
            (Some(i), n) => format!("{i} ttyS{n}"),
            (None, n) => format!("ttyS{n}"),
        }
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }
    /// The socket of serial port `n` (0 = the console, ttyS0).
    pub fn serial_socket(&self, n: u32) -> PathBuf {
        self.run_dir.join(format!("serial{n}.sock"))
    }
    /// The log of serial port `n`: console.log for ttyS0, console.ttyS{n}.log beside it.
    pub fn serial_log(&self, n: u32) -> PathBuf {
        if n == 0 {
            return self.console_log.clone();
        }
        let stem = self
            .console_log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "console".into());
        self.console_log
            .with_file_name(format!("{stem}.ttyS{n}.log"))
    }
}

/// CLI values that take precedence over file and environment (vrnetlab's flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub credentials: Credentials,
}

/// An internal network between the VMs of one node (vMX control and forwarding planes, SR OS
/// cards): a bridge in the container with one tap per member VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalNet {
    pub name: String,
    pub bridge: String,
    pub taps: Vec<String>,
}

/// One router container: its VMs (one, or several started in this order and stopped in the
/// reverse order) and the internal networks between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub vms: Vec<Plan>,
    pub internal: Vec<InternalNet>,
}

/// A node of one VM, without internal networks.
impl From<Plan> for Node {
    fn from(plan: Plan) -> Self {
        Node {
            vms: vec![plan],
            internal: vec![],
        }
    }
}

impl Node {
    /// The first VM: node-wide settings (interface wait, paths, health file) come from it.
    pub fn first(&self) -> &Plan {
        &self.vms[0]
    }
    /// Every data link of the node, in port order, and the VM each belongs to.
    pub fn links(&self) -> Vec<(usize, DataLink)> {
        let mut out: Vec<(usize, DataLink)> = self
            .vms
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.links.iter().map(move |l| (i, l.clone())))
            .collect();
        out.sort_by_key(|(_, l)| l.index);
        out
    }
}

/// Reads the config file, then [`parse`]s it. A missing file is an error naming the path.
pub fn load(path: &Path, env: &Env, over: &Overrides) -> Result<Node, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    parse(&text, path, base, env, over)
}

/// Pure: parse the TOML text, apply environment overrides, validate, resolve relative paths
/// against `base`.
pub fn parse(
    text: &str,
    origin: &Path,
    base: &Path,
    env: &Env,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    let f: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    build_node(f, origin, base, env, over)
}

/// The keys of a `[[vm]]` entry that are sections of their own.
const VM_SUBSECTIONS: &[&str] = &[
    "kernel",
    "disk",
    "console",
    "management",
    "bootstrap",
    "data",
    "internal",
];

/// Environment variables that size or shape one VM: with several VMs they apply to the first.
const VM_ENV: &[&str] = &[
    "QEMU_MEMORY",
    "QEMU_SMP",
    "QEMU_CPU",
    "QEMU_ADDITIONAL_ARGS",
    "CLAB_MGMT_PASSTHROUGH",
];

fn decode<T: serde::de::DeserializeOwned>(
    v: toml::Value,
    origin: &Path,
    key: &str,
) -> Result<T, ConfigError> {
    v.try_into()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: format!("{key}: {}", e.to_string().trim().replace('\n', " ")),
        })
}

/// Prefixes a per-VM key with the entry (`kernel.path` -> `vm[1].kernel.path`).
fn in_entry(i: usize, e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Invalid { key, value, reason } if !VM_ENV.contains(&key.as_str()) => {
            let key = match key.strip_prefix("vm.") {
                Some(rest) => format!("vm[{i}].{rest}"),
                None if VM_SUBSECTIONS.iter().any(|s| key.starts_with(s)) => {
                    format!("vm[{i}].{key}")
                }
                None => key,
            };
            ConfigError::Invalid { key, value, reason }
        }
        other => other,
    }
}

/// Parses a `data` port selection: "all", "none", or numbers and ranges ("1-4,7").
fn parse_ports(key: &str, s: &str, all: &[u32]) -> Result<Vec<u32>, ConfigError> {
    match s.trim() {
        "all" => return Ok(all.to_vec()),
        "none" | "" => return Ok(vec![]),
        _ => {}
    }
    let bad = || {
        invalid(
            key,
            s,
            "expected all, none, or ports and ranges such as 1-4,7",
        )
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part.trim(), part.trim()),
        };
        let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a == 0 || b < a {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    Ok(out)
}

fn build_node(
    mut f: File,
    origin: &Path,
    base: &Path,
    env: &Env,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    let entries = match f.vm.take() {
        None => return build(f, VmSection::default(), base, env, over).map(Node::from),
        Some(v @ toml::Value::Table(_)) => {
            let vm: VmSection = decode(v, origin, "[vm]")?;
            return build(f, vm, base, env, over).map(Node::from);
        }
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            return Err(invalid(
                "vm",
                other.type_str(),
                "expected a [vm] table or [[vm]] tables",
            ))
        }
    };
    if entries.is_empty() || entries.len() > 8 {
        return Err(invalid(
            "vm",
            entries.len(),
            "between 1 and 8 [[vm]] entries",
        ));
    }
    // With [[vm]], what belongs to one VM lives in its entry.
    let top_level = [
        ("kernel", f.kernel.is_some()),
        ("disk", !f.disks.is_empty()),
        ("bootstrap", f.bootstrap.is_some()),
        ("console", f.console.is_some()),
    ];
    for (k, set) in top_level {
        if set {
            return Err(invalid(
                k,
                "(top level)",
                format!("with [[vm]] entries, give each VM its own [vm.{k}]"),
            ));
        }
    }
    let mut vms = Vec::new();
    let mut selections = Vec::new();
    let mut nets: Vec<InternalNet> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let key = |k: &str| format!("vm[{i}].{k}");
        let toml::Value::Table(mut t) = entry else {
            return Err(invalid(&format!("vm[{i}]"), "", "expected a table"));
        };
        let mut sub = |k: &str| t.remove(k);
        let kernel = sub("kernel");
        let disk = sub("disk");
        let console = sub("console");
        let management = sub("management");
        let bootstrap = sub("bootstrap");
        let data = sub("data");
        let internal = sub("internal");
        let vm: VmSection = decode(toml::Value::Table(t), origin, &format!("vm[{i}]"))?;
        let mut fi = f.clone();
        fi.kernel = kernel
            .map(|v| decode(v, origin, &key("kernel")))
            .transpose()?;
        fi.disks = disk
            .map(|v| decode(v, origin, &key("disk")))
            .transpose()?
            .unwrap_or_default();
        fi.bootstrap = bootstrap
            .map(|v| decode(v, origin, &key("bootstrap")))
            .transpose()?;
        // vrnetlab's numbering: the first VM's console on telnet 5000, the next on 5001, ...;
        // each VM's console log named after it. Both unless the entry says otherwise.
        let mut console = match console {
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(invalid(
                    &key("console"),
                    other.to_string(),
                    "expected a table",
                ))
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
        fi.console = Some(decode(
            toml::Value::Table(console),
            origin,
            &key("console"),
        )?);
        fi.management = match management {
            Some(v) => decode(v, origin, &key("management"))?,
            // Only the first VM forwards the container's ports by default.
            None if i > 0 => MgmtSection {
                forwards: vec![],
                ..f.management.clone()
            },
            None => f.management.clone(),
        };
        fi.paths.run_dir = format!("{}/{}", f.paths.run_dir, vm.name);
        fi.paths.state_dir = format!("{}/{}", f.paths.state_dir, vm.name);
        let env_i: Env = if i == 0 {
            env.clone()
        } else {
            env.iter()
                .filter(|(k, _)| !VM_ENV.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let name = vm.name.clone();
        let mut plan = build(fi, vm, base, &env_i, over).map_err(|e| in_entry(i, e))?;
        if vms.iter().any(|p: &Plan| p.name == name) {
            return Err(invalid(&key("name"), &name, "two VMs with the same name"));
        }
        plan.instance = Some(name.clone());
        let all: Vec<u32> = plan.links.iter().map(|l| l.index).collect();
        let ports = match data {
            None => vec![],
            Some(toml::Value::String(s)) => parse_ports(&key("data"), &s, &all)?,
            Some(other) => {
                return Err(invalid(
                    &key("data"),
                    other.to_string(),
                    "expected a string: all, none, or ports such as 1-4,7",
                ))
            }
        };
        selections.push((i, ports));
        let internal: Vec<String> = internal
            .map(|v| decode(v, origin, &key("internal")))
            .transpose()?
            .unwrap_or_default();
        if internal.len() > MAX_INTERNAL {
            return Err(invalid(
                &key("internal"),
                internal.len(),
                format!("at most {MAX_INTERNAL} internal networks per VM"),
            ));
        }
        for net in &internal {
            if net.is_empty()
                || net.len() > 11
                || !net.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(invalid(
                    &key("internal"),
                    net,
                    "an internal network name: 1-11 letters, digits or '_'",
                ));
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
            plan.internal.push(tap);
        }
        vms.push(plan);
    }
    // Every data port on exactly one VM.
    let all = vms[0].links.clone();
    for l in &all {
        let on: Vec<usize> = selections
            .iter()
            .filter(|(_, ports)| ports.contains(&l.index))
            .map(|(i, _)| *i)
            .collect();
        match on.as_slice() {
            [_] => {}
            [] => {
                return Err(invalid(
                    "vm[].data",
                    &l.eth,
                    "this data interface is on no VM: give it to one with data = \"...\"",
                ))
            }
            [a, b, ..] => {
                return Err(invalid(
                    &format!("vm[{b}].data"),
                    &l.eth,
                    format!("already on vm[{a}]"),
                ))
            }
        }
    }
    // A selection may name ports the lab did not connect (a line card's "1-48" with
    // CLAB_INTFS=3): those simply are not there.
    for ((_, ports), plan) in selections.iter().zip(vms.iter_mut()) {
        plan.links.retain(|l| ports.contains(&l.index));
    }
    for n in &nets {
        if n.taps.len() < 2 {
            return Err(invalid(
                "vm[].internal",
                &n.name,
                "an internal network joins at least two VMs",
            ));
        }
    }
    // What two VMs cannot share: telnet ports, forwarded ports, the management interface.
    let mut telnet: Vec<(u16, usize)> = Vec::new();
    let mut fwd: Vec<(Protocol, u16, usize)> = Vec::new();
    let mut passthrough = None;
    for (i, p) in vms.iter().enumerate() {
        if p.telnet_port > 0 {
            for port in p.telnet_port..=p.telnet_port + p.extra_serials as u16 {
                if let Some((_, j)) = telnet.iter().find(|(q, _)| *q == port) {
                    return Err(invalid(
                        &format!("vm[{i}].console.telnet_port"),
                        port,
                        format!("already used by vm[{j}]'s console"),
                    ));
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
                        return Err(invalid(
                            &format!("vm[{i}].management.forwards"),
                            f.host_port,
                            format!("already forwarded to vm[{j}]"),
                        ));
                    }
                    fwd.push((f.proto, f.host_port, i));
                }
            }
            Management::Passthrough { .. } => {
                if let Some(j) = passthrough {
                    return Err(invalid(
                        &format!("vm[{i}].management.mode"),
                        "passthrough",
                        format!("vm[{j}] already takes over the management interface"),
                    ));
                }
                passthrough = Some(i);
            }
            Management::None => {}
        }
    }
    Ok(Node {
        vms,
        internal: nets,
    })
}

/// Internal networks per VM (their tap fds sit at fixed numbers below the data taps).
pub const MAX_INTERNAL: usize = 6;

fn env_num<T: std::str::FromStr>(
    env: &Env,
    var: &str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(var) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| invalid(var, v, format!("expected {what}"))),
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn valid_ifname(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', ':', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(invalid(
            key,
            name,
            "not a valid interface name (1-15 characters, no '/', ':' or spaces)",
        ));
    }
    Ok(())
}

/// Parses `tcp:22` or `tcp:2022:22` (host:guest).
pub fn parse_forward(key: &str, s: &str) -> Result<Forward, ConfigError> {
    let parts: Vec<&str> = s.split(':').collect();
    let proto = match parts.first().copied() {
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        _ => {
            return Err(invalid(
                key,
                s,
                "expected tcp:PORT or udp:PORT[:GUEST_PORT]",
            ))
        }
    };
    let port = |p: &str| -> Result<u16, ConfigError> {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(key, s, format!("{p:?} is not a port number (1-65535)")))
    };
    let (host_port, guest_port) = match parts.len() {
        2 => (port(parts[1])?, port(parts[1])?),
        3 => (port(parts[1])?, port(parts[2])?),
        _ => {
            return Err(invalid(
                key,
                s,
                "expected tcp:PORT or udp:PORT[:GUEST_PORT]",
            ))
        }
    };
    Ok(Forward {
        proto,
        host_port,
        guest_port,
    })
}

fn build(
    f: File,
    vm: VmSection,
    base: &Path,
    env: &Env,
    over: &Overrides,
) -> Result<Plan, ConfigError> {
    if vm.name.is_empty()
        || !vm
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "vm.name",
            &vm.name,
            "use letters, digits, '-', '_' or '.'",
        ));
    }
    if vm.qemu.is_empty() {
        return Err(invalid("vm.qemu", &vm.qemu, "must name the qemu binary"));
    }
    if vm.machine.is_empty() || vm.machine.contains(char::is_whitespace) {
        return Err(invalid(
            "vm.machine",
            &vm.machine,
            "must be a qemu machine type such as pc or q35",
        ));
    }

    let mut smp = vm.smp;
    let mut smp_key = "vm.smp";
    if let Some(n) = env_num::<u32>(env, "QEMU_SMP", "a number of vCPUs")? {
        smp = n;
        smp_key = "QEMU_SMP";
    }
    if !(1..=256).contains(&smp) {
        return Err(invalid(smp_key, smp, "vCPUs must be between 1 and 256"));
    }
    let mut memory = vm.memory;
    let mut mem_key = "vm.memory";
    if let Some(m) = env_num::<u64>(env, "QEMU_MEMORY", "memory in MiB")? {
        memory = m;
        mem_key = "QEMU_MEMORY";
    }
    if !(16..=1 << 22).contains(&memory) {
        return Err(invalid(
            mem_key,
            memory,
            "memory in MiB must be between 16 and 4194304",
        ));
    }
    let mut cpu = vm.cpu;
    let mut cpu_key = "vm.cpu";
    if let Some(c) = env.get("QEMU_CPU").filter(|c| !c.trim().is_empty()) {
        cpu = c.trim().to_string();
        cpu_key = "QEMU_CPU";
    }
    if cpu.is_empty() || cpu.contains(char::is_whitespace) {
        return Err(invalid(
            cpu_key,
            &cpu,
            "must be a qemu CPU model without spaces",
        ));
    }

    let (accel_key, accel_s) = match env.get("LAUNCHER_ACCEL").filter(|s| !s.is_empty()) {
        Some(a) => ("LAUNCHER_ACCEL", a.clone()),
        None => ("vm.accel", vm.accel.clone()),
    };
    let accel = match accel_s.as_str() {
        "auto" => Accel::Auto,
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        _ => return Err(invalid(accel_key, accel_s, "expected auto, kvm or tcg")),
    };

    let mut extra_args = vm.extra_args;
    if let Some(a) = env.get("QEMU_ADDITIONAL_ARGS") {
        let words = shell_words::split(a).map_err(|e| {
            invalid(
                "QEMU_ADDITIONAL_ARGS",
                a,
                format!("cannot split into words: {e}"),
            )
        })?;
        extra_args.extend(words);
    }

    let boot_delay = match env_num::<u64>(env, "BOOT_DELAY", "a number of seconds")? {
        Some(d) if d > 3600 => return Err(invalid("BOOT_DELAY", d, "at most 3600 seconds")),
        Some(d) => d,
        None => vm.boot_delay,
    };
    if let Some(u) = &vm.uuid {
        let lens: Vec<usize> = u.split('-').map(str::len).collect();
        if lens != [8, 4, 4, 4, 12] || !u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return Err(invalid("vm.uuid", u, "expected 8-4-4-4-12 hex digits"));
        }
    }
    for (i, t) in vm.smbios.iter().enumerate() {
        if !t.starts_with("type=") || t.contains(char::is_whitespace) {
            return Err(invalid(
                &format!("vm.smbios[{i}]"),
                t,
                "expected a qemu -smbios value such as type=1,product=X",
            ));
        }
    }
    if vm.boot_timeout == 0 {
        return Err(invalid("vm.boot_timeout", 0, "must be at least 1 second"));
    }
    if vm.shutdown_timeout == 0 || vm.shutdown_timeout > 3600 {
        return Err(invalid(
            "vm.shutdown_timeout",
            vm.shutdown_timeout,
            "must be between 1 and 3600 seconds",
        ));
    }

    let kernel = match f.kernel {
        None => None,
        Some(k) => {
            if k.path.is_empty() {
                return Err(invalid("kernel.path", "", "must name a kernel image"));
            }
            // The command line may carry the management address ({mgmt_ip}, ...), filled in
            // at run time like the bootstrap's templates.
            check_template("kernel.append", &k.append)?;
            Some(Kernel {
                path: resolve(base, &k.path),
                initrd: k.initrd.as_deref().map(|i| resolve(base, i)),
                append: k.append,
            })
        }
    };

    let state_dir = resolve(base, &f.paths.state_dir);
    let mut disks = Vec::new();
    for (i, d) in f.disks.iter().enumerate() {
        let key = |k: &str| format!("disk[{i}].{k}");
        if d.path.is_empty() {
            return Err(invalid(&key("path"), "", "must name a disk image"));
        }
        if !["qcow2", "raw", "vmdk", "vdi", "vhdx", "fat", "iso"].contains(&d.format.as_str()) {
            return Err(invalid(
                &key("format"),
                &d.format,
                "expected qcow2, raw, vmdk, vdi, vhdx, fat (a folder as a read-only FAT disk) or iso (a folder as a CD-ROM)",
            ));
        }
        let fat = d.format == "fat";
        let iso = d.format == "iso";
        let label = d.label.clone().unwrap_or_else(|| "config".into());
        if d.label.is_some() && !iso {
            return Err(invalid(
                &key("label"),
                &label,
                "only a CD image (format = \"iso\") has a label",
            ));
        }
        if label.is_empty()
            || label.len() > 32
            || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(invalid(
                &key("label"),
                &label,
                "1-32 letters, digits or '_' (ISO 9660)",
            ));
        }
        if fat && d.path.contains(':') {
            return Err(invalid(
                &key("path"),
                &d.path,
                "a fat disk's folder cannot contain ':' (qemu's vvfat syntax)",
            ));
        }
        let asked = d
            .interface
            .as_deref()
            .unwrap_or(if iso { "ide" } else { "virtio" });
        let interface = match asked {
            "virtio" if !iso => DiskInterface::Virtio,
            "ide" => DiskInterface::Ide,
            "scsi" => DiskInterface::Scsi,
            other => {
                return Err(invalid(
                    &key("interface"),
                    other,
                    if iso {
                        "a CD-ROM sits on ide or scsi"
                    } else {
                        "expected virtio, ide or scsi"
                    },
                ))
            }
        };
        let path = resolve(base, &d.path);
        let stem = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // A fat disk or a CD image is read-only: nothing to overlay.
        let overlay = (d.overlay && !fat && !iso).then(|| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            state_dir.join(format!("{stem}-overlay.qcow2"))
        });
        let cd = iso.then(|| (state_dir.join(format!("{stem}-{i}.iso")), label));
        disks.push(Disk {
            path,
            format: d.format.clone(),
            interface,
            overlay,
            cd,
        });
    }
    let ide = disks
        .iter()
        .filter(|d| d.interface == DiskInterface::Ide)
        .count();
    let ide_max = if vm.machine.contains("q35") { 6 } else { 4 };
    if ide > ide_max {
        return Err(invalid(
            "disk",
            format!("{ide} on ide"),
            format!(
                "machine {} has room for {ide_max} IDE disks or CD-ROMs; put the others on virtio or scsi",
                vm.machine
            ),
        ));
    }
    if kernel.is_none() && disks.is_empty() {
        return Err(invalid(
            "disk",
            "[]",
            "nothing to boot: give at least one [[disk]] or a [kernel]",
        ));
    }

    // Data interfaces: explicit names, else CLAB_INTFS, else nics.count.
    let nics = f.nics;
    let prefix = match env.get("CLAB_INTF_PREFIX").filter(|p| !p.is_empty()) {
        Some(p) => {
            valid_ifname("CLAB_INTF_PREFIX", p)?;
            p.clone()
        }
        None => nics.prefix.clone(),
    };
    valid_ifname("nics.prefix", &prefix)?;
    valid_ifname("nics.tap_prefix", &nics.tap_prefix)?;
    let mut links = Vec::new();
    if !nics.names.is_empty() {
        for (i, n) in nics.names.iter().enumerate() {
            valid_ifname(&format!("nics.names[{i}]"), n)?;
            let index = n
                .strip_prefix(prefix.as_str())
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    invalid(
                        &format!("nics.names[{i}]"),
                        n,
                        format!("expected {prefix}N with N >= 1"),
                    )
                })?;
            if links.iter().any(|l: &DataLink| l.index == index) {
                return Err(invalid(&format!("nics.names[{i}]"), n, "listed twice"));
            }
            links.push(DataLink {
                index,
                eth: n.clone(),
                tap: format!("{}{index}", nics.tap_prefix),
            });
        }
        links.sort_by_key(|l| l.index);
    } else {
        let count = match env_num::<u32>(env, "CLAB_INTFS", "a number of data interfaces")? {
            Some(c) => (c, "CLAB_INTFS"),
            None => (nics.count, "nics.count"),
        };
        if count.0 > 512 {
            return Err(invalid(count.1, count.0, "at most 512 data interfaces"));
        }
        for index in 1..=count.0 {
            links.push(DataLink {
                index,
                eth: format!("{prefix}{index}"),
                tap: format!("{}{index}", nics.tap_prefix),
            });
        }
    }
    for l in &links {
        valid_ifname("nics.tap_prefix", &l.tap)?;
        valid_ifname("nics.prefix", &l.eth)?;
    }
    if nics.model.is_empty()
        || nics.model.starts_with(',')
        || nics.model.contains(char::is_whitespace)
    {
        return Err(invalid(
            "nics.model",
            &nics.model,
            "must be a qemu NIC device such as virtio-net-pci or e1000, optionally with ,key=value properties",
        ));
    }
    let on_timeout = match nics.on_timeout.as_str() {
        "fail" => OnTimeout::Fail,
        "continue" => OnTimeout::Continue,
        o => return Err(invalid("nics.on_timeout", o, "expected fail or continue")),
    };
    if nics.offset > 8 {
        return Err(invalid(
            "nics.offset",
            nics.offset,
            "at most 8 empty NIC slots before data NIC 1",
        ));
    }
    if nics.queues > 16 {
        return Err(invalid(
            "nics.queues",
            nics.queues,
            "at most 16 queues per NIC (0 = auto)",
        ));
    }
    if nics.queues > 1 && !nics.model.starts_with("virtio-net") {
        return Err(invalid(
            "nics.queues",
            nics.queues,
            format!("multi-queue needs a virtio-net NIC, not {}", nics.model),
        ));
    }
    if !(1..=31).contains(&nics.per_bridge) {
        return Err(invalid(
            "nics.per_bridge",
            nics.per_bridge,
            "a PCI bridge has slots 1 to 31",
        ));
    }
    if !(68..=65535).contains(&nics.mtu) {
        return Err(invalid(
            "nics.mtu",
            nics.mtu,
            "must be between 68 and 65535",
        ));
    }

    // containerlab's switch: "true" makes the management passthrough, "false" user mode.
    let mut mode = f.management.mode.clone();
    let mut mode_key = "management.mode";
    if let Some(v) = env
        .get("CLAB_MGMT_PASSTHROUGH")
        .filter(|v| !v.trim().is_empty())
    {
        mode_key = "CLAB_MGMT_PASSTHROUGH";
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => mode = "passthrough".into(),
            "false" | "0" | "no" => {
                if mode == "passthrough" {
                    mode = "user".into()
                }
            }
            _ => return Err(invalid(mode_key, v, "expected true or false")),
        }
    }
    let management = match mode.as_str() {
        "none" => Management::None,
        "user" => {
            let mut forwards = Vec::new();
            for (i, s) in f.management.forwards.iter().enumerate() {
                let fw = parse_forward(&format!("management.forwards[{i}]"), s)?;
                if forwards
                    .iter()
                    .any(|o: &Forward| o.proto == fw.proto && o.host_port == fw.host_port)
                {
                    return Err(invalid(
                        &format!("management.forwards[{i}]"),
                        s,
                        "port forwarded twice",
                    ));
                }
                forwards.push(fw);
            }
            Management::User {
                model: f.management.model.unwrap_or_else(|| nics.model.clone()),
                forwards,
                tftp_root: f.management.tftp_root.as_deref().map(|p| resolve(base, p)),
            }
        }
        "passthrough" => {
            valid_ifname("management.interface", &f.management.interface)?;
            valid_ifname("management.tap", &f.management.tap)?;
            if links
                .iter()
                .any(|l| l.eth == f.management.interface || l.tap == f.management.tap)
            {
                return Err(invalid(
                    mode_key,
                    &mode,
                    format!(
                        "the management interface {} or its tap {} is also a data link",
                        f.management.interface, f.management.tap
                    ),
                ));
            }
            Management::Passthrough {
                model: f.management.model.unwrap_or_else(|| nics.model.clone()),
                interface: f.management.interface.clone(),
                tap: f.management.tap.clone(),
                mac: None,
            }
        }
        o => return Err(invalid(mode_key, o, "expected user, passthrough or none")),
    };

    let restart = match f.restart.policy.as_str() {
        "never" => RestartPolicy::Never,
        "on-failure" => {
            if f.restart.backoff > 600 {
                return Err(invalid(
                    "restart.backoff",
                    f.restart.backoff,
                    "at most 600 seconds",
                ));
            }
            RestartPolicy::OnFailure {
                max: f.restart.max,
                backoff: Duration::from_secs(f.restart.backoff),
            }
        }
        o => return Err(invalid("restart.policy", o, "expected never or on-failure")),
    };

    let console = f.console.unwrap_or_default();
    if console.extra_serials > 3 {
        return Err(invalid(
            "console.extra_serials",
            console.extra_serials,
            "at most 3 (ttyS1 to ttyS3)",
        ));
    }
    if console.telnet_port > 0 && u32::from(console.telnet_port) + console.extra_serials > 65535 {
        return Err(invalid(
            "console.telnet_port",
            console.telnet_port,
            "no room for the extra serial ports' telnet ports above it",
        ));
    }
    if let Some(port) = console.ready_tcp {
        let forwarded = match &management {
            Management::User { forwards, .. } => forwards
                .iter()
                .any(|fw| fw.proto == Protocol::Tcp && fw.host_port == port),
            Management::None | Management::Passthrough { .. } => false,
        };
        if !forwarded {
            return Err(invalid(
                "console.ready_tcp",
                port,
                "must be a TCP port in management.forwards (user mode)",
            ));
        }
    }
    if let Some(p) = &console.ready_pattern {
        if p.is_empty() {
            return Err(invalid(
                "console.ready_pattern",
                "",
                "must not be empty (leave it out instead)",
            ));
        }
    }

    let bootstrap = match &f.bootstrap {
        None => None,
        Some(b) => Some(build_bootstrap(b)?),
    };
    let default_user = f.bootstrap.as_ref().and_then(|b| b.username.clone());
    let default_pass = f.bootstrap.as_ref().and_then(|b| b.password.clone());
    let username = over
        .credentials
        .username
        .clone()
        .or_else(|| env.get("USERNAME").cloned())
        .or(default_user);
    let password = over
        .credentials
        .password
        .clone()
        .or_else(|| env.get("PASSWORD").cloned())
        .or(default_pass);
    let hostname = over
        .credentials
        .hostname
        .clone()
        .or_else(|| env.get("HOSTNAME").cloned());
    if let Some(h) = &hostname {
        if h.is_empty()
            || h.len() > 63
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid("hostname", h, "not a valid host name"));
        }
    }

    Ok(Plan {
        name: vm.name,
        qemu: PathBuf::from(vm.qemu),
        machine: vm.machine,
        cpu,
        smp,
        memory_mib: memory,
        accel,
        kernel,
        disks,
        nic_model: nics.model,
        nics_per_bridge: nics.per_bridge,
        nic_queues: nics.queues,
        nic_offset: nics.offset,
        links,
        link_wait: Duration::from_secs(nics.wait_timeout),
        on_timeout,
        min_tap_mtu: nics.mtu,
        management,
        extra_args,
        boot_timeout: Duration::from_secs(vm.boot_timeout),
        shutdown_timeout: Duration::from_secs(vm.shutdown_timeout),
        boot_delay: Duration::from_secs(boot_delay),
        restart,
        console_log: resolve(base, &console.log),
        ready_pattern: console.ready_pattern,
        telnet_port: console.telnet_port,
        ready_tcp: console.ready_tcp,
        extra_serials: console.extra_serials,
        bootstrap,
        startup_config: vm.startup_config.as_deref().map(|p| resolve(base, p)),
        uuid: vm.uuid,
        smbios: vm.smbios,
        run_dir: resolve(base, &f.paths.run_dir),
        health_file: resolve(base, &f.paths.health_file),
        credentials: Credentials {
            username,
            password,
            hostname,
        },
        instance: None,
        internal: vec![],
    })
}

/// A template (a bootstrap line, the kernel command line) may only use known placeholders.
fn check_template(key: &str, t: &str) -> Result<(), ConfigError> {
    match crate::template::unknown_placeholders(t).first() {
        None => Ok(()),
        Some(u) => Err(invalid(
            key,
            t,
            format!(
                "unknown placeholder {{{u}}}; known: {}",
                crate::template::PLACEHOLDERS.join(", ")
            ),
        )),
    }
}

fn build_bootstrap(b: &BootstrapSection) -> Result<Bootstrap, ConfigError> {
    let on_timeout = match b.on_timeout.as_str() {
        "retry" => BootAction::Retry,
        "restart" => BootAction::Restart,
        "fail" => BootAction::Fail,
        o => {
            return Err(invalid(
                "bootstrap.on_timeout",
                o,
                "expected retry, restart or fail",
            ))
        }
    };
    if !(1..=100).contains(&b.attempts) {
        return Err(invalid(
            "bootstrap.attempts",
            b.attempts,
            "must be between 1 and 100",
        ));
    }
    let mut steps = Vec::new();
    for (i, s) in b.steps.iter().enumerate() {
        let key = |k: &str| format!("bootstrap.steps[{i}].{k}");
        let timeout = Duration::from_secs(s.timeout.unwrap_or(60));
        if s.timeout == Some(0) {
            return Err(invalid(&key("timeout"), 0, "must be at least 1 second"));
        }
        let regex = |k: &str, p: &str| -> Result<String, ConfigError> {
            regex::Regex::new(p)
                .map_err(|e| invalid(&key(k), p, format!("not a valid regex: {e}")))?;
            Ok(p.to_string())
        };
        let step = match (&s.expect, &s.send, &s.send_config, s.wait) {
            (Some(p), None, None, None) => Step::Expect {
                pattern: regex("expect", p)?,
                timeout,
            },
            (None, Some(t), None, None) => {
                check_template(&key("send"), t)?;
                Step::Send(t.clone())
            }
            (None, None, Some(p), None) => Step::SendConfig {
                prompt: regex("send_config", p)?,
                timeout,
            },
            (None, None, None, Some(w)) if (0.0..=3600.0).contains(&w) => {
                Step::Wait(Duration::from_secs_f64(w))
            }
            (None, None, None, Some(w)) => {
                return Err(invalid(&key("wait"), w, "seconds between 0 and 3600"))
            }
            _ => {
                return Err(invalid(
                    &format!("bootstrap.steps[{i}]"),
                    "",
                    "each step has exactly one of expect, send, send_config, wait",
                ))
            }
        };
        steps.push(step);
    }
    if steps.is_empty() {
        return Err(invalid(
            "bootstrap.steps",
            "[]",
            "a bootstrap needs at least one step",
        ));
    }
    Ok(Bootstrap {
        steps,
        on_timeout,
        attempts: b.attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[kernel]\npath = \"k\"\n";

    fn p(text: &str, env: &[(&str, &str)]) -> Result<Plan, ConfigError> {
        pn(text, env).map(|n| {
            assert_eq!(n.vms.len(), 1);
            n.vms.into_iter().next().unwrap()
        })
    }

    fn pn(text: &str, env: &[(&str, &str)]) -> Result<Node, ConfigError> {
        let env: Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(
            text,
            Path::new("/cfg/launcher.toml"),
            Path::new("/cfg"),
            &env,
            &Overrides::default(),
        )
    }

    const TWO: &str = r#"
[nics]
count = 4
[[vm]]
name = "cp"
data = "1"
internal = ["fab"]
[vm.kernel]
path = "k"
[[vm]]
name = "lc"
memory = 512
data = "2-4"
internal = ["fab"]
[vm.kernel]
path = "k2"
[vm.console]
telnet_port = 5010
ready_pattern = "up"
"#;

    #[test]
    fn several_vms_in_one_node() {
        let n = pn(TWO, &[("QEMU_MEMORY", "2048"), ("CLAB_INTFS", "3")]).unwrap();
        assert_eq!(n.vms.len(), 2);
        let (cp, lc) = (&n.vms[0], &n.vms[1]);
        // The environment sizes the first VM only; CLAB_INTFS is node-wide.
        assert_eq!((cp.memory_mib, lc.memory_mib), (2048, 512));
        assert_eq!(cp.links.iter().map(|l| l.index).collect::<Vec<_>>(), [1]);
        assert_eq!(lc.links.iter().map(|l| l.index).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(n.links().len(), 3);
        assert_eq!((cp.telnet_port, lc.telnet_port), (5000, 5010));
        assert_eq!(lc.ready_pattern.as_deref(), Some("up"));
        assert_eq!(cp.run_dir, PathBuf::from("/run/launcher/cp"));
        assert_ne!(cp.mac_seed(), lc.mac_seed());
        assert_eq!(
            n.internal,
            vec![InternalNet {
                name: "fab".into(),
                bridge: "int-fab".into(),
                taps: vec!["i0-fab".into(), "i1-fab".into()]
            }]
        );
        assert_eq!(cp.internal, ["i0-fab"]);
        // Only the first VM forwards the container's ports by default.
        match (&cp.management, &lc.management) {
            (Management::User { forwards: a, .. }, Management::User { forwards: b, .. }) => {
                assert_eq!(a.len(), DEFAULT_FORWARDS.len());
                assert!(b.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Second VM's console defaults: 5001 and its own log.
        let n = pn(
            &TWO.replace("[vm.console]\ntelnet_port = 5010\n", "[vm.console]\n"),
            &[],
        );
        assert!(n.is_ok());
        let plain = TWO.replace(
            "[vm.console]\ntelnet_port = 5010\nready_pattern = \"up\"\n",
            "",
        );
        let n = pn(&plain, &[]).unwrap();
        assert_eq!(n.vms[1].telnet_port, 5001);
        assert_eq!(
            n.vms[1].console_log,
            PathBuf::from("/var/log/launcher/lc.console.log")
        );
    }

    #[test]
    fn several_vms_broken_inputs_name_the_entry() {
        let cases: Vec<(String, &str)> = vec![
            (TWO.replace("data = \"1\"", "data = \"none\""), "vm[].data"),
            (TWO.replace("data = \"1\"", "data = \"1-2\""), "vm[1].data"),
            (
                TWO.replace("data = \"2-4\"", "data = \"4-2\""),
                "vm[1].data",
            ),
            (TWO.replace("data = \"1\"", "data = \"one\""), "vm[0].data"),
            (
                TWO.replace(
                    "internal = [\"fab\"]\n[vm.kernel]\npath = \"k2\"",
                    "[vm.kernel]\npath = \"k2\"",
                ),
                "vm[].internal",
            ),
            (TWO.replace("memory = 512", "memroy = 512"), "vm[1]"),
            (
                TWO.replace("path = \"k2\"", "path = \"\""),
                "vm[1].kernel.path",
            ),
            (TWO.replace("memory = 512", "memory = 1"), "vm[1].memory"),
            (
                TWO.replace(
                    "path = \"k2\"",
                    "path = \"k2\"\nappend = \"ip={mgmt_addr}\"",
                ),
                "vm[1].kernel.append",
            ),
            (TWO.replace("name = \"lc\"", "name = \"cp\""), "vm[1].name"),
            (
                TWO.replace("telnet_port = 5010", "telnet_port = 5000"),
                "vm[1].console.telnet_port",
            ),
            (format!("[kernel]\npath = \"k\"\n{TWO}"), "kernel"),
            (format!("[console]\ntelnet_port = 6000\n{TWO}"), "console"),
            (
                TWO.replace("internal = [\"fab\"]", "internal = [\"a-b\"]"),
                "vm[0].internal",
            ),
        ];
        for (text, key) in cases {
            match pn(&text, &[]) {
                Ok(_) => panic!("accepted broken input {text}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(key), "error does not name {key:?}: {msg}");
                }
            }
        }
    }

    #[test]
    fn defaults_and_relative_paths() {
        let plan = p("[kernel]\npath = \"k\"\ninitrd = \"/abs/i\"\n", &[]).unwrap();
        assert_eq!(plan.kernel.as_ref().unwrap().path, PathBuf::from("/cfg/k"));
        assert_eq!(plan.kernel.unwrap().initrd, Some(PathBuf::from("/abs/i")));
        assert_eq!(plan.memory_mib, 1024);
        assert_eq!(plan.accel, Accel::Auto);
        assert!(plan.links.is_empty());
        assert_eq!(
            plan.restart,
            RestartPolicy::OnFailure {
                max: 3,
                backoff: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn env_overrides() {
        let plan = p(
            MIN,
            &[
                ("QEMU_MEMORY", "2048"),
                ("QEMU_SMP", "2"),
                ("QEMU_CPU", "host"),
                ("CLAB_INTFS", "3"),
                ("QEMU_ADDITIONAL_ARGS", "-device 'foo,bar=a b' -x"),
                ("LAUNCHER_ACCEL", "tcg"),
                ("BOOT_DELAY", "5"),
            ],
        )
        .unwrap();
        assert_eq!(plan.memory_mib, 2048);
        assert_eq!(plan.smp, 2);
        assert_eq!(plan.cpu, "host");
        assert_eq!(plan.accel, Accel::Tcg);
        assert_eq!(plan.boot_delay, Duration::from_secs(5));
        assert_eq!(plan.extra_args, vec!["-device", "foo,bar=a b", "-x"]);
        let names: Vec<_> = plan
            .links
            .iter()
            .map(|l| (l.eth.as_str(), l.tap.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![("eth1", "tap1"), ("eth2", "tap2"), ("eth3", "tap3")]
        );
    }

    #[test]
    fn explicit_names_keep_their_index() {
        let plan = p(
            "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth4\",\"eth2\"]\n",
            &[],
        )
        .unwrap();
        let idx: Vec<_> = plan
            .links
            .iter()
            .map(|l| (l.index, l.tap.as_str()))
            .collect();
        assert_eq!(idx, vec![(2, "tap2"), (4, "tap4")]);
    }

    #[test]
    fn disk_overlay_lands_in_state_dir() {
        let plan = p(
            "[[disk]]\npath = \"img/vmx.qcow2\"\n[paths]\nstate_dir=\"/var/lib/x\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(plan.disks[0].path, PathBuf::from("/cfg/img/vmx.qcow2"));
        assert_eq!(
            plan.disks[0].overlay,
            Some(PathBuf::from("/var/lib/x/vmx-overlay.qcow2"))
        );
    }

    /// Every broken config or environment value is rejected, and the message names the key.
    #[test]
    fn broken_inputs_name_their_key() {
        // (config text, environment, the key the error must name)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("[vm]\nmemroy = 5\n[kernel]\npath=\"k\"", &[], "memroy"),
            (
                "[vm]\nmemory = \"lots\"\n[kernel]\npath=\"k\"",
                &[],
                "memory",
            ),
            ("[vm]\nmemory = 4\n[kernel]\npath=\"k\"", &[], "vm.memory"),
            ("[vm]\nsmp = 0\n[kernel]\npath=\"k\"", &[], "vm.smp"),
            (
                "[vm]\naccel = \"hvf\"\n[kernel]\npath=\"k\"",
                &[],
                "vm.accel",
            ),
            ("[vm]\nname = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.name"),
            (
                "[vm]\nshutdown_timeout = 0\n[kernel]\npath=\"k\"",
                &[],
                "vm.shutdown_timeout",
            ),
            (
                "[vm]\nboot_timeout = 0\n[kernel]\npath=\"k\"",
                &[],
                "vm.boot_timeout",
            ),
            ("[vm]\ncpu = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.cpu"),
            ("", &[], "disk"),
            (
                "[[disk]]\npath=\"d\"\nformat=\"qcow3\"",
                &[],
                "disk[0].format",
            ),
            (
                "[[disk]]\npath=\"d\"\ninterface=\"sata\"",
                &[],
                "disk[0].interface",
            ),
            ("[[disk]]\npath=\"d\"\ntypo=1", &[], "typo"),
            (
                "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth0\"]",
                &[],
                "nics.names[0]",
            ),
            (
                "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth1\",\"eth1\"]",
                &[],
                "nics.names[1]",
            ),
            (
                "[kernel]\npath=\"k\"\n[nics]\non_timeout=\"maybe\"",
                &[],
                "nics.on_timeout",
            ),
            ("[kernel]\npath=\"k\"\n[nics]\nmtu=10", &[], "nics.mtu"),
            (
                "[kernel]\npath=\"k\"\n[nics]\nprefix=\"a/b\"",
                &[],
                "nics.prefix",
            ),
            (
                "[kernel]\npath=\"k\"\n[nics]\nmodel=\"e1000 x\"",
                &[],
                "nics.model",
            ),
            (
                "[kernel]\npath=\"k\"\n[management]\nmode=\"bridge\"",
                &[],
                "management.mode",
            ),
            (
                "[kernel]\npath=\"k\"\n[management]\nforwards=[\"tcp:99999\"]",
                &[],
                "management.forwards[0]",
            ),
            (
                "[kernel]\npath=\"k\"\n[management]\nforwards=[\"sctp:22\"]",
                &[],
                "management.forwards[0]",
            ),
            (
                "[kernel]\npath=\"k\"\n[restart]\npolicy=\"always\"",
                &[],
                "restart.policy",
            ),
            (
                "[kernel]\npath=\"k\"\n[restart]\nbackoff=9999",
                &[],
                "restart.backoff",
            ),
            (
                "[kernel]\npath=\"k\"\n[console]\nready_pattern=\"\"",
                &[],
                "console.ready_pattern",
            ),
            ("[kernel]\npath=\"\"", &[], "kernel.path"),
            ("[kernal]\npath=\"k\"", &[], "kernal"),
            ("not toml at all [", &[], "launcher.toml"),
            (MIN, &[("QEMU_MEMORY", "2G")], "QEMU_MEMORY"),
            (MIN, &[("QEMU_MEMORY", "1")], "QEMU_MEMORY"),
            (MIN, &[("QEMU_SMP", "two")], "QEMU_SMP"),
            (MIN, &[("QEMU_SMP", "0")], "QEMU_SMP"),
            (MIN, &[("QEMU_CPU", "host x")], "QEMU_CPU"),
            (MIN, &[("CLAB_INTFS", "-1")], "CLAB_INTFS"),
            (MIN, &[("CLAB_INTFS", "100000")], "CLAB_INTFS"),
            (MIN, &[("BOOT_DELAY", "soon")], "BOOT_DELAY"),
            (MIN, &[("LAUNCHER_ACCEL", "xen")], "LAUNCHER_ACCEL"),
            (
                MIN,
                &[("QEMU_ADDITIONAL_ARGS", "-device 'unterminated")],
                "QEMU_ADDITIONAL_ARGS",
            ),
            (
                MIN,
                &[("CLAB_INTF_PREFIX", "way-too-long-prefix")],
                "CLAB_INTF_PREFIX",
            ),
            (MIN, &[("HOSTNAME", "bad host")], "hostname"),
            (
                "[kernel]\npath=\"k\"\n[console]\nready_tcp=2222",
                &[],
                "console.ready_tcp",
            ),
            (
                "[vm]\nuuid=\"not-a-uuid\"\n[kernel]\npath=\"k\"",
                &[],
                "vm.uuid",
            ),
            (
                "[vm]\nsmbios=[\"product=x\"]\n[kernel]\npath=\"k\"",
                &[],
                "vm.smbios[0]",
            ),
            (
                "[kernel]\npath=\"k\"\n[nics]\noffset=20",
                &[],
                "nics.offset",
            ),
            (
                "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{expect=\"(\"}]",
                &[],
                "bootstrap.steps[0].expect",
            ),
            (
                "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"{hostnme}\"}]",
                &[],
                "bootstrap.steps[0].send",
            ),
            (
                "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"a\", wait=1.0}]",
                &[],
                "bootstrap.steps[0]",
            ),
            (
                "[kernel]\npath=\"k\"\n[bootstrap]\non_timeout=\"panic\"\nsteps=[{wait=1.0}]",
                &[],
                "bootstrap.on_timeout",
            ),
            (
                "[[disk]]\npath=\"day0\"\nformat=\"iso\"\ninterface=\"virtio\"",
                &[],
                "disk[0].interface",
            ),
            (
                "[[disk]]\npath=\"day0\"\nformat=\"iso\"\nlabel=\"config-2\"",
                &[],
                "disk[0].label",
            ),
            (
                "[[disk]]\npath=\"a.qcow2\"\nlabel=\"x\"",
                &[],
                "disk[0].label",
            ),
            (
                "[[disk]]\npath=\"a\"\ninterface=\"ide\"\n[[disk]]\npath=\"b\"\ninterface=\"ide\"\n[[disk]]\npath=\"c\"\ninterface=\"ide\"\n[[disk]]\npath=\"d\"\ninterface=\"ide\"\n[[disk]]\npath=\"e\"\nformat=\"iso\"",
                &[],
                "5 on ide",
            ),
        ];
        assert!(cases.len() >= 20);
        for (text, env, key) in cases {
            match p(text, env) {
                Ok(_) => panic!("accepted broken input {text:?} {env:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(key),
                        "error for {text:?} {env:?} does not name {key:?}: {msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn management_passthrough_from_env_or_file() {
        let plan = p(MIN, &[("CLAB_MGMT_PASSTHROUGH", "true")]).unwrap();
        assert_eq!(
            plan.management,
            Management::Passthrough {
                model: "virtio-net-pci".into(),
                interface: "eth0".into(),
                tap: "tap0".into(),
                mac: None
            }
        );
        let file = format!("{MIN}\n[management]\nmode = \"passthrough\"\n");
        assert!(matches!(
            p(&file, &[]).unwrap().management,
            Management::Passthrough { .. }
        ));
        // CLAB_MGMT_PASSTHROUGH=false turns a file's passthrough back into user mode.
        assert!(matches!(
            p(&file, &[("CLAB_MGMT_PASSTHROUGH", "false")])
                .unwrap()
                .management,
            Management::User { .. }
        ));
        // And leaves none alone.
        let none = format!("{MIN}\n[management]\nmode = \"none\"\n");
        assert_eq!(
            p(&none, &[("CLAB_MGMT_PASSTHROUGH", "false")])
                .unwrap()
                .management,
            Management::None
        );
        let err = p(
            &file,
            &[("CLAB_INTFS", "1"), ("CLAB_MGMT_PASSTHROUGH", "yes please")],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CLAB_MGMT_PASSTHROUGH"), "{err}");
        let clash = format!(
            "{MIN}\n[management]\nmode = \"passthrough\"\ntap = \"tap1\"\n[nics]\ncount = 1\n"
        );
        let err = p(&clash, &[]).unwrap_err().to_string();
        assert!(
            err.contains("management.mode") && err.contains("tap1"),
            "{err}"
        );
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../launcher.toml.example");
        // The example documents every key; with a kernel so it is bootable as written.
        p(text, &[]).expect("launcher.toml.example must be a valid config");
    }
}
