//! `launcher status [--json]` and `launcher health`: ask the running launcher and print the
//! answer (the JSON report, the human table, or one health line). Exit codes: 0 answered
//! (health: and healthy), 1 otherwise. Never reads the snapshot directly.

use crate::control;

/// `launcher status`: the report as pretty JSON, or the human table.
pub fn status(rt: &tokio::runtime::Runtime, json: bool) -> u8 {
    match rt.block_on(control::status(&control::socket_path())) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", control::render(&r));
            }
            0
        }
        Err(e) => {
            super::report(&e);
            1
        }
    }
}

/// `launcher health`: "NAME: STATE"; 0 only when healthy.
pub fn health(rt: &tokio::runtime::Runtime) -> u8 {
    match rt.block_on(control::health(&control::socket_path())) {
        Ok(h) => {
            println!("{}: {}", h.name, h.state);
            if h.healthy {
                0
            } else {
                1
            }
        }
        Err(e) => {
            super::report(&e);
            1
        }
    }
}
