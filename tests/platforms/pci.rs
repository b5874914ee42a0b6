//! No two devices of a platform's VM share a PCI address (issue 13's padding-NIC rule:
//! vrnetlab's cat9kv pads to its minimum of 8 data NICs with a second counter, and a padding
//! NIC can land on a data NIC's address, so the node does not boot, vrnetlab issue 346).
//! Checked on every platform's argv for the standard and sparse links, and on cat9kv for the
//! link sets that broke vrnetlab (a high port alone, gaps, one link).

use super::catalogue::{argvs, kinds};
use std::collections::BTreeMap;

/// Each `-device`'s PCI address (bus, addr) when it gives one, with the device text.
fn addresses(argv: &[String]) -> Vec<((String, String), String)> {
    super::catalogue::values(argv, "-device")
        .into_iter()
        .filter_map(|d| {
            let field = |k: &str| {
                d.split(',')
                    .find_map(|f| f.strip_prefix(k))
                    .map(str::to_string)
            };
            let addr = field("addr=")?;
            // qemu's default bus for a device without bus= is the root bus pci.0.
            let bus = field("bus=").unwrap_or_else(|| "pci.0".into());
            // addr=0x3 and addr=0x3.0 are the same slot, function 0.
            let addr = addr.trim_end_matches(".0").to_string();
            Some(((bus, addr), d.to_string()))
        })
        .collect()
}

/// The devices that share an address with an earlier one.
fn clashes(argv: &[String]) -> Vec<String> {
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    for (at, dev) in addresses(argv) {
        if let Some(first) = seen.get(&at) {
            out.push(format!("{dev} takes {}:{} of {first}", at.0, at.1));
        } else {
            seen.insert(at, dev);
        }
    }
    out
}

#[test]
fn the_clash_check_finds_a_padding_nic_on_a_data_nics_address() {
    // The check itself: vrnetlab's issue-346 argv shape (a padding NIC on eth1's address).
    let argv: Vec<String> = [
        "-device",
        "virtio-net-pci,netdev=p01,mac=0c:00:00:00:00:01,bus=pci.1,addr=0x2",
        "-device",
        "virtio-net-pci,mac=0c:00:00:00:00:00,bus=pci.1,addr=0x2",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(clashes(&argv).len(), 1, "{argv:?}");
}

#[test]
fn no_platform_puts_two_devices_on_one_pci_address() {
    let mut bad = Vec::new();
    for kind in kinds() {
        for links in ["eth1,eth2,eth3,eth4", "eth1,eth3"] {
            for (vm, argv) in argvs(&kind, links).iter().enumerate() {
                for c in clashes(argv) {
                    bad.push(format!("{kind} --links {links} vm {vm}: {c}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn cat9kv_padding_nics_never_take_a_data_nics_address() {
    for links in [
        "eth1",
        "eth9",
        "eth2,eth9",
        "eth1,eth3,eth5",
        "eth8",
        "eth3",
    ] {
        let vm = &argvs("cisco_cat9kv", links)[0];
        assert!(clashes(vm).is_empty(), "--links {links}: {:?}", clashes(vm));
        // Always 9 data NICs (at least 8, vrnetlab's minimum), eth1..eth9 at pci.1 0x2..0xa:
        // the present ports keep their own address whatever else is padded.
        let data: Vec<_> = addresses(vm)
            .into_iter()
            .filter(|((bus, _), _)| bus == "pci.1")
            .collect();
        assert_eq!(data.len(), 9, "--links {links}: {data:?}");
        for port in links.split(',') {
            let n: usize = port.trim_start_matches("eth").parse().unwrap();
            let want = format!("addr={:#x}", n + 1);
            assert!(
                data.iter()
                    .any(|(_, d)| d.contains(&format!("netdev=net{n},")) && d.contains(&want)),
                "--links {links}: {port} not at {want}: {data:?}"
            );
        }
    }
}
