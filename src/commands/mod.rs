//! The commands of the `launcher` binary: run (the default), check, status, health, console,
//! wire and unwire. Each loads what it needs, calls the room that does the work, and turns the
//! result into an exit code: 0 success or clean shutdown; 1 runtime failure (or `health`: not
//! healthy); 2 bad input (usage, config, environment); 3 data interfaces missing after the
//! wait; otherwise qemu's own exit code, or 128 + the signal that killed it.

use crate::cli::{self, Cli, Cmd};
use crate::net::links as datapath;
use crate::{config, control, qemu, supervisor};
use std::path::PathBuf;
use std::process::ExitCode;

fn init_tracing(trace: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => tracing_subscriber::EnvFilter::new(f),
        _ => tracing_subscriber::EnvFilter::new(if trace { "debug" } else { "info" }),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stdout);
    // LAUNCHER_LOG_FORMAT=json: one JSON object per line ({"timestamp", "level", "fields":
    // {"message", ...}}), for tools and the root tests; the human format stays the default.
    if std::env::var("LAUNCHER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
}

/// Prints an error with its whole source chain, once.
fn report(e: &dyn std::error::Error) {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    eprintln!("launcher: {msg}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
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
            return ExitCode::from(2);
        }
    }
    let code = match cli.command.as_ref().unwrap_or(&Cmd::Run) {
        Cmd::Check => match load_node(&cli) {
            Err(e) => {
                report(&e);
                2
            }
            Ok(node) => {
                // `check` does not probe the system: the argv is shown for the accel asked for
                // (auto shows as tcg, the safe choice); with several VMs, one argv each, a
                // blank line between.
                for (i, plan) in node.vms.iter().enumerate() {
                    let accel = qemu::AccelChoice {
                        kvm: plan.accel == config::Accel::Kvm,
                        vhost: false,
                        warning: None,
                    };
                    if i > 0 {
                        println!();
                    }
                    for a in qemu::argv(plan, &accel) {
                        println!("{}", a.to_string_lossy());
                    }
                }
                0
            }
        },
        Cmd::Run => {
            init_tracing(cli.trace);
            match load_node(&cli) {
                Err(e) => {
                    report(&e);
                    2
                }
                Ok(node) => match runtime().block_on(supervisor::run(node)) {
                    Ok(code) => code,
                    Err(e) => {
                        report(&e);
                        e.exit_code()
                    }
                },
            }
        }
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
    };
    ExitCode::from(code.clamp(0, 255) as u8)
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
