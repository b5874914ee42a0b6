//! Management passthrough: the VM takes over the container's management interface (eth0). This
//! module reads eth0's MAC, addresses and default gateways, creates the management tap and
//! wires eth0 to it with the console-port exceptions, and takes those filters off again at the
//! end. It never renders what the VM is told.

use crate::net::tap::{self, Tap};
use crate::net::{NetError, Netlink};

/// What the VM takes over from the container's management interface (passthrough mode).
#[derive(Debug)]
pub struct Passthrough {
    /// The management tap, its fd kept for the launcher's life like the data taps.
    pub tap: Tap,
    /// The interface's MAC: the VM's management NIC takes it.
    pub mac: String,
    /// Its global addresses (address/prefix), IPv4 first as the kernel lists them.
    pub addresses: Vec<String>,
    /// The gateways of the default routes that leave by it.
    pub gateways: Vec<std::net::IpAddr>,
}

/// Reads `interface`'s MAC, addresses and default gateways, creates `tap_name` and wires
/// `interface` to it (TCP to `keep_tcp` and a copy of ARP stay with the container, see
/// [`Netlink::wire_passthrough`]). The interface must already be there: the container runtime
/// creates it before the launcher starts. With `mac` (CLAB_MGMT_MAC), the interface takes that
/// MAC first, as vrnetlab does, so frames for the container's address are the VM's.
pub async fn wire(
    interface: &str,
    tap_name: &str,
    keep_tcp: &[u16],
    mac: Option<&str>,
) -> Result<Passthrough, NetError> {
    let nl = Netlink::new()?;
    let missing = || NetError::NoSuchLink(interface.into());
    let mut eth = nl.link(interface).await?.ok_or_else(missing)?;
    if let Some(mac) = mac.filter(|m| !eth.mac.eq_ignore_ascii_case(m)) {
        nl.set_mac(eth.index, interface, mac).await?;
        eth = nl.link(interface).await?.ok_or_else(missing)?;
    }
    let addresses = nl.addresses(eth.index, interface).await?;
    let gateways = nl.default_gateways(eth.index, interface).await?;
    let tap = tap::open(tap_name, false)?;
    let tli = nl
        .link(tap_name)
        .await?
        .ok_or_else(|| NetError::NoSuchLink(tap_name.into()))?;
    nl.set_up(eth.index, &eth.name, None).await?;
    nl.set_up(tli.index, tap_name, Some(eth.mtu.max(1500)))
        .await?;
    nl.wire_passthrough(&eth, &tli, keep_tcp).await?;
    tracing::info!(
        interface,
        tap = tap_name,
        mac = %eth.mac,
        addresses = ?addresses,
        gateways = ?gateways,
        kept_tcp_ports = ?keep_tcp,
        "management passthrough wired"
    );
    Ok(Passthrough {
        tap,
        mac: eth.mac,
        addresses,
        gateways,
    })
}

/// Takes the launcher's passthrough filters off `interface` (an interface already gone is
/// fine); the tap and its own filters go when its fd closes.
pub async fn unwire(interface: &str) -> Result<(), NetError> {
    let nl = Netlink::new()?;
    match nl.link(interface).await? {
        Some(eth) => {
            nl.remove_filters(&eth, &crate::net::tc::PASSTHROUGH_PRIOS)
                .await
        }
        None => Ok(()),
    }
}
