//! `launcher check`: load the config and print each VM's qemu argv. Does not probe the system:
//! the argv is shown for the accel asked for (auto shows as tcg, the safe choice); with
//! several VMs, one argv each, a blank line between.

use super::{load_node, report};
use crate::cli::Cli;
use crate::exit::Code;
use crate::qemu;

pub fn check(cli: &Cli) -> Code {
    let node = match load_node(cli) {
        Ok(node) => node,
        Err(e) => {
            report(&e);
            return Code::from(&e);
        }
    };
    for (i, plan) in node.vms.iter().enumerate() {
        let launch = qemu::Launch::for_check(plan);
        if i > 0 {
            println!();
        }
        for a in qemu::argv(plan, &launch, &qemu::Resolved::planned(plan)) {
            println!("{}", a.to_string_lossy());
        }
    }
    Code::Ok
}
