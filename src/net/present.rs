//! Which data interfaces are there at start when the lab tool counts links rather than naming
//! ports (CLAB_INTFS): the bounded wait for that many `{prefix}K`, whatever their K
//! ([`find_present`]). Reads links and link events; never changes a link.

use crate::config::OnMissingLinks;
use crate::net::events::{LinkEvent, LinkEvents};
use crate::net::{LinkInfo, NetError, Netlink};
use std::time::Duration;

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
