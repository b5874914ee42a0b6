//! The command line: subcommands plus vrnetlab's launcher flags, so containerlab's `vr-*` kinds
//! work unchanged. Parsing only; `main` dispatches.

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
    /// vrnetlab: how data interfaces are connected; only `tc` exists here.
    #[arg(long, global = true)]
    pub connection_mode: Option<String>,
    /// vrnetlab: verbose logging (same as RUST_LOG=debug).
    #[arg(long, global = true)]
    pub trace: bool,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Boot and supervise the router (the default).
    Run,
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
    /// Remove the tc wiring of ETH=TAP pairs.
    Unwire {
        #[arg(required = true, value_name = "ETH=TAP")]
        pairs: Vec<String>,
    },
}
