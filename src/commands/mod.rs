//! The commands of the `launcher` binary: run (the default), check, status, health, console,
//! wire and unwire. Each loads what it needs, calls the room that does the work, and turns the
//! result into an exit code: 0 success or clean shutdown; 1 runtime failure (or `health`: not
//! healthy); 2 bad input (usage, config, environment); 3 data interfaces missing after the
//! wait; otherwise qemu's own exit code, or 128 + the signal that killed it.

mod check;
mod run;

use crate::cli::{self, Cli, Cmd};
use crate::exit::{self, Code};
use crate::net::links as datapath;
use crate::{config, control};
use std::path::PathBuf;
use std::process::ExitCode;

/// Prints an error with its whole source chain, once, on stderr.
fn report(e: &dyn std::error::Error) {
    eprintln!("launcher: {}", exit::chain(e));
}

fn runtime() -> tokio::runtime::Runtime {
    run::runtime()
}

fn load_node(cli: &Cli) -> Result<config::Node, config::ConfigError> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(cli::DEFAULT_CONFIG));
    let env: config::Env = std::env::vars().collect();
    let over = config::Overrides {
        credentials: config::Credentials {
            username: cli.username.clone(),
            password: cli.password.clone(),
            hostname: cli.hostname.clone(),
        },
    };
    config::load(&path, &env, &over)
}

/// Runs the command the command line asks for.
pub fn main(cli: Cli) -> ExitCode {
    if let Some(mode) = &cli.connection_mode {
        if mode != "tc" {
            eprintln!("launcher: --connection-mode {mode:?}: only \"tc\" is supported (tc mirred passes LACP, STP and LLDP; bridges and macvtap do not)");
            return Code::BadInput.into();
        }
    }
    let code = match cli.command.as_ref().unwrap_or(&Cmd::Run) {
        Cmd::Check => check::check(&cli),
        Cmd::Run => run::run(&cli),
        // Until these move to their own files, their bodies still return numbers.
        other => Code::from_legacy(legacy(other)),
    };
    code.into()
}

/// status, health, console, wire and unwire: each body returns its exit number.
fn legacy(cmd: &Cmd) -> i32 {
    match cmd {
        Cmd::Check | Cmd::Run => unreachable!("dispatched above"),
        Cmd::Status { json } => {
            match runtime().block_on(control::query(&control::socket_path(), "status")) {
                Ok(r) => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    } else {
                        print!("{}", control::render(&r));
                    }
                    0
                }
                Err(e) => {
                    report(&e);
                    1
                }
            }
        }
        Cmd::Health => {
            match runtime().block_on(control::query(&control::socket_path(), "health")) {
                Ok(r) => {
                    println!("{}: {}", r.name, r.state);
                    if r.healthy {
                        0
                    } else {
                        1
                    }
                }
                Err(e) => {
                    report(&e);
                    1
                }
            }
        }
        Cmd::Console { vm } => {
            match runtime().block_on(control::console(&control::socket_path(), vm.as_deref())) {
                Ok(()) => 0,
                Err(e) => {
                    report(&e);
                    // Asking for a VM that is not there is bad input.
                    if matches!(e, control::ControlError::Refused(_)) {
                        2
                    } else {
                        1
                    }
                }
            }
        }
        Cmd::Wire { mtu, pairs } => wire_cmd(pairs, |p| {
            runtime().block_on(datapath::wire_pairs(&p, *mtu))
        }),
        Cmd::Unwire { pairs } => {
            wire_cmd(pairs, |p| runtime().block_on(datapath::unwire_pairs(&p)))
        }
    }
}

fn wire_cmd(
    args: &[String],
    f: impl FnOnce(Vec<datapath::Pair>) -> Result<Vec<String>, datapath::WireError>,
) -> i32 {
    let res = datapath::parse_pairs(args).and_then(f);
    match res {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            0
        }
        Err(e) => {
            report(&e);
            if matches!(e, datapath::WireError::Usage { .. }) {
                2
            } else {
                1
            }
        }
    }
}
