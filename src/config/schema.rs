//! The file schema: the TOML sections exactly as a config file spells them, decoded by serde.
//! Owns the defaults of every key. Never validates a value or reads the environment (that is
//! `sections`, `vm`, `node` and `env`); `deny_unknown_fields` everywhere, so a typo is an error,
//! never a silent default.

use serde::Deserialize;

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    /// `[vm]` (one VM) or `[[vm]]` (several, each with its own kernel, disks, console,
    /// management, bootstrap): decoded in `node` so errors can name the entry.
    pub(super) vm: Option<toml::Value>,
    pub(super) kernel: Option<KernelSection>,
    #[serde(default, rename = "disk")]
    pub(super) disks: Vec<DiskSection>,
    #[serde(default)]
    pub(super) nics: NicSection,
    #[serde(default)]
    pub(super) management: MgmtSection,
    #[serde(default)]
    pub(super) restart: RestartSection,
    pub(super) console: Option<ConsoleSection>,
    #[serde(default)]
    pub(super) paths: PathsSection,
    pub(super) bootstrap: Option<BootstrapSection>,
    pub(super) install: Option<InstallSection>,
}

/// `[install]`: the one-time first boot `launcher install` plays (vrnetlab's install phase).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstallSection {
    /// Which VM's console it plays on (default: the first).
    pub(super) vm: Option<String>,
    #[serde(default = "default_install_timeout")]
    pub(super) timeout: u64,
    #[serde(default)]
    pub(super) steps: Vec<StepSection>,
}
fn default_install_timeout() -> u64 {
    3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BootstrapSection {
    #[serde(default = "default_on_boot_timeout")]
    pub(super) on_timeout: String,
    #[serde(default = "default_attempts")]
    pub(super) attempts: u32,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    #[serde(default)]
    pub(super) steps: Vec<StepSection>,
    /// Named lists of steps a `{ block = "name" }` step plays (see `blocks`).
    #[serde(default)]
    pub(super) blocks: std::collections::BTreeMap<String, Vec<StepSection>>,
}
fn default_on_boot_timeout() -> String {
    "retry".into()
}
fn default_attempts() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct StepSection {
    pub(super) expect: Option<String>,
    pub(super) send: Option<String>,
    pub(super) send_config: Option<String>,
    pub(super) wait: Option<f64>,
    /// Keys pressed together through QMP `send-key` (qemu's names joined by '-').
    pub(super) sendkey: Option<String>,
    pub(super) timeout: Option<u64>,
    /// The step runs only when the startup config is there (`startup-config`) or only when it
    /// is not (`no-startup-config`).
    pub(super) when: Option<String>,
    /// Plays the steps of `[bootstrap.blocks]`'s list of that name here.
    pub(super) block: Option<String>,
    /// With `expect`: other prompts answered while it waits.
    #[serde(default)]
    pub(super) answers: Vec<AnswerSection>,
}

/// One `answers` entry of an `expect` step: when `on` (a regex) appears, `send` is typed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct AnswerSection {
    pub(super) on: String,
    pub(super) send: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct VmSection {
    pub(super) name: String,
    pub(super) qemu: String,
    pub(super) machine: String,
    pub(super) cpu: String,
    /// vCPUs: a count, or qemu's `-smp` text (`4,sockets=1,cores=4,threads=1`).
    pub(super) smp: SmpValue,
    pub(super) memory: u64,
    pub(super) accel: String,
    pub(super) extra_args: Vec<String>,
    pub(super) boot_timeout: u64,
    pub(super) shutdown_timeout: u64,
    pub(super) boot_delay: u64,
    pub(super) startup_config: Option<String>,
    pub(super) uuid: Option<String>,
    pub(super) smbios: Vec<String>,
    /// A licence file whose uuid and date qemu shows the guest (SR OS's license.txt).
    pub(super) license: Option<String>,
    /// qemu as an unprivileged user, without capabilities, in its seccomp sandbox.
    pub(super) sandbox: bool,
    /// Who qemu runs as when sandboxed: a user name, `UID` or `UID:GID`.
    pub(super) qemu_user: String,
    /// How the guest's clock is set after a restore: `none` or `guest-agent`.
    pub(super) clock: String,
}

impl Default for VmSection {
    fn default() -> Self {
        Self {
            name: "router".into(),
            qemu: "qemu-system-x86_64".into(),
            machine: "pc".into(),
            cpu: "max".into(),
            smp: SmpValue::Count(1),
            memory: 1024,
            accel: "auto".into(),
            extra_args: vec![],
            boot_timeout: 600,
            shutdown_timeout: 30,
            boot_delay: 0,
            startup_config: None,
            uuid: None,
            smbios: vec![],
            license: None,
            sandbox: true,
            qemu_user: super::plan::QEMU_USER.into(),
            clock: "none".into(),
        }
    }
}

/// `vm.smp` as written: a number or a topology string.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub(super) enum SmpValue {
    Count(u32),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KernelSection {
    pub(super) path: String,
    pub(super) initrd: Option<String>,
    #[serde(default)]
    pub(super) append: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiskSection {
    pub(super) path: String,
    #[serde(default = "default_format")]
    pub(super) format: String,
    /// virtio for disks, ide for a CD image.
    pub(super) interface: Option<String>,
    #[serde(default = "yes")]
    pub(super) overlay: bool,
    /// The volume label of a CD image (format = "iso").
    pub(super) label: Option<String>,
    /// A CD image's or FAT folder's files are templates, rendered at start (a cloud-init
    /// seed, a vendor's day-0 config).
    #[serde(default)]
    pub(super) template: bool,
    /// The rendered files packed as this one gzip'd tar at the disk's root (vJunos).
    pub(super) archive: Option<String>,
    /// On IDE: its position (0 primary master, 1 primary slave, 2 secondary master, ...).
    pub(super) ide_unit: Option<u32>,
}
fn default_format() -> String {
    "qcow2".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct NicSection {
    pub(super) model: String,
    pub(super) count: u32,
    pub(super) names: Vec<String>,
    pub(super) prefix: String,
    pub(super) tap_prefix: String,
    pub(super) wait_timeout: u64,
    pub(super) on_timeout: String,
    pub(super) mtu: u32,
    pub(super) per_bridge: u32,
    pub(super) bridges: u32,
    pub(super) pci_shift: u32,
    pub(super) queues: u32,
    pub(super) offset: u32,
    /// The model of the `offset` NICs (xrv9k's virtio dummies before e1000 data NICs).
    pub(super) offset_model: Option<String>,
    /// NICs without backend on the root bus right after management and the internal NICs
    /// (vrnetlab's xrv9k ctrl/dev dummies), before any PCI bridge.
    pub(super) dummies: u32,
    /// Their model (the data NICs' unless given).
    pub(super) dummy_model: Option<String>,
    pub(super) slots: u32,
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
            bridges: 0,
            pci_shift: 0,
            queues: 0,
            offset: 0,
            offset_model: None,
            dummies: 0,
            dummy_model: None,
            slots: 0,
        }
    }
}

/// A `[[vm]]` entry's `[vm.nics]`: its own NIC layout over the node's `[nics]` (vMX's VCP
/// without the VFP's bridges and dummy). The links stay node-wide.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VmNicSection {
    pub(super) model: Option<String>,
    pub(super) per_bridge: Option<u32>,
    pub(super) bridges: Option<u32>,
    pub(super) pci_shift: Option<u32>,
    pub(super) queues: Option<u32>,
    pub(super) offset: Option<u32>,
    pub(super) offset_model: Option<String>,
    pub(super) dummies: Option<u32>,
    pub(super) dummy_model: Option<String>,
    pub(super) slots: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MgmtSection {
    pub(super) mode: String,
    pub(super) model: Option<String>,
    /// Passthrough: the container interface the VM takes over, and the tap it gets.
    pub(super) interface: String,
    pub(super) tap: String,
    pub(super) forwards: Vec<String>,
    pub(super) tftp_root: Option<String>,
    /// User mode: the user network's IPv4 subnet (vrnetlab's 10.0.0.0/24 by default).
    pub(super) subnet: Option<String>,
}

impl Default for MgmtSection {
    fn default() -> Self {
        Self {
            mode: "user".into(),
            model: None,
            interface: "eth0".into(),
            tap: "tap0".into(),
            tftp_root: None,
            subnet: None,
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
pub(super) struct RestartSection {
    pub(super) policy: String,
    pub(super) max: u32,
    pub(super) backoff: u64,
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
pub(super) struct ConsoleSection {
    pub(super) log: String,
    pub(super) ready_pattern: Option<String>,
    pub(super) ready_tcp: Option<u16>,
    pub(super) telnet_port: u16,
    pub(super) extra_serials: u32,
    pub(super) log_max_size: u64,
    pub(super) log_keep: u32,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            log: "/var/log/launcher/console.log".into(),
            ready_pattern: None,
            ready_tcp: None,
            telnet_port: 5000,
            extra_serials: 0,
            log_max_size: super::bounds::DEFAULT_LOG_MAX_SIZE,
            log_keep: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct PathsSection {
    pub(super) run_dir: String,
    pub(super) state_dir: String,
    pub(super) health_file: String,
    /// vrnetlab's reset backdoor: touching this file resets the VMs (QMP system_reset).
    pub(super) reset_file: String,
}

impl Default for PathsSection {
    fn default() -> Self {
        Self {
            run_dir: "/run/launcher".into(),
            state_dir: "/var/lib/launcher".into(),
            health_file: "/health".into(),
            reset_file: "/reset".into(),
        }
    }
}
