//! One VM: runs the section builders in order, then the checks that span sections (the
//! management passthrough against the data links, `console.ready_tcp` against the forwards) and
//! decides how the startup config is delivered (reading a templated disk's own files for
//! `{startup_config}`, as the config's includes are read). Never reads the file's layout
//! (`node` hands over this VM's sections and keys) and never looks at the other VMs.

use super::env::{NodeEnv, VmEnv};
use super::hardware::{self, NodeNics};
use super::schema::{
    BootstrapSection, ConsoleSection, DiskSection, KernelSection, MgmtSection, RestartSection,
    VmSection,
};
use super::sections;
use super::{
    resolve, Bootstrap, ConfigError, Console, DataLink, Delivery, Disk, DiskKind, Key, Management,
    Nics, Overrides, Ports, Protocol, StartupConfig, Step, VmPlan,
};
use std::path::{Path, PathBuf};

/// One VM's part of the file, and where its keys live.
pub(super) struct VmInput<'a> {
    /// The `[vm]` table's key: `vm`, or `vm[i]` in a node of several.
    pub(super) key: Key,
    /// Where the VM's own sections (kernel, disk, console, management, bootstrap) hang: the top
    /// level, or `vm[i]`.
    pub(super) sections: Key,
    pub(super) in_node: bool,
    pub(super) vm: &'a VmSection,
    pub(super) kernel: Option<&'a KernelSection>,
    pub(super) disks: &'a [DiskSection],
    pub(super) management: &'a MgmtSection,
    pub(super) console: &'a ConsoleSection,
    pub(super) bootstrap: Option<&'a BootstrapSection>,
    pub(super) run_dir: PathBuf,
    pub(super) state_dir: PathBuf,
    /// This VM's data NICs: its layout (the node's `[nics]`, or its `[vm.nics]` over them),
    /// the data ports it takes and its links (all of the node's for a single VM).
    pub(super) nics: Nics,
    /// This VM's internal-network taps.
    pub(super) internal: Vec<String>,
    /// The variables that size this VM (set for the first VM only).
    pub(super) env: &'a VmEnv,
}

/// What every VM of the node shares.
pub(super) struct Shared<'a> {
    pub(super) base: &'a Path,
    pub(super) env: &'a NodeEnv,
    pub(super) over: &'a Overrides,
    pub(super) nics: &'a NodeNics,
    pub(super) restart: &'a RestartSection,
}

pub(super) fn build(v: VmInput, shared: &Shared) -> Result<VmPlan, ConfigError> {
    let base = shared.base;
    let name = hardware::vm_name(&v.key, &v.vm.name)?;
    let mut machine = hardware::machine(&v.key, v.vm, v.env, &shared.env.accel)?;
    machine.license = v.vm.license.as_deref().map(|p| resolve(base, p));
    let supervision = sections::supervision(&v.key, v.vm, shared.restart)?;
    let sandbox = sections::sandbox(&v.key, v.vm)?;
    let clock = sections::clock(&v.key, v.vm)?;
    let boot = hardware::boot(
        &v.sections,
        v.kernel,
        v.disks,
        &machine.machine_type,
        base,
        &v.state_dir,
    )?;
    let (management, mode_key) =
        sections::management(&v.sections, v.management, v.env, &v.nics.model, base)?;
    let console = sections::console(&v.sections, v.console, base)?;
    let bootstrap = v
        .bootstrap
        .map(|b| sections::bootstrap(&v.sections, b))
        .transpose()?;
    let credentials = sections::credentials(v.bootstrap, shared.env, shared.over)?;
    let identity = credentials.hostname.as_deref().unwrap_or(&name);
    let lab = sections::lab(v.env, shared.env, shared.over, identity)?;
    passthrough_is_no_data_link(&management, &mode_key, &shared.nics.nics.links)?;
    ready_tcp_is_forwarded(&console, &management, &v.sections)?;
    let startup_config = v.vm.startup_config.as_deref().map(|p| {
        let path = resolve(base, p);
        let via = delivery(bootstrap.as_ref(), &management, &boot.disks, &path);
        StartupConfig { path, via }
    });

    // A VM that takes no data port (`data = "none"`: a control plane) has no data NIC slot,
    // no empty slot before them and no PCI bridge for them, as vrnetlab's control planes.
    let no_data = v.nics.ports == Ports::Only(vec![]);
    Ok(VmPlan {
        name,
        in_node: v.in_node,
        machine,
        boot,
        nics: if no_data {
            Nics {
                offset: 0,
                bridges: 0,
                slots: 0,
                ..v.nics
            }
        } else {
            v.nics
        },
        management,
        internal: v.internal,
        console,
        bootstrap,
        startup_config,
        supervision,
        sandbox,
        clock,
        run_dir: v.run_dir,
        credentials,
        lab,
    })
}

/// The management interface and its tap are no data link of the node.
fn passthrough_is_no_data_link(
    management: &Management,
    mode_key: &Key,
    links: &[DataLink],
) -> Result<(), ConfigError> {
    if let Management::Passthrough { interface, tap, .. } = management {
        if links.iter().any(|l| &l.eth == interface || &l.tap == tap) {
            return Err(mode_key.invalid(
                "passthrough",
                format!(
                    "the management interface {interface} or its tap {tap} is also a data link"
                ),
            ));
        }
    }
    Ok(())
}

/// A TCP readiness probe goes through a user-mode forward.
fn ready_tcp_is_forwarded(
    console: &Console,
    management: &Management,
    sections: &Key,
) -> Result<(), ConfigError> {
    let Some(port) = console.ready_tcp else {
        return Ok(());
    };
    let forwarded = match management {
        Management::User { forwards, .. } => forwards
            .iter()
            .any(|fw| fw.proto == Protocol::Tcp && fw.host_port == port),
        // No probe in passthrough (`VmPlan::tcp_probe`): the port is not checked there.
        Management::Passthrough { .. } => true,
        Management::None => false,
    };
    if !forwarded {
        return Err(sections.child("console").child("ready_tcp").invalid(
            port,
            "must be a TCP port in management.forwards (user mode; passthrough has no probe)",
        ));
    }
    Ok(())
}

/// The startup config is typed on the console when the bootstrap has a step for it; it is in a
/// templated disk's files when one carries `{startup_config}`; a file in the TFTP root the
/// guest fetches itself (SR OS's config.txt); else it goes by fw_cfg.
fn delivery(
    bootstrap: Option<&Bootstrap>,
    management: &Management,
    disks: &[Disk],
    path: &Path,
) -> Delivery {
    let send_config = |s: &Step| match s {
        Step::When { step, .. } => matches!(**step, Step::SendConfig { .. }),
        s => matches!(s, Step::SendConfig { .. }),
    };
    let in_tftp = match management {
        Management::User {
            tftp_root: Some(root),
            ..
        } => path.starts_with(root),
        _ => false,
    };
    if bootstrap.is_some_and(|b| b.steps.iter().any(send_config)) {
        Delivery::Console
    } else if disks.iter().any(carries_startup_config) {
        Delivery::Disk
    } else if in_tftp {
        Delivery::Tftp
    } else {
        Delivery::FwCfg
    }
}

/// A templated disk (CD or FAT folder) one of whose files has `{startup_config}`. A folder
/// not there (yet) carries nothing: the fw_cfg copy stays.
fn carries_startup_config(d: &Disk) -> bool {
    let templated = match &d.kind {
        DiskKind::Cd { template, .. } => *template,
        DiskKind::Fat { rendered, .. } => rendered.is_some(),
        DiskKind::Image { .. } => false,
    };
    let mut budget = SCAN_ENTRIES;
    templated && folder_has(&d.path, "{startup_config}", 8, &mut budget)
}

/// The entries a template folder scan looks at before it gives up, and the largest file it
/// reads: a day-0 folder is small, and a path that is no such folder (a typo such as "/")
/// costs no more. Files whose size says 0 (procfs) are not read.
const SCAN_ENTRIES: u32 = 256;
const SCAN_BYTES: u64 = 1 << 20;

/// Whether a file under `dir` (at most `depth` folders down, `budget` entries) contains
/// `needle`.
fn folder_has(dir: &Path, needle: &str, depth: u32, budget: &mut u32) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    for e in entries.flatten() {
        let Some(left) = budget.checked_sub(1) else {
            return false;
        };
        *budget = left;
        let found = match e.file_type() {
            Ok(t) if t.is_dir() => depth > 0 && folder_has(&e.path(), needle, depth - 1, budget),
            Ok(t) if t.is_file() => {
                e.metadata()
                    .is_ok_and(|m| (1..=SCAN_BYTES).contains(&m.len()))
                    && std::fs::read(e.path())
                        .is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle))
            }
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}
