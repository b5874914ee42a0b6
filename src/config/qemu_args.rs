//! The qemu arguments a config adds (`vm.extra_args`, `QEMU_ADDITIONAL_ARGS`): refused when they
//! would break supervision. Owns the list of refused options and the ids the launcher gives
//! its own chardevs, netdevs, drives and devices (the ones `qemu::argv` writes: kept in step by
//! a test over the golden argv files). Never rewrites an argument: it is appended as given, or
//! the config is refused.

/// Options refused whatever their value, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "daemonize",
        "qemu would fork away from the launcher, which supervises the process it started",
    ),
    ("qmp", MONITOR),
    ("qmp-pretty", MONITOR),
    ("monitor", MONITOR),
    ("mon", MONITOR),
    (
        "serial",
        "the launcher owns the serial ports (console.extra_serials adds ttyS1 to ttyS3)",
    ),
    (
        "S",
        "the guest would stay paused: the launcher never resumes it, so vm.boot_timeout kills it",
    ),
    (
        "incoming",
        "the guest would wait for an incoming migration that never comes",
    ),
    ("no-shutdown", NO_SHUTDOWN),
    (
        "sandbox",
        "the launcher owns qemu's seccomp filter: vm.sandbox turns it on (the default) or off",
    ),
];
const MONITOR: &str = "the launcher owns qemu's monitor (QMP on its socket in paths.run_dir)";
const NO_SHUTDOWN: &str =
    "a guest powering off would leave qemu running, and the launcher waits for qemu to exit";

/// Options whose value names an object with an id (or a block node name).
const WITH_ID: &[&str] = &["chardev", "netdev", "nic", "device", "drive", "blockdev"];

/// The launcher's own ids: exact names, and prefixes followed by a number.
const OWN_IDS: &[&str] = &["mgmt", "scsi0", "ahci0", "xhci"];
const OWN_ID_PREFIXES: &[&str] = &[
    "serial",
    "int",
    "net",
    "disk",
    "pci.",
    "reserved",
    "dummy",
    "placeholder",
];

/// What the error shows of the launcher's ids.
pub(super) const OWN_IDS_SHOWN: &str =
    "serial0-3, mgmt, int0.., net1.., disk0.., scsi0, ahci0, xhci, pci.1.., reserved1.., dummy1.., placeholder1..";

/// The first argument of `args` that breaks supervision: its index and why.
pub(super) fn refused(args: &[String]) -> Option<(usize, String)> {
    for (i, arg) in args.iter().enumerate() {
        // qemu reads --name as -name; a word that is no option is some option's value.
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        if let Some((_, why)) = REFUSED.iter().find(|(n, _)| *n == name) {
            return Some((i, format!("refused: {why}")));
        }
        let Some(value) = args.get(i + 1) else {
            continue;
        };
        if name == "action" && value.split(',').any(|kv| kv == "shutdown=pause") {
            return Some((i + 1, format!("refused: {NO_SHUTDOWN}")));
        }
        if WITH_ID.contains(&name) {
            if let Some(id) = ids(value).into_iter().find(|id| is_own(id)) {
                return Some((
                    i + 1,
                    format!("refused: the id {id} is the launcher's own ({OWN_IDS_SHOWN})"),
                ));
            }
        }
    }
    None
}

/// The `id=` and `node-name=` values of an option value: `socket,id=x,...` (',,' is a comma
/// inside a value) or the JSON form `{"id": "x", ...}`.
pub(super) fn ids(value: &str) -> Vec<String> {
    const KEYS: [&str; 2] = ["id", "node-name"];
    if value.trim_start().starts_with('{') {
        let Ok(serde_json::Value::Object(o)) = serde_json::from_str(value) else {
            return vec![];
        };
        return KEYS
            .iter()
            .filter_map(|k| o.get(*k).and_then(|v| v.as_str()).map(str::to_string))
            .collect();
    }
    // Split at single commas only: ",," stays inside its part.
    let joined = value.replace(",,", "\0");
    joined
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| KEYS.contains(k))
        .map(|(_, v)| v.replace('\0', ","))
        .collect()
}

/// An id the launcher gives one of its own objects.
pub(super) fn is_own(id: &str) -> bool {
    OWN_IDS.contains(&id)
        || OWN_ID_PREFIXES.iter().any(|p| {
            id.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn harmless_arguments_pass() {
        for ok in [
            "-device pvpanic -rtc base=utc",
            "-device virtio-rng-pci,id=rng0",
            "-chardev socket,id=mychar,path=/x -device virtio-serial -device virtserialport,chardev=mychar",
            "-netdev user,id=extra -device e1000,netdev=extra,id=nic9",
            "-device e1000,id=network1 -device e1000,id=net -device e1000,id=disk0x",
            "-drive if=none,id=data,file=a,,id=disk0.img",
            "-action reboot=shutdown -no-reboot -smp 2",
        ] {
            assert_eq!(refused(&words(ok)), None, "{ok}");
        }
    }

    #[test]
    fn options_that_break_supervision_are_refused_in_both_spellings() {
        for (args, at, why) in [
            ("-daemonize", 0, "fork"),
            ("--daemonize", 0, "fork"),
            ("-rtc base=utc -qmp tcp::4444,server", 2, "monitor"),
            ("--qmp unix:/x", 0, "monitor"),
            ("-monitor stdio", 0, "monitor"),
            ("-mon chardev=serial0", 0, "monitor"),
            ("-serial pty", 0, "serial ports"),
            ("-S", 0, "paused"),
            ("--S", 0, "paused"),
            ("-incoming tcp::4444", 0, "migration"),
            ("-no-shutdown", 0, "qemu running"),
            ("-action reboot=reset,shutdown=pause", 1, "qemu running"),
            ("-sandbox off", 0, "vm.sandbox"),
            ("--sandbox on,spawn=allow", 0, "seccomp"),
        ] {
            let got = refused(&words(args));
            assert!(
                matches!(&got, Some((i, m)) if *i == at && m.contains(why)),
                "{args}: {got:?}"
            );
        }
    }

    #[test]
    fn the_launchers_own_ids_are_refused() {
        for (args, id) in [
            ("-chardev socket,id=serial0,path=/x", "serial0"),
            ("--chardev socket,server=on,id=serial3", "serial3"),
            ("-netdev user,id=mgmt", "mgmt"),
            ("-netdev tap,id=net1,fd=9", "net1"),
            ("-nic user,id=int0", "int0"),
            ("-device e1000,id=placeholder7", "placeholder7"),
            ("-device pci-bridge,chassis_nr=1,id=pci.1", "pci.1"),
            ("-device virtio-scsi-pci,id=scsi0", "scsi0"),
            ("-device e1000,id=reserved1", "reserved1"),
            ("-device e1000,id=dummy2", "dummy2"),
            ("-drive if=none,file=a,id=disk0", "disk0"),
            ("-blockdev driver=file,node-name=disk2,filename=a", "disk2"),
            ("-device {\"driver\":\"e1000\",\"id\":\"net3\"}", "net3"),
        ] {
            let got = refused(&words(args));
            assert!(
                matches!(&got, Some((1, m)) if m.contains(&format!("the id {id} "))),
                "{args}: {got:?}"
            );
        }
    }
}
