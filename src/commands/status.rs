//! `launcher status [--json]`, `launcher health` and `launcher reset [VM]`: ask the running
//! launcher and print the answer (the JSON report, the human table, one health line, the VMs
//! reset). Exit codes: 0 answered (health: and healthy; reset: done), 1 otherwise. Never reads
//! the snapshot directly.

use crate::control;
use crate::exit::Code;

/// `launcher status`: the report as pretty JSON, or the human table.
pub fn status(rt: &tokio::runtime::Runtime, json: bool) -> Code {
    match rt.block_on(control::status(&control::socket_path())) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", control::render(&r));
            }
            Code::Ok
        }
        Err(e) => {
            super::report(&e);
            Code::Failure
        }
    }
}

/// `launcher health`: "NAME: STATE"; 0 only when healthy.
pub fn health(rt: &tokio::runtime::Runtime) -> Code {
    match rt.block_on(control::health(&control::socket_path())) {
        Ok(h) => {
            println!("{}: {}", h.name, h.state);
            if h.healthy {
                Code::Ok
            } else {
                Code::Failure
            }
        }
        Err(e) => {
            super::report(&e);
            Code::Failure
        }
    }
}

/// `launcher reset [VM]`: QMP system_reset of every VM (or the one named); prints each VM reset.
pub fn reset(rt: &tokio::runtime::Runtime, vm: Option<&str>) -> Code {
    match rt.block_on(control::reset(&control::socket_path(), vm)) {
        Ok(done) => {
            for name in done {
                println!("{name}: reset");
            }
            Code::Ok
        }
        Err(e) => {
            super::report(&e);
            Code::Failure
        }
    }
}
