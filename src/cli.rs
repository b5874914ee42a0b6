//! The command line: subcommands plus vrnetlab's launcher flags, so containerlab's `vr-*` kinds
//! work unchanged. Parsing only; `main` dispatches. An unknown flag is a usage error: clap
//! names it and exits 2.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = "/etc/launcher/launcher.toml";

#[derive(Debug, Parser)]
#[command(
    name = "launcher",
    version,
    about = "Boots a router VM as PID 1 of its container and wires eth1..N to it with tc mirred"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Config file (run and check). Default: $LAUNCHER_CONFIG, else /etc/launcher/launcher.toml.
    #[arg(long, global = true, env = "LAUNCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// vrnetlab: the router's username (for bootstrap templates).
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// vrnetlab: the router's password (for bootstrap templates).
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// vrnetlab: the router's hostname.
    #[arg(long, global = true)]
    pub hostname: Option<String>,
    /// vrnetlab: how data interfaces are connected (over CONNECTION_MODE): `tc` or `macvtap`.
    #[arg(long, global = true)]
    pub connection_mode: Option<String>,
    /// run: restore the node from this snapshot instead of booting (containerlab: the same with
    /// RESTORE_SNAPSHOT=1 and /snapshot.tar).
    #[arg(long, global = true, value_name = "FILE", env = "LAUNCHER_RESTORE")]
    pub restore: Option<PathBuf>,
    /// vrnetlab: verbose logging (same as RUST_LOG=debug).
    #[arg(long, global = true)]
    pub trace: bool,
    /// vrnetlab (SR OS): the chassis variant, for templates as `{variant}`.
    #[arg(long, global = true)]
    pub variant: Option<String>,
    /// vrnetlab (f5_bigip): memory in MiB, as QEMU_MEMORY (the flag wins).
    #[arg(long, global = true, value_name = "MIB")]
    pub ram: Option<String>,
    /// vrnetlab (f5_bigip): vCPUs or qemu's topology, as QEMU_SMP (the flag wins).
    #[arg(long, global = true)]
    pub smp: Option<String>,
    /// vrnetlab (f5_bigip): the CPU model, as QEMU_CPU (the flag wins).
    #[arg(long, global = true)]
    pub cpu: Option<String>,
    /// vrnetlab (f5_bigip): root's password, as ROOT_PASSWORD (the flag wins); no template
    /// uses it yet, so it is accepted and said to be unused.
    #[arg(long, global = true)]
    pub root_password: Option<String>,
    /// vrnetlab (cisco_sdwan): the component this node is; an image built for one component
    /// says which in COMPONENT_TYPE, and another value is exit 2.
    #[arg(long, global = true)]
    pub component_type: Option<String>,
}

impl Cli {
    /// The environment with vrnetlab's value flags folded in, each over its variable:
    /// `--ram` QEMU_MEMORY, `--smp` QEMU_SMP, `--cpu` QEMU_CPU, `--root-password`
    /// ROOT_PASSWORD (containerlab's f5_bigip_ve kind passes them with the same values).
    pub fn env_with_flags(
        &self,
        mut env: std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        for (flag, var) in [
            (&self.ram, "QEMU_MEMORY"),
            (&self.smp, "QEMU_SMP"),
            (&self.cpu, "QEMU_CPU"),
            (&self.root_password, "ROOT_PASSWORD"),
        ] {
            if let Some(v) = flag {
                env.insert(var.to_string(), v.clone());
            }
        }
        env
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Boot and supervise the router (the default).
    Run,
    /// Boot once to install (the config's [install] steps on the console, image disks written
    /// in place), then power off: exit 0 when done (vrnetlab's install phase, at image build).
    Install,
    /// Validate the config and print the qemu argv, one argument per line. Touches nothing.
    Check {
        /// Print the argvs as one JSON object: {"vms": [{"name", "argv": [...]}]}.
        #[arg(long)]
        json: bool,
        /// The data links present, as containerlab gives them (e.g. eth1,eth3): CLAB_INTFS
        /// becomes their count.
        #[arg(long)]
        links: Option<String>,
    },
    /// Show the state of the running launcher and its links.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the router is ready, 1 otherwise.
    Health,
    /// Reset the VMs (QMP system_reset, the reset button): every VM, or the one named.
    Reset {
        /// With several VMs: which one (default: every VM).
        vm: Option<String>,
    },
    /// Attach to the router's serial console (for `docker exec -it`); Ctrl-] detaches.
    Console {
        /// With several VMs: which one (default: the first).
        vm: Option<String>,
    },
    /// Wire ETH=TAP pairs with tc mirred both ways (creates missing taps as persistent taps).
    Wire {
        /// MTU for created or existing taps (default: the ETH's MTU).
        #[arg(long)]
        mtu: Option<u32>,
        #[arg(required = true, value_name = "ETH=TAP")]
        pairs: Vec<String>,
    },
    /// Snapshots of the running node (fast start).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCmd,
    },
    /// Remove the tc wiring of ETH=TAP pairs.
    Unwire {
        #[arg(required = true, value_name = "ETH=TAP")]
        pairs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Save every VM of the running node, paused for as short as possible, to FILE (default:
    /// containerlab's /snapshot-output.tar, a path in the container).
    Save { file: Option<PathBuf> },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("launcher").chain(args.iter().copied()))
    }

    /// containerlab's command lines for vr-* kinds parse as `run` with every flag kept.
    #[test]
    fn containerlab_command_lines_parse() {
        let c = parse(&[
            "--username",
            "admin",
            "--password",
            "admin@123",
            "--hostname",
            "r1",
            "--connection-mode",
            "tc",
            "--trace",
        ])
        .unwrap();
        assert!(c.command.is_none() && c.trace);
        assert_eq!(c.username.as_deref(), Some("admin"));
        assert_eq!(c.password.as_deref(), Some("admin@123"));
        assert_eq!(c.hostname.as_deref(), Some("r1"));
        assert_eq!(c.connection_mode.as_deref(), Some("tc"));
        // nokia_sros: no credentials, a variant.
        let c = parse(&[
            "--trace",
            "--connection-mode",
            "tc",
            "--hostname",
            "sr1",
            "--variant",
            "cp: cpu=2 min_ram=4 chassis=sr-7 slot=A card=cpm5",
        ])
        .unwrap();
        assert_eq!(
            c.variant.as_deref(),
            Some("cp: cpu=2 min_ram=4 chassis=sr-7 slot=A card=cpm5")
        );
        assert!(matches!(
            parse(&["reset", "vfp"]).unwrap().command,
            Some(Cmd::Reset { vm: Some(ref v) }) if v == "vfp"
        ));
        assert!(matches!(
            parse(&["reset"]).unwrap().command,
            Some(Cmd::Reset { vm: None })
        ));
    }

    /// A flag we do not know (vrnetlab's sdwan `--nics`, which containerlab never passes, any
    /// future one) is exit 2, naming it.
    #[test]
    fn unknown_flags_are_exit_2_naming_them() {
        let e = parse(&["--hostname", "r1", "--nics", "8"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--nics"), "{e}");
    }

    /// containerlab's f5_bigip_ve and cisco_sdwan command lines parse; the value flags land
    /// on their variables, over what the environment says.
    #[test]
    fn f5_and_sdwan_command_lines_parse() {
        let c = parse(&[
            "--hostname",
            "bigip1",
            "--username",
            "admin",
            "--password",
            "admin",
            "--root-password",
            "default",
            "--connection-mode",
            "tc",
            "--ram",
            "8192",
            "--smp",
            "4",
            "--cpu",
            "host",
            "--trace",
        ])
        .unwrap();
        let env = c.env_with_flags([("QEMU_MEMORY".to_string(), "2048".to_string())].into());
        assert_eq!(env["QEMU_MEMORY"], "8192");
        assert_eq!(env["QEMU_SMP"], "4");
        assert_eq!(env["QEMU_CPU"], "host");
        assert_eq!(env["ROOT_PASSWORD"], "default");
        let c = parse(&["--hostname", "m1", "--component-type", "manager"]).unwrap();
        assert_eq!(c.component_type.as_deref(), Some("manager"));
        assert!(c.env_with_flags(Default::default()).is_empty());
    }
}
