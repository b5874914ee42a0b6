//! launcher: PID 1 of a virtual-router container. The library holds every room of the house;
//! `main.rs` only parses the command line and calls [`commands`].
//!
//! Floors (who may import whom): leaves (`cli`, `exit`, `template`, `config`, `state`, the pure
//! parts of `qemu` and `disks`); adapters to the system (`net`, `qemu::qmp`, `console`,
//! `disks`, `sandbox`); `control`; `supervisor` (the only room that imports both `net` and `qemu`);
//! `commands`.

pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod control;
pub mod disks;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod logout;
pub mod net;
pub mod qemu;
pub mod sandbox;
pub mod snapshot;
pub mod state;
pub mod supervisor;
pub mod template;
