//! Taps: creating them through /dev/net/tun (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) and owning their
//! fds for the launcher's whole life, so a qemu restart finds the same tap and the same wiring.
//! Link settings (MTU, up) belong to `netlink`, the wiring to `tc`.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const TUNSETIFF: libc::c_ulong = 0x400454ca;
const TUNSETPERSIST: libc::c_ulong = 0x400454cb;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun for {tap} (run the container with --device /dev/net/tun and --cap-add NET_ADMIN)")]
    OpenTun { tap: String, source: std::io::Error },
    #[error("cannot create tap {tap}")]
    Create { tap: String, source: std::io::Error },
    #[error("cannot make tap {tap} persistent")]
    Persist { tap: String, source: std::io::Error },
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open tap queue. Dropping it closes the fd (and removes a non-persistent tap once every
/// queue is closed).
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    pub fd: OwnedFd,
}

/// Opens (creating if needed) tap `name`. With `multi_queue`, call once per queue.
pub fn open(name: &str, multi_queue: bool) -> Result<Tap, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|source| TapError::OpenTun {
            tap: name.into(),
            source,
        })?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    if multi_queue {
        req.flags |= IFF_MULTI_QUEUE;
    }
    let n = name.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is, for the duration of the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(TapError::Create {
            tap: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Tap {
        name: name.into(),
        fd: file.into(),
    })
}

/// Marks the tap persistent (it outlives this fd), for `launcher wire` users who run qemu
/// or libvirt themselves.
pub fn set_persistent(tap: &Tap, on: bool) -> Result<(), TapError> {
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    let rc = unsafe { libc::ioctl(tap.fd.as_raw_fd(), TUNSETPERSIST as _, on as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::Persist {
            tap: tap.name.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
