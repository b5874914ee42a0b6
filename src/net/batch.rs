//! Route netlink requests sent together: every message of a batch in one `sendmsg` on a socket
//! of this module's own, the replies read straight after. The kernel handles a route netlink
//! request inside the `sendmsg` that carries it, in order, so when the call returns every
//! reply (and the first part of a dump) is already queued: no task switch, no wait, one system
//! call per batch plus one per reply datagram. A batch holds at most one dump, and only as
//! its last message (the kernel runs one dump per socket at a time). Used where latency counts
//! (wiring a link as it appears); the general request path stays in `netlink`.

use crate::net::NetError;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

/// How long one reply may take: never in practice (the replies are queued when `sendmsg`
/// returns); a bound so a kernel that behaves otherwise cannot hang the caller.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a batch is sent again when the kernel says busy (EBUSY/EAGAIN).
const RETRIES: u32 = 8;

/// One message of a batch: what it does and to which interface (for errors), the message,
/// its flags besides NLM_F_REQUEST (NLM_F_ACK for a change, NLM_F_DUMP for the last one).
pub struct Request {
    pub op: &'static str,
    pub ifname: String,
    pub msg: RouteNetlinkMessage,
    pub flags: u16,
}

/// A route netlink socket for batches (blocking, with a bounded receive time).
pub struct Batcher {
    fd: Mutex<(OwnedFd, u32)>,
}

impl Batcher {
    /// Opens the socket in the calling thread's network namespace.
    pub fn new() -> Result<Self, NetError> {
        let sock = |e: nix::errno::Errno| NetError::Socket(e.into());
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(sock)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(sock)?;
        let tv = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(sock)?;
        // Acks without the request echoed back: smaller replies (best effort).
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one int from `one`, which lives across the call, on an
        // open socket `fd` owns.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_CAP_ACK,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(Self {
            fd: Mutex::new((fd, 0)),
        })
    }

    /// Sends `reqs` in one `sendmsg` and reads every reply; per request, its reply messages
    /// (a dump's entries; nothing for an ack). The first failure is the error, naming its
    /// request. EBUSY/EAGAIN (and an interrupted dump) send the whole batch again after a
    /// growing pause (an async sleep: the runtime's thread is never held), so every request of
    /// a batch must be one that can be repeated. The first attempt never yields.
    pub async fn send(&self, reqs: &[Request]) -> Result<Vec<Vec<RouteNetlinkMessage>>, NetError> {
        let mut delay = Duration::from_millis(1);
        for attempt in 0.. {
            let r = {
                let mut guard = self.fd.lock().unwrap_or_else(|p| p.into_inner());
                let (fd, seq) = &mut *guard;
                once(fd, seq, reqs)
            };
            match r {
                Err(Retry::Busy(_)) | Err(Retry::Interrupted) if attempt < RETRIES => {
                    tracing::debug!(?delay, "netlink batch busy, sending it again");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(Retry::Busy(e)) | Err(Retry::Fatal(e)) => return Err(e),
                Err(Retry::Interrupted) => {
                    return Err(request_error(
                        &reqs[reqs.len() - 1],
                        std::io::Error::from_raw_os_error(libc::EINTR),
                    ))
                }
                Ok(out) => return Ok(out),
            }
        }
        unreachable!()
    }
}

enum Retry {
    Busy(NetError),
    Interrupted,
    Fatal(NetError),
}

fn request_error(r: &Request, source: std::io::Error) -> NetError {
    NetError::Request {
        op: r.op,
        ifname: r.ifname.clone(),
        source,
    }
}

/// One try: the batch sent, its replies read until each request is answered (its ack or
/// error, a dump's DONE).
fn once(
    fd: &OwnedFd,
    seq: &mut u32,
    reqs: &[Request],
) -> Result<Vec<Vec<RouteNetlinkMessage>>, Retry> {
    let first = seq.wrapping_add(1);
    let mut buf = Vec::new();
    for (k, r) in reqs.iter().enumerate() {
        let mut m = NetlinkMessage::from(r.msg.clone());
        m.header.flags = NLM_F_REQUEST | r.flags;
        m.header.sequence_number = first.wrapping_add(k as u32);
        m.finalize();
        let at = buf.len();
        buf.resize(at + m.buffer_len(), 0);
        m.serialize(&mut buf[at..]);
    }
    *seq = first.wrapping_add(reqs.len() as u32);
    let fatal = |e: nix::errno::Errno| Retry::Fatal(request_error(&reqs[0], e.into()));
    let sent = send(fd.as_raw_fd(), &buf, MsgFlags::empty()).map_err(fatal)?;
    if sent != buf.len() {
        return Err(fatal(nix::errno::Errno::EMSGSIZE));
    }
    let mut out: Vec<Vec<RouteNetlinkMessage>> = vec![Vec::new(); reqs.len()];
    let mut open: Vec<bool> = reqs
        .iter()
        .map(|r| r.flags & (NLM_F_ACK | NLM_F_DUMP) != 0)
        .collect();
    let (mut failure, mut interrupted) = (None, false);
    let mut rbuf = vec![0u8; 1 << 16];
    while open.iter().any(|&o| o) {
        let n = recv(fd.as_raw_fd(), &mut rbuf, MsgFlags::empty()).map_err(fatal)?;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into().unwrap()) as usize;
            if len < 16 || off + len > n {
                break;
            }
            let raw = &rbuf[off..off + len];
            off += (len + 3) & !3;
            let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) else {
                continue;
            };
            let k = m.header.sequence_number.wrapping_sub(first) as usize;
            if k >= reqs.len() {
                continue; // a reply to an earlier, abandoned try
            }
            interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
            match m.payload {
                NetlinkPayload::InnerMessage(i) => out[k].push(i),
                NetlinkPayload::Error(e) => {
                    open[k] = false;
                    if e.code.is_some() && failure.is_none() {
                        failure = Some((k, e.to_io()));
                    }
                }
                NetlinkPayload::Done(_) => open[k] = false,
                _ => {}
            }
        }
    }
    match failure {
        Some((k, e)) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
            Err(Retry::Busy(request_error(&reqs[k], e)))
        }
        Some((k, e)) => Err(Retry::Fatal(request_error(&reqs[k], e))),
        None if interrupted => Err(Retry::Interrupted),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::LinkMessage;

    /// A batch answers each request: a dump's entries under its own request, and the first
    /// failing request named in the error (it changes nothing: no such link).
    #[tokio::test]
    async fn a_batch_answers_each_request_and_names_the_one_that_failed() {
        let b = Batcher::new().unwrap();
        let dump = Request {
            op: "list links",
            ifname: "*".into(),
            msg: RouteNetlinkMessage::GetLink(LinkMessage::default()),
            flags: NLM_F_DUMP,
        };
        let got = b.send(std::slice::from_ref(&dump)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(!got[0].is_empty(), "a namespace has at least lo");
        let mut gone = LinkMessage::default();
        gone.header.index = 0x7fff_fff0;
        let bad = Request {
            op: "set link up",
            ifname: "lt-vhost-none".into(),
            msg: RouteNetlinkMessage::SetLink(gone),
            flags: NLM_F_ACK,
        };
        let e = b.send(&[bad, dump]).await.unwrap_err();
        assert!(
            e.to_string() == "set link up on lt-vhost-none",
            "{e}: the failing request is named"
        );
    }
}
