//! Link events: a netlink socket subscribed to RTNLGRP_LINK (and RTNLGRP_TC, for tc objects
//! removed behind the launcher's back), read without polling (epoll via tokio), and the recovery when it overruns (ENOBUFS: drain, then tell the caller to list the
//! links afresh). The receive-buffer size is the caller's to choose; this module never reads
//! the environment and never changes a link.

use crate::net::{LinkInfo, NetError};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// The environment variable a caller may read for [`LinkEvents::subscribe`]'s `small_rcvbuf`:
/// a diagnostic knob (bytes) that makes a burst of link events overrun the socket, to see the
/// re-listing at work.
pub const RCVBUF_ENV: &str = "LAUNCHER_NETLINK_RCVBUF";

/// The receive buffer asked for normally: big, so bursts of events are not lost.
const DEFAULT_RCVBUF: usize = 4 << 20;

/// RTMGRP_LINK, the link multicast group; RTMGRP_TC, the qdisc and filter group.
const RTMGRP_LINK: u32 = 1;
const RTMGRP_TC: u32 = 8;
/// The message types of a qdisc and a filter added (or changed).
const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;

/// Reads [`RCVBUF_ENV`] from `value` (the caller passes what the environment holds).
pub fn parse_rcvbuf(value: Option<&str>) -> Option<usize> {
    value.and_then(|v| v.trim().parse().ok())
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
    /// A qdisc or filter was removed from the link with this ifindex (wiring may be gone).
    TcRemoved {
        index: u32,
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
    /// `small_rcvbuf` (bytes) replaces the default 4 MiB buffer (see [`RCVBUF_ENV`]).
    pub fn subscribe(small_rcvbuf: Option<usize>) -> Result<Self, NetError> {
        let sock = |e: Errno| NetError::Socket(e.into());
        let fd: OwnedFd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkRoute,
        )
        .map_err(sock)?;
        let size = small_rcvbuf.unwrap_or(DEFAULT_RCVBUF);
        // Ask for a big buffer (FORCE needs CAP_NET_ADMIN; fall back to the capped one). A
        // small one is asked for plainly, so the kernel does not round it up by force.
        if small_rcvbuf.is_some() || setsockopt(&fd, sockopt::RcvBufForce, &size).is_err() {
            // Best effort, as before: the kernel's default buffer still works.
            let _ = setsockopt(&fd, sockopt::RcvBuf, &size);
        }
        let groups = RTMGRP_LINK | RTMGRP_TC;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(sock)?;
        // SAFETY: `fd` is an open socket owned by the AsyncFd from here on; nothing else
        // closes or replaces it, so its raw fd stays the same for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| NetError::Socket(e.into()))?;
        Ok(Self {
            fd,
            buf: vec![0; 1 << 16],
            pending: Default::default(),
        })
    }

    /// Reads and drops everything queued on the (non-blocking) socket.
    fn discard_queued(&mut self) {
        loop {
            match recv(
                self.fd.get_ref().as_raw_fd(),
                &mut self.buf,
                MsgFlags::empty(),
            ) {
                Ok(n) if n > 0 => {}
                Err(Errno::ENOBUFS) => {}
                _ => return,
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
                recv(fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()).map_err(std::io::Error::from)
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
            self.decode(n);
        }
    }

    /// Splits the first `n` bytes of the buffer into netlink messages and queues their events.
    fn decode(&mut self, n: usize) {
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(self.buf[off..off + 4].try_into().unwrap()) as usize;
            if len < 16 || off + len > n {
                break;
            }
            // Only link news and tc removals matter: the tc objects added (the launcher's own
            // wiring makes four per link) are skipped before decoding.
            let kind = u16::from_ne_bytes(self.buf[off + 4..off + 6].try_into().unwrap());
            if matches!(kind, RTM_NEWQDISC | RTM_NEWTFILTER) {
                off += (len + 3) & !3;
                continue;
            }
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..off + len]) {
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
                    NetlinkPayload::InnerMessage(
                        RouteNetlinkMessage::DelTrafficFilter(t)
                        | RouteNetlinkMessage::DelQueueDiscipline(t),
                    ) => self.pending.push_back(LinkEvent::TcRemoved {
                        index: t.header.index as u32,
                    }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcvbuf_knob() {
        assert_eq!(parse_rcvbuf(None), None);
        assert_eq!(parse_rcvbuf(Some("4096")), Some(4096));
        assert_eq!(parse_rcvbuf(Some("lots")), None);
    }
}
