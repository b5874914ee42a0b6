//! The datapath half of [`DataLinks`]: the macvtap that takes a slot's place in macvtap mode,
//! and the tc datapath's failure watch (see [`crate::net::stall`]).

use super::DataLinks;
use crate::net::stall::{self, Verdict};
use crate::net::{chain, LinkInfo};
use std::time::Instant;

/// What status shows for a macvtap-mode port whose ethN came (back) after qemu took the
/// slot's fd: the macvtap dies with ethN and qemu 7.2 cannot take a new one into the NIC it has.
pub(super) const MACVTAP_LATE: &str = "macvtap mode: ethN came after the VM took this port's fd; the port stays down until the container restarts";
/// ... and whose ethN (and so its macvtap) went away while qemu holds the macvtap's fd.
pub(super) const MACVTAP_GONE: &str = "macvtap mode: ethN went away and took its macvtap with it; the port stays down until the container restarts";

impl DataLinks {
    /// Samples every wired port's counters and reports (once) a tap that delivers nothing.
    pub(super) async fn check_stalls(&mut self) {
        let Ok(links) = self.nl.links().await else {
            return;
        };
        let now = Instant::now();
        let mut t = self.table.lock().unwrap();
        for (r, st) in t.iter_mut().zip(&mut self.stalls) {
            let eth = links.iter().find(|l| Some(l.index) == r.eth_ifindex);
            let tap = links.iter().find(|l| l.index == r.tap_ifindex);
            let (Some(eth), Some(tap), true) = (eth, tap, r.wired) else {
                st.reset();
                continue;
            };
            let sample = stall::Sample {
                eth_rx: eth.rx_packets,
                tap_tx: tap.tx_packets,
                tap_rx: tap.rx_packets,
            };
            match st.feed(sample, now) {
                Verdict::Same => {}
                Verdict::Stalled => {
                    tracing::warn!(port = r.port, eth = %r.eth, tap = %r.tap, eth_rx = eth.rx_packets,
                        tap_tx = tap.tx_packets, "frames enter ethN but the tap delivers none to the VM: this host's kernel drops what tc redirects into a tap (vrnetlab issue 504); set CONNECTION_MODE=macvtap");
                    r.tc_stall = true;
                }
                Verdict::Delivering => {
                    tracing::info!(port = r.port, eth = %r.eth, "the tap delivers to the VM again");
                    r.tc_stall = false;
                }
            }
        }
    }

    /// Macvtap mode: ethN is there, so a macvtap on it takes the place of the slot's tap (its
    /// fds replace the tap's, which closes it). Once qemu holds the fds that cannot be done:
    /// the port stays down, and status says why.
    pub(super) async fn attach_macvtap(&mut self, pos: usize, eth: &LinkInfo) {
        let (tap, failed_here) = {
            let r = &self.table.lock().unwrap()[pos];
            let failed = r.eth_ifindex == Some(eth.index) && r.last_error.is_some();
            (r.tap.clone(), failed)
        };
        if failed_here {
            // Tried on this very ethN already (a retry would only fail again, and making a
            // macvtap is itself an event on ethN): its carrier is all that changes.
            self.table.lock().unwrap()[pos].carrier = eth.lower_up;
            return;
        }
        let res = if self.handed {
            Err(MACVTAP_LATE.to_string())
        } else {
            let name = crate::net::macvtap::name_for(&self.taps[pos].link.tap);
            let queues = self.taps[pos].queues.len() as u32;
            (crate::net::macvtap::create(&self.nl, eth, &name, queues).await).map_err(|e| chain(&e))
        };
        let mut t = self.table.lock().unwrap();
        let r = &mut t[pos];
        r.eth_ifindex = Some(eth.index);
        r.carrier = eth.lower_up;
        match res {
            Ok(mv) => {
                self.taps[pos].queues = mv.queues;
                (r.tap, r.tap_ifindex, r.macvtap) = (mv.link.name, mv.link.index, true);
                r.wired = true;
                r.wirings += 1;
                r.last_error = None;
                tracing::info!(eth = %r.eth, macvtap = %r.tap, ifindex = eth.index, replaces = %tap, "macvtap attached");
            }
            Err(e) => {
                tracing::error!(eth = %r.eth, error = %e, "no macvtap for this port");
                r.wired = false;
                r.last_error = Some(e);
            }
        }
    }
}
