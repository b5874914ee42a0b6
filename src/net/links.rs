//! The data links of one router, as cables: for each NIC slot, its tapN (one fd per queue, kept
//! for life, also for a spare slot whose ethN is absent), the wait for the expected ethN, the
//! wiring, and the re-wiring when the lab tool re-creates ethN. It keeps the shared per-link
//! table that status reads and each port's state (absent / down / up: up only when ethN is
//! wired and has carrier), published on a watch channel ([`CableStates`]) for whoever tells
//! the guest. Built on `netlink`, `tc`, `events` and `tap`; never decides fd numbers (the taps
//! are handed out per link, in link order), never talks to qemu and never reads the
//! environment.

use crate::config::{ConnectionMode, DataLink, OnMissingLinks};
use crate::net::events::{LinkEvent, LinkEvents};
use crate::net::stall::{self, Stall};

mod datapath;
use crate::net::tap::{self, Tap};
pub use crate::net::unwiring::Unwiring;
use crate::net::{chain, LinkInfo, NetError, Netlink};
use datapath::MACVTAP_GONE;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the guest's port shows, as a cable would: no ethN, ethN without carrier (or not
/// wired), ethN wired with carrier.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    #[default]
    Absent,
    Down,
    Up,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Absent => "absent",
            PortState::Down => "down",
            PortState::Up => "up",
        }
    }
}

/// Each port (in link order) and whether its cable is up: what the guest's NIC should show.
pub type CableStates = watch::Receiver<Vec<(u32, bool)>>;

/// One NIC slot to open a tap for: its link, its queue count, and whether the start waits for
/// its ethN (a spare slot's ethN is absent at start: wired if it comes).
#[derive(Debug, Clone)]
pub struct Slot {
    pub link: DataLink,
    pub queues: u32,
    pub spare: bool,
}

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
    /// A slot the start did not wait for (its ethN was absent): wired if ethN comes.
    pub spare: bool,
    /// ethN is up with carrier (IFF_LOWER_UP: a veth's peer exists and is up).
    pub carrier: bool,
    /// The port as the guest is to see it.
    pub port_state: PortState,
    /// The datapath is a passthru macvtap (CONNECTION_MODE=macvtap); `tap` names it.
    pub macvtap: bool,
    /// tc datapath: frames enter ethN and the tap delivers none to qemu while the guest sends
    /// (vrnetlab issue 504; CONNECTION_MODE=macvtap avoids it).
    pub tc_stall: bool,
}

/// What status shows for a link whose tap was deleted (qemu still holds it: it cannot be made
/// again under a running qemu).
const TAP_GONE: &str =
    "tap deleted from outside the launcher; the VM's port is cut until the launcher restarts";

/// The rows of every data link, in link order, shared with the control server.
pub type LinkTable = Arc<Mutex<Vec<LinkRow>>>;

impl LinkRow {
    /// ethN is not (or no longer) there.
    fn gone(&mut self) {
        self.eth_ifindex = None;
        self.wired = false;
        self.carrier = false;
    }
    /// The port's state from what is known of ethN.
    fn state(&self) -> PortState {
        match (self.eth_ifindex, self.wired && self.carrier) {
            (None, _) => PortState::Absent,
            (Some(_), false) => PortState::Down,
            (Some(_), true) => PortState::Up,
        }
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
    cables: watch::Sender<Vec<(u32, bool)>>,
    mode: ConnectionMode,
    /// qemu holds the fds (the watcher runs): a slot's fd can no longer be replaced.
    handed: bool,
    /// Per row, the tc datapath's failure watch.
    stalls: Vec<Stall>,
}

impl DataLinks {
    /// Subscribes to link events first, then creates the taps. Both happen before any ethN is
    /// looked at, so no arrival can be missed. Each slot comes with its queue count: more than
    /// one opens its tap multi-queue, that many fds. `small_rcvbuf` goes to
    /// [`LinkEvents::subscribe`].
    /// `table` is filled with one row per slot (status may hold it already). In macvtap `mode`
    /// the tap is the slot's fd only until its ethN is there: then a macvtap on ethN takes its
    /// place (see [`crate::net::macvtap`]).
    pub async fn new(
        slots: &[Slot],
        tap_mtu: u32,
        small_rcvbuf: Option<usize>,
        table: LinkTable,
        mode: ConnectionMode,
    ) -> Result<Self, NetError> {
        let events = LinkEvents::subscribe(small_rcvbuf)?;
        let nl = Netlink::new()?;
        let mut taps = Vec::new();
        let mut rows = Vec::new();
        for Slot {
            link: l,
            queues,
            spare,
        } in slots
        {
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
                spare: *spare,
                carrier: false,
                port_state: PortState::Absent,
                macvtap: false,
                tc_stall: false,
            });
            taps.push(LinkTaps {
                link: l.clone(),
                queues,
            });
        }
        let cables = watch::Sender::new(rows.iter().map(|r| (r.port, false)).collect());
        *table.lock().unwrap() = rows;
        Ok(Self {
            nl,
            events,
            tap_mtu,
            stalls: taps.iter().map(|_| Stall::default()).collect(),
            taps,
            table,
            cables,
            mode,
            handed: false,
        })
    }

    /// Each port's cable state, updated whenever one changes.
    pub fn cables(&self) -> CableStates {
        self.cables.subscribe()
    }

    /// Recomputes each port's state; logs and publishes the changes.
    fn publish(&self) {
        let mut t = self.table.lock().unwrap();
        for r in t.iter_mut() {
            let now = r.state();
            if now != r.port_state {
                tracing::info!(port = r.port, eth = %r.eth, from = r.port_state.as_str(),
                    to = now.as_str(), "port state");
                r.port_state = now;
            }
        }
        let states: Vec<(u32, bool)> = (t.iter())
            .map(|r| (r.port, r.port_state == PortState::Up))
            .collect();
        drop(t);
        self.cables.send_if_modified(|v| {
            let changed = *v != states;
            *v = states;
            changed
        });
    }

    pub fn table(&self) -> LinkTable {
        self.table.clone()
    }

    pub fn netlink(&self) -> Netlink {
        self.nl.clone()
    }

    /// What takes the launcher's wiring back off every ethN at the end (see [`Unwiring`]).
    pub fn unwiring(&self) -> Unwiring {
        Unwiring::new(self.nl.clone(), self.table.clone())
    }

    /// The taps of each link, in link order, for qemu.
    pub fn taps(&self) -> &[LinkTaps] {
        &self.taps
    }

    fn all_wired(&self) -> bool {
        self.table
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.wired || r.spare)
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
                .filter(|r| !r.wired && !r.spare)
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

    /// Runs for the launcher's life (qemu holds the fds from now on): re-wires ethN when it
    /// comes back with a new ifindex; on the tc datapath, watches for its known failure.
    pub async fn watch(mut self) {
        self.handed = true;
        let mut tick = tokio::time::interval(stall::PERIOD);
        loop {
            tokio::select! {
                ev = self.events.next() => match ev {
                    Ok(ev) => self.handle(ev).await,
                    Err(e) => {
                        tracing::error!(error = %chain(&e), "link event socket failed; re-wiring stops");
                        return;
                    }
                },
                _ = tick.tick(), if self.mode == ConnectionMode::Tc => self.check_stalls().await,
            }
        }
    }

    async fn handle(&mut self, ev: LinkEvent) {
        self.handle_event(ev).await;
        self.publish();
    }

    async fn handle_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::New(li) => {
                let mut renamed = None;
                let pos = {
                    let mut t = self.table.lock().unwrap();
                    // A link that was ethN under this index and now has another name was renamed away.
                    for r in t.iter_mut() {
                        if r.eth_ifindex == Some(li.index) && r.eth != li.name {
                            tracing::warn!(eth = %r.eth, new_name = %li.name, "data interface renamed away; unhooking it");
                            r.gone();
                            renamed = Some(r.tap_ifindex);
                        }
                        // Its carrier (its peer gone or down, or back up).
                        if r.eth_ifindex == Some(li.index) && r.eth == li.name {
                            r.carrier = li.lower_up;
                        }
                    }
                    t.iter().position(|r| r.needs_wiring(&li))
                };
                if let Some(tap) = renamed {
                    self.unhook(&li, tap).await;
                }
                if let Some(pos) = pos {
                    self.wire_row(pos, &li).await;
                }
            }
            LinkEvent::TcRemoved { index } => self.repair(index).await,
            LinkEvent::Deleted { index, name } => {
                let mut t = self.table.lock().unwrap();
                for r in t.iter_mut().filter(|r| r.eth_ifindex == Some(index)) {
                    tracing::warn!(eth = %r.eth, ifindex = index, "data interface gone; waiting for it to come back");
                    r.gone();
                }
                let handed = self.handed;
                if let Some(r) = t.iter_mut().find(|r| r.tap_ifindex == index && r.macvtap) {
                    // It died with its ethN.
                    r.wired = false;
                    r.last_error = handed.then(|| MACVTAP_GONE.into());
                } else if let Some(r) = t.iter_mut().find(|r| r.tap_ifindex == index) {
                    tracing::error!(tap = %r.tap, %name, "tap deleted from outside the launcher");
                    r.wired = false;
                    r.last_error = Some(TAP_GONE.into());
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
                    } else {
                        self.table.lock().unwrap()[pos].carrier = li.lower_up;
                    }
                }
                None => self.table.lock().unwrap()[pos].gone(),
            }
        }
        self.publish();
    }

    /// A qdisc or filter went from the link `index`: if it is a wired ethN or its tap and the
    /// wiring no longer reads back, wire it again.
    async fn repair(&mut self, index: u32) {
        if self.mode == ConnectionMode::Macvtap {
            return;
        }
        let row = (self.table.lock().unwrap().iter())
            .position(|r| r.wired && (r.eth_ifindex == Some(index) || r.tap_ifindex == index));
        let Some(pos) = row else { return };
        let (eth, tap) = {
            let t = self.table.lock().unwrap();
            let r = &t[pos];
            let eth = LinkInfo {
                index: r.eth_ifindex.unwrap_or_default(),
                name: r.eth.clone(),
                ..Default::default()
            };
            let tap = LinkInfo {
                index: r.tap_ifindex,
                name: r.tap.clone(),
                ..Default::default()
            };
            (eth, tap)
        };
        let intact = matches!(self.nl.redirect_targets(&eth).await, Ok(t) if t == [tap.index])
            && matches!(self.nl.redirect_targets(&tap).await, Ok(t) if t == [eth.index]);
        if intact {
            return;
        }
        // Still this ethN (not deleted meanwhile)? Then its wiring was removed: put it back.
        match self.nl.link(&eth.name).await {
            Ok(Some(li)) if li.index == eth.index => {
                tracing::warn!(eth = %eth.name, tap = %tap.name, "wiring removed from outside the launcher; re-wiring");
                self.table.lock().unwrap()[pos].wired = false;
                self.wire_row(pos, &li).await;
            }
            _ => {}
        }
    }

    /// ethN renamed away (now `link`): its filter and its tap's come off, so neither
    /// carries frames for a link that is no longer a data port.
    async fn unhook(&self, link: &LinkInfo, tap_index: u32) {
        let tap = LinkInfo {
            index: tap_index,
            ..Default::default()
        };
        for l in [link, &tap] {
            if let Err(e) = self.nl.remove_filters(l, &crate::net::tc::DATA_PRIOS).await {
                tracing::warn!(ifindex = l.index, error = %chain(&e), "cannot unhook");
            }
        }
    }

    async fn wire_row(&mut self, pos: usize, eth: &LinkInfo) {
        if self.mode == ConnectionMode::Macvtap {
            return self.attach_macvtap(pos, eth).await;
        }
        self.stalls[pos].reset();
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
                // As ethN was before it was set up: an event follows when that changes it.
                r.carrier = eth.lower_up;
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
                r.carrier = eth.lower_up;
                r.last_error = Some(e);
            }
        }
    }
}

/// Brings both links up (tap MTU at least ethN's and at least `min_mtu`) and wires both ways,
/// read back (see `Netlink::wire`: two system calls' worth of netlink, no task switch unless
/// the kernel says busy).
pub async fn wire_links(
    nl: &Netlink,
    eth: &LinkInfo,
    tap: &LinkInfo,
    min_mtu: u32,
) -> Result<(), NetError> {
    nl.wire(eth, tap, Some(min_mtu.max(eth.mtu))).await
}
