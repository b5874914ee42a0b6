//! Bad input to the launcher: each broken config or environment exits 2 naming the key or
//! value, and touches nothing (no run dir, no overlay, no qemu).

mod common;
use common::*;

#[test]
fn broken_configs_and_environment_exit_2_naming_the_key_and_touch_nothing() {
    let ns = Netns::new("badcfg");
    let ok = tinylinux_config(&ns, "r7", "", "");
    let base = std::fs::read_to_string(&ok).unwrap();
    // (config text, environment, the key the error must name)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            replace_once(&base, "memory = 256", "memroy = 256"),
            vec![],
            "memroy",
        ),
        (
            replace_once(&base, "memory = 256", "memory = 1"),
            vec![],
            "vm.memory",
        ),
        (
            replace_once(&base, "memory = 256", "memory = \"big\""),
            vec![],
            "memory",
        ),
        (
            replace_once(&base, "machine = \"q35\"", "machine = \"\""),
            vec![],
            "vm.machine",
        ),
        (
            replace_once(&base, "[management]", "[management]\nmode = \"bridge\""),
            vec![],
            "management.mode",
        ),
        (
            replace_once(&base, "forwards = []", "forwards = [\"tcp:70000\"]"),
            vec![],
            "management.forwards[0]",
        ),
        (
            replace_once(&base, "[vm]", "[vm]\naccel = \"hvf\""),
            vec![],
            "vm.accel",
        ),
        (
            replace_once(&base, "[vm]", "[vm]\nsmp = 0"),
            vec![],
            "vm.smp",
        ),
        (
            replace_once(&base, "name = \"r7\"", "name = \"has space\""),
            vec![],
            "vm.name",
        ),
        (
            base.clone() + "[restart]\npolicy = \"sometimes\"\n",
            vec![],
            "restart.policy",
        ),
        (
            base.clone() + "[nics]\non_timeout = \"pray\"\n",
            vec![],
            "nics.on_timeout",
        ),
        (
            base.clone() + "[nics]\nnames = [\"eth0\"]\n",
            vec![],
            "nics.names[0]",
        ),
        (
            base.clone() + "[[disk]]\npath = \"x\"\nformat = \"qcow9\"\n",
            vec![],
            "disk[0].format",
        ),
        (base.clone() + "[typo]\n", vec![], "typo"),
        (base.clone(), vec![("QEMU_MEMORY", "lots")], "QEMU_MEMORY"),
        (base.clone(), vec![("QEMU_SMP", "-2")], "QEMU_SMP"),
        (base.clone(), vec![("QEMU_CPU", "a b")], "QEMU_CPU"),
        (base.clone(), vec![("CLAB_INTFS", "three")], "CLAB_INTFS"),
        (base.clone(), vec![("BOOT_DELAY", "later")], "BOOT_DELAY"),
        (
            base.clone(),
            vec![("LAUNCHER_ACCEL", "whpx")],
            "LAUNCHER_ACCEL",
        ),
        (
            base.clone(),
            vec![("QEMU_ADDITIONAL_ARGS", "-x 'open")],
            "QEMU_ADDITIONAL_ARGS",
        ),
        (
            base.clone(),
            vec![("CLAB_MGMT_PASSTHROUGH", "maybe")],
            "CLAB_MGMT_PASSTHROUGH",
        ),
        (
            replace_once(
                &base,
                "[management]\n",
                "[management]\ninterface = \"eth1\"\n",
            ),
            vec![("CLAB_INTFS", "1"), ("CLAB_MGMT_PASSTHROUGH", "true")],
            "CLAB_MGMT_PASSTHROUGH",
        ),
        // Extra arguments that would break supervision: before they were refused, qemu
        // failed on the duplicate id and the launcher restarted it until it gave up (exit 1).
        (
            base.clone(),
            vec![(
                "QEMU_ADDITIONAL_ARGS",
                "-device pvpanic -chardev socket,id=serial0,path=/nonexistent",
            )],
            "QEMU_ADDITIONAL_ARGS = \"socket,id=serial0,path=/nonexistent\": refused",
        ),
        (
            replace_once(
                &base,
                "[vm]",
                "[vm]\nextra_args = [\"-rtc\", \"base=utc\", \"--daemonize\"]",
            ),
            vec![],
            "vm.extra_args[2] = \"--daemonize\": refused",
        ),
        // Before the bound, `run` aborted on `Instant + Duration` with qemu started.
        (
            replace_once(
                &base,
                "boot_timeout = 120",
                "boot_timeout = 9223372036854775807",
            ),
            vec![],
            "vm.boot_timeout = \"9223372036854775807\": must be between 1 and 86400 seconds",
        ),
    ];
    assert!(cases.len() >= 20);
    for (i, (text, env, key)) in cases.iter().enumerate() {
        let p = ns.dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        for cmd in ["check", "run"] {
            let mut c = ns.launcher(&[cmd, "--config", p.to_str().unwrap()]);
            for (k, v) in env {
                c.env(k, v);
            }
            let out = c.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd} case {i} ({key}): {err}");
            assert!(
                err.contains(key),
                "{cmd} case {i}: the error does not name {key}: {err}"
            );
        }
    }
    let out = ns
        .launcher(&["run", "--config", "/nonexistent/launcher.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/launcher.toml"));
    let out = ns
        .launcher(&["--connection-mode", "bridge"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Nothing was touched: no health file, no run dir, no taps.
    assert!(!ns.dir.join("health").exists() && !ns.dir.join("run").exists());
    assert!(!ns.ip("-o link show").contains("tap"));
    // And `check` on the good config prints the argv without touching anything either.
    let out = ns
        .launcher(&["check", "--config", ok.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .contains("qemu-system-x86_64"));
    assert!(!ns.dir.join("run").exists());
}
