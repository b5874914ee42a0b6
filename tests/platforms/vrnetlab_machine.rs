//! Where vrnetlab puts each platform's config CD, how the startup config reaches it and the
//! user network's subnet, checked on `launcher check --json`: IOS-XE's day-0 CD on the IDE
//! secondary master and vSRX's on the primary slave; no `-fw_cfg` copy where a CD or FAT
//! template carries the startup config; Dell OS10's user network on 169.254.127.0/24.

use crate::catalogue::{argvs, values};

#[test]
fn config_cds_sit_where_vrnetlab_puts_them() {
    for (kind, at) in [
        ("cisco_csr1000v", "bus=ide.1,unit=0"),
        ("cisco_c8000v", "bus=ide.1,unit=0"),
        ("cisco_cat9kv", "bus=ide.1,unit=0"),
        ("juniper_vsrx", "bus=ide.0,unit=1"),
    ] {
        let vm = &argvs(kind, "eth1,eth3")[0];
        let cd: Vec<&str> = values(vm, "-device")
            .into_iter()
            .filter(|d| d.starts_with("ide-cd,"))
            .collect();
        assert_eq!(cd.len(), 1, "{kind}: {cd:?}");
        assert!(cd[0].ends_with(at), "{kind}: {cd:?}");
    }
}

#[test]
fn a_template_carrying_the_startup_config_has_no_fw_cfg_copy() {
    for kind in [
        "cisco_csr1000v",
        "cisco_c8000v",
        "cisco_cat9kv",
        "juniper_vsrx",
        "juniper_vjunosrouter",
        "juniper_vjunosswitch",
        "juniper_vjunosevolved",
    ] {
        let vm = &argvs(kind, "eth1")[0];
        assert!(values(vm, "-fw_cfg").is_empty(), "{kind}");
    }
    // Without such a template (nor a typing step), the fw_cfg copy stays.
    assert_eq!(values(&argvs("cisco_asav", "eth1")[0], "-fw_cfg").len(), 1);
}

#[test]
fn dell_os10_user_network_is_vrnetlabs() {
    let vm = &argvs("dell_ftosv", "eth1")[0];
    let nd = values(vm, "-netdev");
    assert!(
        nd[0].starts_with("user,id=mgmt,net=169.254.127.0/24,dhcpstart=169.254.127.15,")
            && nd[0].contains("hostfwd=tcp::22-169.254.127.15:22"),
        "{nd:?}"
    );
}
