//! The datapath over netlink: link discovery (events first, then a dump, so nothing is missed),
//! link settings (MTU, up), the tc pipe ethN <-> tapN (ingress qdisc + u32 match-all +
//! `mirred egress redirect`, each way, verified by reading it back) and per-link counters.
//! No `ip` or `tc` binaries. qemu is none of this module's business.

use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32, TcFilterU32Option, TcHandle, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
/// Our filter's priority and u32 handle (800::800): fixed, so wiring again replaces it.
const FILTER_PRIO: u16 = 1;
const FILTER_HANDLE: u32 = 0x8000_0800;
const INGRESS_PARENT: u32 = 0xffff_0000;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{op} on {ifname}: {source}")]
    Request {
        op: &'static str,
        ifname: String,
        source: std::io::Error,
    },
    #[error("interface {0} does not exist")]
    NoSuchLink(String),
    #[error("wiring {from} -> {to} did not verify: {why}")]
    Verify {
        from: String,
        to: String,
        why: String,
    },
}

/// What the launcher knows of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub lower_up: bool,
    /// The hardware address, as aa:bb:cc:dd:ee:ff (empty for links without one).
    pub mac: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl LinkInfo {
    pub fn from_message(m: &LinkMessage) -> Option<Self> {
        let mut li = LinkInfo {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            ..Default::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => li.name = n.clone(),
                LinkAttribute::Mtu(v) => li.mtu = *v,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    li.mac = a
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                }
                LinkAttribute::Stats64(s) => {
                    li.rx_packets = s.rx_packets;
                    li.rx_bytes = s.rx_bytes;
                    li.tx_packets = s.tx_packets;
                    li.tx_bytes = s.tx_bytes;
                }
                _ => {}
            }
        }
        (!li.name.is_empty()).then_some(li)
    }
}

fn io_err(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => std::io::Error::other(other.to_string()),
    }
}

/// A request/response netlink connection (rtnetlink's handle, its task spawned on the runtime).
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the socket in the calling thread's network namespace. Needs a tokio runtime.
    pub fn new() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Sends one request, collects the replies, retries EBUSY/EAGAIN with back-off, and a dump
    /// the kernel marks inconsistent (links changed while it ran: NLM_F_DUMP_INTR).
    async fn request(
        &self,
        op: &'static str,
        ifname: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let mut delay = Duration::from_millis(1);
        for attempt in 0.. {
            let mut req = NetlinkMessage::from(msg.clone());
            req.header.flags = NLM_F_REQUEST | flags;
            let mut out = Vec::new();
            let mut failure = None;
            let mut interrupted = false;
            let mut stream = self
                .handle
                .clone()
                .request(req)
                .map_err(|e| NetError::Request {
                    op,
                    ifname: ifname.into(),
                    source: io_err(e),
                })?;
            while let Some(m) = stream.next().await {
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    NetlinkPayload::Error(e) if e.code.is_some() => failure = Some(e.to_io()),
                    _ => {}
                }
            }
            match failure {
                None if interrupted && attempt < 8 => {
                    tracing::debug!(op, ifname, "dump interrupted by changes, repeating it");
                }
                None => return Ok(out),
                Some(e)
                    if attempt < 8
                        && matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) =>
                {
                    tracing::debug!(op, ifname, ?delay, "netlink busy, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Some(source) => {
                    return Err(NetError::Request {
                        op,
                        ifname: ifname.into(),
                        source,
                    })
                }
            }
        }
        unreachable!()
    }

    /// Every link in this namespace, with counters.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetError> {
        let replies = self
            .request(
                "list links",
                "*",
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => LinkInfo::from_message(l),
                _ => None,
            })
            .collect())
    }

    /// One link by name.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>, NetError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        match self
            .request("get link", name, RouteNetlinkMessage::GetLink(m), 0)
            .await
        {
            Ok(r) => Ok(r.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => LinkInfo::from_message(l),
                _ => None,
            })),
            Err(NetError::Request { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the link up, and its MTU when given.
    pub async fn set_up(&self, index: u32, ifname: &str, mtu: Option<u32>) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(
            "set link up",
            ifname,
            RouteNetlinkMessage::SetLink(m),
            NLM_F_ACK,
        )
        .await?;
        Ok(())
    }

    /// Creates bridge `name` (a leftover one of that name is reused) and sets it up.
    pub async fn bridge(&self, name: &str) -> Result<LinkInfo, NetError> {
        if self.link(name).await?.is_none() {
            let mut m = LinkMessage::default();
            m.attributes.push(LinkAttribute::IfName(name.into()));
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(
                    InfoKind::Bridge,
                )]));
            self.request(
                "create bridge",
                name,
                RouteNetlinkMessage::NewLink(m),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            )
            .await?;
        }
        let br = self
            .link(name)
            .await?
            .ok_or_else(|| NetError::NoSuchLink(name.into()))?;
        self.set_up(br.index, name, None).await?;
        Ok(br)
    }

    /// Makes link `index` a port of bridge `master`.
    pub async fn enslave(&self, index: u32, ifname: &str, master: u32) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Controller(master));
        self.request(
            "add to bridge",
            ifname,
            RouteNetlinkMessage::SetLink(m),
            NLM_F_ACK,
        )
        .await?;
        Ok(())
    }

    /// Deletes a link (used for persistent taps by `launcher unwire`).
    pub async fn delete(&self, index: u32, ifname: &str) -> Result<(), NetError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(
            "delete link",
            ifname,
            RouteNetlinkMessage::DelLink(m),
            NLM_F_ACK,
        )
        .await?;
        Ok(())
    }

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
        let targets = self.redirect_targets(from).await?;
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

    /// Both directions: eth -> tap and tap -> eth.
    pub async fn wire(&self, eth: &LinkInfo, tap: &LinkInfo) -> Result<(), NetError> {
        self.redirect(eth, tap).await?;
        self.redirect(tap, eth).await
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
        let mut filters: Vec<(&'static str, TcMessage)> = keep_tcp
            .iter()
            .map(|&p| {
                (
                    "add u32 pass filter (console port)",
                    u32_filter(
                        eth.index,
                        1,
                        ETH_P_IP,
                        None,
                        tcp_dport_keys(p),
                        Verdict::Pass,
                    ),
                )
            })
            .collect();
        filters.push((
            "add u32 ARP mirror filter",
            u32_filter(
                eth.index,
                2,
                ETH_P_ARP,
                None,
                vec![TcU32Key::default()],
                Verdict::Mirror(tap.index),
            ),
        ));
        filters.push((
            "add u32 mirred filter",
            u32_filter(
                eth.index,
                3,
                ETH_P_ALL,
                None,
                vec![TcU32Key::default()],
                Verdict::Redirect(tap.index),
            ),
        ));
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

    /// The global IPv4 and IPv6 addresses on link `index`, as address/prefix.
    pub async fn addresses(&self, index: u32, ifname: &str) -> Result<Vec<String>, NetError> {
        let replies = self
            .request(
                "list addresses",
                ifname,
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_DUMP,
            )
            .await?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewAddress(a) = r else {
                continue;
            };
            if a.header.index != index || a.header.scope != AddressScope::Universe {
                continue;
            }
            if let Some(ip) = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }) {
                out.push(format!("{ip}/{}", a.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// The gateways of the default routes (IPv4 and IPv6) that leave by link `index`.
    pub async fn default_gateways(
        &self,
        index: u32,
        ifname: &str,
    ) -> Result<Vec<std::net::IpAddr>, NetError> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            let replies = self
                .request(
                    "list routes",
                    ifname,
                    RouteNetlinkMessage::GetRoute(q),
                    NLM_F_DUMP,
                )
                .await?;
            for r in replies {
                let RouteNetlinkMessage::NewRoute(m) = r else {
                    continue;
                };
                if m.header.destination_prefix_length != 0 {
                    continue;
                }
                let oif = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some((*v4).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some((*v6).into()),
                    _ => None,
                });
                if let (Some(i), Some(gw)) = (oif, gw) {
                    if i == index {
                        out.push(gw);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The ifindexes that `link`'s ingress filters redirect to (mirred egress redirect).
    pub async fn redirect_targets(&self, link: &LinkInfo) -> Result<Vec<u32>, NetError> {
        let mut q = TcMessage::with_index(link.index as i32);
        q.header.parent = TcHandle::from(INGRESS_PARENT);
        let replies = self
            .request(
                "list filters",
                &link.name,
                RouteNetlinkMessage::GetTrafficFilter(q),
                NLM_F_DUMP,
            )
            .await?;
        let mut out = Vec::new();
        for r in replies {
            if let RouteNetlinkMessage::NewTrafficFilter(m) = r {
                out.extend(mirred_targets(&m));
            }
        }
        Ok(out)
    }
}

/// `tc qdisc add dev X ingress`, as a message.
pub fn ingress_qdisc(index: u32) -> TcMessage {
    let mut m = TcMessage::with_index(index as i32);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = TcHandle::from(INGRESS_PARENT);
    m.attributes.push(TcAttribute::Kind("ingress".into()));
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

/// A link event from the kernel, or word that events were lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed (a rename arrives as this too: same index, new name).
    New(LinkInfo),
    Deleted {
        index: u32,
        name: String,
    },
    /// The socket overran (ENOBUFS): events were lost; list the links again.
    Overrun,
}

/// A socket subscribed to RTNLGRP_LINK, read without polling (epoll via tokio).
pub struct LinkEvents {
    fd: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<LinkEvent>,
}

impl LinkEvents {
    /// Subscribes in the calling thread's network namespace. Subscribe before listing.
    pub fn subscribe() -> Result<Self, NetError> {
        // SAFETY: plain socket(2)/bind(2)/setsockopt(2) calls with valid arguments; the fd is
        // owned by OwnedFd right after creation.
        unsafe {
            let raw = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            );
            if raw < 0 {
                return Err(NetError::Socket(std::io::Error::last_os_error()));
            }
            let fd = OwnedFd::from_raw_fd(raw);
            // LAUNCHER_NETLINK_RCVBUF (bytes) shrinks the buffer: a diagnostic knob that makes
            // a burst of link events overrun it, to see the re-listing at work.
            let small = std::env::var("LAUNCHER_NETLINK_RCVBUF")
                .ok()
                .and_then(|v| v.parse::<libc::c_int>().ok());
            let size: libc::c_int = small.unwrap_or(4 << 20);
            // Ask for a big buffer (FORCE needs CAP_NET_ADMIN; fall back to the capped one).
            if small.is_some()
                || libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &size as *const _ as *const _,
                    4,
                ) < 0
            {
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &size as *const _ as *const _,
                    4,
                );
            }
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            sa.nl_groups = 1; // RTMGRP_LINK
            if libc::bind(
                raw,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ) < 0
            {
                return Err(NetError::Socket(std::io::Error::last_os_error()));
            }
            Ok(Self {
                fd: AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
                    .map_err(|e| NetError::Socket(e.into()))?,
                buf: vec![0; 1 << 16],
                pending: Default::default(),
            })
        }
    }

    /// Reads and drops everything queued on the (non-blocking) socket.
    fn discard_queued(&mut self) {
        loop {
            // SAFETY: recv into our own buffer of the stated length.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut _,
                    self.buf.len(),
                    0,
                )
            };
            let lost =
                n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS);
            if n <= 0 && !lost {
                return;
            }
        }
    }

    /// The next link event.
    pub async fn next(&mut self) -> Result<LinkEvent, NetError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let mut guard = self.fd.readable().await.map_err(NetError::Socket)?;
            let n = match guard.try_io(|fd| {
                // SAFETY: recv into our own buffer of the stated length.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        self.buf.as_mut_ptr() as *mut _,
                        self.buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Err(_would_block) => continue,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Empty the socket first: the kernel reports further losses only once its
                    // queue has been empty, so a dump taken before that could miss links whose
                    // events are lost without a word. What was queued is stale: the caller
                    // lists the links afresh.
                    self.pending.clear();
                    self.discard_queued();
                    return Ok(LinkEvent::Overrun);
                }
                Ok(Err(e)) => return Err(NetError::Socket(e)),
                Ok(Ok(n)) => n,
            };
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > n {
                    break;
                }
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len])
                {
                    Ok(m) => match m.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                            if let Some(li) = LinkInfo::from_message(&l) {
                                self.pending.push_back(LinkEvent::New(li));
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                            let name = LinkInfo::from_message(&l)
                                .map(|l| l.name)
                                .unwrap_or_default();
                            self.pending.push_back(LinkEvent::Deleted {
                                index: l.header.index,
                                name,
                            });
                        }
                        NetlinkPayload::Overrun(_) => self.pending.push_back(LinkEvent::Overrun),
                        _ => {}
                    },
                    // A message this crate cannot decode (a newer kernel): skip it, never fatal.
                    Err(e) => tracing::debug!(error = %e, "undecodable link event skipped"),
                }
                off += (len + 3) & !3;
            }
        }
    }
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
}
