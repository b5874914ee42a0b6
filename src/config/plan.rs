//! The validated plan: what `config::load` hands to the rest of the launcher. A [`Node`] holds the
//! node-wide [`NodeSettings`] once and one grouped [`VmPlan`] per VM. Owns the shape of these
//! types and the names derived from them (MAC seed, serial labels, socket paths). Never
//! validates (the builders in `sections`, `vm` and `node` do) and is never edited after `load`:
//! runtime facts (a passthrough MAC, a missing startup config) live with the supervisor.

use super::subnet::UserSubnet;
use std::path::PathBuf;
use std::time::Duration;

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
    /// An AHCI controller's port (`ide-hd`/`ide-cd` on `ahci0.N`), as N9Kv and FTDv boot.
    Sata,
    /// A USB stick (`usb-storage` on a qemu-xhci controller), as vJunos takes its config.
    Usb,
}

/// One disk: where it comes from, the bus it sits on, and what kind of disk it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The image (`Image`), or the folder whose files the disk shows (`Fat`, `Cd`).
    pub path: PathBuf,
    pub interface: DiskInterface,
    pub kind: DiskKind,
    /// On IDE, its position: 0 primary master, 1 primary slave, 2 secondary master, 3
    /// secondary slave (q35: bus N's only unit). Set for every IDE disk once planned (the
    /// entry's `ide_unit`, else the lowest position no disk asked for); None elsewhere.
    pub ide_unit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskKind {
    /// A disk image (qcow2, raw, vmdk, vdi, vhdx). With `overlay`, qemu runs on that qcow2
    /// backed by `path`, kept across restarts.
    Image {
        format: String,
        overlay: Option<PathBuf>,
    },
    /// The folder `path` as a read-only FAT disk, built by qemu, with its volume `label`;
    /// with `rendered`, the folder's files rendered there first (as a templated CD's) and
    /// the disk shows that folder.
    Fat {
        label: Option<String>,
        rendered: Option<Rendered>,
    },
    /// A CD-ROM: the launcher writes the files of the folder `path` to `image` at every start,
    /// labelled `label`; with `template`, each file rendered first (`{hostname}`, `{password}`,
    /// `{mgmt_ip}`, `{startup_config}`, ...), once the management addresses are known.
    Cd {
        image: PathBuf,
        label: String,
        template: bool,
        /// The rendered files go on the CD packed as this one `.tgz`.
        archive: Option<String>,
    },
}

/// Where a templated FAT folder is rendered (under the state dir), and the archive its files
/// are packed into, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub dir: PathBuf,
    pub archive: Option<String>,
}

impl Disk {
    /// A CD-ROM (shown to the guest as ide-cd / scsi-cd).
    pub fn is_cd(&self) -> bool {
        matches!(self.kind, DiskKind::Cd { .. })
    }
}

/// What a data interface still missing after the wait leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMissingLinks {
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

/// Where the node's data links come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// Known from the file (nics.names, nics.count): each VM's `nics.links` are its links.
    Listed,
    /// CLAB_INTFS = `n`: the lab tool connects `n` interfaces `{prefix}K` (K >= 1), whatever
    /// their K (links may skip ports). Which ones is known only once they are there: the
    /// supervisor waits for them and asks [`Node::links_present`] for each VM's links. Until
    /// then each VM's `nics.links` assume ports 1..n (what `launcher check` shows).
    AnyIndex {
        n: u32,
        prefix: String,
        tap_prefix: String,
    },
}

/// The data ports a VM takes (`[[vm]]`'s `data`): every port, or these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    All,
    Only(Vec<u32>),
}

impl Ports {
    pub fn contains(&self, port: u32) -> bool {
        match self {
            Ports::All => true,
            Ports::Only(p) => p.contains(&port),
        }
    }
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
        /// The user network's subnet (management.subnet; 10.0.0.0/24 by default).
        subnet: UserSubnet,
    },
    /// The VM takes over the container's management interface: `interface` is wired to `tap`
    /// with tc (the launcher's telnet ports excepted) and the VM's NIC gets `interface`'s MAC,
    /// which the supervisor reads at run time.
    Passthrough {
        model: String,
        interface: String,
        tap: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure { max: u32, backoff: Duration },
}

/// How the data interfaces reach the VM (CONNECTION_MODE, --connection-mode).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnectionMode {
    /// ethN and its tap joined by tc mirred both ways.
    #[default]
    Tc,
    /// A passthru macvtap on each ethN (promiscuous, all-multicast), its fd given to qemu: for
    /// hosts whose kernel drops what tc redirects into a tap.
    Macvtap,
}

impl ConnectionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionMode::Tc => "tc",
            ConnectionMode::Macvtap => "macvtap",
        }
    }
}

/// What the lab tool (containerlab) told this VM beyond the file: its management NIC's MAC
/// and DHCP, and values for the templates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lab {
    /// CLAB_MGMT_MAC: the guest management NIC's MAC (in passthrough the container's
    /// management interface takes it too, as vrnetlab does).
    pub mgmt_mac: Option<String>,
    /// CLAB_MGMT_DHCP (passthrough only): the guest takes its management address by DHCP; the
    /// templates' `{mgmt_*}` values are `dhcp`.
    pub mgmt_dhcp: bool,
    /// CLAB_LABEL_CLAB_NODE_NAME, else the router's identity: `{node_name}`.
    pub node_name: String,
    /// DOCKER_NET_V4_ADDR, DOCKER_NET_V6_ADDR (the lab's management subnets):
    /// `{docker_net_v4}`, `{docker_net_v6}`, empty when unset.
    pub docker_net_v4: String,
    pub docker_net_v6: String,
    /// --variant (SR OS: the chassis type or its cp:/lc: line): `{variant}`.
    pub variant: String,
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
    /// Waits for `pattern`; meanwhile each of `answers` is typed whenever its prompt appears.
    Expect {
        pattern: String,
        timeout: Duration,
        answers: Vec<Answer>,
    },
    Send(String),
    SendConfig {
        prompt: String,
        timeout: Duration,
    },
    Wait(Duration),
    /// Keys pressed together on the VM's keyboard (QMP `send-key`, qemu's key names).
    SendKey(Vec<String>),
    /// `step` runs only when a startup config is there (`startup_config`) or only when none
    /// is (`!startup_config`); else it is skipped (SR OS: the lab defaults only without one).
    When {
        startup_config: bool,
        step: Box<Step>,
    },
}

/// A conditional answer of an `expect` step: `send` (a template) is typed each time a new
/// match of the regex `on` appears while the step waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub on: String,
    pub send: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub steps: Vec<Step>,
    pub on_timeout: BootAction,
    pub attempts: u32,
}

/// How the startup config reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// As the fw_cfg entry `opt/launcher/startup-config`.
    FwCfg,
    /// Typed on the console by the bootstrap's `send_config` step.
    Console,
    /// In a templated disk's files (`{startup_config}`, rendered at start): no other copy.
    Disk,
    /// Fetched by the guest from `management.tftp_root`, where the file lies (SR OS).
    Tftp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupConfig {
    pub path: PathBuf,
    pub via: Delivery,
}

/// The emulated machine: the qemu binary and what it emulates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub qemu: PathBuf,
    /// The qemu machine type (`-machine`): pc, q35, ...
    pub machine_type: String,
    pub cpu: String,
    /// vCPUs, and the rest of qemu's `-smp` (`sockets=1,cores=4,threads=1`) when given.
    pub smp: u32,
    pub smp_topology: Option<String>,
    pub memory_mib: u64,
    pub accel: Accel,
    pub uuid: Option<String>,
    /// `-smbios` values, templates (`{mgmt_ip}`, `{base_mac}`, ...) rendered at start.
    pub smbios: Vec<String>,
    /// A licence file read at start: its uuid is the VM's (over `uuid`), the day after its
    /// first date the guest clock's base (`-rtc base=`).
    pub license: Option<PathBuf>,
    /// Appended to the qemu command line as they are (vm.extra_args, QEMU_ADDITIONAL_ARGS).
    pub extra_args: Vec<String>,
}

/// What the VM boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub kernel: Option<Kernel>,
    pub disks: Vec<Disk>,
}

/// The data NICs: their device model, layout and the links behind them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nics {
    pub model: String,
    /// NIC slots kept empty before data NIC 1 (a platform whose first data port is not the
    /// first NIC after management).
    pub offset: u32,
    /// Their NIC model (the data NICs' unless `nics.offset_model` says).
    pub offset_model: String,
    /// NICs without backend on the root bus after management and the internal NICs, before
    /// the PCI bridges (vrnetlab's dummies: the data NICs keep their bridge slots).
    pub dummies: u32,
    /// Their NIC model (the data NICs' unless `nics.dummy_model` says).
    pub dummy_model: String,
    /// Queues per data NIC: 0 = auto (vCPUs with vhost-net, else 1).
    pub queues: u32,
    /// Data NICs per PCI bridge once there are more than this many.
    pub per_bridge: u32,
    /// 0: bridges only past `per_bridge` NICs. N: at least N PCI bridges, every data NIC on
    /// them from the first, numbered as vrnetlab does (position p = slot + `pci_shift` sits on
    /// bridge p / per_bridge + 1 at address p % per_bridge + 1).
    pub bridges: u32,
    /// vrnetlab's position shift of the first data NIC on the bridges (vEOS: 1), no NIC added.
    pub pci_shift: u32,
    /// The data NIC slots the VM always has (nics.slots), placeholders for absent ports;
    /// 0 = as many as the highest port of its links.
    pub slots: u32,
    /// The data ports this VM takes.
    pub ports: Ports,
    /// This VM's data links, in port order (with [`LinkSpec::AnyIndex`], as planned: ports
    /// 1..n).
    pub links: Vec<DataLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    pub log: PathBuf,
    /// Each serial log rotates once it would pass this many bytes (0: never).
    pub log_max_size: u64,
    /// How many rotated files each log keeps (console.log.1 is the newest).
    pub log_keep: u32,
    /// A literal substring of the console output that means the guest is ready.
    pub ready_pattern: Option<String>,
    /// Ready only once this container port answers (through the management forward).
    pub ready_tcp: Option<u16>,
    pub telnet_port: u16,
    /// Serial ports besides the console (ttyS1..); each has its log and telnet port.
    pub extra_serials: u32,
}

/// The user qemu runs as by default: created in the base image (Dockerfile.base). Where the
/// system has no such user, qemu runs as [`QEMU_FALLBACK_ID`].
pub const QEMU_USER: &str = "launcher-qemu";
/// The uid and gid qemu runs as when [`QEMU_USER`] does not exist (the base image gives the
/// user this very id, so both cases look the same).
pub const QEMU_FALLBACK_ID: u32 = 64_711;

/// Who qemu runs as (vm.qemu_user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuUser {
    /// A user of the system's user database (its uid and primary gid, looked up at start).
    Name(String),
    /// Numeric ids, no lookup.
    Id { uid: u32, gid: u32 },
}

/// How qemu is confined (vm.sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// As root with the launcher's capabilities, no seccomp filter (a warning says so).
    Off,
    /// As `user`, with no capability, no_new_privs and qemu's own `-sandbox` seccomp filter.
    On { user: QemuUser },
}

/// How the guest's wall clock is set after a restore (vm.clock): the restored guest's clock
/// lags by the snapshot's age otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// Left to the guest (NTP).
    #[default]
    None,
    /// The qemu guest agent: a virtio-serial port `org.qemu.guest_agent.0` on a socket in the
    /// run dir (part of the device ABI, so of the snapshot key); after `cont` the launcher sends
    /// `guest-set-time` with the host's time.
    GuestAgent,
}

/// How the supervisor runs this VM's qemu: time limits and the restart policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub restart: RestartPolicy,
}

/// One VM's plan: everything the launcher needs for it, validated, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub name: String,
    /// One of several VMs of a node (`[[vm]]`): its MACs and console labels carry its name.
    pub in_node: bool,
    pub machine: Machine,
    pub boot: Boot,
    pub nics: Nics,
    pub management: Management,
    /// Taps of the internal networks this VM joins, in NIC order (right after management).
    pub internal: Vec<String>,
    pub console: Console,
    pub bootstrap: Option<Bootstrap>,
    pub startup_config: Option<StartupConfig>,
    pub supervision: Supervision,
    /// How qemu is confined.
    pub sandbox: Sandbox,
    /// How the clock is set after a restore.
    pub clock: Clock,
    pub run_dir: PathBuf,
    pub credentials: Credentials,
    pub lab: Lab,
}

impl VmPlan {
    /// The TCP readiness probe's port: `console.ready_tcp` through the user-mode forward. In
    /// passthrough the container has no path to the guest's address (the guest took it), so
    /// there is no probe and readiness is the bootstrap's or the pattern's (containerlab forces
    /// passthrough on some kinds: a platform's config must still start).
    pub fn tcp_probe(&self) -> Option<u16> {
        match self.management {
            Management::Passthrough { .. } => None,
            _ => self.console.ready_tcp,
        }
    }

    /// Who this router is: the hostname (--hostname, HOSTNAME: Docker and containerlab set it
    /// per container) or else vm.name. MAC addresses and status derive from it.
    pub fn identity(&self) -> &str {
        self.credentials.hostname.as_deref().unwrap_or(&self.name)
    }
    /// What this VM's MAC addresses derive from: the router's identity, and in a node of
    /// several VMs the VM's name too.
    pub fn mac_seed(&self) -> String {
        if self.in_node {
            format!("{}/{}", self.identity(), self.name)
        } else {
            self.identity().to_string()
        }
    }
    /// The label in logs of serial port `n` (0 = the console): "console", "ttyS1", and with
    /// several VMs the VM's name too ("console vfp", "vfp ttyS1").
    pub fn serial_label(&self, n: u32) -> String {
        match (self.in_node, n) {
            (true, 0) => format!("console {}", self.name),
            (false, 0) => "console".into(),
            (true, n) => format!("{} ttyS{n}", self.name),
            (false, n) => format!("ttyS{n}"),
        }
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }
    /// The qemu guest agent's socket (qemu listens; with [`Clock::GuestAgent`]).
    pub fn agent_socket(&self) -> PathBuf {
        self.run_dir.join("qga.sock")
    }
    /// The socket of serial port `n` (0 = the console, ttyS0).
    pub fn serial_socket(&self, n: u32) -> PathBuf {
        self.run_dir.join(format!("serial{n}.sock"))
    }
    /// The log of serial port `n`: console.log for ttyS0, console.ttyS{n}.log beside it.
    pub fn serial_log(&self, n: u32) -> PathBuf {
        let log = &self.console.log;
        if n == 0 {
            return log.clone();
        }
        let stem = log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "console".into());
        log.with_file_name(format!("{stem}.ttyS{n}.log"))
    }
}

/// An internal network between the VMs of one node (vMX control and forwarding planes, SR OS
/// cards): a bridge in the container with one tap per member VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalNet {
    pub name: String,
    pub bridge: String,
    pub taps: Vec<String>,
}

/// What holds for the whole node, whatever the number of VMs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// The router's name in status and health: the hostname, else the first VM's name.
    pub identity: String,
    pub health_file: PathBuf,
    /// Touching this file resets the VMs (all, or those it lists), as vrnetlab's `/reset`.
    pub reset_file: PathBuf,
    /// How the data interfaces reach the VMs.
    pub connection_mode: ConnectionMode,
    /// Where the data links come from: the VMs' plans, or the interfaces present at start.
    pub links: LinkSpec,
    /// How long to wait for the data interfaces (nics.wait_timeout).
    pub link_wait_timeout: Duration,
    /// What interfaces still missing after that wait lead to (nics.on_timeout).
    pub on_missing_links: OnMissingLinks,
    /// The MTU the data and internal taps get at least (nics.mtu).
    pub tap_mtu: u32,
    /// A pause before the first qemu starts (BOOT_DELAY, else the first VM's vm.boot_delay).
    pub boot_delay: Duration,
}

/// One router container: the node-wide settings, its VMs (one, or several started in this
/// order and stopped in the reverse order) and the internal networks between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub settings: NodeSettings,
    pub vms: Vec<VmPlan>,
    pub internal: Vec<InternalNet>,
    /// `[install]`, for `launcher install`.
    pub install: Option<Install>,
}

/// The install phase: steps played once on VM `vm`'s console, within `timeout` overall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub vm: usize,
    pub steps: Vec<Step>,
    pub timeout: Duration,
}

impl Node {
    /// The node `launcher install` runs, when the config has `[install]`: the install VM's
    /// bootstrap is the install steps (one attempt, fail on a time-out) and its only readiness
    /// probe, its boot timeout the install's; no VM restarts; every image disk is written in
    /// place (no overlay), so what the install writes lands in the image file.
    pub fn for_install(&self) -> Option<Node> {
        let install = self.install.as_ref()?;
        let mut node = self.clone();
        for (i, vm) in node.vms.iter_mut().enumerate() {
            vm.supervision.restart = RestartPolicy::Never;
            for d in &mut vm.boot.disks {
                if let DiskKind::Image { overlay, .. } = &mut d.kind {
                    *overlay = None;
                }
            }
            if i == install.vm {
                vm.bootstrap = Some(Bootstrap {
                    steps: install.steps.clone(),
                    on_timeout: BootAction::Fail,
                    attempts: 1,
                });
                vm.console.ready_pattern = None;
                vm.console.ready_tcp = None;
                vm.supervision.boot_timeout = install.timeout;
            }
        }
        Some(node)
    }
}

impl Node {
    /// Every data link of the node, in port order, and the VM each belongs to.
    pub fn links(&self) -> Vec<(usize, DataLink)> {
        let mut out: Vec<(usize, DataLink)> = self
            .vms
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.nics.links.iter().map(move |l| (i, l.clone())))
            .collect();
        out.sort_by_key(|(_, l)| l.index);
        out
    }
}

impl Node {
    /// With [`LinkSpec::AnyIndex`], each VM's data links (in port order) once the ports present
    /// are known: port K is `{prefix}K` on tap `{tap_prefix}K`, on the VM whose `data` takes
    /// it. A port above a VM's nics.slots, or on no VM, is refused. With [`LinkSpec::Listed`]
    /// the plans' links.
    pub fn links_present(&self, ports: &[u32]) -> Result<Vec<Vec<DataLink>>, super::ConfigError> {
        let LinkSpec::AnyIndex {
            prefix, tap_prefix, ..
        } = &self.settings.links
        else {
            return Ok(self.vms.iter().map(|p| p.nics.links.clone()).collect());
        };
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let mut out = vec![Vec::new(); self.vms.len()];
        for k in ports {
            let eth = format!("{prefix}{k}");
            let vm = self.vms.iter().position(|p| p.nics.ports.contains(k));
            let Some(vm) = vm else {
                return Err(super::Key::new("vm[]").child("data").invalid(
                    &eth,
                    "this data interface is present but on no VM: give it to one with data = \"...\"",
                ));
            };
            let slots = self.vms[vm].nics.slots;
            if slots > 0 && k > slots {
                return Err(super::Key::new("nics").child("slots").invalid(
                    slots,
                    format!("{eth} is present, above the platform's {slots} data ports"),
                ));
            }
            out[vm].push(DataLink {
                index: k,
                eth,
                tap: format!("{tap_prefix}{k}"),
            });
        }
        Ok(out)
    }
}
