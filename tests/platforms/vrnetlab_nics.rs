//! Where vrnetlab puts each platform's dummy NICs and bridges, checked on `launcher check
//! --json`: dummies on the root bus right after management (and the internal NIC), data NIC 1
//! at the first bridge's first slot (pci.1 0x2); a VM without data ports has no bridge and no
//! dummy (vMX's VCP, vQFX's PFE).

use crate::catalogue::{argvs, values};

/// The `-device` values of VM `vm` of `kind` with eth1 and eth3 present.
fn devices(kind: &str, vm: usize) -> Vec<String> {
    let all = argvs(kind, "eth1,eth3");
    values(&all[vm], "-device")
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The NICs (root bus and bridges) in argv order, without disks and controllers.
fn nics(dev: &[String]) -> Vec<&str> {
    dev.iter()
        .map(String::as_str)
        .filter(|d| d.contains("mac=") || d.starts_with("pci-bridge"))
        .collect()
}

#[test]
fn dummies_sit_on_the_root_bus_after_management_as_vrnetlab_puts_them() {
    // (kind, vm, dummy models, internal NICs before them)
    let cases: [(&str, usize, &[&str], usize); 5] = [
        ("cisco_xrv9k", 0, &["virtio-net-pci", "virtio-net-pci"], 0),
        ("cisco_ftdv", 0, &["virtio-net-pci"], 0),
        ("huawei_vrp", 0, &["virtio-net-pci"], 0),
        ("juniper_vqfx", 0, &["e1000"], 1),
        ("juniper_vmx", 1, &["virtio-net-pci"], 1),
    ];
    for (kind, vm, dummies, internal) in cases {
        let dev = devices(kind, vm);
        let n = nics(&dev);
        assert!(n[0].contains("netdev=mgmt"), "{kind}: {n:?}");
        for (k, model) in dummies.iter().enumerate() {
            let d = n[1 + internal + k];
            assert!(
                d.starts_with(&format!("{model},id=dummy{}", k + 1)) && !d.contains("bus="),
                "{kind}: {n:?}"
            );
        }
        assert!(
            n[1 + internal + dummies.len()].starts_with("pci-bridge,chassis_nr=1"),
            "{kind}: {n:?}"
        );
        let eth1 = n.iter().find(|d| d.contains("netdev=net1,")).unwrap();
        assert!(eth1.ends_with(",bus=pci.1,addr=0x2"), "{kind}: {eth1}");
    }
}

#[test]
fn a_vm_without_data_ports_has_no_bridge_and_no_dummy() {
    for (kind, vm) in [("juniper_vmx", 0), ("juniper_vqfx", 1)] {
        let dev = devices(kind, vm);
        let n = nics(&dev);
        assert!(
            n.iter()
                .all(|d| !d.starts_with("pci-bridge") && !d.contains("id=dummy")),
            "{kind} vm {vm}: {n:?}"
        );
    }
}
