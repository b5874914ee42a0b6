//! `launcher install`: vrnetlab's install phase. Loads the config, takes its `[install]`
//! (none: exit 2), and runs the supervisor's install recipe: the VMs boot on their image disks
//! written in place, the install steps play on the console, the guest is powered off. Exit 0
//! once that is done; the build then commits the container with the written images.

use super::{load_node, report, runtime, supervised};
use crate::cli::{self, Cli};
use crate::exit::Code;
use crate::{logout, supervisor};

pub fn install(cli: &Cli) -> Code {
    super::run::init_tracing(cli.trace);
    let code = match load_node(cli) {
        Err(e) => {
            report(&e);
            Code::from(&e)
        }
        Ok(node) => match node.for_install() {
            None => {
                let path = cli
                    .config
                    .clone()
                    .unwrap_or_else(|| cli::DEFAULT_CONFIG.into());
                eprintln!(
                    "launcher: {}: no [install] section: nothing to install",
                    path.display()
                );
                Code::BadInput
            }
            Some(node) => supervised(runtime().block_on(supervisor::install(node))),
        },
    };
    logout::finish();
    code
}
