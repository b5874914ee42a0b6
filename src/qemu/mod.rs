//! qemu: everything the launcher hands to qemu, built as data. [`accel`] decides KVM/TCG,
//! vhost-net and queues ([`Host::read`] is the one place that reads the system), [`fds`] says
//! which fd number each tap gets, [`argv`] builds the command line; [`qmp`] talks to a running
//! qemu over its socket, [`agent`] to the guest agent in it; [`license`] reads a licence's uuid
//! and date. Nothing here spawns qemu or owns a tap.

pub mod accel;
pub mod agent;
mod argv;
pub mod fds;
pub mod license;
mod migrate;
pub mod qmp;

pub use accel::{decide, AccelError, Host, Launch};
pub use argv::{argv, incoming_defer, mac, Resolved, RAM_ID};
pub use fds::{FdError, FdLayout};
pub use license::{License, LicenseError};
