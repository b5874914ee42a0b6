//! Internal networks between the VMs of one node: one Linux bridge each, one tap per member VM
//! (fds kept for the launcher's life). Never touches the data links or qemu's fd numbers.

use crate::config::InternalNet;
use crate::net::tap::{self, Tap};
use crate::net::{NetError, Netlink};

/// The node's internal networks: one bridge each, one tap per member VM (fds kept for life),
/// in the order of `nets` and their taps.
pub async fn bring_up(nets: &[InternalNet], mtu: u32) -> Result<Vec<Tap>, NetError> {
    if nets.is_empty() {
        // One VM, or VMs without internal links: no netlink socket to open.
        return Ok(vec![]);
    }
    let nl = Netlink::new()?;
    let mut out = Vec::new();
    for n in nets {
        let br = nl.bridge(&n.bridge).await?;
        for t in &n.taps {
            let tap = tap::open(t, false)?;
            let li = nl
                .link(t)
                .await?
                .ok_or_else(|| NetError::NoSuchLink(t.clone()))?;
            nl.set_up(li.index, t, Some(mtu)).await?;
            nl.enslave(li.index, t, br.index).await?;
            out.push(tap);
        }
        tracing::info!(network = %n.name, bridge = %n.bridge, taps = ?n.taps, "internal network up");
    }
    Ok(out)
}
