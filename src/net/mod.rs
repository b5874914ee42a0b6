//! The container's network, as the launcher touches it: netlink (links, addresses, routes),
//! tc (the pipes), link events, taps, the live data links, internal networks and management
//! passthrough. Owns every kernel network object the launcher creates; never builds a qemu
//! argument and never reads the process environment (callers pass what they read).

pub mod batch;
pub mod events;
pub mod internal;
pub mod links;
pub mod macvtap;
pub mod netlink;
pub mod passthrough;
pub mod present;
pub mod stall;
pub mod tap;
pub mod tc;
pub mod unwiring;

pub use events::{LinkEvent, LinkEvents};
pub use links::{
    wire_links, CableStates, DataLinks, LinkRow, LinkTable, LinkTaps, PortState, Slot,
};
pub use netlink::Netlink;
pub use passthrough::Passthrough;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use std::time::Duration;

/// Everything that can go wrong in the network room. Each message names its own context
/// (operation, interface); the cause is the `source`, printed once by whoever reports the chain.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("{op} on {ifname}")]
    Request {
        op: &'static str,
        ifname: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {0} does not exist")]
    NoSuchLink(String),
    #[error("wiring {from} -> {to} did not verify: {why}")]
    Verify {
        from: String,
        to: String,
        why: String,
    },
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    #[error("data interfaces still missing after {waited:?}: {missing} (the lab tool did not move them into the container; set nics.on_timeout = \"continue\" to boot without them)")]
    Missing { waited: Duration, missing: String },
}

pub use crate::exit::chain;

/// What the launcher knows of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub lower_up: bool,
    /// The hardware address, as aa:bb:cc:dd:ee:ff (empty for links without one).
    pub mac: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl LinkInfo {
    pub fn from_message(m: &LinkMessage) -> Option<Self> {
        let mut li = LinkInfo {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            ..Default::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => li.name = n.clone(),
                LinkAttribute::Mtu(v) => li.mtu = *v,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    li.mac = a
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                LinkAttribute::Stats64(s) => {
                    li.rx_packets = s.rx_packets;
                    li.rx_bytes = s.rx_bytes;
                    li.tx_packets = s.tx_packets;
                    li.tx_bytes = s.tx_bytes;
                }
                _ => {}
            }
        }
        (!li.name.is_empty()).then_some(li)
    }
}
