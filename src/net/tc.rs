//! tc, the pipe ethN <-> tapN: the pure message builders (ingress qdisc, u32 match-all with
//! `mirred egress redirect`, the passthrough's pass/mirror filters), and the wiring built on
//! them (wire, unwire, and verification by reading the filters back). No `tc` binary; link
//! settings belong to `netlink`.

use crate::net::batch::Request;
use crate::net::netlink::up_message;
use crate::net::{LinkInfo, NetError, Netlink};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
/// Our filter's priority and u32 handle (800::800): fixed, so wiring again replaces it.
const FILTER_PRIO: u16 = 1;
const FILTER_HANDLE: u32 = 0x8000_0800;
const INGRESS_PARENT: u32 = 0xffff_0000;

impl Netlink {
    /// Wires `from`'s ingress to `to`'s egress (one direction of the pipe), then reads it back.
    pub async fn redirect(&self, from: &LinkInfo, to: &LinkInfo) -> Result<(), NetError> {
        self.add_ingress(from).await?;
        self.request(
            "add u32 mirred filter",
            &from.name,
            RouteNetlinkMessage::NewTrafficFilter(redirect_filter(from.index, to.index)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await?;
        self.verify_redirect(from, to).await
    }

    /// `tc qdisc replace dev X ingress`.
    async fn add_ingress(&self, link: &LinkInfo) -> Result<(), NetError> {
        self.request(
            "add ingress qdisc",
            &link.name,
            RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(link.index)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await?;
        Ok(())
    }

    /// Reads `from`'s ingress filters back: exactly one redirect, to `to`.
    async fn verify_redirect(&self, from: &LinkInfo, to: &LinkInfo) -> Result<(), NetError> {
        check_redirect(from, to, &self.redirect_targets(from).await?)
    }

    /// Both links up (the tap with MTU `tap_mtu` when given) and both directions wired, eth ->
    /// tap and tap -> eth, then read back, in two batches (see `batch`): every change and
    /// eth's filter dump in one `sendmsg`, the tap's dump in a second (the kernel runs one dump
    /// per socket at a time). Each direction must read back as exactly one redirect.
    pub async fn wire(
        &self,
        eth: &LinkInfo,
        tap: &LinkInfo,
        tap_mtu: Option<u32>,
    ) -> Result<(), NetError> {
        let change = NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let req = |op, l: &LinkInfo, msg, flags| Request {
            op,
            ifname: l.name.clone(),
            msg,
            flags,
        };
        let mut batch = vec![
            req(
                "set link up",
                eth,
                RouteNetlinkMessage::SetLink(up_message(eth.index, None)),
                NLM_F_ACK,
            ),
            req(
                "set link up",
                tap,
                RouteNetlinkMessage::SetLink(up_message(tap.index, tap_mtu)),
                NLM_F_ACK,
            ),
        ];
        for (from, to) in [(eth, tap), (tap, eth)] {
            batch.push(req(
                "add ingress qdisc",
                from,
                RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(from.index)),
                change,
            ));
            batch.push(req(
                "add u32 mirred filter",
                from,
                RouteNetlinkMessage::NewTrafficFilter(redirect_filter(from.index, to.index)),
                change,
            ));
        }
        let dump = |l: &LinkInfo| {
            req(
                "list filters",
                l,
                RouteNetlinkMessage::GetTrafficFilter(filters_of(l.index)),
                NLM_F_DUMP,
            )
        };
        batch.push(dump(eth));
        let eth_back = self.batch.send(&batch).await?.pop().unwrap_or_default();
        let tap_back = self
            .batch
            .send(&[dump(tap)])
            .await?
            .pop()
            .unwrap_or_default();
        check_redirect(eth, tap, &targets(&eth_back))?;
        check_redirect(tap, eth, &targets(&tap_back))
    }

    /// Removes the ingress qdisc (and with it every filter) from a link.
    pub async fn unwire(&self, link: &LinkInfo) -> Result<(), NetError> {
        match self
            .request(
                "delete ingress qdisc",
                &link.name,
                RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc(link.index)),
                NLM_F_ACK,
            )
            .await
        {
            Err(NetError::Request { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Takes back what the launcher added to `link`'s ingress: its filters at `prios` (the
    /// whole u32 classifier at each, any protocol), nothing else. The ingress qdisc stays (it
    /// may predate the launcher; empty, it passes every frame). A link or filter already gone
    /// is not an error: the lab tool may have moved or deleted ethN.
    pub async fn remove_filters(&self, link: &LinkInfo, prios: &[u16]) -> Result<(), NetError> {
        for &prio in prios {
            let res = self
                .request(
                    "delete filter",
                    &link.name,
                    RouteNetlinkMessage::DelTrafficFilter(filter_at(link.index, prio)),
                    NLM_F_ACK,
                )
                .await;
            match res {
                Err(NetError::Request { source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENODEV)
                    ) => {}
                other => other.map(|_| ())?,
            }
        }
        Ok(())
    }

    /// Management passthrough: everything entering `eth` goes to `tap` except TCP to the
    /// `keep_tcp` ports (the launcher's own telnet consoles), which stays with this namespace;
    /// ARP goes to both (the VM and the container share the address and MAC); everything the
    /// VM sends leaves by `eth`. Starts from a clean ingress on `eth`, verified by reading back.
    pub async fn wire_passthrough(
        &self,
        eth: &LinkInfo,
        tap: &LinkInfo,
        keep_tcp: &[u16],
    ) -> Result<(), NetError> {
        self.unwire(eth).await?;
        self.add_ingress(eth).await?;
        let filters = passthrough_filters(eth.index, tap.index, keep_tcp);
        for (op, f) in filters {
            self.request(
                op,
                &eth.name,
                RouteNetlinkMessage::NewTrafficFilter(f),
                NLM_F_ACK | NLM_F_CREATE,
            )
            .await?;
        }
        self.verify_redirect(eth, tap).await?;
        self.redirect(tap, eth).await
    }

    /// The ifindexes that `link`'s ingress filters redirect to (mirred egress redirect).
    pub async fn redirect_targets(&self, link: &LinkInfo) -> Result<Vec<u32>, NetError> {
        let replies = self
            .request(
                "list filters",
                &link.name,
                RouteNetlinkMessage::GetTrafficFilter(filters_of(link.index)),
                NLM_F_DUMP,
            )
            .await?;
        Ok(targets(&replies))
    }
}

/// `tc filter show dev X ingress`, as a (dump) message.
fn filters_of(index: u32) -> TcMessage {
    let mut q = TcMessage::with_index(index as i32);
    q.header.parent = TcHandle::from(INGRESS_PARENT);
    q
}

/// The redirect targets of every filter among `replies`.
fn targets(replies: &[RouteNetlinkMessage]) -> Vec<u32> {
    let mut out = Vec::new();
    for r in replies {
        if let RouteNetlinkMessage::NewTrafficFilter(m) = r {
            out.extend(mirred_targets(m));
        }
    }
    out
}

/// `from`'s filters, read back, must redirect exactly once, to `to`.
fn check_redirect(from: &LinkInfo, to: &LinkInfo, targets: &[u32]) -> Result<(), NetError> {
    if targets != [to.index] {
        return Err(NetError::Verify {
            from: from.name.clone(),
            to: to.name.clone(),
            why: format!(
                "expected one redirect to ifindex {}, found {targets:?}",
                to.index
            ),
        });
    }
    Ok(())
}

/// `tc qdisc add dev X ingress`, as a message.
pub fn ingress_qdisc(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(INGRESS_PARENT);
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

/// The launcher's filter prios on a data link's ingress (ethN and tapN).
pub const DATA_PRIOS: [u16; 1] = [FILTER_PRIO];
/// The passthrough filter prios on the management interface's ingress.
pub const PASSTHROUGH_PRIOS: [u16; 3] = [1, 2, 3];

/// `tc filter del dev X parent ffff: prio P`, as a message: every filter at that prio.
pub fn filter_at(index: u32, prio: u16) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::from(INGRESS_PARENT);
    m.header.info = (prio as u32) << 16;
    m
}

/// What a u32 filter does with a frame that matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `mirred egress redirect dev IFINDEX`: the frame leaves by that link only.
    Redirect(u32),
    /// `mirred egress mirror dev IFINDEX`: a copy leaves by that link, the frame goes on to
    /// this namespace's own stack.
    Mirror(u32),
    /// No action: the frame goes on to this namespace's own stack.
    Pass,
}

/// `tc filter replace dev X parent ffff: prio 1 handle 800::800 protocol all u32 match u8 0 0
/// action mirred egress redirect dev Y`, as a message.
pub fn redirect_filter(from: u32, to: u32) -> TcMessage {
    u32_filter(
        from,
        FILTER_PRIO,
        ETH_P_ALL,
        Some(FILTER_HANDLE),
        vec![TcU32Key::default()],
        Verdict::Redirect(to),
    )
}

/// An ingress u32 filter on link `from`: `keys` (host byte order; all must match) at `prio`
/// for `protocol` (an ETH_P_* value), then `verdict`. `handle` None lets the kernel choose.
pub fn u32_filter(
    from: u32,
    prio: u16,
    protocol: u16,
    handle: Option<u32>,
    keys: Vec<TcU32Key>,
    verdict: Verdict,
) -> TcMessage {
    let mut m = TcMessage::with_index(from as i32);
    m.header.parent = TcHandle::from(INGRESS_PARENT);
    if let Some(h) = handle {
        m.header.handle = TcHandle::from(h);
    }
    // Priority in the upper 16 bits, protocol (network byte order) in the lower.
    m.header.info = ((prio as u32) << 16) | protocol.to_be() as u32;
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = keys.len() as u8;
    sel.keys = keys;
    let mut opts = vec![TcOption::U32(TcFilterU32Option::Selector(sel))];
    let mirred = match verdict {
        Verdict::Redirect(to) => Some((TcMirrorActionType::EgressRedir, TcActionType::Stolen, to)),
        Verdict::Mirror(to) => Some((TcMirrorActionType::EgressMirror, TcActionType::Ok, to)),
        Verdict::Pass => None,
    };
    match mirred {
        Some((eaction, then, to)) => {
            let mut mirror = TcMirror::default();
            mirror.generic = TcActionGeneric::default();
            mirror.generic.action = then;
            mirror.eaction = eaction;
            mirror.ifindex = to;
            let mut action = TcAction::default();
            action.tab = 1;
            action.attributes = vec![
                TcActionAttribute::Kind(TcActionMirror::KIND.into()),
                TcActionAttribute::Options(vec![TcActionOption::Mirror(
                    TcActionMirrorOption::Parms(mirror),
                )]),
            ];
            opts.push(TcOption::U32(TcFilterU32Option::Action(vec![action])));
        }
        // A class id and no action: the kernel's verdict is "ok", the frame goes up the stack.
        None => opts.push(TcOption::U32(TcFilterU32Option::ClassId(TcHandle::from(
            0x0001_0001,
        )))),
    }
    m.attributes
        .push(TcAttribute::Kind(TcFilterU32::KIND.into()));
    m.attributes.push(TcAttribute::Options(opts));
    m
}

/// The passthrough's filter set on `eth` (ingress), in priority order, each with the operation
/// name its failure reports: TCP to each `keep_tcp` port passes to this namespace (prio 1), a
/// copy of ARP goes to `tap` (prio 2), everything else is redirected to `tap` (prio 3).
pub fn passthrough_filters(eth: u32, tap: u32, keep_tcp: &[u16]) -> Vec<(&'static str, TcMessage)> {
    let mut filters: Vec<(&'static str, TcMessage)> = keep_tcp
        .iter()
        .map(|&p| {
            (
                "add u32 pass filter (console port)",
                u32_filter(eth, 1, ETH_P_IP, None, tcp_dport_keys(p), Verdict::Pass),
            )
        })
        .collect();
    filters.push((
        "add u32 ARP mirror filter",
        u32_filter(
            eth,
            2,
            ETH_P_ARP,
            None,
            vec![TcU32Key::default()],
            Verdict::Mirror(tap),
        ),
    ));
    filters.push((
        "add u32 mirred filter",
        u32_filter(
            eth,
            3,
            ETH_P_ALL,
            None,
            vec![TcU32Key::default()],
            Verdict::Redirect(tap),
        ),
    ));
    filters
}

/// u32 keys for "IPv4, TCP, destination port `port`" (no IP options, as `tc ... match ip
/// dport` assumes).
pub fn tcp_dport_keys(port: u16) -> Vec<TcU32Key> {
    let key = |off, mask, val| {
        let mut k = TcU32Key::default();
        k.off = off;
        k.mask = mask;
        k.val = val;
        k
    };
    vec![
        key(8, 0x00ff_0000, 0x0006_0000),
        key(20, 0x0000_ffff, port as u32),
    ]
}

/// Redirect targets of the mirred actions in one filter message.
pub fn mirred_targets(m: &TcMessage) -> Vec<u32> {
    let mut out = Vec::new();
    for a in &m.attributes {
        let TcAttribute::Options(opts) = a else {
            continue;
        };
        for o in opts {
            let TcOption::U32(TcFilterU32Option::Action(actions)) = o else {
                continue;
            };
            for act in actions {
                for aa in &act.attributes {
                    let TcActionAttribute::Options(aopts) = aa else {
                        continue;
                    };
                    for ao in aopts {
                        if let TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) = ao {
                            if p.eaction == TcMirrorActionType::EgressRedir {
                                out.push(p.ifindex);
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    /// The filter we send is what `tc filter add ... protocol all u32 match u8 0 0 action
    /// mirred egress redirect` sends: protocol ETH_P_ALL in network byte order, prio 1,
    /// one all-zero key, terminal, and survives an emit/parse round trip.
    #[test]
    fn redirect_filter_message() {
        let m = redirect_filter(7, 9);
        assert_eq!(
            m.header.info & 0xffff,
            0x0300,
            "ETH_P_ALL must be in network byte order"
        );
        assert_eq!(m.header.info >> 16, 1);
        assert_eq!(u32::from(m.header.parent), 0xffff0000);
        assert_eq!(mirred_targets(&m), vec![9]);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        let back = <TcMessage as Parseable<[u8]>>::parse(&buf[..]).unwrap();
        assert_eq!(mirred_targets(&back), vec![9]);
        let sel = back.attributes.iter().find_map(|a| match a {
            TcAttribute::Options(o) => o.iter().find_map(|o| match o {
                TcOption::U32(TcFilterU32Option::Selector(s)) => Some(s.clone()),
                _ => None,
            }),
            _ => None,
        });
        let sel = sel.expect("selector");
        assert_eq!(sel.nkeys, 1);
        assert_eq!(sel.keys, vec![TcU32Key::default()]);
        assert!(sel.flags.contains(TcU32SelectorFlags::Terminal));
    }

    /// The passthrough's console exception: IPv4 protocol, TCP protocol byte at offset 9, the
    /// destination port in the low half of the word at offset 20; no action (the frame goes
    /// up this namespace's stack), and it is not counted as a redirect.
    #[test]
    fn console_pass_filter_message() {
        let m = u32_filter(3, 1, ETH_P_IP, None, tcp_dport_keys(5000), Verdict::Pass);
        assert_eq!(
            m.header.info & 0xffff,
            0x0008,
            "ETH_P_IP in network byte order"
        );
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // The keys on the wire are big-endian: 00 ff 00 00 / 00 06 00 00 at offset 8.
        let wire = buf
            .windows(8)
            .any(|w| w == [0x00, 0xff, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00]);
        assert!(wire, "TCP protocol key not found big-endian on the wire");
        let back = <TcMessage as Parseable<[u8]>>::parse(&buf[..]).unwrap();
        assert!(mirred_targets(&back).is_empty());
        let mirror = u32_filter(3, 2, ETH_P_ARP, None, vec![], Verdict::Mirror(9));
        assert!(
            mirred_targets(&mirror).is_empty(),
            "a mirror is not a redirect"
        );
    }

    /// The passthrough set: one pass filter per kept port, then the ARP mirror, then the
    /// redirect, at rising priorities; only the last counts as a redirect (what verify reads).
    #[test]
    fn passthrough_filter_set() {
        let f = passthrough_filters(2, 7, &[5000, 5001]);
        let ops: Vec<&str> = f.iter().map(|(op, _)| *op).collect();
        assert_eq!(
            ops,
            [
                "add u32 pass filter (console port)",
                "add u32 pass filter (console port)",
                "add u32 ARP mirror filter",
                "add u32 mirred filter"
            ]
        );
        let prios: Vec<u32> = f.iter().map(|(_, m)| m.header.info >> 16).collect();
        assert_eq!(prios, [1, 1, 2, 3]);
        let redirects: Vec<u32> = f.iter().flat_map(|(_, m)| mirred_targets(m)).collect();
        assert_eq!(redirects, [7]);
        assert!(f.iter().all(|(_, m)| m.header.index == 2));
    }
}
