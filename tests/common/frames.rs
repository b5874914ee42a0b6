//! Raw frames in and out of a namespace's interfaces: an AF_PACKET socket bound to one
//! interface (VLAN tags the kernel lifted out put back), and a tap read and written the way a
//! VM does, opened with the launcher's own `launcher::net::tap`. Both live in the namespace
//! of the thread that opens them (see `Netns::enter`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Whether `fd` has something to read within `within`.
fn readable(fd: &OwnedFd, within: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(within.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// The interface index of `name` in the current thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i != 0, "no interface {name} in this namespace");
    i
}

/// `setsockopt(fd, level, name, &value)` for an int option.
fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: the option value is a c_int that lives across the call; its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// A raw AF_PACKET socket bound to one interface (in the current thread's namespace), with
/// PACKET_AUXDATA so VLAN tags the kernel lifted out of the frame can be put back.
pub struct PacketSock {
    fd: OwnedFd,
    ifindex: u32,
}

const ETH_P_ALL: u16 = 0x0003;

impl PacketSock {
    pub fn open(ifname: &str) -> Self {
        let ifindex = ifindex(ifname);
        // SAFETY: socket takes no pointers; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        assert!(
            raw >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_ALL.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: `sa` is a sockaddr_ll of the size passed, alive across the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sa).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind to {ifname}: {}",
            std::io::Error::last_os_error()
        );
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1);
        set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        PacketSock { fd, ifindex }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is valid for `frame.len()` bytes across the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            usize::try_from(n).ok(),
            Some(frame.len()),
            "send on ifindex {}: {}",
            self.ifindex,
            std::io::Error::last_os_error()
        );
    }

    /// Frames received (not our own outgoing ones) until `quiet` passes with nothing new.
    pub fn recv_all(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let mut cbuf = [0u64; 32];
        while readable(&self.fd, quiet) {
            // SAFETY: sockaddr_ll and msghdr are plain data; all zeroes is a valid value.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = std::ptr::from_mut(&mut sa).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cbuf);
            // SAFETY: every pointer in `msg` (name, iov -> buf, control) points at a live
            // buffer of the size given, for the duration of the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) };
            let n = usize::try_from(n)
                .unwrap_or_else(|_| panic!("recvmsg: {}", std::io::Error::last_os_error()));
            if sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut frame = buf[..n].to_vec();
            if let Some(tag) = vlan_tag(&msg) {
                frame.splice(12..12, tag);
            }
            out.push(frame);
        }
        out
    }
}

/// The VLAN tag (TPID + TCI, as on the wire) the kernel handed over as PACKET_AUXDATA
/// metadata instead of leaving it in the frame, if any.
fn vlan_tag(msg: &libc::msghdr) -> Option<[u8; 4]> {
    // SAFETY: `msg` was filled by recvmsg, so its control buffer holds well-formed cmsgs of
    // msg_controllen bytes; CMSG_FIRSTHDR/NXTHDR stay inside it, and a PACKET_AUXDATA cmsg's
    // data is a tpacket_auxdata (read unaligned: the buffer promises no alignment for it).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    let [a, b] = tpid.to_be_bytes();
                    let [c, d] = aux.tp_vlan_tci.to_be_bytes();
                    return Some([a, b, c, d]);
                }
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// The virtio-net header the launcher's taps carry in front of every frame (IFF_VNET_HDR, the
/// kernel's default size): what qemu reads and writes too.
const VNET_HDR_LEN: usize = 10;

/// A tap opened the way the VM's qemu opens it (`launcher::net::tap::open`: IFF_TAP, no
/// packet info, a virtio-net header), in the current thread's namespace: what we write the
/// "VM" sends; what we read the "VM" receives. The header is added and stripped here, so
/// callers see plain Ethernet frames.
pub struct TapSock {
    tap: launcher::net::tap::Tap,
}

impl TapSock {
    pub fn attach(name: &str) -> Self {
        let tap = launcher::net::tap::open(name, false).unwrap_or_else(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
            panic!("attach tap {name}: {e}{}", cause.unwrap_or_default())
        });
        TapSock { tap }
    }

    /// An fd the launcher opened (a macvtap queue: the same virtio-net header).
    pub fn from_tap(tap: launcher::net::tap::Tap) -> Self {
        TapSock { tap }
    }

    pub fn send(&self, frame: &[u8]) {
        // No offloads asked for: an all-zero header (no checksum help, no GSO).
        let mut b = vec![0u8; VNET_HDR_LEN];
        b.extend_from_slice(frame);
        // SAFETY: `b` is valid for `b.len()` bytes across the call.
        let n = unsafe { libc::write(self.tap.fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        assert_eq!(
            usize::try_from(n).ok(),
            Some(b.len()),
            "tap write: {}",
            std::io::Error::last_os_error()
        );
    }

    pub fn recv_all(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536 + VNET_HDR_LEN];
        while readable(&self.tap.fd, quiet) {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes across the call.
            let n =
                unsafe { libc::read(self.tap.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let n = usize::try_from(n)
                .unwrap_or_else(|_| panic!("tap read: {}", std::io::Error::last_os_error()));
            assert!(
                n >= VNET_HDR_LEN,
                "tap read {n} bytes: shorter than the header"
            );
            // gso_type (byte 1) NONE: one whole frame, not a segment train to be cut.
            assert_eq!(
                buf[1], 0,
                "the tap handed over a GSO frame (no offloads were set)"
            );
            out.push(buf[VNET_HDR_LEN..n].to_vec());
        }
        out
    }
}
