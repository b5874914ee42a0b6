//! `launcher check`: load the config and print each VM's qemu argv. Does not probe the system:
//! the argv is shown for the accel asked for (auto shows as tcg, the safe choice); with
//! several VMs, one argv each, a blank line between. `--json` prints them as one JSON object;
//! `--links eth1,eth3` shows the argv for that set of present links (as containerlab would
//! give them: `CLAB_INTFS` becomes their count). Files the VM needs (kernel, initrd, disks) that
//! are missing are warnings here, so a platform's argv can be checked without the vendor's
//! image (or licence: then no `-uuid` or `-rtc` from it); `run` refuses them. SMBIOS templates
//! show user-mode management's values.

use super::{load_node_with, report};
use crate::cli::Cli;
use crate::config::{DataLink, VmPlan};
use crate::exit::Code;
use crate::qemu;

/// The data ports of `--links` (`eth1,eth3` -> [1, 3]; `prefix` is CLAB_INTF_PREFIX or
/// `eth`), or the usage error naming the value.
fn ports(links: &str, prefix: &str) -> Result<Vec<u32>, String> {
    links
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|l| {
            l.strip_prefix(prefix)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u32>().ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    format!("--links {links:?}: {l:?} is not a data interface ({prefix}N, N >= 1)")
                })
        })
        .collect()
}

/// The files this VM reads at start that are not there (warnings for `check`).
fn missing_files(plan: &VmPlan) -> Vec<String> {
    let mut files = Vec::new();
    if let Some(k) = &plan.boot.kernel {
        files.push(k.path.clone());
        files.extend(k.initrd.clone());
    }
    files.extend(plan.boot.disks.iter().map(|d| d.path.clone()));
    files.extend(plan.machine.license.clone());
    files
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

pub fn check(cli: &Cli, json: bool, links: Option<&str>) -> Code {
    let prefix = std::env::var("CLAB_INTF_PREFIX").unwrap_or_else(|_| "eth".into());
    let ports = match links.map(|l| ports(l, &prefix)).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("launcher: {e}");
            return Code::BadInput;
        }
    };
    let mut env: crate::config::Env = std::env::vars().collect();
    if let Some(p) = &ports {
        env.insert("CLAB_INTFS".into(), p.len().to_string());
    }
    let node = match load_node_with(cli, &env) {
        Ok(node) => node,
        Err(e) => {
            report(&e);
            return Code::from(&e);
        }
    };
    let present: Vec<Vec<DataLink>> = match &ports {
        Some(p) => match node.links_present(p) {
            Ok(l) => l,
            Err(e) => {
                report(&e);
                return Code::from(&e);
            }
        },
        None => node.vms.iter().map(|p| p.nics.links.clone()).collect(),
    };
    let mut out = Vec::new();
    for (plan, links) in node.vms.iter().zip(present) {
        for f in missing_files(plan) {
            eprintln!(
                "launcher: warning: vm {}: {f} is missing (run refuses to start without it)",
                plan.name
            );
        }
        let launch = qemu::Launch::for_check(plan);
        let mut resolved = qemu::Resolved::planned(plan);
        resolved.links = links;
        // SMBIOS as user-mode management gives it; the licence's uuid and clock when it is there.
        let values =
            crate::supervisor::template_values(plan, &crate::supervisor::MgmtAddrs::user());
        resolved.smbios = Some(crate::supervisor::render_all(&plan.machine.smbios, &values));
        resolved.license = (plan.machine.license.as_deref())
            .filter(|p| p.exists())
            .and_then(crate::supervisor::read_license);
        let argv: Vec<String> = qemu::argv(plan, &launch, &resolved)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        out.push((plan.name.clone(), argv));
    }
    if json {
        let vms: Vec<serde_json::Value> = out
            .into_iter()
            .map(|(name, argv)| serde_json::json!({ "name": name, "argv": argv }))
            .collect();
        println!("{}", serde_json::json!({ "vms": vms }));
    } else {
        let blocks: Vec<String> = out.into_iter().map(|(_, argv)| argv.join("\n")).collect();
        println!("{}", blocks.join("\n\n"));
    }
    Code::Ok
}

#[cfg(test)]
mod tests {
    use super::ports;

    #[test]
    fn links_name_data_ports() {
        assert_eq!(ports("eth1,eth3", "eth").unwrap(), vec![1, 3]);
        assert_eq!(ports("e2", "e").unwrap(), vec![2]);
        for bad in ["eth0", "eth", "1", "ethx", "eth1,foo", "port3", "eth+1"] {
            assert!(ports(bad, "eth").is_err(), "{bad}");
        }
    }
}
