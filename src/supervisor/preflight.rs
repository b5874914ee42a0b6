//! The preflight, before anything is created on the system (no console log, no run folder, no
//! tap): every file the VMs boot from is there and readable (kernel, initrd, each disk image;
//! for FAT and CD disks the folder), the qemu binary resolves, the taps cannot take the data
//! interfaces' names, and NET_ADMIN is held when the node touches the network. The checks are
//! pure over the facts the caller reads ([`Facts`]), so they are tested without the system.

use crate::config::{LinkSpec, Management, Node, VmPlan};
use std::path::{Path, PathBuf};

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// What the preflight refuses; each names the config key and the value.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{key}: {} does not exist or is not readable", path.display())]
    Missing { key: String, path: PathBuf },
    #[error("{key}: {} is no licence the launcher can read", path.display())]
    License {
        key: String,
        path: PathBuf,
        #[source]
        source: crate::qemu::LicenseError,
    },
    #[error("{key}: the qemu binary {qemu} is not an executable file and not found on PATH")]
    Qemu { key: String, qemu: PathBuf },
    #[error("{key}: the tap {tap} would take the name of the data interface {eth}; choose another nics.tap_prefix")]
    Clash {
        key: String,
        tap: String,
        eth: String,
    },
    #[error("the launcher lacks CAP_NET_ADMIN, needed for {why} (run the container with --cap-add NET_ADMIN)")]
    NoNetAdmin { why: &'static str },
}

/// The host facts the preflight reads, passed in so the checks stay pure.
pub struct Facts<'a> {
    /// /proc/self/status, for CapEff.
    pub status: &'a str,
    /// Whether a file or folder exists and can be read.
    pub readable: &'a dyn Fn(&Path) -> bool,
    /// Whether a path is an executable file.
    pub executable: &'a dyn Fn(&Path) -> bool,
    /// A text file's content, if it can be read.
    pub read: &'a dyn Fn(&Path) -> Option<String>,
    /// $PATH, for a qemu named without a slash.
    pub path_var: Option<&'a str>,
}

impl Facts<'_> {
    /// Runs the preflight on the real system.
    pub fn check_system(node: &Node) -> Result<(), PreflightError> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let path_var = std::env::var("PATH").ok();
        let readable = |p: &Path| match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p).is_ok(),
            Ok(_) => std::fs::File::open(p).is_ok(),
            Err(_) => false,
        };
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let facts = Facts {
            status: &status,
            readable: &readable,
            executable: &executable,
            read: &read,
            path_var: path_var.as_deref(),
        };
        check(node, &facts)
    }
}

/// Every check, in the order a user fixes them: files, qemu, names, capability.
pub fn check(node: &Node, facts: &Facts) -> Result<(), PreflightError> {
    for (i, plan) in node.vms.iter().enumerate() {
        let prefix = match plan.in_node {
            true => format!("vm[{i}]."),
            false => String::new(),
        };
        files(plan, &prefix, facts)?;
        license(plan, &prefix, facts)?;
        qemu(plan, &prefix, facts)?;
    }
    names(node)?;
    if let Some(why) = needs_net_admin(node) {
        if !cap_net_admin(facts.status) {
            return Err(PreflightError::NoNetAdmin { why });
        }
    }
    Ok(())
}

/// The kernel, the initrd, each disk's image (or folder) exist and are readable.
fn files(plan: &VmPlan, prefix: &str, facts: &Facts) -> Result<(), PreflightError> {
    let mut wanted: Vec<(String, &Path)> = Vec::new();
    if let Some(k) = &plan.boot.kernel {
        wanted.push((format!("{prefix}kernel.path"), &k.path));
        if let Some(i) = &k.initrd {
            wanted.push((format!("{prefix}kernel.initrd"), i));
        }
    }
    for (n, d) in plan.boot.disks.iter().enumerate() {
        // Image: the base image (its overlay is the launcher's own); FAT and CD: the folder.
        wanted.push((format!("{prefix}disk[{n}].path"), &d.path));
    }
    match wanted.into_iter().find(|(_, p)| !(facts.readable)(p)) {
        Some((key, path)) => Err(PreflightError::Missing {
            key,
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// vm.license is there and gives a uuid (vrnetlab's SR OS refuses to start without one).
fn license(plan: &VmPlan, prefix: &str, facts: &Facts) -> Result<(), PreflightError> {
    let Some(path) = &plan.machine.license else {
        return Ok(());
    };
    let key = match prefix {
        "" => "vm.license".to_string(),
        p => format!("{p}license"),
    };
    let Some(text) = (facts.read)(path) else {
        return Err(PreflightError::Missing {
            key,
            path: path.clone(),
        });
    };
    match crate::qemu::License::parse(&text) {
        Ok(_) => Ok(()),
        Err(source) => Err(PreflightError::License {
            key,
            path: path.clone(),
            source,
        }),
    }
}

/// The qemu binary: a path with a slash is an executable file, a bare name is found on PATH.
fn qemu(plan: &VmPlan, prefix: &str, facts: &Facts) -> Result<(), PreflightError> {
    let q = &plan.machine.qemu;
    let found = if q.components().count() > 1 || q.is_absolute() {
        (facts.executable)(q)
    } else {
        let dirs = facts.path_var.unwrap_or_default().split(':');
        dirs.filter(|d| !d.is_empty())
            .any(|d| (facts.executable)(&Path::new(d).join(q)))
    };
    match found {
        true => Ok(()),
        false => Err(PreflightError::Qemu {
            // `[vm] qemu` of a single VM, `vm[i].qemu` in a node.
            key: match prefix {
                "" => "vm.qemu".to_string(),
                p => format!("{p}qemu"),
            },
            qemu: q.clone(),
        }),
    }
}

/// No tap takes a data interface's name (nics.tap_prefix equal to the interface prefix would
/// make tapN the ethN the lab tool moves in), nor the passthrough interface's.
fn names(node: &Node) -> Result<(), PreflightError> {
    let key = "nics.tap_prefix".to_string();
    if let LinkSpec::AnyIndex {
        prefix, tap_prefix, ..
    } = &node.settings.links
    {
        if prefix == tap_prefix {
            return Err(PreflightError::Clash {
                key,
                tap: format!("{tap_prefix}1"),
                eth: format!("{prefix}1"),
            });
        }
    }
    let links = node.links();
    let mut eths: Vec<&str> = links.iter().map(|(_, l)| l.eth.as_str()).collect();
    for plan in &node.vms {
        if let Management::Passthrough { interface, .. } = &plan.management {
            eths.push(interface);
        }
    }
    for (_, l) in &links {
        if let Some(eth) = eths.iter().find(|e| **e == l.tap) {
            return Err(PreflightError::Clash {
                key,
                tap: l.tap.clone(),
                eth: eth.to_string(),
            });
        }
    }
    Ok(())
}

/// Why this node needs CAP_NET_ADMIN (taps and tc), if it does.
pub(super) fn needs_net_admin(node: &Node) -> Option<&'static str> {
    let any_links =
        !node.links().is_empty() || matches!(node.settings.links, LinkSpec::AnyIndex { .. });
    let passthrough =
        (node.vms.iter()).any(|p| matches!(p.management, Management::Passthrough { .. }));
    if any_links {
        Some("the data links (taps and tc)")
    } else if !node.internal.is_empty() {
        Some("the internal networks (taps and a bridge)")
    } else if passthrough {
        Some("management passthrough (a tap and tc)")
    } else {
        None
    }
}

/// Whether `CapEff` in a /proc/PID/status text holds CAP_NET_ADMIN (false if unreadable).
pub fn cap_net_admin(status: &str) -> bool {
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    eff.is_some_and(|e| e & (1 << CAP_NET_ADMIN) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capeff_bit_12_is_net_admin() {
        let full = "Name:\tlauncher\nCapInh:\t0\nCapEff:\t000001ffffffffff\n";
        assert!(cap_net_admin(full));
        // Docker's default set: no NET_ADMIN (bit 12 clear).
        assert!(!cap_net_admin("CapEff:\t00000000a80425fb\n"));
        assert!(cap_net_admin("CapEff:\t0000000000001000\n"));
        assert!(!cap_net_admin("CapEff:\tzz\n"));
        assert!(!cap_net_admin(""));
    }

    const ADMIN: &str = "CapEff:\t0000000000001000\n";
    const NO_ADMIN: &str = "CapEff:\t00000000a80425fb\n";

    fn node(text: &str, env: &[(&str, &str)]) -> Node {
        let env: crate::config::Env = (env.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (origin, base) = (Path::new("/cfg/launcher.toml"), Path::new("/cfg"));
        crate::config::parse(text, origin, base, &env, &Default::default()).unwrap()
    }

    /// Runs the preflight with `missing` absent and /usr/bin/qemu-system-x86_64 on PATH.
    fn run(n: &Node, missing: &str, status: &str) -> Result<(), PreflightError> {
        let readable = |p: &Path| !p.ends_with(missing);
        let executable = |p: &Path| p == Path::new("/usr/bin/qemu-system-x86_64");
        let read = |p: &Path| match p.to_str() {
            Some("/cfg/good.txt") => {
                Some("0a1b2c3d-1111-2222-3333-444455556666 k 2025-01-01".into())
            }
            Some("/cfg/bad.txt") => Some("# nothing\n".into()),
            _ => None,
        };
        let facts = Facts {
            status,
            readable: &readable,
            executable: &executable,
            read: &read,
            path_var: Some("/bin:/usr/bin"),
        };
        check(n, &facts)
    }

    const BASE: &str = "[kernel]\npath = \"k\"\ninitrd = \"i\"\n[[disk]]\npath = \"d.qcow2\"\n";

    #[test]
    fn each_missing_file_is_named_by_its_key() {
        let n = node(BASE, &[]);
        assert!(run(&n, "none", NO_ADMIN).is_ok());
        for (file, key) in [
            ("k", "kernel.path"),
            ("i", "kernel.initrd"),
            ("d.qcow2", "disk[0].path"),
        ] {
            let e = run(&n, file, ADMIN).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{key}: /cfg/{file} ")), "{e}");
        }
        let two = "[[vm]]\nname = \"a\"\n[vm.kernel]\npath = \"k\"\n[[vm]]\nname = \"b\"\n[vm.kernel]\npath = \"k2\"\n";
        let e = run(&node(two, &[]), "k2", ADMIN).unwrap_err().to_string();
        assert!(e.starts_with("vm[1].kernel.path: "), "{e}");
    }

    #[test]
    fn qemu_resolves_on_path_or_as_an_executable_path() {
        let bad = node(&format!("[vm]\nqemu = \"qemu-nope\"\n{BASE}"), &[]);
        let e = run(&bad, "none", ADMIN).unwrap_err().to_string();
        assert!(e.starts_with("vm.qemu: the qemu binary qemu-nope"), "{e}");
        let abs = node(
            &format!("[vm]\nqemu = \"/usr/bin/qemu-system-x86_64\"\n{BASE}"),
            &[],
        );
        assert!(run(&abs, "none", ADMIN).is_ok());
        let abs_bad = node(&format!("[vm]\nqemu = \"/opt/qemu\"\n{BASE}"), &[]);
        assert!(run(&abs_bad, "none", ADMIN).is_err());
    }

    #[test]
    fn taps_named_like_data_interfaces_are_refused() {
        let text = format!("{BASE}[nics]\nprefix = \"eth\"\ntap_prefix = \"eth\"\n");
        let e = run(&node(&text, &[("CLAB_INTFS", "2")]), "none", ADMIN).unwrap_err();
        assert!(
            e.to_string().starts_with("nics.tap_prefix: the tap eth1"),
            "{e}"
        );
        let fine = format!("{BASE}[nics]\ncount = 2\n");
        assert!(run(&node(&fine, &[]), "none", ADMIN).is_ok());
    }

    #[test]
    fn net_admin_is_needed_only_with_links_internal_or_passthrough() {
        let links = node(&format!("{BASE}[nics]\ncount = 1\n"), &[]);
        let e = run(&links, "none", NO_ADMIN).unwrap_err().to_string();
        assert!(e.contains("--cap-add NET_ADMIN"), "{e}");
        assert!(run(&links, "none", ADMIN).is_ok());
        assert!(run(&node(BASE, &[]), "none", NO_ADMIN).is_ok());
    }

    #[test]
    fn a_licence_that_is_missing_or_gives_no_uuid_is_refused_naming_its_key() {
        let with = |file: &str| node(&format!("[vm]\nlicense = \"{file}\"\n{BASE}"), &[]);
        assert!(run(&with("good.txt"), "none", NO_ADMIN).is_ok());
        let e = run(&with("none.txt"), "none", NO_ADMIN).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("vm.license: /cfg/none.txt does not exist"),
            "{e}"
        );
        let e = run(&with("bad.txt"), "none", NO_ADMIN).unwrap_err();
        assert!(
            matches!(e, PreflightError::License { ref key, .. } if key == "vm.license"),
            "{e}"
        );
    }
}
