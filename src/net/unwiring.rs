//! Taking the launcher's wiring back off the data links at the end ([`Unwiring`]). Built on
//! `tc`; never wires and never reads events.

use crate::net::links::LinkTable;
use crate::net::{chain, LinkInfo, Netlink};

/// Takes the launcher's wiring off every ethN it wired, once the watcher is stopped: a redirect
/// left on ethN after the launcher (and its taps) are gone would drop every frame silently.
/// Cloneable: the supervisor keeps one while the watcher owns the links.
#[derive(Clone)]
pub struct Unwiring {
    nl: Netlink,
    table: LinkTable,
}

impl Unwiring {
    pub(crate) fn new(nl: Netlink, table: LinkTable) -> Self {
        Self { nl, table }
    }

    /// Removes the launcher's filter from each ethN's ingress (the qdisc stays, see
    /// [`Netlink::remove_filters`]); logs what fails and goes on with the others.
    pub async fn unwire_all(&self) {
        let rows: Vec<LinkInfo> = (self.table.lock().unwrap().iter())
            .filter_map(|r| {
                r.eth_ifindex.map(|index| LinkInfo {
                    index,
                    name: r.eth.clone(),
                    ..Default::default()
                })
            })
            .collect();
        // Macvtap mode: the macvtaps go (ethN is left as the lab tool made it, but promiscuous).
        let macvtaps: Vec<(u32, String)> = (self.table.lock().unwrap().iter())
            .filter(|r| r.macvtap && r.eth_ifindex.is_some())
            .map(|r| (r.tap_ifindex, r.tap.clone()))
            .collect();
        for (index, name) in macvtaps {
            match self.nl.delete(index, &name).await {
                Ok(()) => tracing::info!(macvtap = %name, "macvtap removed"),
                Err(e) => {
                    tracing::debug!(macvtap = %name, error = %chain(&e), "macvtap already gone")
                }
            }
        }
        for eth in rows {
            match self
                .nl
                .remove_filters(&eth, &crate::net::tc::DATA_PRIOS)
                .await
            {
                Ok(()) => tracing::info!(eth = %eth.name, "unwired"),
                Err(e) => tracing::warn!(eth = %eth.name, error = %chain(&e), "cannot unwire"),
            }
        }
        for r in self.table.lock().unwrap().iter_mut() {
            r.wired = false;
        }
    }
}
