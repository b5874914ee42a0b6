//! `launcher`: parse the command line, run the command, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    launcher::commands::main(launcher::cli::Cli::parse())
}
