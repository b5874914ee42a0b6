//! The containerlab/vrnetlab environment, parsed once into typed fields: what holds for the whole
//! node ([`NodeEnv`]) and what sizes only the first VM ([`VmEnv`]). Owns the variable names and
//! their syntax. Never decides precedence over the file (the section builders do): a variable's
//! bad value is kept as its error and reported only where the value is used, so a variable that
//! does not apply (CLAB_INTFS beside nics.names) stays as harmless as before.

use super::bounds::{seconds, MAX_DELAY_S};
use super::{choice, pick, Accel, ConfigError, ConnectionMode, Env, Key};

/// One variable: unset (or blank), a value, or the error to report where it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Var<T>(Result<Option<T>, Bad>);

/// A bad value, kept until used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bad {
    key: String,
    value: String,
    reason: String,
}

impl<T: Clone> Var<T> {
    /// The value, if set; its error, if malformed.
    pub(super) fn get(&self) -> Result<Option<T>, ConfigError> {
        match &self.0 {
            Ok(v) => Ok(v.clone()),
            Err(b) => Err(Key::new(&b.key).invalid(&b.value, b.reason.clone())),
        }
    }
}

impl<T> Default for Var<T> {
    fn default() -> Self {
        Var(Ok(None))
    }
}

impl<T> From<Result<Option<T>, ConfigError>> for Var<T> {
    fn from(r: Result<Option<T>, ConfigError>) -> Self {
        Var(r.map_err(|e| match e {
            ConfigError::Invalid { key, value, reason } => Bad { key, value, reason },
            // Never: every check here fails as Invalid. Kept total all the same.
            other => Bad {
                key: String::new(),
                value: String::new(),
                reason: other.to_string(),
            },
        }))
    }
}

/// Variables that hold for every VM of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NodeEnv {
    /// LAUNCHER_ACCEL: auto, kvm or tcg, for every VM.
    pub(super) accel: Var<Accel>,
    /// BOOT_DELAY: seconds before the first qemu starts (at most `MAX_DELAY_S`).
    pub(super) boot_delay: Var<u64>,
    /// CLAB_INTFS: how many data interfaces the lab connects.
    pub(super) intfs: Var<u32>,
    /// CLAB_INTF_PREFIX: the data interfaces' prefix (eth).
    pub(super) intf_prefix: Var<String>,
    /// USERNAME, PASSWORD, HOSTNAME as given (the CLI's flags win over them).
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) hostname: Option<String>,
    /// CONNECTION_MODE: how data interfaces reach the VM (containerlab sets `tc`).
    pub(super) connection_mode: Var<ConnectionMode>,
    /// DOCKER_NET_V4_ADDR, DOCKER_NET_V6_ADDR: the lab's management subnets (prefixes).
    pub(super) docker_net_v4: Var<String>,
    pub(super) docker_net_v6: Var<String>,
    /// CLAB_LABEL_CLAB_NODE_NAME: the node's name in the topology.
    pub(super) node_name: Option<String>,
}

/// Variables that size or shape one VM: with several VMs, the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct VmEnv {
    /// QEMU_MEMORY in MiB.
    pub(super) memory: Var<u64>,
    /// QEMU_SMP: vCPUs, a count or qemu's topology text (checked with `vm.smp`).
    pub(super) smp: Option<String>,
    /// QEMU_CPU: the CPU model, trimmed.
    pub(super) cpu: Option<String>,
    /// QEMU_ADDITIONAL_ARGS, split into words as a shell would.
    pub(super) additional_args: Var<Vec<String>>,
    /// CLAB_MGMT_PASSTHROUGH: true makes the management passthrough, false user mode.
    pub(super) mgmt_passthrough: Var<bool>,
    /// CLAB_MGMT_INTF: the container's management interface passthrough takes over (eth0).
    pub(super) mgmt_intf: Var<String>,
    /// CLAB_MGMT_MAC: the guest management NIC's MAC, lower case.
    pub(super) mgmt_mac: Var<String>,
    /// CLAB_MGMT_DHCP: in passthrough, the guest takes its management address by DHCP.
    pub(super) mgmt_dhcp: Var<bool>,
}

/// The environment, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EnvSettings {
    pub(super) node: NodeEnv,
    pub(super) first_vm: VmEnv,
}

impl EnvSettings {
    pub(super) fn read(env: &Env) -> EnvSettings {
        EnvSettings {
            node: NodeEnv::read(env),
            first_vm: VmEnv::read(env),
        }
    }
}

impl NodeEnv {
    fn read(env: &Env) -> NodeEnv {
        let accel = |a: &String| {
            choice(
                &Key::new("LAUNCHER_ACCEL"),
                a,
                &[
                    ("auto", Accel::Auto),
                    ("kvm", Accel::Kvm),
                    ("tcg", Accel::Tcg),
                ],
            )
        };
        let prefix =
            |p: &String| super::valid_ifname(&Key::new("CLAB_INTF_PREFIX"), p).map(|()| p.clone());
        NodeEnv {
            accel: env
                .get("LAUNCHER_ACCEL")
                .filter(|s| !s.is_empty())
                .map(accel)
                .transpose()
                .into(),
            boot_delay: number::<u64>(env, "BOOT_DELAY", "a number of seconds")
                .and_then(|d| {
                    d.map(|d| seconds(&Key::new("BOOT_DELAY"), d, 0, MAX_DELAY_S).map(|_| d))
                        .transpose()
                })
                .into(),
            intfs: number(env, "CLAB_INTFS", "a number of data interfaces").into(),
            intf_prefix: env
                .get("CLAB_INTF_PREFIX")
                .filter(|p| !p.is_empty())
                .map(prefix)
                .transpose()
                .into(),
            username: env.get("USERNAME").cloned(),
            password: env.get("PASSWORD").cloned(),
            hostname: env.get("HOSTNAME").cloned(),
            connection_mode: env
                .get("CONNECTION_MODE")
                .filter(|m| !m.trim().is_empty())
                .map(|m| connection_mode(&Key::new("CONNECTION_MODE"), m.trim()))
                .transpose()
                .into(),
            docker_net_v4: subnet(env, "DOCKER_NET_V4_ADDR", false).into(),
            docker_net_v6: subnet(env, "DOCKER_NET_V6_ADDR", true).into(),
            node_name: env
                .get("CLAB_LABEL_CLAB_NODE_NAME")
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty()),
        }
    }
}

impl VmEnv {
    fn read(env: &Env) -> VmEnv {
        let set = |var: &str| env.get(var).filter(|v| !v.trim().is_empty());
        let words = |a: &String| {
            shell_words::split(a).map_err(|e| {
                Key::new("QEMU_ADDITIONAL_ARGS").invalid(a, format!("cannot split into words: {e}"))
            })
        };
        VmEnv {
            memory: number(env, "QEMU_MEMORY", "memory in MiB").into(),
            smp: set("QEMU_SMP").map(|c| c.trim().to_string()),
            cpu: set("QEMU_CPU").map(|c| c.trim().to_string()),
            additional_args: env
                .get("QEMU_ADDITIONAL_ARGS")
                .map(words)
                .transpose()
                .into(),
            mgmt_passthrough: set("CLAB_MGMT_PASSTHROUGH")
                .map(|v| switch("CLAB_MGMT_PASSTHROUGH", v))
                .transpose()
                .into(),
            mgmt_intf: set("CLAB_MGMT_INTF")
                .map(|v| {
                    let v = v.trim();
                    super::valid_ifname(&Key::new("CLAB_MGMT_INTF"), v).map(|()| v.to_string())
                })
                .transpose()
                .into(),
            mgmt_mac: set("CLAB_MGMT_MAC").map(|v| mac(v)).transpose().into(),
            mgmt_dhcp: set("CLAB_MGMT_DHCP")
                .map(|v| switch("CLAB_MGMT_DHCP", v))
                .transpose()
                .into(),
        }
    }
}

/// A connection mode (CONNECTION_MODE or --connection-mode, named by `key`): `tc` or
/// `macvtap`; vrnetlab's other modes (bridge, ovs, ...) are refused by name.
pub(super) fn connection_mode(key: &Key, v: &str) -> Result<ConnectionMode, ConfigError> {
    choice(
        key,
        v,
        &[
            (
                "tc (tc mirred passes LACP, STP and LLDP)",
                ConnectionMode::Tc,
            ),
            (
                "macvtap (a passthru macvtap per port)",
                ConnectionMode::Macvtap,
            ),
        ],
    )
}

/// A unicast MAC address `aa:bb:cc:dd:ee:ff` (any case), as CLAB_MGMT_MAC gives it.
fn mac(v: &str) -> Result<String, ConfigError> {
    let key = Key::new("CLAB_MGMT_MAC");
    let t = v.trim().to_ascii_lowercase();
    let octets: Vec<&str> = t.split(':').collect();
    let hex = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !hex {
        return Err(key.invalid(v, "expected a MAC address such as 0c:00:12:34:56:78"));
    }
    let first = u8::from_str_radix(octets[0], 16).unwrap_or(1);
    if first & 1 == 1 || t == "00:00:00:00:00:00" {
        return Err(key.invalid(v, "a NIC's MAC is unicast and not all zero"));
    }
    Ok(t)
}

/// A subnet `address/length` of one family (DOCKER_NET_V4_ADDR, DOCKER_NET_V6_ADDR), or unset
/// when absent or blank (containerlab passes an empty v6 subnet when there is none).
fn subnet(env: &Env, var: &str, v6: bool) -> Result<Option<String>, ConfigError> {
    let Some(v) = env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let max = if v6 { 128 } else { 32 };
    let ok = v.split_once('/').is_some_and(|(a, len)| {
        let family = a
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_ipv6() == v6);
        family && len.parse::<u8>().is_ok_and(|l| l <= max)
    });
    if !ok {
        let what = if v6 { "an IPv6" } else { "an IPv4" };
        return Err(Key::new(var).invalid(v, format!("expected {what} subnet ADDRESS/LENGTH")));
    }
    Ok(Some(v.to_string()))
}

/// containerlab's switch (named by `var`): "true", "1" or "yes" (any case), or "false", "0" or
/// "no".
fn switch(var: &str, v: &str) -> Result<bool, ConfigError> {
    const OPTIONS: &[(&str, bool)] = &[("true|1|yes", true), ("false|0|no", false)];
    let key = Key::new(var);
    // The error shows the value as given, not as compared.
    pick(&v.trim().to_ascii_lowercase(), OPTIONS)
        .ok_or_else(|| key.invalid(v, super::expected(OPTIONS)))
}

/// A number, or unset when absent or blank; the error shows the value as given.
fn number<T: std::str::FromStr>(
    env: &Env,
    var: &str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match env.get(var) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| Key::new(var).invalid(v, format!("expected {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> EnvSettings {
        EnvSettings::read(
            &vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn empty_environment_sets_nothing() {
        assert_eq!(read(&[]), EnvSettings::default());
        // Blank values count as unset.
        let e = read(&[
            ("QEMU_MEMORY", " "),
            ("CLAB_INTFS", ""),
            ("LAUNCHER_ACCEL", ""),
        ]);
        assert_eq!(e.first_vm.memory.get().unwrap(), None);
        assert_eq!(e.node.intfs.get().unwrap(), None);
        assert_eq!(e.node.accel.get().unwrap(), None);
    }

    #[test]
    fn values_are_typed_and_split_by_scope() {
        let e = read(&[
            ("QEMU_MEMORY", " 2048 "),
            ("QEMU_SMP", "4"),
            ("QEMU_CPU", " host "),
            ("QEMU_ADDITIONAL_ARGS", "-device 'a b' -x"),
            ("CLAB_MGMT_PASSTHROUGH", " Yes"),
            ("LAUNCHER_ACCEL", "kvm"),
            ("BOOT_DELAY", "5"),
            ("CLAB_INTFS", "3"),
            ("CLAB_INTF_PREFIX", "ge"),
            ("USERNAME", "admin"),
            ("HOSTNAME", "r1"),
        ]);
        let vm = &e.first_vm;
        assert_eq!(vm.memory.get().unwrap(), Some(2048));
        assert_eq!(vm.smp.as_deref(), Some("4"));
        assert_eq!(vm.cpu.as_deref(), Some("host"));
        assert_eq!(
            vm.additional_args.get().unwrap(),
            Some(vec!["-device".to_string(), "a b".into(), "-x".into()])
        );
        assert_eq!(vm.mgmt_passthrough.get().unwrap(), Some(true));
        let n = &e.node;
        assert_eq!(n.accel.get().unwrap(), Some(Accel::Kvm));
        assert_eq!(n.boot_delay.get().unwrap(), Some(5));
        assert_eq!(n.intfs.get().unwrap(), Some(3));
        assert_eq!(n.intf_prefix.get().unwrap().as_deref(), Some("ge"));
        assert_eq!(n.username.as_deref(), Some("admin"));
        assert_eq!(n.password, None);
        assert_eq!(n.hostname.as_deref(), Some("r1"));
    }

    #[test]
    fn a_bad_value_is_its_error_when_used() {
        let e = read(&[
            ("BOOT_DELAY", "9999"),
            ("CLAB_MGMT_PASSTHROUGH", "Maybe"),
            ("LAUNCHER_ACCEL", "xen"),
        ]);
        fn msg<T: std::fmt::Debug>(r: Result<Option<T>, ConfigError>) -> String {
            r.unwrap_err().to_string()
        }
        assert_eq!(
            msg(e.node.boot_delay.get()),
            "BOOT_DELAY = \"9999\": at most 3600 seconds"
        );
        assert_eq!(
            msg(e.first_vm.mgmt_passthrough.get()),
            "CLAB_MGMT_PASSTHROUGH = \"Maybe\": expected true or false"
        );
        assert_eq!(
            msg(e.node.accel.get()),
            "LAUNCHER_ACCEL = \"xen\": expected auto, kvm or tcg"
        );
    }
}
