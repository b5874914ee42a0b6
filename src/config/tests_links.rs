//! The data links' table tests: CLAB_INTFS as a count of links on any ports, nics.count and
//! nics.names as fixed ports, nics.slots, and each VM's links once the ports present are known.

use super::tests::{pn, MIN};
use super::*;

/// The key an error names.
fn key_of(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("not an invalid value: {other}"),
    }
}

fn ports(links: &[DataLink]) -> Vec<(u32, &str, &str)> {
    links
        .iter()
        .map(|l| (l.index, l.eth.as_str(), l.tap.as_str()))
        .collect()
}

#[test]
fn clab_intfs_counts_links_on_any_ports() {
    let n = pn(MIN, &[("CLAB_INTFS", "2")]).unwrap();
    assert_eq!(
        n.settings.links,
        LinkSpec::AnyIndex {
            n: 2,
            prefix: "eth".into(),
            tap_prefix: "tap".into()
        }
    );
    // Planned as ports 1..2 (what `launcher check` shows) ...
    assert_eq!(
        ports(&n.vms[0].nics.links),
        [(1, "eth1", "tap1"), (2, "eth2", "tap2")]
    );
    // ... and the links are the ports present.
    let found = n.links_present(&[3, 1]).unwrap();
    assert_eq!(ports(&found[0]), [(1, "eth1", "tap1"), (3, "eth3", "tap3")]);
    // More present than counted: every one is a link.
    let found = n.links_present(&[1, 3, 9]).unwrap();
    assert_eq!(found[0].len(), 3);
}

#[test]
fn the_prefix_and_tap_prefix_name_the_ports_found() {
    let text = format!("{MIN}[nics]\ntap_prefix = \"dp\"\n");
    let n = pn(&text, &[("CLAB_INTFS", "1"), ("CLAB_INTF_PREFIX", "ens")]).unwrap();
    let found = n.links_present(&[4]).unwrap();
    assert_eq!(ports(&found[0]), [(4, "ens4", "dp4")]);
}

#[test]
fn a_file_count_and_explicit_names_are_fixed_ports() {
    // nics.count: ports 1..N, as written.
    let n = pn(&format!("{MIN}[nics]\ncount = 2\n"), &[]).unwrap();
    assert_eq!(n.settings.links, LinkSpec::Listed);
    let found = n.links_present(&[1, 3]).unwrap();
    assert_eq!(ports(&found[0]), [(1, "eth1", "tap1"), (2, "eth2", "tap2")]);
    // nics.names wins over CLAB_INTFS, gaps and all.
    let text = format!("{MIN}[nics]\nnames = [\"eth4\", \"eth1\"]\n");
    let n = pn(&text, &[("CLAB_INTFS", "2")]).unwrap();
    assert_eq!(n.settings.links, LinkSpec::Listed);
    assert_eq!(
        ports(&n.vms[0].nics.links),
        [(1, "eth1", "tap1"), (4, "eth4", "tap4")]
    );
    // No links at all: nothing to wait for.
    let n = pn(MIN, &[("CLAB_INTFS", "0")]).unwrap();
    assert_eq!(n.settings.links, LinkSpec::Listed);
    assert!(n.vms[0].nics.links.is_empty());
}

#[test]
fn slots_fix_the_nic_count_and_refuse_ports_above() {
    let slots = |extra: &str| format!("{MIN}[nics]\nslots = 4\n{extra}");
    let n = pn(&slots(""), &[("CLAB_INTFS", "2")]).unwrap();
    assert_eq!(n.vms[0].nics.slots, 4);
    assert_eq!(n.links_present(&[2, 4]).unwrap()[0].len(), 2);
    let e = n.links_present(&[1, 5]).unwrap_err();
    assert!(e.to_string().contains("eth5"), "{e}");
    assert_eq!(key_of(e), "nics.slots");
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (slots(""), vec![("CLAB_INTFS", "5")], "CLAB_INTFS"),
        (slots("count = 5\n"), vec![], "nics.count"),
        (
            slots("names = [\"eth1\", \"eth5\"]\n"),
            vec![],
            "nics.names[1]",
        ),
        (format!("{MIN}[nics]\nslots = 513\n"), vec![], "nics.slots"),
    ];
    for (text, env, want) in cases {
        let e = pn(&text, &env).unwrap_err();
        assert_eq!(key_of(e), want, "{text}");
    }
}

const TWO: &str = r#"
[[vm]]
name = "cp"
data = "1"
[vm.kernel]
path = "k"
[[vm]]
name = "lc"
data = "2-4,7"
[vm.kernel]
path = "k2"
[vm.console]
telnet_port = 5010
"#;

#[test]
fn several_vms_take_the_ports_present_their_data_selects() {
    let n = pn(TWO, &[("CLAB_INTFS", "2")]).unwrap();
    // Planned: eth1 on cp, eth2 on lc.
    assert_eq!(n.vms[1].nics.ports, Ports::Only(vec![2, 3, 4, 7]));
    let found = n.links_present(&[1, 7]).unwrap();
    assert_eq!(ports(&found[0]), [(1, "eth1", "tap1")]);
    assert_eq!(ports(&found[1]), [(7, "eth7", "tap7")]);
    let found = n.links_present(&[3, 4]).unwrap();
    assert!(found[0].is_empty());
    assert_eq!(found[1].len(), 2);
    // A port present that no VM takes.
    let e = n.links_present(&[1, 5]).unwrap_err();
    assert!(e.to_string().contains("eth5"), "{e}");
    assert_eq!(key_of(e), "vm[].data");
    // "all" takes every port.
    let all = TWO
        .replace("data = \"2-4,7\"", "data = \"all\"")
        .replace("data = \"1\"", "data = \"none\"");
    let n = pn(&all, &[("CLAB_INTFS", "2")]).unwrap();
    assert_eq!(n.links_present(&[5, 40]).unwrap()[1].len(), 2);
    // With any ports possible, two VMs cannot both take one port number, even one beyond
    // CLAB_INTFS.
    let both = TWO.replace("data = \"1\"", "data = \"1,7\"");
    let e = pn(&both, &[("CLAB_INTFS", "2")]).unwrap_err();
    assert!(e.to_string().contains("port 7 is also vm[0]'s"), "{e}");
    assert_eq!(key_of(e), "vm[1].data");
    // With fixed ports (nics.count) only the planned ports must be on one VM, as before.
    let fixed = format!("[nics]\ncount = 2\n{both}");
    assert!(pn(&fixed, &[]).is_ok());
}
