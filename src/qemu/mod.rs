//! qemu: its command line as pure data, and the QMP client.

mod argv;
pub mod qmp;

pub use argv::*;
