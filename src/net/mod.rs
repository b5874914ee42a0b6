//! The container's network, as the launcher touches it: netlink (links, addresses, tc), taps,
//! the live data links, internal networks and management passthrough. Owns every kernel
//! network object the launcher creates; never builds a qemu argument.

pub mod links;
pub mod netlink;
pub mod tap;
