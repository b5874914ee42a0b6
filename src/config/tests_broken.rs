//! Broken inputs: every malformed file or variable is refused with an error naming its key.

use super::tests::{p, MIN};

#[test]
fn broken_inputs_name_their_key() {
    // (config text, environment, the key the error must name)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("[vm]\nmemroy = 5\n[kernel]\npath=\"k\"", &[], "memroy"),
        (
            "[vm]\nmemory = \"lots\"\n[kernel]\npath=\"k\"",
            &[],
            "memory",
        ),
        ("[vm]\nmemory = 4\n[kernel]\npath=\"k\"", &[], "vm.memory"),
        ("[vm]\nsmp = 0\n[kernel]\npath=\"k\"", &[], "vm.smp"),
        (
            "[vm]\naccel = \"hvf\"\n[kernel]\npath=\"k\"",
            &[],
            "vm.accel",
        ),
        ("[vm]\nname = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.name"),
        (
            "[vm]\nshutdown_timeout = 0\n[kernel]\npath=\"k\"",
            &[],
            "vm.shutdown_timeout",
        ),
        (
            "[vm]\nboot_timeout = 0\n[kernel]\npath=\"k\"",
            &[],
            "vm.boot_timeout",
        ),
        ("[vm]\ncpu = \"a b\"\n[kernel]\npath=\"k\"", &[], "vm.cpu"),
        ("", &[], "disk"),
        (
            "[[disk]]\npath=\"d\"\nformat=\"qcow3\"",
            &[],
            "disk[0].format",
        ),
        (
            "[[disk]]\npath=\"d\"\ninterface=\"floppy\"",
            &[],
            "disk[0].interface",
        ),
        ("[[disk]]\npath=\"d\"\ntypo=1", &[], "typo"),
        (
            "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth0\"]",
            &[],
            "nics.names[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\nnames=[\"eth1\",\"eth1\"]",
            &[],
            "nics.names[1]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\non_timeout=\"maybe\"",
            &[],
            "nics.on_timeout",
        ),
        ("[kernel]\npath=\"k\"\n[nics]\nmtu=10", &[], "nics.mtu"),
        (
            "[kernel]\npath=\"k\"\n[nics]\nprefix=\"a/b\"",
            &[],
            "nics.prefix",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\nmodel=\"e1000 x\"",
            &[],
            "nics.model",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nmode=\"bridge\"",
            &[],
            "management.mode",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nforwards=[\"tcp:99999\"]",
            &[],
            "management.forwards[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[management]\nforwards=[\"sctp:22\"]",
            &[],
            "management.forwards[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[restart]\npolicy=\"always\"",
            &[],
            "restart.policy",
        ),
        (
            "[kernel]\npath=\"k\"\n[restart]\nbackoff=9999",
            &[],
            "restart.backoff",
        ),
        (
            "[kernel]\npath=\"k\"\n[console]\nready_pattern=\"\"",
            &[],
            "console.ready_pattern",
        ),
        ("[kernel]\npath=\"\"", &[], "kernel.path"),
        ("[kernal]\npath=\"k\"", &[], "kernal"),
        ("not toml at all [", &[], "launcher.toml"),
        (MIN, &[("QEMU_MEMORY", "2G")], "QEMU_MEMORY"),
        (MIN, &[("QEMU_MEMORY", "1")], "QEMU_MEMORY"),
        (MIN, &[("QEMU_SMP", "two")], "QEMU_SMP"),
        (MIN, &[("QEMU_SMP", "0")], "QEMU_SMP"),
        (MIN, &[("QEMU_CPU", "host x")], "QEMU_CPU"),
        (MIN, &[("CLAB_INTFS", "-1")], "CLAB_INTFS"),
        (MIN, &[("CLAB_INTFS", "100000")], "CLAB_INTFS"),
        (MIN, &[("BOOT_DELAY", "soon")], "BOOT_DELAY"),
        (MIN, &[("LAUNCHER_ACCEL", "xen")], "LAUNCHER_ACCEL"),
        (
            MIN,
            &[("QEMU_ADDITIONAL_ARGS", "-device 'unterminated")],
            "QEMU_ADDITIONAL_ARGS",
        ),
        (
            MIN,
            &[("CLAB_INTF_PREFIX", "way-too-long-prefix")],
            "CLAB_INTF_PREFIX",
        ),
        (MIN, &[("HOSTNAME", "bad host")], "hostname"),
        (
            "[kernel]\npath=\"k\"\n[console]\nready_tcp=2222",
            &[],
            "console.ready_tcp",
        ),
        (
            "[vm]\nuuid=\"not-a-uuid\"\n[kernel]\npath=\"k\"",
            &[],
            "vm.uuid",
        ),
        (
            "[vm]\nsmbios=[\"product=x\"]\n[kernel]\npath=\"k\"",
            &[],
            "vm.smbios[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[nics]\noffset=20",
            &[],
            "nics.offset",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{expect=\"(\"}]",
            &[],
            "bootstrap.steps[0].expect",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{wait=1.0},{expect=\"x\", answers=[{on=\"a\", send=\"b\"}, {on=\"[y\", send=\"n\"}]}]",
            &[],
            "bootstrap.steps[1].answers[1].on",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{expect=\"x\", answers=[{on=\"a\", send=\"{hostnme}\"}]}]",
            &[],
            "bootstrap.steps[0].answers[0].send",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"x\", answers=[{on=\"a\", send=\"b\"}]}]",
            &[],
            "bootstrap.steps[0].answers",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"{hostnme}\"}]",
            &[],
            "bootstrap.steps[0].send",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\nsteps=[{send=\"a\", wait=1.0}]",
            &[],
            "bootstrap.steps[0]",
        ),
        (
            "[kernel]\npath=\"k\"\n[bootstrap]\non_timeout=\"panic\"\nsteps=[{wait=1.0}]",
            &[],
            "bootstrap.on_timeout",
        ),
        (
            "[[disk]]\npath=\"day0\"\nformat=\"iso\"\ninterface=\"virtio\"",
            &[],
            "disk[0].interface",
        ),
        (
            "[[disk]]\npath=\"day0\"\nformat=\"iso\"\nlabel=\"config-2\"",
            &[],
            "disk[0].label",
        ),
        (
            "[[disk]]\npath=\"lic.qcow2\"\ntemplate=true",
            &[],
            "disk[0].template",
        ),
        (
            "[[disk]]\npath=\"a.qcow2\"\nlabel=\"x\"",
            &[],
            "disk[0].label",
        ),
        (
            "[[disk]]\npath=\"a\"\ninterface=\"ide\"\n[[disk]]\npath=\"b\"\ninterface=\"ide\"\n[[disk]]\npath=\"c\"\ninterface=\"ide\"\n[[disk]]\npath=\"d\"\ninterface=\"ide\"\n[[disk]]\npath=\"e\"\nformat=\"iso\"",
            &[],
            "5 on ide",
        ),
    ];
    assert!(cases.len() >= 20);
    for (text, env, key) in cases {
        match p(text, env) {
            Ok(_) => panic!("accepted broken input {text:?} {env:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(key),
                    "error for {text:?} {env:?} does not name {key:?}: {msg}"
                );
            }
        }
    }
}

#[test]
fn a_steps_when_is_startup_config_or_no_startup_config() {
    let ok = "[kernel]\npath = \"k\"\n[bootstrap]\nsteps = [{ send = \"x\", when = \"no-startup-config\" }]\n";
    let n = super::parse_with(ok, &[]).unwrap();
    assert!(matches!(
        &n.vms[0].bootstrap.as_ref().unwrap().steps[0],
        super::Step::When { startup_config: false, step } if **step == super::Step::Send("x".into())
    ));
    let bad = ok.replace("no-startup-config", "always");
    let e = super::parse_with(&bad, &[]).unwrap_err().to_string();
    assert!(e.starts_with("bootstrap.steps[0].when = \"always\""), "{e}");
}

#[test]
fn a_block_step_plays_its_blocks_steps_with_its_when() {
    let text = "[kernel]\npath = \"k\"\n[bootstrap]\nsteps = [{ send = \"a\" }, { block = \"cards\", when = \"no-startup-config\" }, { send = \"z\" }]\n[bootstrap.blocks]\ncards = [{ send = \"c1\" }, { expect = \"#\" }]\n";
    let n = super::parse_with(text, &[]).unwrap();
    let steps = &n.vms[0].bootstrap.as_ref().unwrap().steps;
    assert_eq!(steps.len(), 4);
    assert!(matches!(
        &steps[1],
        super::Step::When { startup_config: false, step } if **step == super::Step::Send("c1".into())
    ));
    assert!(matches!(
        &steps[2],
        super::Step::When {
            startup_config: false,
            ..
        }
    ));
    for (bad, key) in [
        (
            text.replace("block = \"cards\"", "block = \"lcs\""),
            "bootstrap.steps[1].block = \"lcs\"",
        ),
        (
            text.replace("{ send = \"c1\" }", "{ send = \"{x}\" }"),
            "bootstrap.blocks.cards[0].send",
        ),
        (
            text.replace("{ send = \"c1\" }", "{ block = \"cards\" }"),
            "bootstrap.blocks.cards[0].block",
        ),
        (
            text.replace("when = \"no-startup-config\" }", "send = \"x\" }"),
            "bootstrap.steps[1] = \"cards\"",
        ),
    ] {
        let e = super::parse_with(&bad, &[]).unwrap_err().to_string();
        assert!(e.starts_with(key), "{key}: {e}");
    }
}
