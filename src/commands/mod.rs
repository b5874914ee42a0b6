//! The commands of the `launcher` binary: run (the default), install, check, status, health,
//! console, wire and unwire. Each loads what it needs, calls the room that does the work, and turns the
//! result into an exit code: 0 success or clean shutdown; 1 runtime failure (or `health`: not
//! healthy); 2 bad input (usage, config, environment); 3 data interfaces missing after the
//! wait; otherwise qemu's own exit code, or 128 + the signal that killed it.

mod check;
pub mod console;
mod install;
mod run;
mod snapshot;
pub mod status;
pub mod wire;

use crate::cli::{self, Cli, Cmd};
use crate::config;
use crate::exit;
use std::path::PathBuf;
use std::process::ExitCode;

/// Prints an error with its whole source chain, once, on stderr.
fn report(e: &dyn std::error::Error) {
    eprintln!("launcher: {}", exit::chain(e));
}

fn runtime() -> tokio::runtime::Runtime {
    run::runtime()
}

/// The exit code of a supervisor run (`run`, `install`): its own, or its error's, reported.
fn supervised(r: Result<exit::Code, crate::supervisor::SupervisorError>) -> exit::Code {
    r.unwrap_or_else(|e| {
        report(&e);
        exit::Code::from(&e)
    })
}

fn load_node(cli: &Cli) -> Result<config::Node, config::ConfigError> {
    load_node_with(cli, &std::env::vars().collect())
}

/// [`load_node`] with the environment given (`check --links` sets CLAB_INTFS).
fn load_node_with(cli: &Cli, env: &config::Env) -> Result<config::Node, config::ConfigError> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(cli::DEFAULT_CONFIG));
    let env = &cli.env_with_flags(env.clone());
    component_matches(cli, env)?;
    if cli.root_password.is_some() {
        tracing::warn!("--root-password is accepted but unused: no template takes it");
    }
    let over = config::Overrides {
        credentials: config::Credentials {
            username: cli.username.clone(),
            password: cli.password.clone(),
            hostname: cli.hostname.clone(),
        },
        connection_mode: cli.connection_mode.clone(),
        variant: cli.variant.clone(),
    };
    config::load(&path, env, &over)
}

/// containerlab's cisco_sdwan passes `--component-type`: an image built for one component
/// (COMPONENT_TYPE in its environment) refuses another (exit 2); an image that names none
/// refuses the flag, as it cannot be that component.
fn component_matches(cli: &Cli, env: &config::Env) -> Result<(), config::ConfigError> {
    let Some(want) = &cli.component_type else {
        return Ok(());
    };
    match env.get("COMPONENT_TYPE") {
        Some(is) if is == want => Ok(()),
        Some(is) => Err(config::Key::new("--component-type").invalid(
            want,
            format!("this image is the {is} component (COMPONENT_TYPE)"),
        )),
        None => Err(config::Key::new("--component-type").invalid(
            want,
            "this image is no SD-WAN component (no COMPONENT_TYPE)",
        )),
    }
}

/// Runs the command the command line asks for.
pub fn main(cli: Cli) -> ExitCode {
    let code = match cli.command.as_ref().unwrap_or(&Cmd::Run) {
        Cmd::Check { json, links } => check::check(&cli, *json, links.as_deref()),
        Cmd::Run => run::run(&cli),
        Cmd::Install => install::install(&cli),
        Cmd::Status { json } => status::status(&runtime(), *json),
        Cmd::Health => status::health(&runtime()),
        Cmd::Reset { vm } => status::reset(&runtime(), vm.as_deref()),
        Cmd::Console { vm } => console::run(&runtime(), vm.as_deref()),
        Cmd::Wire { mtu, pairs } => wire::wire(&runtime(), pairs, *mtu),
        Cmd::Unwire { pairs } => wire::unwire(&runtime(), pairs),
        Cmd::Snapshot {
            action: cli::SnapshotCmd::Save { file },
        } => snapshot::save(&runtime(), file.as_deref()),
    };
    code.into()
}
