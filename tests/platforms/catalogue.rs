//! The platform catalogue: every `images/<kind>/` folder (those with a launcher.toml) has its
//! golden argv for the standard links (eth1-eth4) and the sparse ones (eth1, eth3), as
//! `launcher check --json --links` prints it without the vendor's files (UPDATE_GOLDEN=1
//! rewrites them), and the argvs are what vrnetlab gives that platform where the test says so.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The platform folders: images/<kind>/launcher.toml.
pub fn kinds() -> Vec<String> {
    let mut k: Vec<String> = std::fs::read_dir(root().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("launcher.toml").exists() && p.join("build.conf").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    k.sort();
    k
}

pub fn config(kind: &str) -> PathBuf {
    root().join("images").join(kind).join("launcher.toml")
}

/// `launcher check --json --links LINKS` for `kind`, in a clean environment (fixed hostname,
/// so the MACs are the golden ones): (exit code, stdout JSON or stdout text, stderr).
pub fn check(kind: &str, links: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_launcher"))
        .env_clear()
        .env("HOSTNAME", "router1")
        .envs(env.iter().copied())
        .args(["check", "--json", "--links", links, "--config"])
        .arg(config(kind))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each VM's argv from `check --json`.
pub fn argvs(kind: &str, links: &str) -> Vec<Vec<String>> {
    let (code, out, err) = check(kind, links, &[]);
    assert_eq!(code, 0, "{kind}: check --links {links} failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{kind}: {e}: {out}"));
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            vm["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// The golden text: one argument per line, a blank line between VMs (as tests/golden/*.argv).
fn golden_text(vms: &[Vec<String>]) -> String {
    vms.iter()
        .map(|a| a.join("\n") + "\n")
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_platform_has_its_golden_argvs_standard_and_sparse() {
    let kinds = kinds();
    assert!(!kinds.is_empty(), "no platform folder in images/");
    let mut differ = Vec::new();
    for kind in &kinds {
        for (case, links) in [("standard", "eth1,eth2,eth3,eth4"), ("sparse", "eth1,eth3")] {
            let got = golden_text(&argvs(kind, links));
            let path = root().join(format!("tests/golden/{kind}-{case}.argv"));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &got).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if got != want {
                differ.push(format!("{} (UPDATE_GOLDEN=1 rewrites it)", path.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "argv differs from:\n{}",
        differ.join("\n")
    );
}

#[test]
fn check_warns_about_the_missing_vendor_image_and_bad_links_are_exit_2() {
    let (code, _, err) = check("arista_veos", "eth1", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("/images/veos.vmdk"),
        "{err}"
    );
    let (code, _, err) = check("arista_veos", "eth1,port3", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("port3"), "{err}");
}

/// The value after `flag` for each occurrence.
pub fn values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
    argv.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}

#[test]
fn veos_has_vrnetlabs_machine() {
    let vm = &argvs("arista_veos", "eth1,eth3")[0];
    // The machine is vrnetlab's `pc`; the RAM backend is ours (fast start needs a stable name).
    assert_eq!(values(vm, "-machine"), ["pc,memory-backend=ram0"]);
    assert_eq!(
        values(vm, "-cpu"),
        ["max,level=9"],
        "host,level=9 under TCG"
    );
    assert_eq!(values(vm, "-m"), ["2048M"]);
    let dev = values(vm, "-device");
    assert!(
        dev.contains(&"ide-hd,drive=disk0,bus=ide.0,unit=0"),
        "{dev:?}"
    );
    assert!(dev[1].starts_with("e1000,netdev=mgmt,"), "{dev:?}");
    assert_eq!(dev[2], "pci-bridge,chassis_nr=1,id=pci.1,shpc=off");
    // vrnetlab: data NIC c on pci.(c/26+1) at c%26+1, vEOS's c shifted by one: eth1 at 0x3;
    // eth2 absent below eth3 keeps its NIC (Ethernet2 stays Ethernet2).
    assert!(dev[3].starts_with("e1000,netdev=net1,") && dev[3].ends_with(",bus=pci.1,addr=0x3"));
    assert!(dev[4].starts_with("e1000,id=placeholder2,") && dev[4].ends_with(",addr=0x4"));
    assert!(dev[5].starts_with("e1000,netdev=net3,") && dev[5].ends_with(",addr=0x5"));
}
