//! Links as cables, the supervisor's half: every NIC slot of a VM gets a tap (up to its highest
//! link, or nics.slots), the slots without an ethN at start as spares ([`with_spares`]); and
//! each VM's guest is told its ports' states over QMP `set_link` ([`follow`]): down until ethN
//! is there, wired and has carrier, up when it is, for every QMP connection (so a restarted
//! qemu gets them again), and again once a restore's stream is loaded ([`tell_again`]): a NIC
//! takes its link state from its saved device state at the load (virtio-net and e1000 both),
//! which is the cable as it was at the save. Never changes a link (net does) and never decides
//! a state.

use crate::config::{DataLink, LinkSpec, Node};
use crate::net::CableStates;
use crate::qemu::qmp::Qmp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A failed `set_link` is tried again after this.
const RETRY: Duration = Duration::from_secs(1);

/// The interface and tap name prefixes of the node's data ports: CLAB_INTFS's, else those of
/// a listed link (none without one).
fn prefixes(node: &Node, links: &[Vec<DataLink>]) -> Option<(String, String)> {
    if let LinkSpec::AnyIndex {
        prefix, tap_prefix, ..
    } = &node.settings.links
    {
        return Some((prefix.clone(), tap_prefix.clone()));
    }
    let l = links.iter().flatten().next()?;
    let k = l.index.to_string();
    Some((
        l.eth.strip_suffix(&k)?.to_string(),
        l.tap.strip_suffix(&k)?.to_string(),
    ))
}

/// Per VM, its links and its spare slots, in port order, each with `true` for a spare: every
/// port of the VM up to its highest link or its nics.slots that has no link.
pub fn with_spares(node: &Node, links: &[Vec<DataLink>]) -> Vec<Vec<(DataLink, bool)>> {
    let names = prefixes(node, links);
    (node.vms.iter().zip(links))
        .map(|(plan, links)| {
            let highest = links.iter().map(|l| l.index).max().unwrap_or(0);
            let mut out: Vec<(DataLink, bool)> = links.iter().map(|l| (l.clone(), false)).collect();
            if let Some((eth, tap)) = &names {
                let spare = |k: u32| DataLink {
                    index: k,
                    eth: format!("{eth}{k}"),
                    tap: format!("{tap}{k}"),
                };
                let free =
                    |k: &u32| plan.nics.ports.contains(*k) && !links.iter().any(|l| l.index == *k);
                out.extend(
                    (1..=highest.max(plan.nics.slots))
                        .filter(free)
                        .map(|k| (spare(k), true)),
                );
            }
            out.sort_by_key(|(l, _)| l.index);
            out
        })
        .collect()
}

/// One VM's view of the cables: the states of all ports, which are this VM's, and what its
/// guest was told on the current QMP connection.
#[derive(Clone)]
pub struct VmCables {
    pub states: CableStates,
    pub ports: Vec<u32>,
    /// Shared by [`follow`] and [`tell_again`]: each tells under its lock, reading the states
    /// there, so the last to tell told the newest states.
    told: Arc<tokio::sync::Mutex<HashMap<u32, bool>>>,
}

impl VmCables {
    pub fn new(states: CableStates, ports: Vec<u32>) -> Self {
        VmCables {
            states,
            ports,
            told: Arc::default(),
        }
    }
}

/// Tells qemu, over this connection, each of the VM's ports' state (`set_link netN`), at once
/// and at every change, until the states' sender is gone or the caller drops this future.
/// Ports already told are not told again; a failure is retried after [`RETRY`].
pub async fn follow(qmp: Arc<Qmp>, mut c: VmCables) {
    c.told.lock().await.clear();
    loop {
        if !tell(&qmp, &mut c).await {
            tokio::time::sleep(RETRY).await;
        } else if c.states.changed().await.is_err() {
            return;
        }
    }
}

/// Tells qemu every port's state again, whatever it was told: a restore's stream is loaded and
/// its NICs took the links of the save. False when a port could not be told (logged; the next
/// change of the states tells it again).
pub async fn tell_again(qmp: &Qmp, c: &VmCables) -> bool {
    // What was told before the load no longer holds; a round of `follow` after this clear
    // tells the states after it, which this round then need not tell again.
    c.told.lock().await.clear();
    tell(qmp, &mut c.clone()).await
}

/// One round: each port whose state differs from what qemu was told is told, in port order.
/// False when one failed: the round ends there (a qemu that does not answer one `set_link` in
/// 5 s would not answer the next; the lock is held at most that long).
async fn tell(qmp: &Qmp, c: &mut VmCables) -> bool {
    let mut told = c.told.lock().await;
    let want: Vec<(u32, bool)> = (c.states.borrow_and_update().iter())
        .filter(|(p, _)| c.ports.contains(p))
        .copied()
        .collect();
    for (port, up) in want {
        if told.get(&port) == Some(&up) {
            continue;
        }
        let id = format!("net{port}");
        match qmp.set_link(&id, up).await {
            Ok(()) => {
                tracing::info!(port, netdev = %id, up, "guest port link set");
                told.insert(port, up);
            }
            Err(e) => {
                tracing::warn!(port, netdev = %id, up, error = %crate::exit::chain(&e), "cannot set the guest port's link");
                return false;
            }
        }
    }
    true
}

/// A task that ends when this is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(env: &[(&str, &str)], nics: &str) -> Node {
        let text =
            format!("[vm]\nname=\"c\"\n[kernel]\npath=\"k\"\n{nics}\n[management]\nforwards=[]\n");
        crate::config::parse_with(&text, env).unwrap()
    }

    fn ports(v: &[(DataLink, bool)]) -> Vec<(u32, &str, bool)> {
        v.iter()
            .map(|(l, s)| (l.index, l.tap.as_str(), *s))
            .collect()
    }

    #[test]
    fn gaps_and_slots_above_the_links_are_spares() {
        let n = node(&[("CLAB_INTFS", "2")], "[nics]\nslots = 4");
        let found = n.links_present(&[1, 3]).unwrap();
        let all = with_spares(&n, &found);
        assert_eq!(
            ports(&all[0]),
            [
                (1, "tap1", false),
                (2, "tap2", true),
                (3, "tap3", false),
                (4, "tap4", true)
            ]
        );
        assert_eq!(all[0][1].0.eth, "eth2");
    }

    #[test]
    fn listed_links_without_slots_get_spares_only_in_their_gaps() {
        let n = node(&[], "[nics]\nnames = [\"eth1\", \"eth3\"]");
        let all = with_spares(&n, &[n.vms[0].nics.links.clone()]);
        assert_eq!(
            ports(&all[0]),
            [(1, "tap1", false), (2, "tap2", true), (3, "tap3", false)]
        );
        let none = node(&[], "[nics]\ncount = 0");
        assert!(with_spares(&none, &[vec![]])[0].is_empty());
    }
}
