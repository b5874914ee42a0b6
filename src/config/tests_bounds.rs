//! The config's limits and refusals: every number's bound, integers beyond their type, extra
//! qemu arguments that would break supervision, and the console logs' rotation bounds.

use super::tests::{p, pn, MIN, TWO};
use super::*;
use std::time::Duration;

/// (config text, environment, what the error says).
type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);

/// Every time, delay and count has a bound, said in the error with the key and the value; the
/// bounds themselves are accepted. Before the bounds, `vm.boot_timeout = 9223372036854775807`
/// passed `launcher check` and aborted `launcher run` on `Instant + Duration`.
#[test]
fn every_number_has_a_bound() {
    let vm = |k: &str| format!("[vm]\n{k}\n{MIN}");
    let boot = |b: &str| format!("{MIN}[bootstrap]\n{b}");
    let entry = TWO.replace("memory = 512", "memory = 512\nboot_delay = 3601");
    let cases: Vec<Case> = vec![
        (
            vm("boot_timeout = 9223372036854775807"),
            vec![],
            "vm.boot_timeout = \"9223372036854775807\": must be between 1 and 86400 seconds",
        ),
        (
            vm("boot_timeout = 86401"),
            vec![],
            "vm.boot_timeout = \"86401\": must be between 1 and 86400 seconds",
        ),
        (
            vm("shutdown_timeout = 3601"),
            vec![],
            "vm.shutdown_timeout = \"3601\": must be between 1 and 3600 seconds",
        ),
        (
            vm("boot_delay = 9223372036854775807"),
            vec![],
            "vm.boot_delay = \"9223372036854775807\": at most 3600 seconds",
        ),
        (
            entry,
            vec![],
            "vm[1].boot_delay = \"3601\": at most 3600 seconds",
        ),
        (
            format!("{MIN}[nics]\nwait_timeout = 9223372036854775807"),
            vec![],
            "nics.wait_timeout = \"9223372036854775807\": at most 86400 seconds",
        ),
        (
            format!("{MIN}[restart]\nmax = 4294967295"),
            vec![],
            "restart.max = \"4294967295\": at most 1000",
        ),
        (
            format!("{MIN}[restart]\npolicy = \"never\"\nbackoff = 601"),
            vec![],
            "restart.backoff = \"601\": at most 600 seconds",
        ),
        (
            boot("steps = [{expect = \"x\", timeout = 9223372036854775807}]"),
            vec![],
            "bootstrap.steps[0].timeout = \"9223372036854775807\": must be between 1 and 86400 seconds",
        ),
        (
            boot("steps = [{send_config = \"#\", timeout = 86401}]"),
            vec![],
            "bootstrap.steps[0].timeout = \"86401\": must be between 1 and 86400 seconds",
        ),
        (
            boot("steps = [{wait = nan}]"),
            vec![],
            "bootstrap.steps[0].wait = \"NaN\": seconds between 0 and 3600",
        ),
        (
            boot("steps = [{wait = inf}]"),
            vec![],
            "bootstrap.steps[0].wait = \"inf\": seconds between 0 and 3600",
        ),
        (
            boot("steps = [{wait = -1.0}]"),
            vec![],
            "bootstrap.steps[0].wait = \"-1\": seconds between 0 and 3600",
        ),
        (
            boot("attempts = 101\nsteps = [{wait = 1.0}]"),
            vec![],
            "bootstrap.attempts = \"101\": must be between 1 and 100",
        ),
        (
            boot("attempts = 0\nsteps = [{wait = 1.0}]"),
            vec![],
            "bootstrap.attempts = \"0\": must be between 1 and 100",
        ),
        (
            MIN.into(),
            vec![("BOOT_DELAY", "3601")],
            "BOOT_DELAY = \"3601\": at most 3600 seconds",
        ),
        (
            MIN.into(),
            vec![("BOOT_DELAY", "18446744073709551616")],
            "BOOT_DELAY = \"18446744073709551616\": expected a number of seconds",
        ),
        (
            MIN.into(),
            vec![("QEMU_SMP", "4294967296")],
            "QEMU_SMP = \"4294967296\": expected a number of vCPUs, or qemu's -smp text such as 4,sockets=1,cores=4,threads=1",
        ),
        (
            MIN.into(),
            vec![("QEMU_MEMORY", "4194305")],
            "QEMU_MEMORY = \"4194305\": memory in MiB must be between 16 and 4194304",
        ),
        (
            format!("{MIN}[nics]\nnames = [\"eth1\", \"eth4294967295\"]"),
            vec![],
            "nics.names = \"eth4294967295\": data ports are numbered 1 to 512",
        ),
        (
            TWO.replace("data = \"2-4\"", "data = \"2-4294967295\""),
            vec![],
            "vm[1].data = \"2-4294967295\": data ports are numbered 1 to 512",
        ),
    ];
    for (text, env, want) in &cases {
        let got = pn(text, env).map(|_| ()).unwrap_err().to_string();
        assert_eq!(&got, want, "{text}");
    }
    // The bounds themselves are fine; XRv9k's two hours under TCG too.
    let edge = format!(
        "[vm]\nboot_timeout = 86400\nshutdown_timeout = 3600\nboot_delay = 3600\n{MIN}\
         [nics]\nwait_timeout = 86400\n[restart]\nmax = 1000\nbackoff = 600\n\
         [bootstrap]\nattempts = 100\nsteps = [{{expect = \"x\", timeout = 86400}}, {{wait = 3600.0}}]\n"
    );
    let n = pn(&edge, &[("BOOT_DELAY", "3600")]).unwrap();
    assert_eq!(n.settings.link_wait_timeout, Duration::from_secs(86_400));
    assert_eq!(
        n.vms[0].supervision.boot_timeout,
        Duration::from_secs(86_400)
    );
    assert!(p(&vm("boot_timeout = 7200"), &[]).is_ok());
}

/// Out-of-range integers for keys typed narrower than TOML's i64 are syntax errors naming the
/// key (serde's bound).
#[test]
fn integers_beyond_their_type_name_the_key() {
    for (text, key) in [
        (
            format!("{MIN}[console]\ntelnet_port = 70000"),
            "telnet_port",
        ),
        (format!("{MIN}[console]\nready_tcp = -1"), "ready_tcp"),
        (format!("[vm]\nsmp = 4294967296\n{MIN}"), "smp"),
        (
            format!("[vm]\nshutdown_timeout = 18446744073709551615\n{MIN}"),
            "shutdown_timeout",
        ),
    ] {
        let err = pn(&text, &[]).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

/// Extra qemu arguments that would break supervision are refused, naming the key (with the
/// argument's index) or the variable, and the argument.
#[test]
fn extra_args_that_break_supervision_are_refused() {
    let extra = |a: &str| format!("[vm]\nextra_args = {a}\n{MIN}");
    let cases: Vec<Case> = vec![
        (
            extra(r#"["-rtc", "base=utc", "-device", "pvpanic", "-daemonize"]"#),
            vec![],
            "vm.extra_args[4] = \"-daemonize\": refused: qemu would fork away",
        ),
        (
            extra(r#"["--qmp", "tcp::4444,server"]"#),
            vec![],
            "vm.extra_args[0] = \"--qmp\": refused: the launcher owns qemu's monitor",
        ),
        (
            extra(r#"["-chardev", "socket,id=serial0,path=/x"]"#),
            vec![],
            "vm.extra_args[1] = \"socket,id=serial0,path=/x\": refused: the id serial0 is the launcher's own",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-device pvpanic -S")],
            "QEMU_ADDITIONAL_ARGS = \"-S\": refused: the guest would stay paused",
        ),
        (
            extra(r#"["-device", "pvpanic"]"#),
            vec![("QEMU_ADDITIONAL_ARGS", "-netdev user,id=mgmt")],
            "QEMU_ADDITIONAL_ARGS = \"user,id=mgmt\": refused: the id mgmt is the launcher's own",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-monitor stdio")],
            "QEMU_ADDITIONAL_ARGS = \"-monitor\": refused: the launcher owns qemu's monitor",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-serial pty")],
            "QEMU_ADDITIONAL_ARGS = \"-serial\": refused: the launcher owns the serial ports",
        ),
        (
            MIN.into(),
            vec![("QEMU_ADDITIONAL_ARGS", "-no-shutdown")],
            "QEMU_ADDITIONAL_ARGS = \"-no-shutdown\": refused: a guest powering off",
        ),
        (
            TWO.replace("memory = 512", "memory = 512\nextra_args = [\"-drive\", \"id=disk0,file=x\"]"),
            vec![],
            "vm[1].extra_args[1] = \"id=disk0,file=x\": refused: the id disk0",
        ),
    ];
    for (text, env, want) in &cases {
        let got = pn(text, env).map(|_| ()).unwrap_err().to_string();
        assert!(
            got.starts_with(want),
            "{text} {env:?}:\n got {got}\nwant {want}"
        );
    }
    // Harmless ones pass as given.
    let plan = p(
        &extra(r#"["-device", "virtio-rng-pci,id=rng0", "-rtc", "base=utc"]"#),
        &[("QEMU_ADDITIONAL_ARGS", "-chardev socket,id=mine,path=/x")],
    )
    .unwrap();
    assert_eq!(plan.machine.extra_args.len(), 6);
}

/// Every id the launcher writes into a qemu argv (the golden files) is one `qemu_args` keeps
/// for the launcher, so an extra argument cannot take it.
#[test]
fn every_id_in_the_golden_argvs_is_reserved() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let words: Vec<&str> = text.lines().collect();
        for w in words.windows(2) {
            if ["-chardev", "-netdev", "-device", "-drive"].contains(&w[0]) {
                for id in qemu_args::ids(w[1]) {
                    // The golden extra arguments carry no id; anything else is the launcher's.
                    assert!(qemu_args::is_own(&id), "{id} ({}) is not reserved", w[1]);
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 50, "only {seen} ids in {}", dir.display());
}

#[test]
fn console_log_rotation_defaults_and_bounds() {
    let v = p(MIN, &[]).unwrap();
    assert_eq!((v.console.log_max_size, v.console.log_keep), (10 << 20, 3));
    let v = p(
        &format!("{MIN}[console]\nlog_max_size = 0\nlog_keep = 5\n"),
        &[],
    )
    .unwrap();
    assert_eq!((v.console.log_max_size, v.console.log_keep), (0, 5));
    let err = p(&format!("{MIN}[console]\nlog_max_size = 100\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("console.log_max_size") && err.contains("4096"),
        "{err}"
    );
    let err = p(&format!("{MIN}[console]\nlog_keep = 0\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("console.log_keep"), "{err}");
}

#[test]
fn nic_bridges_and_pci_shift_have_bounds() {
    for (k, v, want) in [
        ("bridges", 21, "nics.bridges = \"21\": at most 20"),
        ("pci_shift", 9, "nics.pci_shift = \"9\": at most 8"),
    ] {
        let text = format!("{MIN}[nics]\n{k} = {v}\n");
        let e = super::parse_with(&text, &[]).unwrap_err().to_string();
        assert!(e.starts_with(want), "{e}");
    }
    assert!(super::parse_with(&format!("{MIN}[nics]\nbridges = 20\npci_shift = 8\n"), &[]).is_ok());
}
