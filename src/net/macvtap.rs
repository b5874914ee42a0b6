//! The second datapath (CONNECTION_MODE=macvtap): a passthru macvtap on ethN, promiscuous and
//! all-multicast (so reserved multicast such as LACP, LLDP and STP reaches the guest), opened
//! as a character device `/dev/tapIFINDEX` (made from sysfs when /dev lacks it, as in a
//! container), one open per queue. Its fds go to qemu as a tap's would. The macvtap is a child
//! of ethN: it dies with it. Never wires tc and never talks to qemu.

use crate::net::tap::Tap;
use crate::net::{LinkInfo, NetError, Netlink};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVtap, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The macvtap's name for a slot whose tap would be `tap` ("tap1" -> "mvtap1"), at most 15
/// characters.
pub fn name_for(tap: &str) -> String {
    let mut n = format!("mv{tap}");
    n.truncate(libc::IFNAMSIZ - 1);
    n
}

/// A live macvtap: its link and its open queues (in the [`Tap`] shape qemu's fds take).
#[derive(Debug)]
pub struct Macvtap {
    pub link: LinkInfo,
    pub queues: Vec<Tap>,
}

/// Creates the passthru macvtap `name` on `eth` (a leftover of that name is deleted first),
/// sets both promiscuous, all-multicast and up (the macvtap at ethN's MTU), and opens
/// `queues` fds on it.
pub async fn create(
    nl: &Netlink,
    eth: &LinkInfo,
    name: &str,
    queues: u32,
) -> Result<Macvtap, NetError> {
    create_with_sysfs(nl, eth, name, queues, Path::new("/sys")).await
}

/// [`create`], reading the device number from the sysfs mounted at `sys` (one mounted in the
/// macvtap's network namespace: a process that only entered the namespace sees another's at
/// /sys).
pub async fn create_with_sysfs(
    nl: &Netlink,
    eth: &LinkInfo,
    name: &str,
    queues: u32,
    sys: &Path,
) -> Result<Macvtap, NetError> {
    if let Some(old) = nl.link(name).await? {
        nl.delete(old.index, name).await?;
    }
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::Link(eth.index));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        NlLinkInfo::Kind(InfoKind::MacVtap),
        NlLinkInfo::Data(InfoData::MacVtap(vec![InfoMacVtap::Mode(
            MacVlanMode::Passthrough,
        )])),
    ]));
    nl.request(
        "create macvtap",
        name,
        RouteNetlinkMessage::NewLink(m),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
    .await?;
    let link = nl
        .link(name)
        .await?
        .ok_or_else(|| NetError::NoSuchLink(name.into()))?;
    let opened = async {
        for (index, ifname) in [(eth.index, eth.name.as_str()), (link.index, name)] {
            set_promisc_allmulti_up(nl, index, ifname).await?;
        }
        let dev = char_device(sys, name, link.index)?;
        let queues = (0..queues.max(1))
            .map(|_| open(&dev, name))
            .collect::<Result<Vec<_>, _>>();
        if queues.is_err() {
            let _ = std::fs::remove_file(&dev);
        }
        queues
    };
    match opened.await {
        Ok(queues) => Ok(Macvtap { link, queues }),
        Err(e) => {
            // Nothing half done: the macvtap goes again.
            let _ = nl.delete(link.index, name).await;
            Err(e)
        }
    }
}

/// IFF_UP | IFF_PROMISC | IFF_ALLMULTI on link `index`.
async fn set_promisc_allmulti_up(nl: &Netlink, index: u32, ifname: &str) -> Result<(), NetError> {
    let flags = LinkFlags::Up | LinkFlags::Promisc | LinkFlags::Allmulti;
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = flags;
    m.header.change_mask = flags;
    nl.request(
        "set promiscuous, all-multicast and up",
        ifname,
        RouteNetlinkMessage::SetLink(m),
        NLM_F_ACK,
    )
    .await?;
    Ok(())
}

fn io(op: &'static str, ifname: &str, source: std::io::Error) -> NetError {
    NetError::Request {
        op,
        ifname: ifname.into(),
        source,
    }
}

/// `/dev/tapIFINDEX`, made (a character node, 0600) from the numbers sysfs gives when it is
/// missing or names another device (a stale node of an earlier macvtap with that index).
fn char_device(sys: &Path, name: &str, index: u32) -> Result<PathBuf, NetError> {
    let sys = sys.join(format!("class/net/{name}/macvtap/tap{index}/dev"));
    let text =
        std::fs::read_to_string(&sys).map_err(|e| io("read macvtap device number", name, e))?;
    let (major, minor) = parse_dev(&text).ok_or_else(|| {
        io(
            "read macvtap device number",
            name,
            std::io::Error::other(format!("{}: unexpected {:?}", sys.display(), text.trim())),
        )
    })?;
    let dev = PathBuf::from(format!("/dev/tap{index}"));
    let want = libc::makedev(major, minor);
    match std::fs::metadata(&dev) {
        Ok(m) if m.file_type().is_char_device() && m.rdev() == want => return Ok(dev),
        Ok(_) => std::fs::remove_file(&dev).map_err(|e| io("remove stale /dev/tapN", name, e))?,
        Err(_) => {}
    }
    mknod(&dev, want).map_err(|e| io("create /dev/tapN", name, e))?;
    Ok(dev)
}

/// "MAJOR:MINOR\n" as sysfs writes a device number.
fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn mknod(path: &Path, dev: libc::dev_t) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path alive for the call; mknod reads it and the numbers.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One queue of the macvtap (each open of its device adds one).
fn open(dev: &Path, name: &str) -> Result<Tap, NetError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dev)
        .map_err(|e| {
            io(
                "open the macvtap device (the container needs it allowed: privileged, or a device cgroup rule for its major)",
                name,
                e,
            )
        })?;
    Ok(Tap {
        name: name.into(),
        fd: f.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_device_numbers() {
        assert_eq!(name_for("tap1"), "mvtap1");
        assert_eq!(name_for("tap-very-long-name"), "mvtap-very-long");
        assert_eq!(parse_dev("241:3\n"), Some((241, 3)));
        assert_eq!(parse_dev("241\n"), None);
        assert_eq!(parse_dev("x:1"), None);
    }
}
