//! The data links of one router: for each configured ethN, its tapN (fd kept for life), the
//! wait for ethN to arrive, the wiring, and the re-wiring when the lab tool re-creates ethN.
//! It keeps the shared per-link table that status reads. Built on `netdev` and `tap`; the
//! same `wire_pair` path serves `launcher wire`.

use crate::config::{DataLink, OnMissingLinks};
use crate::net::netlink::{LinkEvent, LinkEvents, LinkInfo, NetError, Netlink};
use crate::net::tap::{self, Tap, TapError};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("data interfaces still missing after {waited:?}: {missing} (the lab tool did not move them into the container; set nics.on_timeout = \"continue\" to boot without them)")]
    Missing { waited: Duration, missing: String },
}

/// One data link as status shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkStatus {
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

pub type Table = Arc<Mutex<Vec<LinkStatus>>>;

impl LinkStatus {
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

/// The live datapath: taps and the state of each link.
pub struct Datapath {
    nl: Netlink,
    events: LinkEvents,
    min_mtu: u32,
    taps: Vec<Tap>,
    table: Table,
}

impl Datapath {
    /// Subscribes to link events first, then creates the taps. Both happen before any ethN is
    /// looked at, so no arrival can be missed.
    /// `queues[i]` > 1 opens link i's tap multi-queue, that many fds for it.
    pub async fn new(
        links: &[DataLink],
        min_mtu: u32,
        queues: &[u32],
    ) -> Result<Self, DatapathError> {
        let events = LinkEvents::subscribe()?;
        let nl = Netlink::new()?;
        let mut taps = Vec::new();
        let mut rows = Vec::new();
        for (i, l) in links.iter().enumerate() {
            let q = queues.get(i).copied().unwrap_or(1).max(1);
            for _ in 0..q {
                taps.push(tap::open(&l.tap, q > 1)?);
            }
            let info = nl
                .link(&l.tap)
                .await?
                .ok_or_else(|| NetError::NoSuchLink(l.tap.clone()))?;
            nl.set_up(info.index, &l.tap, Some(min_mtu)).await?;
            rows.push(LinkStatus {
                port: l.index,
                eth: l.eth.clone(),
                tap: l.tap.clone(),
                eth_ifindex: None,
                tap_ifindex: info.index,
                wired: false,
                wirings: 0,
                last_error: None,
            });
        }
        Ok(Self {
            nl,
            events,
            min_mtu,
            taps,
            table: Arc::new(Mutex::new(rows)),
        })
    }

    pub fn table(&self) -> Table {
        self.table.clone()
    }

    pub fn netlink(&self) -> Netlink {
        self.nl.clone()
    }

    /// The tap fds in link order (queue order within a link), for qemu.
    pub fn taps(&self) -> &[Tap] {
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
    ) -> Result<(), DatapathError> {
        let start = Instant::now();
        self.reconcile().await;
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.all_wired() {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(ev) => {
                    let ev = ev?;
                    self.handle(ev).await;
                }
                Err(_) => {
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
                        return Err(DatapathError::Missing {
                            waited: timeout,
                            missing,
                        });
                    }
                    tracing::warn!(%missing, "booting without these data interfaces; they are wired when they appear");
                    return Ok(());
                }
            }
        }
        tracing::info!(
            links = self.taps.len(),
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
                    tracing::error!(error = %e, "link event socket failed; re-wiring stops");
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
                tracing::error!(error = %e, "cannot list links");
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
        let res = wire_links(&self.nl, eth, &tap, self.min_mtu).await;
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
                tracing::error!(eth = %r.eth, tap = %r.tap, error = %e, "wiring failed");
                r.eth_ifindex = Some(eth.index);
                r.wired = false;
                r.last_error = Some(e.to_string());
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

/// The node's internal networks: one bridge each, one tap per member VM (fds kept for life),
/// in the order of `nets` and their taps.
pub async fn internal_networks(
    nets: &[crate::config::InternalNet],
    mtu: u32,
) -> Result<Vec<Tap>, DatapathError> {
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

/// Management passthrough: reads `interface`'s MAC, addresses and default gateways, creates
/// `tap_name` and wires `interface` to it (TCP to `keep_tcp` and a copy of ARP stay with the
/// container, see [`Netlink::wire_passthrough`]). The interface must already be there: the
/// container runtime creates it before the launcher starts.
pub async fn passthrough(
    interface: &str,
    tap_name: &str,
    keep_tcp: &[u16],
) -> Result<Passthrough, DatapathError> {
    let nl = Netlink::new()?;
    let eth = nl
        .link(interface)
        .await?
        .ok_or_else(|| NetError::NoSuchLink(interface.into()))?;
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

/// A `launcher wire`/`unwire` argument: ETH=TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub eth: String,
    pub tap: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{arg:?}: {why}")]
    Usage { arg: String, why: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// Parses ETH=TAP arguments (pure).
pub fn parse_pairs(args: &[String]) -> Result<Vec<Pair>, WireError> {
    let mut out: Vec<Pair> = Vec::new();
    for a in args {
        let usage = |why: &str| WireError::Usage {
            arg: a.clone(),
            why: why.into(),
        };
        let (eth, tap) = a
            .split_once('=')
            .ok_or_else(|| usage("expected ETH=TAP, for example eth1=tap1"))?;
        for n in [eth, tap] {
            if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', ':', '=']) {
                return Err(usage(&format!("{n:?} is not a valid interface name")));
            }
        }
        if eth == tap {
            return Err(usage("ETH and TAP must differ"));
        }
        if out
            .iter()
            .any(|p| p.eth == eth || p.tap == tap || p.eth == tap || p.tap == eth)
        {
            return Err(usage("an interface appears in two pairs"));
        }
        out.push(Pair {
            eth: eth.into(),
            tap: tap.into(),
        });
    }
    if out.is_empty() {
        return Err(WireError::Usage {
            arg: String::new(),
            why: "give at least one ETH=TAP pair".into(),
        });
    }
    Ok(out)
}

/// `launcher wire`: checks every ETH exists before touching anything, creates missing taps as
/// persistent taps, wires and verifies both directions. On a failure, what this call did is
/// undone. Returns one line per pair.
pub async fn wire_pairs(pairs: &[Pair], mtu: Option<u32>) -> Result<Vec<String>, WireError> {
    let nl = Netlink::new()?;
    let mut eths = Vec::new();
    for p in pairs {
        let e = nl.link(&p.eth).await?.ok_or_else(|| WireError::Usage {
            arg: format!("{}={}", p.eth, p.tap),
            why: format!("interface {} does not exist", p.eth),
        })?;
        eths.push(e);
    }
    let mut done: Vec<(LinkInfo, LinkInfo, bool)> = Vec::new();
    let mut lines = Vec::new();
    for (p, eth) in pairs.iter().zip(&eths) {
        let res: Result<(LinkInfo, bool), WireError> = async {
            let (tap, created) = match nl.link(&p.tap).await? {
                Some(t) => (t, false),
                None => {
                    let t = tap::open(&p.tap, false)?;
                    tap::set_persistent(&t, true)?;
                    drop(t);
                    (
                        nl.link(&p.tap)
                            .await?
                            .ok_or_else(|| NetError::NoSuchLink(p.tap.clone()))?,
                        true,
                    )
                }
            };
            Ok((tap, created))
        }
        .await;
        let (tap, created) = match res {
            Ok(x) => x,
            Err(e) => {
                undo(&nl, &done).await;
                return Err(e);
            }
        };
        if let Err(e) = wire_links(&nl, eth, &tap, mtu.unwrap_or(eth.mtu)).await {
            done.push((eth.clone(), tap, created));
            undo(&nl, &done).await;
            return Err(e.into());
        }
        lines.push(format!(
            "{} (ifindex {}) <-> {} (ifindex {}): wired both ways{}",
            eth.name,
            eth.index,
            tap.name,
            tap.index,
            if created { ", tap created" } else { "" }
        ));
        done.push((eth.clone(), tap, created));
    }
    Ok(lines)
}

async fn undo(nl: &Netlink, done: &[(LinkInfo, LinkInfo, bool)]) {
    for (eth, tap, created) in done {
        let _ = nl.unwire(eth).await;
        let _ = nl.unwire(tap).await;
        if *created {
            let _ = nl.delete(tap.index, &tap.name).await;
        }
    }
}

/// `launcher unwire`: checks both names of every pair exist, then removes both directions
/// (the ingress qdiscs). Taps are left in place.
pub async fn unwire_pairs(pairs: &[Pair]) -> Result<Vec<String>, WireError> {
    let nl = Netlink::new()?;
    let mut found = Vec::new();
    for p in pairs {
        let arg = format!("{}={}", p.eth, p.tap);
        let eth = nl.link(&p.eth).await?.ok_or_else(|| WireError::Usage {
            arg: arg.clone(),
            why: format!("interface {} does not exist", p.eth),
        })?;
        let tap = nl.link(&p.tap).await?.ok_or_else(|| WireError::Usage {
            arg,
            why: format!("interface {} does not exist", p.tap),
        })?;
        found.push((eth, tap));
    }
    let mut lines = Vec::new();
    for (eth, tap) in found {
        nl.unwire(&eth).await?;
        nl.unwire(&tap).await?;
        lines.push(format!("{} <-> {}: unwired", eth.name, tap.name));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs() {
        let p = parse_pairs(&["eth1=tap1".into(), "eth2=vm-2".into()]).unwrap();
        assert_eq!(
            p[1],
            Pair {
                eth: "eth2".into(),
                tap: "vm-2".into()
            }
        );
        for bad in [
            vec!["eth1"],
            vec!["eth1=eth1"],
            vec!["=tap1"],
            vec!["eth1=tap1", "eth1=tap2"],
            vec!["eth1=a/b"],
            vec!["eth1=waytoolonginterfacename"],
            vec![],
        ] {
            let args: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(
                matches!(parse_pairs(&args), Err(WireError::Usage { .. })),
                "{bad:?}"
            );
        }
    }
}
