//! The data ports of a node's VMs: a VM's `data` selection ("all", "none", "1-4,7") and the
//! rule that every port sits on exactly one VM. Never looks at links present or at the system.

use super::bounds::MAX_DATA_PORT;
use super::hardware::NodeNics;
use super::{ConfigError, Key, LinkSpec, Ports};

/// Parses a `data` port selection: "all", "none", or numbers and ranges ("1-4,7"). Ports the
/// lab did not connect (a line card's "1-48" with CLAB_INTFS=3) simply are not there.
pub(super) fn data_ports(key: &Key, data: Option<&toml::Value>) -> Result<Ports, ConfigError> {
    let s = match data {
        None => return Ok(Ports::Only(vec![])),
        Some(toml::Value::String(s)) => s,
        Some(other) => {
            return Err(key.invalid(
                other.to_string(),
                "expected a string: all, none, or ports such as 1-4,7",
            ))
        }
    };
    match s.trim() {
        "all" => return Ok(Ports::All),
        "none" | "" => return Ok(Ports::Only(vec![])),
        _ => {}
    }
    let bad = || key.invalid(s, "expected all, none, or ports and ranges such as 1-4,7");
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part.trim(), part.trim()),
        };
        let (a, b): (u32, u32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a == 0 || b < a {
            return Err(bad());
        }
        if b > MAX_DATA_PORT {
            return Err(key.invalid(s, format!("data ports are numbered 1 to {MAX_DATA_PORT}")));
        }
        out.extend(a..=b);
    }
    Ok(Ports::Only(out))
}

/// Every data port of the node on exactly one VM; with CLAB_INTFS (any ports), no port number
/// in two VMs' selections.
pub(super) fn one_vm_per_port(nics: &NodeNics, selections: &[Ports]) -> Result<(), ConfigError> {
    if let LinkSpec::AnyIndex { .. } = nics.spec {
        for (b, sb) in selections.iter().enumerate() {
            for (a, sa) in selections[..b].iter().enumerate() {
                if let Some(port) = common(sa, sb) {
                    return Err(Key::new("vm").index(b).child("data").invalid(
                        describe(sb),
                        format!("port {port} is also vm[{a}]'s; with CLAB_INTFS any port may be present, so each port belongs to one VM"),
                    ));
                }
            }
        }
    }
    for l in &nics.nics.links {
        let on: Vec<usize> = (0..selections.len())
            .filter(|&i| selections[i].contains(l.index))
            .collect();
        match on.as_slice() {
            [_] => {}
            [] => {
                return Err(Key::new("vm[]").child("data").invalid(
                    &l.eth,
                    "this data interface is on no VM: give it to one with data = \"...\"",
                ))
            }
            [a, b, ..] => {
                return Err(Key::new("vm")
                    .index(*b)
                    .child("data")
                    .invalid(&l.eth, format!("already on vm[{a}]")))
            }
        }
    }
    Ok(())
}

/// A selection as `data` writes it: "all", or ports and ranges such as "1-4,7".
fn describe(p: &Ports) -> String {
    let Ports::Only(ports) = p else {
        return "all".into();
    };
    let mut ports = ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1] == ports[j] + 1 {
            j += 1;
        }
        parts.push(match j > i {
            true => format!("{}-{}", ports[i], ports[j]),
            false => ports[i].to_string(),
        });
        i = j + 1;
    }
    parts.join(",")
}

/// A port two selections both take ("all" when both take every port).
fn common(a: &Ports, b: &Ports) -> Option<String> {
    match (a, b) {
        (Ports::Only(a), Ports::Only(b)) => a.iter().find(|p| b.contains(p)).map(u32::to_string),
        (Ports::All, Ports::Only(p)) | (Ports::Only(p), Ports::All) => {
            p.first().map(u32::to_string)
        }
        (Ports::All, Ports::All) => Some("all".into()),
    }
}
