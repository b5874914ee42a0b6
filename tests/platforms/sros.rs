//! nokia_sros beyond the catalogue's checks: its distributed variant's golden argvs (a control
//! plane and a line card, `--variant sr-7s`), the licence's uuid and date in the argv, and an
//! unknown or custom variant refused naming `--variant`.

use super::catalogue::{config, root, values};
use std::process::Command;

/// `launcher check --json --links LINKS --variant VARIANT --config CONFIG`: (code, argvs, stderr).
fn check(config: &std::path::Path, variant: &str, links: &str) -> (i32, Vec<Vec<String>>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_launcher"))
        .env_clear()
        .env("HOSTNAME", "router1")
        .args([
            "check",
            "--json",
            "--links",
            links,
            "--variant",
            variant,
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let argvs = match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(v) => v["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| {
                let a = vm["argv"].as_array().unwrap();
                a.iter().map(|s| s.as_str().unwrap().to_string()).collect()
            })
            .collect(),
        Err(_) => vec![],
    };
    (code, argvs, err)
}

#[test]
fn the_distributed_sr_7s_has_its_golden_argvs_a_cp_and_a_line_card() {
    let mut differ = Vec::new();
    for (case, links) in [("standard", "eth1,eth2,eth3,eth4"), ("sparse", "eth1,eth3")] {
        let (code, vms, err) = check(&config("nokia_sros"), "sr-7s", links);
        assert_eq!(code, 0, "{err}");
        assert_eq!(vms.len(), 2, "a control plane and a line card");
        let (cp, lc) = (&vms[0], &vms[1]);
        assert_eq!(
            (values(cp, "-m"), values(lc, "-m")),
            (vec!["4096M"], vec!["6144M"])
        );
        assert!(values(cp, "-smbios")[0].ends_with("slot=A chassis=SR-7s sfm=sfm2-s card=cpm2-s"));
        assert_eq!(
            values(lc, "-smbios"),
            ["type=1,product=TIMOS:slot=1 chassis=SR-7s sfm=sfm2-s card=xcm2-7s mda/1=x2-s36-800g-qsfpdd-18.0t"]
        );
        // The control plane has no data NIC nor bridge; the line card has the 36 ports.
        let dev = |a: &[String]| {
            values(a, "-device")
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        };
        assert!(!dev(cp)
            .iter()
            .any(|d| d.contains("bridge") || d.contains("bus=pci.")));
        assert_eq!(
            dev(lc).iter().filter(|d| d.contains("bus=pci.")).count(),
            36
        );
        let text = vms
            .iter()
            .map(|a| a.join("\n") + "\n")
            .collect::<Vec<_>>()
            .join("\n");
        let path = root().join(format!("tests/golden/nokia_sros-sr-7s-{case}.argv"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        if std::fs::read_to_string(&path).unwrap_or_default() != text {
            differ.push(format!("{} (UPDATE_GOLDEN=1 rewrites it)", path.display()));
        }
    }
    assert!(
        differ.is_empty(),
        "argv differs from:\n{}",
        differ.join("\n")
    );
}

/// A copy of images/nokia_sros and images/_shared whose licence path is `license`.
fn platform_with_licence(tmp: &std::path::Path, license: &str) -> std::path::PathBuf {
    let copy = |from: &str| {
        let status = Command::new("cp")
            .arg("-r")
            .arg(root().join("images").join(from))
            .arg(tmp)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy("nokia_sros");
    copy("_shared");
    let integrated = tmp.join("nokia_sros/integrated.toml");
    let text = std::fs::read_to_string(&integrated).unwrap();
    let text = text.replace("/tftpboot/license.txt", license);
    std::fs::write(&integrated, text).unwrap();
    tmp.join("nokia_sros/launcher.toml")
}

#[test]
fn the_licences_uuid_and_the_day_after_its_date_reach_the_argv() {
    let tmp = std::env::temp_dir().join(format!("lt-sros-licence-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let lic = tmp.join("license.txt");
    std::fs::write(
        &lic,
        "# SR OS licence\n6e1d0bd2-1d6d-4f4b-8f1e-2e4b4c7a9f10 AbCd== TIMOS-VSIM 2025-06-30 2026-06-30\n",
    )
    .unwrap();
    let cfg = platform_with_licence(&tmp, &lic.to_string_lossy());
    let (code, vms, err) = check(&cfg, "sr-1", "eth1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        values(&vms[0], "-uuid"),
        ["6e1d0bd2-1d6d-4f4b-8f1e-2e4b4c7a9f10"]
    );
    assert_eq!(values(&vms[0], "-rtc"), ["base=2025-07-01"]);
    // Without the licence: a warning naming it, no -uuid or -rtc (run refuses it).
    let (code, vms, err) = check(&config("nokia_sros"), "sr-1", "eth1");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("/tftpboot/license.txt is missing"), "{err}");
    assert!(values(&vms[0], "-uuid").is_empty() && values(&vms[0], "-rtc").is_empty());
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn an_unknown_or_custom_variant_is_exit_2_naming_the_flag_and_the_known_ones() {
    for bad in ["sr-99", "cp: cpu=2 ram=4 chassis=ixr-e slot=A card=cpm-ixr-e ___ lc: cpu=2 ram=4 max_nics=34 chassis=ixr-e slot=1 card=imm24-sfp++8-sfp28+2-qsfp28 mda/1=m24-sfp++8-sfp28+2-qsfp28"] {
        let (code, _, err) = check(&config("nokia_sros"), bad, "eth1");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--variant") && err.contains("known: sr-1, sr-7s"), "{err}");
    }
}
