//! The data links of one router: with CLAB_INTFS, the wait for that many ethK whatever their K
//! ([`find_present`]); then for each ethN, its tapN (one fd per queue, kept for life), the wait
//! for ethN to arrive, the wiring, and the re-wiring when the lab tool re-creates ethN. It keeps the shared per-link table that status reads. Built on `netlink`,
//! `tc`, `events` and `tap`; never decides fd numbers (the taps are handed out per link, in
//! link order) and never reads the environment.

use crate::config::{DataLink, OnMissingLinks};
use crate::net::events::{LinkEvent, LinkEvents};
use crate::net::tap::{self, Tap};
use crate::net::{chain, LinkInfo, NetError, Netlink};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One data link as status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkRow {
    pub port: u32,
    pub eth: String,
    pub tap: String,
    pub eth_ifindex: Option<u32>,
    pub tap_ifindex: u32,
    pub wired: bool,
    /// How many times ethN was wired (more than one: the lab tool re-created it).
    pub wirings: u32,
    pub last_error: Option<String>,
}

/// The rows of every data link, in link order, shared with the control server.
pub type LinkTable = Arc<Mutex<Vec<LinkRow>>>;

impl LinkRow {
    /// ethN is not (or no longer) there.
    fn gone(&mut self) {
        self.eth_ifindex = None;
        self.wired = false;
    }
    /// `li` is this row's ethN and is not wired at its current ifindex.
    fn needs_wiring(&self, li: &LinkInfo) -> bool {
        self.eth == li.name && (self.eth_ifindex != Some(li.index) || !self.wired)
    }
}

/// One data link's taps: its queues in queue order (one fd for a single-queue tap).
#[derive(Debug)]
pub struct LinkTaps {
    pub link: DataLink,
    pub queues: Vec<Tap>,
}

/// The live data links: their taps and the state of each link.
pub struct DataLinks {
    nl: Netlink,
    events: LinkEvents,
    tap_mtu: u32,
    taps: Vec<LinkTaps>,
    table: LinkTable,
}

impl DataLinks {
    /// Subscribes to link events first, then creates the taps. Both happen before any ethN is
    /// looked at, so no arrival can be missed. Each link comes with its queue count: more than
    /// one opens its tap multi-queue, that many fds. `small_rcvbuf` goes to
    /// [`LinkEvents::subscribe`].
    /// `table` is filled with one row per link (status may hold it already).
    pub async fn new(
        links: &[(DataLink, u32)],
        tap_mtu: u32,
        small_rcvbuf: Option<usize>,
        table: LinkTable,
    ) -> Result<Self, NetError> {
        let events = LinkEvents::subscribe(small_rcvbuf)?;
        let nl = Netlink::new()?;
        let mut taps = Vec::new();
        let mut rows = Vec::new();
        for (l, queues) in links {
            let q = (*queues).max(1);
            let queues = (0..q)
                .map(|_| tap::open(&l.tap, q > 1))
                .collect::<Result<Vec<_>, _>>()?;
            let info = nl
                .link(&l.tap)
                .await?
                .ok_or_else(|| NetError::NoSuchLink(l.tap.clone()))?;
            nl.set_up(info.index, &l.tap, Some(tap_mtu)).await?;
            rows.push(LinkRow {
                port: l.index,
                eth: l.eth.clone(),
                tap: l.tap.clone(),
                eth_ifindex: None,
                tap_ifindex: info.index,
                wired: false,
                wirings: 0,
                last_error: None,
            });
            taps.push(LinkTaps {
                link: l.clone(),
                queues,
            });
        }
        *table.lock().unwrap() = rows;
        Ok(Self {
            nl,
            events,
            tap_mtu,
            taps,
            table,
        })
    }

    pub fn table(&self) -> LinkTable {
        self.table.clone()
    }

    pub fn netlink(&self) -> Netlink {
        self.nl.clone()
    }

    /// What takes the launcher's wiring back off every ethN at the end (see [`Unwiring`]).
    pub fn unwiring(&self) -> Unwiring {
        Unwiring {
            nl: self.nl.clone(),
            table: self.table.clone(),
        }
    }

    /// The taps of each link, in link order, for qemu.
    pub fn taps(&self) -> &[LinkTaps] {
        &self.taps
    }

    fn all_wired(&self) -> bool {
        self.table.lock().unwrap().iter().all(|r| r.wired)
    }

    /// Waits (bounded) until every ethN is wired. On time-out: an error listing the missing
    /// ones, or with `Continue` a warning; the watcher wires late arrivals.
    pub async fn wait_all(
        &mut self,
        timeout: Duration,
        on_timeout: OnMissingLinks,
    ) -> Result<(), NetError> {
        let start = Instant::now();
        self.reconcile().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.all_wired() {
            if let Ok(ev) = tokio::time::timeout_at(deadline, self.events.next()).await {
                let ev = ev?;
                self.handle(ev).await;
                continue;
            }
            let missing: Vec<String> = self
                .table
                .lock()
                .unwrap()
                .iter()
                .filter(|r| !r.wired)
                .map(|r| r.eth.clone())
                .collect();
            let missing = missing.join(", ");
            if on_timeout == OnMissingLinks::Fail {
                return Err(NetError::Missing {
                    waited: timeout,
                    missing,
                });
            }
            tracing::warn!(%missing, "booting without these data interfaces; they are wired when they appear");
            return Ok(());
        }
        // The count of tap fds (queues), as the log line always said.
        let fds: usize = self.taps.iter().map(|t| t.queues.len()).sum();
        tracing::info!(
            links = fds,
            elapsed_ms = start.elapsed().as_millis() as u64,
            "all data interfaces wired"
        );
        Ok(())
    }

    /// Runs for the launcher's life: re-wires ethN when it comes back with a new ifindex.
    pub async fn watch(mut self) {
        loop {
            match self.events.next().await {
                Ok(ev) => self.handle(ev).await,
                Err(e) => {
                    tracing::error!(error = %chain(&e), "link event socket failed; re-wiring stops");
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::New(li) => {
                let pos = {
                    let mut t = self.table.lock().unwrap();
                    // A link that was ethN under this index and now has another name was renamed away.
                    for r in t.iter_mut() {
                        if r.eth_ifindex == Some(li.index) && r.eth != li.name {
                            tracing::warn!(eth = %r.eth, new_name = %li.name, "data interface renamed away");
                            r.gone();
                        }
                    }
                    t.iter().position(|r| r.needs_wiring(&li))
                };
                if let Some(pos) = pos {
                    self.wire_row(pos, &li).await;
                }
            }
            LinkEvent::Deleted { index, name } => {
                let mut t = self.table.lock().unwrap();
                for r in t.iter_mut().filter(|r| r.eth_ifindex == Some(index)) {
                    tracing::warn!(eth = %r.eth, ifindex = index, "data interface gone; waiting for it to come back");
                    r.gone();
                }
                if let Some(r) = t.iter().find(|r| r.tap_ifindex == index) {
                    tracing::error!(tap = %r.tap, %name, "tap deleted from outside the launcher");
                }
            }
            LinkEvent::Overrun => {
                tracing::warn!("link event socket overran; listing links again");
                self.reconcile().await;
            }
        }
    }

    /// Lists the links and wires every ethN that is there but not wired to its current ifindex.
    async fn reconcile(&mut self) {
        let links = match self.nl.links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %chain(&e), "cannot list links");
                return;
            }
        };
        let n = self.table.lock().unwrap().len();
        for pos in 0..n {
            let eth = self.table.lock().unwrap()[pos].eth.clone();
            match links.iter().find(|l| l.name == eth) {
                Some(li) => {
                    if self.table.lock().unwrap()[pos].needs_wiring(li) {
                        self.wire_row(pos, li).await;
                    }
                }
                None => self.table.lock().unwrap()[pos].gone(),
            }
        }
    }

    async fn wire_row(&mut self, pos: usize, eth: &LinkInfo) {
        let started = Instant::now();
        let (tap_name, tap_index) = {
            let t = self.table.lock().unwrap();
            (t[pos].tap.clone(), t[pos].tap_ifindex)
        };
        let tap = LinkInfo {
            index: tap_index,
            name: tap_name,
            ..Default::default()
        };
        let res = wire_links(&self.nl, eth, &tap, self.tap_mtu).await;
        let mut t = self.table.lock().unwrap();
        let r = &mut t[pos];
        match res {
            Ok(()) => {
                r.eth_ifindex = Some(eth.index);
                r.wired = true;
                r.wirings += 1;
                r.last_error = None;
                tracing::info!(eth = %r.eth, tap = %r.tap, ifindex = eth.index, wirings = r.wirings,
                    us = started.elapsed().as_micros() as u64, "wired");
            }
            Err(e) => {
                let e = chain(&e);
                tracing::error!(eth = %r.eth, tap = %r.tap, error = %e, "wiring failed");
                r.eth_ifindex = Some(eth.index);
                r.wired = false;
                r.last_error = Some(e);
            }
        }
    }
}

/// Takes the launcher's wiring off every ethN it wired, once the watcher is stopped: a redirect
/// left on ethN after the launcher (and its taps) are gone would drop every frame silently.
/// Cloneable: the supervisor keeps one while the watcher owns the links.
#[derive(Clone)]
pub struct Unwiring {
    nl: Netlink,
    table: LinkTable,
}

impl Unwiring {
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

/// The ports K of the interfaces named `{prefix}K` (K >= 1), in order.
fn ports_named(links: &[LinkInfo], prefix: &str) -> Vec<u32> {
    let mut ports: Vec<u32> = links
        .iter()
        .filter_map(|l| {
            let k = l.name.strip_prefix(prefix)?.parse::<u32>().ok()?;
            // eth1, not eth01 or eth+1.
            (k >= 1 && l.name == format!("{prefix}{k}")).then_some(k)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `found` and then the lowest ports not in it, `n` in all (what booting without the missing
/// ones assumes of them: today's ports 1..n when nothing skips).
pub fn fill_lowest(found: &[u32], n: u32) -> Vec<u32> {
    let mut out = found.to_vec();
    let mut k = 1;
    while out.len() < n as usize {
        if !out.contains(&k) {
            out.push(k);
        }
        k += 1;
    }
    out.sort_unstable();
    out
}

/// Waits (bounded) until `n` data interfaces named `{prefix}K` (K >= 1, any K: the lab tool
/// counts links, which may skip ports) exist, and returns their ports (all present, which may
/// be more than `n`). On time-out: an error saying what was found, or with `Continue` a warning
/// and the ports found plus the lowest free ones up to `n` (wired if they come).
pub async fn find_present(
    prefix: &str,
    n: u32,
    timeout: Duration,
    on_timeout: OnMissingLinks,
    small_rcvbuf: Option<usize>,
) -> Result<Vec<u32>, NetError> {
    // Subscribed before listing, so no arrival falls between the two.
    let mut events = LinkEvents::subscribe(small_rcvbuf)?;
    let nl = Netlink::new()?;
    let deadline = tokio::time::Instant::now() + timeout;
    let names = |ports: &[u32]| {
        let v: Vec<String> = ports.iter().map(|k| format!("{prefix}{k}")).collect();
        v.join(", ")
    };
    loop {
        let found = ports_named(&nl.links().await?, prefix);
        if found.len() >= n as usize {
            tracing::info!(
                "found {} of {n} data interfaces: {}",
                found.len(),
                names(&found)
            );
            return Ok(found);
        }
        // Any event may be one of ours (a new link, a rename, an overrun): list again.
        if let Ok(ev) = tokio::time::timeout_at(deadline, events.next()).await {
            if let LinkEvent::Overrun = ev? {
                tracing::warn!("link event socket overran; listing links again");
            }
            continue;
        }
        let list = match found.is_empty() {
            true => "none".to_string(),
            false => names(&found),
        };
        if on_timeout == OnMissingLinks::Fail {
            return Err(NetError::Missing {
                waited: timeout,
                missing: format!("{} of {n} (found {list})", n as usize - found.len()),
            });
        }
        let assumed = fill_lowest(&found, n);
        tracing::warn!(
            "found {} of {n} data interfaces: {list}; booting with ports {} (the missing ones are wired when they appear)",
            found.len(),
            names(&assumed)
        );
        return Ok(assumed);
    }
}

/// Brings both links up (tap MTU at least ethN's and at least `min_mtu`) and wires both ways.
pub async fn wire_links(
    nl: &Netlink,
    eth: &LinkInfo,
    tap: &LinkInfo,
    min_mtu: u32,
) -> Result<(), NetError> {
    nl.set_up(eth.index, &eth.name, None).await?;
    nl.set_up(tap.index, &tap.name, Some(min_mtu.max(eth.mtu)))
        .await?;
    nl.wire(eth, tap).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn data_ports_are_prefix_and_a_number_from_1() {
        let links: Vec<LinkInfo> = ["lo", "eth0", "eth3", "eth1", "eth02", "ethx", "tap2", "eth"]
            .iter()
            .map(|n| link(n))
            .collect();
        assert_eq!(ports_named(&links, "eth"), vec![1, 3]);
        assert_eq!(ports_named(&links, "tap"), vec![2]);
    }

    #[test]
    fn missing_ports_are_assumed_lowest_first() {
        assert_eq!(fill_lowest(&[3], 2), vec![1, 3]);
        assert_eq!(fill_lowest(&[], 3), vec![1, 2, 3]);
        assert_eq!(fill_lowest(&[2, 5], 4), vec![1, 2, 3, 5]);
        assert_eq!(fill_lowest(&[1, 3], 2), vec![1, 3]);
    }
}
