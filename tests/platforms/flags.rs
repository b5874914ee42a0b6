//! containerlab's command lines for the kinds with extra flags: f5_bigip_ve adds
//! `--root-password --ram --smp --cpu`, cisco_sdwan adds `--component-type`. The launcher
//! takes them (`--ram`/`--smp`/`--cpu` over QEMU_MEMORY/QEMU_SMP/QEMU_CPU), and an SD-WAN image
//! refuses a component it is not (exit 2, naming the flag). Seen through `launcher check`.

use std::process::Command;

/// `launcher check --json --links eth1` of `kind` with `args` and `env`: (code, stdout, stderr).
fn check(kind: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_launcher"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .args(["check", "--json", "--links", "eth1", "--config"])
        .arg(super::catalogue::config(kind))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn f5_takes_containerlabs_command_line_and_its_sizes_win() {
    let args = [
        "--hostname",
        "bigip1",
        "--username",
        "admin",
        "--password",
        "admin",
        "--root-password",
        "default",
        "--connection-mode",
        "tc",
        "--ram",
        "6144",
        "--smp",
        "2",
        "--cpu",
        "host",
        "--trace",
    ];
    // containerlab sets QEMU_MEMORY=8192 too; the flag (here another value) wins.
    let (code, out, err) = check("f5_bigip_ve", &args, &[("QEMU_MEMORY", "8192")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"6144M\"") && out.contains("\"-smp\",\"2\""),
        "{out}"
    );
}

#[test]
fn sdwan_takes_its_own_component_type_and_refuses_another() {
    let args = ["--hostname", "m1", "--component-type", "manager"];
    let (code, _, err) = check(
        "cisco_sdwan-manager",
        &args,
        &[("COMPONENT_TYPE", "manager")],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = check(
        "cisco_sdwan-validator",
        &args,
        &[("COMPONENT_TYPE", "validator")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--component-type") && err.contains("validator"),
        "{err}"
    );
    let (code, _, err) = check("arista_veos", &args, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--component-type"), "{err}");
}
