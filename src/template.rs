//! Templates: the `{placeholder}` language shared by bootstrap lines and the kernel command
//! line. Owns the list of placeholders, rendering, and the check for unknown ones. Pure: it
//! never reads the system and never decides what a value is (the supervisor fills them in).

use std::collections::BTreeMap;

/// The values templates may use: `{hostname}`, `{username}`, `{password}`, `{mgmt_ip}`,
/// `{mgmt_gateway}`, `{mgmt_ipv6}`, `{mgmt_gateway6}`, `{mgmt_address}` and `{mgmt_netmask}` (the
/// IPv4 one as address and dotted netmask) (the management addresses the guest is to
/// take: 10.0.0.15/24 via 10.0.0.2 in user mode, the container's own in passthrough, `dhcp`
/// with CLAB_MGMT_DHCP), `{name}` (the VM's), `{node_name}` (containerlab's node name),
/// `{docker_net_v4}`, `{docker_net_v6}` (the lab's management subnets), `{variant}` (SR OS),
/// `{base_mac}` (a stable MAC of the router's own, no NIC's: SR OS's system-base-mac).
pub type Values = BTreeMap<&'static str, String>;

pub const PLACEHOLDERS: &[&str] = &[
    "hostname",
    "username",
    "password",
    "mgmt_ip",
    "mgmt_address",
    "mgmt_netmask",
    "mgmt_gateway",
    "mgmt_ipv6",
    "mgmt_gateway6",
    "name",
    "node_name",
    "docker_net_v4",
    "docker_net_v6",
    "variant",
    "base_mac",
];

/// Replaces `{key}` with its value; `{{` and `}}` are literal braces.
pub fn render(template: &str, values: &Values) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
            // Not a known placeholder (a Junos config's own braces): the brace is text and
            // the scan goes on right after it, so `{hostname}` inside `system { .. }` renders.
            match values.get(&tail[1..end]) {
                Some(v) => {
                    out.push_str(v);
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push('{');
                    rest = &tail[1..];
                }
            }
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The placeholders a template uses that do not exist (for validation).
pub fn unknown_placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template.replace("{{", "").replace("}}", "");
    while let Some(i) = rest.find('{') {
        let Some(end) = rest[i..].find('}') else {
            break;
        };
        let key = rest[i + 1..i + end].to_string();
        if !PLACEHOLDERS.contains(&key.as_str()) {
            out.push(key);
        }
        rest = rest[i + end + 1..].to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let mut v = Values::new();
        v.insert("hostname", "r1".into());
        v.insert("username", "admin".into());
        assert_eq!(
            render("hostname {hostname}; user {username}", &v),
            "hostname r1; user admin"
        );
        assert_eq!(
            render("awk '{{print $1}}' {nothing}", &v),
            "awk '{print $1}' {nothing}"
        );
        assert_eq!(render("{", &v), "{");
        assert_eq!(
            unknown_placeholders("{hostname} {hostnme} {{x}}"),
            vec!["hostnme".to_string()]
        );
    }
}
