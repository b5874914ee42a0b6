//! Datapath tests in throwaway namespaces: frame fidelity through our tc pipe (against a Linux
//! bridge as the reference) and through the macvtap datapath, `launcher wire`/`unwire`
//! behaviour, and the real tinylinux guest on both datapaths (tests/datapath_vm.rs).

mod common;
use common::*;
use std::time::Duration;

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn frame(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn slow(sub: u8) -> [u8; 6] {
    [0x01, 0x80, 0xc2, 0x00, 0x00, sub]
}

/// The corpus: (name, frame). Every frame carries a unique marker so it can be matched.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut c = vec![
        ("STP BPDU", {
            // 802.3 length + LLC 42 42 03 + config BPDU
            let mut f = slow(0x00).to_vec();
            f.extend_from_slice(&PEER_MAC);
            f.extend_from_slice(&[0x00, 0x26, 0x42, 0x42, 0x03, 0, 0, 0, 0, 0]);
            f.extend_from_slice(b"STP-marker");
            f.resize(60, 0);
            f
        }),
        (
            "PAUSE",
            frame(
                slow(0x01),
                0x8808,
                &[0x00, 0x01, 0xff, 0xff, b'P', b'A', b'U', b'S', b'E'],
            ),
        ),
        (
            "LACP",
            frame(
                slow(0x02),
                0x8809,
                &[0x01, 0x01, 0x01, 0x14, b'L', b'A', b'C', b'P'],
            ),
        ),
        (
            "EAPOL",
            frame(
                slow(0x03),
                0x888e,
                &[0x01, 0x01, 0x00, 0x00, b'E', b'A', b'P'],
            ),
        ),
        (
            "LLDP",
            frame(
                slow(0x0e),
                0x88cc,
                &[0x02, 0x07, 0x04, b'L', b'L', b'D', b'P'],
            ),
        ),
        (
            "802.1Q",
            frame(
                [0x02, 0, 0, 0, 0, 0x02],
                0x8100,
                &[0x00, 0x64, 0x08, 0x00, b'V', b'L', b'A', b'N'],
            ),
        ),
        (
            "QinQ",
            frame(
                [0x02, 0, 0, 0, 0, 0x02],
                0x88a8,
                &[
                    0x00, 0xc8, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00, b'Q', b'i', b'n', b'Q',
                ],
            ),
        ),
        (
            "unicast IPv4",
            frame(
                [0x02, 0, 0, 0, 0, 0x02],
                0x0800,
                &[
                    0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, b'U',
                ],
            ),
        ),
        (
            "broadcast ARP",
            frame(
                [0xff; 6],
                0x0806,
                &[
                    0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 192,
                    0, 2, 2,
                ],
            ),
        ),
        (
            "IPv6 multicast",
            frame(
                [0x33, 0x33, 0, 0, 0, 1],
                0x86dd,
                &[0x60, 0, 0, 0, 0, 8, 58, 255, b'V', b'6'],
            ),
        ),
    ];
    let mut jumbo = frame([0x02, 0, 0, 0, 0, 0x02], 0x88b5, b"JUMBO");
    jumbo.resize(9000, 0xa5);
    c.push(("9000-byte jumbo", jumbo));
    c
}

fn delivered(sent: &[(&'static str, Vec<u8>)], got: &[Vec<u8>]) -> Vec<(&'static str, bool)> {
    sent.iter()
        .map(|(n, f)| (*n, got.iter().any(|g| g == f)))
        .collect()
}

/// Sends the corpus from the peer towards the VM end, then from the VM end towards the peer;
/// what arrived at each.
fn both_ways(
    corpus: &[(&'static str, Vec<u8>)],
    peer: &PacketSock,
    vm: &TapSock,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    for (_, f) in corpus {
        peer.send(f);
    }
    let at_vm = vm.recv_all(Duration::from_millis(300));
    for (_, f) in corpus {
        vm.send(f);
    }
    (at_vm, peer.recv_all(Duration::from_millis(300)))
}

/// Every frame crossed both ways byte-identical (but those named in `not_to_vm`, which must
/// not reach the VM), and nothing extra reached the VM.
fn all_crossed(
    corpus: &[(&'static str, Vec<u8>)],
    at_vm: &[Vec<u8>],
    at_peer: &[Vec<u8>],
    not_to_vm: &[&str],
) {
    let (to_vm, from_vm) = (delivered(corpus, at_vm), delivered(corpus, at_peer));
    for i in 0..corpus.len() {
        assert_eq!(
            to_vm[i].1,
            !not_to_vm.contains(&corpus[i].0),
            "{}: reached the VM byte-identical or not, against what this datapath does",
            corpus[i].0
        );
        assert!(
            from_vm[i].1,
            "{} from the VM did not reach the peer byte-identical",
            corpus[i].0
        );
    }
    let ours = at_vm.iter().filter(|g| corpus.iter().any(|(_, f)| f == *g));
    assert_eq!(
        ours.count(),
        corpus.len() - not_to_vm.len(),
        "frames duplicated on the way"
    );
}

/// The second datapath (CONNECTION_MODE=macvtap): the launcher's passthru macvtap on eth1,
/// its fd read and written as qemu would. The same corpus, every frame both ways (PAUSE only
/// from the VM); both ends promiscuous and all-multicast. (The sysfs the launcher reads the device number from is
/// mounted in the namespace: this thread only entered it.)
#[test]
fn every_frame_crosses_the_macvtap_unchanged() {
    let ns = Netns::new("mvfid");
    ns.ip("link add peer address 02:00:00:00:00:01 mtu 9500 type veth peer name eth1 mtu 9500");
    ns.ip("link set peer up");
    let sys = ns.dir.join("sys");
    std::fs::create_dir_all(&sys).unwrap();
    let _g = ns.enter();
    let _sysfs = Sysfs::mount(&sys);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mv = rt
        .block_on(async {
            let nl = ::launcher::net::Netlink::new()?;
            let eth = nl.link("eth1").await?.expect("eth1");
            ::launcher::net::macvtap::create_with_sysfs(&nl, &eth, "mvtap1", 1, &sys).await
        })
        .unwrap_or_else(|e| panic!("macvtap: {}", ::launcher::net::chain(&e)));
    assert_eq!(mv.link.name, "mvtap1");
    for dev in ["eth1", "mvtap1"] {
        let flags = ns.ip(&format!("link show {dev}"));
        assert!(
            flags.contains("PROMISC") && flags.contains("ALLMULTI") && flags.contains(",UP"),
            "{flags}"
        );
    }
    assert!(ns
        .ip("-d link show mvtap1")
        .contains("macvtap mode passthru"));
    let vm = TapSock::from_tap(mv.queues.into_iter().next().unwrap());
    let peer = PacketSock::open("peer");
    std::thread::sleep(Duration::from_millis(200));
    peer.recv_all(Duration::from_millis(100));
    vm.recv_all(Duration::from_millis(100));
    let corpus = corpus();
    let (at_vm, at_peer) = both_ways(&corpus, &peer, &vm);
    for (i, (n, ok)) in delivered(&corpus, &at_vm).iter().enumerate() {
        println!(
            "{n:<18} to VM {ok:>5} from VM {}",
            delivered(&corpus, &at_peer)[i].1
        );
    }
    // The kernel's macvlan never forwards 802.3x PAUSE (flow control, consumed by a real MAC)
    // to its ports; everything else crosses as on the tc pipe.
    all_crossed(&corpus, &at_vm, &at_peer, &["PAUSE"]);
}

/// A sysfs mounted at a folder by a thread inside a network namespace (it shows that
/// namespace's links), unmounted on drop.
struct Sysfs(std::ffi::CString);

impl Sysfs {
    fn mount(at: &std::path::Path) -> Self {
        let c = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
        let t = std::ffi::CString::new("sysfs").unwrap();
        // SAFETY: NUL-terminated strings alive for the call; no data argument.
        let rc = unsafe { libc::mount(t.as_ptr(), c.as_ptr(), t.as_ptr(), 0, std::ptr::null()) };
        assert_eq!(rc, 0, "mount sysfs: {}", std::io::Error::last_os_error());
        Sysfs(c)
    }
}

impl Drop for Sysfs {
    fn drop(&mut self) {
        // SAFETY: a NUL-terminated path alive for the call.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn every_frame_crosses_the_tc_pipe_unchanged_where_a_bridge_drops_some() {
    let ns = Netns::new("fid");
    // Our pipe: peer <-veth-> eth1 <-tc-> tap1 (a VM's tap, read and written by the test).
    ns.ip("link add peer address 02:00:00:00:00:01 mtu 9500 type veth peer name eth1 mtu 9500");
    ns.ip("link set peer up");
    let out = ns
        .launcher(&["wire", "--mtu", "9500", "eth1=tap1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wire: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("eth1") && line.contains("tap1") && line.contains("wired both ways"),
        "{line}"
    );
    // The reference: a Linux bridge between b1 and b2.
    ns.ip("link add br0 type bridge");
    ns.ip("link add b1 address 02:00:00:00:00:01 mtu 9500 type veth peer name bp1 mtu 9500");
    ns.ip("link add b2 mtu 9500 type veth peer name bp2 mtu 9500");
    ns.ip("link set br0 mtu 9500");
    // A plain bridge: no br_netfilter (if the module is loaded, it would validate and filter
    // IP headers on top of what the bridge itself does).
    ns.exec(
        "for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e $f ] && echo 0 > $f; done; true",
    );
    for l in ["bp1", "bp2"] {
        ns.ip(&format!("link set {l} master br0"));
    }
    for l in ["br0", "b1", "b2", "bp1", "bp2"] {
        ns.ip(&format!("link set {l} up"));
    }
    std::thread::sleep(Duration::from_millis(200));

    let _g = ns.enter();
    let corpus = corpus();
    let peer = PacketSock::open("peer");
    let tap = TapSock::attach("tap1");
    // Drain whatever the kernel sent on its own (IPv6 router solicitations and such).
    peer.recv_all(Duration::from_millis(100));
    tap.recv_all(Duration::from_millis(100));

    let (at_vm, at_peer) = both_ways(&corpus, &peer, &tap);

    // Through the bridge.
    let b1 = PacketSock::open("b1");
    let b2 = PacketSock::open("b2");
    b2.recv_all(Duration::from_millis(100));
    for (_, f) in &corpus {
        b1.send(f);
    }
    let via_bridge = b2.recv_all(Duration::from_millis(300));

    let to_vm = delivered(&corpus, &at_vm);
    let from_vm = delivered(&corpus, &at_peer);
    let bridge = delivered(&corpus, &via_bridge);
    println!(
        "{:<18} {:>8} {:>8} {:>8}",
        "frame", "to VM", "from VM", "bridge"
    );
    for i in 0..corpus.len() {
        println!(
            "{:<18} {:>8} {:>8} {:>8}",
            corpus[i].0, to_vm[i].1, from_vm[i].1, bridge[i].1
        );
    }
    all_crossed(&corpus, &at_vm, &at_peer, &[]);
    // What a Linux bridge eats, measured: the reason this project exists.
    let dropped: Vec<&str> = bridge
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    for must_drop in ["PAUSE", "LACP", "EAPOL", "LLDP"] {
        assert!(
            dropped.contains(&must_drop),
            "the bridge passed {must_drop}: dropped only {dropped:?}"
        );
    }
    for passes in ["unicast IPv4", "broadcast ARP", "802.1Q"] {
        assert!(
            !dropped.contains(&passes),
            "the bridge reference is broken: it dropped {passes}"
        );
    }
    println!("a Linux bridge dropped: {dropped:?}");
}

#[test]
fn wire_is_idempotent_and_unwire_removes_it() {
    let ns = Netns::new("idem");
    ns.ip("link add peer type veth peer name eth1");
    for _ in 0..3 {
        let out = ns.launcher(&["wire", "eth1=tap9"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let filters = ns.exec("tc filter show dev eth1 ingress").stdout;
    let filters = String::from_utf8_lossy(&filters);
    assert_eq!(
        filters.matches("mirred").count(),
        1,
        "wiring three times must leave one filter:\n{filters}"
    );
    let tapf =
        String::from_utf8_lossy(&ns.exec("tc filter show dev tap9 ingress").stdout).into_owned();
    assert!(tapf.contains("Redirect to device eth1"), "{tapf}");
    assert_eq!(tapf.matches("mirred").count(), 1, "{tapf}");
    let mtu = ns.ip("-o link show tap9");
    assert!(
        mtu.contains("mtu 1500"),
        "tap MTU follows eth1 when --mtu is not given: {mtu}"
    );

    let out = ns.launcher(&["unwire", "eth1=tap9"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = String::from_utf8_lossy(&ns.exec("tc qdisc show dev eth1").stdout).into_owned();
    assert!(!q.contains("ingress"), "{q}");
}

#[test]
fn wire_with_bad_or_missing_names_exits_2_and_leaves_nothing() {
    let ns = Netns::new("bad");
    ns.ip("link add peer type veth peer name eth1");
    for args in [
        vec!["wire", "eth1=tap1", "eth7=tap7"],
        vec!["wire", "eth1"],
        vec!["wire", "eth1=eth1"],
        vec!["wire", "eth1=tap1", "eth1=tap2"],
        vec!["wire", "eth1=this-name-is-too-long"],
        vec!["unwire", "eth1=tap-none"],
    ] {
        let out = ns.launcher(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("launcher:"), "{args:?}: {err}");
    }
    let links = ns.ip("-o link show");
    assert!(
        !links.contains("tap1") && !links.contains("tap7"),
        "nothing half done: {links}"
    );
    let q = String::from_utf8_lossy(&ns.exec("tc qdisc show dev eth1").stdout).into_owned();
    assert!(!q.contains("ingress"), "nothing half wired: {q}");
}
