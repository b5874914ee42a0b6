//! The netlink transport and the plain link operations: one request/response connection with
//! retries (EBUSY/EAGAIN, interrupted dumps), links (list, get, up/MTU, bridges, ports,
//! delete), addresses and default routes. No `ip` binary. tc lives in `tc`, link events in
//! `events`; qemu is none of this module's business.

use crate::net::{LinkInfo, NetError};
use futures::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;
use std::time::Duration;

/// `ip link set dev X up [mtu M]`, as a message.
pub(crate) fn up_message(index: u32, mtu: Option<u32>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m
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
    /// A socket of its own for batches (see `batch`): the wiring of a link in one `sendmsg`.
    pub(crate) batch: std::sync::Arc<crate::net::batch::Batcher>,
}

impl Netlink {
    /// Opens the socket in the calling thread's network namespace. Needs a tokio runtime.
    pub fn new() -> Result<Self, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Socket)?;
        tokio::spawn(conn);
        let batch = std::sync::Arc::new(crate::net::batch::Batcher::new()?);
        Ok(Self { handle, batch })
    }

    /// Sends one request, collects the replies, retries EBUSY/EAGAIN with back-off, and a dump
    /// the kernel marks inconsistent (links changed while it ran: NLM_F_DUMP_INTR).
    pub(crate) async fn request(
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
        self.request(
            "set link up",
            ifname,
            RouteNetlinkMessage::SetLink(up_message(index, mtu)),
            NLM_F_ACK,
        )
        .await?;
        Ok(())
    }

    /// Sets the link's MAC address (`aa:bb:cc:dd:ee:ff`).
    pub async fn set_mac(&self, index: u32, ifname: &str, mac: &str) -> Result<(), NetError> {
        let bytes: Vec<u8> = mac
            .split(':')
            .filter_map(|o| u8::from_str_radix(o, 16).ok())
            .collect();
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::Address(bytes));
        self.request(
            "set MAC address",
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
}
