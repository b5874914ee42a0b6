//! The data links of one router: for each configured ethN, its tapN (one fd per queue, kept for
//! life), the wait for ethN to arrive, the wiring, and the re-wiring when the lab tool
//! re-creates ethN. It keeps the shared per-link table that status reads. Built on `netlink`,
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
    pub async fn new(
        links: &[(DataLink, u32)],
        tap_mtu: u32,
        small_rcvbuf: Option<usize>,
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
        Ok(Self {
            nl,
            events,
            tap_mtu,
            taps,
            table: Arc::new(Mutex::new(rows)),
        })
    }

    pub fn table(&self) -> LinkTable {
        self.table.clone()
    }

    pub fn netlink(&self) -> Netlink {
        self.nl.clone()
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
