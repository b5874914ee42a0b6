//! The section builders for how the VM is reached and run: `[management]`, `[console]`,
//! `[restart]` with the vm time-outs, the credentials, `[bootstrap]`, the connection mode and
//! what containerlab tells the VM beyond the file ([`Lab`]). Each takes its schema
//! section, the key it lives under and the environment that overrides it, and returns the
//! validated part of the plan. Never looks at another section (that is `vm`) and never at the
//! system.

use super::bounds;
use super::bounds::{
    count, seconds, MAX_ATTEMPTS, MAX_BACKOFF_S, MAX_DELAY_S, MAX_RESTARTS, MAX_SHUTDOWN_TIMEOUT_S,
    MAX_TIMEOUT_S,
};
use super::env::{NodeEnv, Var, VmEnv};
use super::schema::{
    AnswerSection, BootstrapSection, ConsoleSection, InstallSection, MgmtSection, RestartSection,
    VmSection,
};
use super::{
    check_template, choice, parse_forward, resolve, valid_ifname, Answer, BootAction, Bootstrap,
    Clock, ConfigError, ConnectionMode, Console, Credentials, Forward, Install, Key, Lab,
    Management, Overrides, QemuUser, RestartPolicy, Sandbox, Step, Supervision, UserSubnet,
};
use std::path::Path;
use std::time::Duration;

/// `[management]` with CLAB_MGMT_PASSTHROUGH over its mode and CLAB_MGMT_INTF over its
/// interface. Returns the key that decided the mode too (management.mode or the variable), for
/// the checks against the data links.
pub(super) fn management(
    key: &Key,
    m: &MgmtSection,
    env: &VmEnv,
    nic_model: &str,
    base: &Path,
) -> Result<(Management, Key), ConfigError> {
    let passthrough: &Var<bool> = &env.mgmt_passthrough;
    let key = key.child("management");
    let mut mode = m.mode.as_str();
    let mut mode_key = key.child("mode");
    if let Some(on) = passthrough.get()? {
        mode_key = Key::new("CLAB_MGMT_PASSTHROUGH");
        mode = match (on, mode) {
            (true, _) => "passthrough",
            (false, "passthrough") => "user",
            (false, other) => other,
        };
    }
    #[derive(Clone, Copy)]
    enum Mode {
        None,
        User,
        Passthrough,
    }
    let model = || m.model.clone().unwrap_or_else(|| nic_model.to_string());
    let management = match choice(
        &mode_key,
        mode,
        &[
            ("user", Mode::User),
            ("passthrough", Mode::Passthrough),
            ("none", Mode::None),
        ],
    )? {
        Mode::None => Management::None,
        Mode::User => Management::User {
            model: model(),
            forwards: forwards(&key.child("forwards"), &m.forwards)?,
            tftp_root: m.tftp_root.as_deref().map(|p| resolve(base, p)),
            subnet: user_subnet(&key.child("subnet"), m.subnet.as_deref())?,
        },
        Mode::Passthrough => {
            let interface = match env.mgmt_intf.get()? {
                Some(i) => i,
                None => {
                    valid_ifname(&key.child("interface"), &m.interface)?;
                    m.interface.clone()
                }
            };
            valid_ifname(&key.child("tap"), &m.tap)?;
            Management::Passthrough {
                model: model(),
                interface,
                tap: m.tap.clone(),
            }
        }
    };
    Ok((management, mode_key))
}

/// management.subnet: an IPv4 network `A.B.C.D/N`, host bits zero, N from 8 to 27 (the guest
/// at .15 must be a host of it).
fn user_subnet(key: &Key, text: Option<&str>) -> Result<UserSubnet, ConfigError> {
    let Some(text) = text else {
        return Ok(UserSubnet::default());
    };
    let bad = || {
        key.invalid(
            text,
            "an IPv4 network A.B.C.D/N with N from 8 to 27 and the host bits zero, e.g. \"169.254.127.0/24\"",
        )
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let network: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    if !(8..=27).contains(&prefix) || u32::from(network) & host_bits != 0 {
        return Err(bad());
    }
    Ok(UserSubnet { network, prefix })
}

/// management.forwards: each port forwarded once.
fn forwards(key: &Key, list: &[String]) -> Result<Vec<Forward>, ConfigError> {
    let mut forwards: Vec<Forward> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let key = key.index(i);
        let fw = parse_forward(key.as_str(), s)?;
        if forwards
            .iter()
            .any(|o| o.proto == fw.proto && o.host_port == fw.host_port)
        {
            return Err(key.invalid(s, "port forwarded twice"));
        }
        forwards.push(fw);
    }
    Ok(forwards)
}

/// `[console]`: the log, the telnet ports, the extra serial ports, the ready pattern.
pub(super) fn console(key: &Key, c: &ConsoleSection, base: &Path) -> Result<Console, ConfigError> {
    let key = key.child("console");
    if c.extra_serials > 3 {
        return Err(key
            .child("extra_serials")
            .invalid(c.extra_serials, "at most 3 (ttyS1 to ttyS3)"));
    }
    if c.telnet_port > 0 && u32::from(c.telnet_port) + c.extra_serials > 65535 {
        return Err(key.child("telnet_port").invalid(
            c.telnet_port,
            "no room for the extra serial ports' telnet ports above it",
        ));
    }
    if c.ready_pattern.as_deref() == Some("") {
        return Err(key
            .child("ready_pattern")
            .invalid("", "must not be empty (leave it out instead)"));
    }
    let max = c.log_max_size;
    if max != 0 && !(bounds::MIN_LOG_MAX_SIZE..=bounds::MAX_LOG_MAX_SIZE).contains(&max) {
        return Err(key.child("log_max_size").invalid(
            max,
            format!(
                "must be 0 (never rotate) or between {} and {} bytes",
                bounds::MIN_LOG_MAX_SIZE,
                bounds::MAX_LOG_MAX_SIZE
            ),
        ));
    }
    let log_keep = bounds::count(&key.child("log_keep"), c.log_keep, 1, bounds::MAX_LOG_KEEP)?;
    Ok(Console {
        log: resolve(base, &c.log),
        log_max_size: max,
        log_keep,
        ready_pattern: c.ready_pattern.clone(),
        ready_tcp: c.ready_tcp,
        telnet_port: c.telnet_port,
        extra_serials: c.extra_serials,
    })
}

/// The vm time-outs and boot delay (under `key`, the `[vm]` table) and `[restart]`.
pub(super) fn supervision(
    key: &Key,
    vm: &VmSection,
    r: &RestartSection,
) -> Result<Supervision, ConfigError> {
    let boot_timeout = seconds(
        &key.child("boot_timeout"),
        vm.boot_timeout,
        1,
        MAX_TIMEOUT_S,
    )?;
    let shutdown_timeout = seconds(
        &key.child("shutdown_timeout"),
        vm.shutdown_timeout,
        1,
        MAX_SHUTDOWN_TIMEOUT_S,
    )?;
    // Used for the first VM only (BOOT_DELAY over it), bounded in every entry all the same.
    seconds(&key.child("boot_delay"), vm.boot_delay, 0, MAX_DELAY_S)?;
    let key = Key::new("restart");
    let on_failure = choice(
        &key.child("policy"),
        &r.policy,
        &[("never", false), ("on-failure", true)],
    )?;
    let max = count(&key.child("max"), r.max, 0, MAX_RESTARTS)?;
    let backoff = seconds(&key.child("backoff"), r.backoff, 0, MAX_BACKOFF_S)?;
    Ok(Supervision {
        boot_timeout,
        shutdown_timeout,
        restart: if on_failure {
            RestartPolicy::OnFailure { max, backoff }
        } else {
            RestartPolicy::Never
        },
    })
}

/// The CLI's flags, else USERNAME/PASSWORD/HOSTNAME, else the bootstrap's defaults.
pub(super) fn credentials(
    bootstrap: Option<&BootstrapSection>,
    env: &NodeEnv,
    over: &Overrides,
) -> Result<Credentials, ConfigError> {
    let cli = &over.credentials;
    let username = cli
        .username
        .clone()
        .or_else(|| env.username.clone())
        .or_else(|| bootstrap.and_then(|b| b.username.clone()));
    let password = cli
        .password
        .clone()
        .or_else(|| env.password.clone())
        .or_else(|| bootstrap.and_then(|b| b.password.clone()));
    let hostname = cli.hostname.clone().or_else(|| env.hostname.clone());
    if let Some(h) = &hostname {
        if h.is_empty()
            || h.len() > 63
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(Key::new("hostname").invalid(h, "not a valid host name"));
        }
    }
    Ok(Credentials {
        username,
        password,
        hostname,
    })
}

/// --connection-mode, else CONNECTION_MODE, else tc.
pub(super) fn connection_mode(
    env: &NodeEnv,
    over: &Overrides,
) -> Result<ConnectionMode, ConfigError> {
    match over.connection_mode.as_deref() {
        Some(m) => super::env::connection_mode(&Key::new("--connection-mode"), m),
        None => Ok(env.connection_mode.get()?.unwrap_or_default()),
    }
}

/// What containerlab told the VM beyond the file (`vm`: this VM's variables, the first VM's
/// only). `identity` names the node when CLAB_LABEL_CLAB_NODE_NAME is unset.
pub(super) fn lab(
    vm: &VmEnv,
    node: &NodeEnv,
    over: &Overrides,
    identity: &str,
) -> Result<Lab, ConfigError> {
    Ok(Lab {
        mgmt_mac: vm.mgmt_mac.get()?,
        mgmt_dhcp: vm.mgmt_dhcp.get()?.unwrap_or(false),
        node_name: node
            .node_name
            .clone()
            .unwrap_or_else(|| identity.to_string()),
        docker_net_v4: node.docker_net_v4.get()?.unwrap_or_default(),
        docker_net_v6: node.docker_net_v6.get()?.unwrap_or_default(),
        variant: over.variant.clone().unwrap_or_default(),
    })
}

/// `[bootstrap]`: what a time-out leads to, how often to try, and the steps.
pub(super) fn bootstrap(key: &Key, b: &BootstrapSection) -> Result<Bootstrap, ConfigError> {
    let key = key.child("bootstrap");
    let on_timeout = choice(
        &key.child("on_timeout"),
        &b.on_timeout,
        &[
            ("retry", BootAction::Retry),
            ("restart", BootAction::Restart),
            ("fail", BootAction::Fail),
        ],
    )?;
    count(&key.child("attempts"), b.attempts, 1, MAX_ATTEMPTS)?;
    let steps = super::blocks::expand(&key, &b.steps, &b.blocks)?
        .iter()
        .map(|(k, s)| step(k, s))
        .collect::<Result<Vec<Step>, _>>()?;
    if steps.is_empty() {
        return Err(key
            .child("steps")
            .invalid("[]", "a bootstrap needs at least one step"));
    }
    Ok(Bootstrap {
        steps,
        on_timeout,
        attempts: b.attempts,
    })
}

/// `[install]`: the VM it plays on, its overall time-out and its steps (as a bootstrap's).
pub(super) fn install(i: &InstallSection, vms: &[super::VmPlan]) -> Result<Install, ConfigError> {
    let key = Key::new("install");
    let vm = match &i.vm {
        None => 0,
        Some(n) => vms.iter().position(|v| &v.name == n).ok_or_else(|| {
            key.child("vm")
                .invalid(n, "no VM of this node has that name")
        })?,
    };
    let timeout = seconds(&key.child("timeout"), i.timeout, 1, MAX_TIMEOUT_S)?;
    let steps_key = key.child("steps");
    let steps = i
        .steps
        .iter()
        .enumerate()
        .map(|(n, s)| step(&steps_key.index(n), s))
        .collect::<Result<Vec<Step>, _>>()?;
    if steps.is_empty() {
        return Err(steps_key.invalid("[]", "an install needs at least one step"));
    }
    Ok(Install { vm, steps, timeout })
}

const ONE_OF: &str = "each step has exactly one of expect, send, send_config, wait, sendkey";

/// A `sendkey` combination: qemu's key names (lower-case letters, digits, '_') joined by '-',
/// at most 8 keys (qemu checks the names themselves when the step runs).
fn keys(key: &Key, combo: &str) -> Result<Vec<String>, ConfigError> {
    let keys: Vec<String> = combo.split('-').map(str::to_string).collect();
    let name_ok = |k: &String| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if keys.len() > 8 || !keys.iter().all(name_ok) {
        return Err(key.invalid(
            combo,
            "qemu key names (a-z, 0-9, _) joined by '-', e.g. \"ctrl-alt-f2\"",
        ));
    }
    Ok(keys)
}

/// One bootstrap step, run only when the startup config is there or is not (`when`).
fn step(key: &Key, s: &super::schema::StepSection) -> Result<Step, ConfigError> {
    let Some(w) = &s.when else {
        return action(key, s);
    };
    let startup_config = super::choice(
        &key.child("when"),
        w,
        &[("startup-config", true), ("no-startup-config", false)],
    )?;
    Ok(Step::When {
        startup_config,
        step: Box::new(action(key, s)?),
    })
}

/// What a step does: exactly one of expect, send, send_config, wait, sendkey.
fn action(key: &Key, s: &super::schema::StepSection) -> Result<Step, ConfigError> {
    if let Some(b) = &s.block {
        return Err(key
            .child("block")
            .invalid(b, "blocks are played from [bootstrap] steps only"));
    }
    let timeout = seconds(
        &key.child("timeout"),
        s.timeout.unwrap_or(60),
        1,
        MAX_TIMEOUT_S,
    )?;
    let regex = |k: &str, p: &str| -> Result<String, ConfigError> {
        regex::Regex::new(p)
            .map_err(|e| key.child(k).invalid(p, format!("not a valid regex: {e}")))?;
        Ok(p.to_string())
    };
    if let Some(k) = &s.sendkey {
        if s.expect.is_some() || s.send.is_some() || s.send_config.is_some() || s.wait.is_some() {
            return Err(key.invalid("", ONE_OF));
        }
        return Ok(Step::SendKey(keys(&key.child("sendkey"), k)?));
    }
    if s.expect.is_none() && !s.answers.is_empty() {
        return Err(key
            .child("answers")
            .invalid("[...]", "answers belong to an expect step"));
    }
    Ok(match (&s.expect, &s.send, &s.send_config, s.wait) {
        (Some(p), None, None, None) => Step::Expect {
            pattern: regex("expect", p)?,
            timeout,
            answers: answers(&key.child("answers"), &s.answers)?,
        },
        (None, Some(t), None, None) => {
            check_template(&key.child("send"), t)?;
            Step::Send(t.clone())
        }
        (None, None, Some(p), None) => Step::SendConfig {
            prompt: regex("send_config", p)?,
            timeout,
        },
        // NaN and the infinities are outside too.
        (None, None, None, Some(w)) if (0.0..=MAX_DELAY_S as f64).contains(&w) => {
            Step::Wait(Duration::from_secs_f64(w))
        }
        (None, None, None, Some(w)) => {
            return Err(key
                .child("wait")
                .invalid(w, format!("seconds between 0 and {MAX_DELAY_S}")))
        }
        _ => return Err(key.invalid("", ONE_OF)),
    })
}

/// An expect step's answers: each `on` a regex, each `send` a template.
fn answers(key: &Key, list: &[AnswerSection]) -> Result<Vec<Answer>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let key = key.index(i);
            regex::Regex::new(&a.on).map_err(|e| {
                key.child("on")
                    .invalid(&a.on, format!("not a valid regex: {e}"))
            })?;
            check_template(&key.child("send"), &a.send)?;
            Ok(Answer {
                on: a.on.clone(),
                send: a.send.clone(),
            })
        })
        .collect()
}

/// `vm.clock`: `none` (default) or `guest-agent`.
pub(super) fn clock(key: &Key, vm: &VmSection) -> Result<Clock, ConfigError> {
    choice(
        &key.child("clock"),
        &vm.clock,
        &[("none", Clock::None), ("guest-agent", Clock::GuestAgent)],
    )
}

/// `vm.sandbox` and `vm.qemu_user`: a user name (letters, digits, '.', '_', '-'), `UID` or
/// `UID:GID` (a bare UID is its own GID). uid 0 would be no sandbox at all: refused.
pub(super) fn sandbox(key: &Key, vm: &VmSection) -> Result<Sandbox, ConfigError> {
    if !vm.sandbox {
        return Ok(Sandbox::Off);
    }
    let key = key.child("qemu_user");
    let spec = vm.qemu_user.as_str();
    let id = |s: &str| s.parse::<u32>().ok().filter(|&n| n > 0 && n < u32::MAX);
    let user = if spec.starts_with(|c: char| c.is_ascii_digit()) {
        let (u, g) = spec.split_once(':').unwrap_or((spec, spec));
        match (id(u), id(g)) {
            (Some(uid), Some(gid)) => QemuUser::Id { uid, gid },
            _ => {
                return Err(key.invalid(
                    spec,
                    "expected a user name, UID or UID:GID, ids from 1 to 4294967294 \
                     (root is no sandbox: set vm.sandbox = false instead)",
                ))
            }
        }
    } else if !spec.is_empty()
        && spec.len() <= 32
        && spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && spec != "root"
    {
        QemuUser::Name(spec.to_string())
    } else {
        return Err(key.invalid(
            spec,
            "expected a user name (letters, digits, '.', '_', '-'; not root), UID or UID:GID",
        ));
    };
    Ok(Sandbox::On { user })
}
