//! `launcher run` (the default): load the config, build the runtime, supervise the node until
//! it ends. The exit code comes from the node, or from the error that stopped it.

use super::{load_node, report};
use crate::cli::Cli;
use crate::exit::Code;
use crate::logout;
use crate::{snapshot, supervisor};

pub fn run(cli: &Cli) -> Code {
    init_tracing(cli.trace);
    let opts = snapshot::Options::read(cli.restore.clone(), |k| std::env::var(k).ok());
    let code = match (load_node(cli), opts) {
        (Err(e), _) => {
            report(&e);
            Code::from(&e)
        }
        (_, Err(e)) => {
            report(&e);
            Code::BadInput
        }
        (Ok(node), Ok(opts)) => super::supervised(runtime().block_on(supervisor::run(node, opts))),
    };
    // Bounded: a stdout nobody drains does not hold the exit.
    logout::finish();
    code
}

/// A current-thread runtime, and it must stay one. The supervisor's reaper reaps every child
/// with `waitpid(-1)` on SIGCHLD, while `disks::prepare` lets std wait for `qemu-img` itself.
/// Both run on this one thread, so the reaper can never run while std waits and steal that
/// status. On a multi-thread runtime the reaper would sometimes win the race: std's wait fails
/// and an overlay that was created is reported as an error, or a qemu pid's status goes to the
/// wrong owner. Nothing would say why.
pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The log goes to stdout through [`logout`]'s bounded queue, never written from this thread.
pub(super) fn init_tracing(trace: bool) {
    logout::init();
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => tracing_subscriber::EnvFilter::new(f),
        _ => tracing_subscriber::EnvFilter::new(if trace { "debug" } else { "info" }),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(logout::stdout);
    // LAUNCHER_LOG_FORMAT=json: one JSON object per line ({"timestamp", "level", "fields":
    // {"message", ...}}), for tools and the root tests; the human format stays the default.
    if std::env::var("LAUNCHER_LOG_FORMAT").is_ok_and(|f| f == "json") {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
}
