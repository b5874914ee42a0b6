//! What `launcher status` and `launcher health` show: the answer types (Report, VmReport,
//! LinkReport, Health; their JSON field names are a public format), built from the node
//! snapshot, the link table and a link dump, and the human rendering. Pure: no I/O.

use crate::net::{LinkInfo, LinkRow};
use crate::state::{MgmtView, Snapshot, State};
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// One data link with its live counters. "to_vm" counts what entered ethN (and went to the VM),
/// "from_vm" what the VM sent into tapN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkReport {
    pub port: u32,
    pub eth: String,
    pub tap: String,
    pub eth_ifindex: Option<u32>,
    pub tap_ifindex: u32,
    pub link_up: bool,
    pub mtu: u32,
    pub tap_mtu: u32,
    pub wired: bool,
    pub wirings: u32,
    pub to_vm_packets: u64,
    pub to_vm_bytes: u64,
    pub from_vm_packets: u64,
    pub from_vm_bytes: u64,
    pub error: Option<String>,
    /// The port as the guest sees it, like a cable: "absent" (no ethN), "down" (ethN without
    /// carrier, or not wired), "up".
    #[serde(default)]
    pub port_state: String,
    /// A NIC slot the start did not wait for (its ethN was absent): wired if it comes.
    #[serde(default)]
    pub spare: bool,
    /// "tc" (mirred both ways) or "macvtap" (CONNECTION_MODE=macvtap; `tap` names it).
    #[serde(default)]
    pub datapath: String,
    /// tc datapath: frames enter ethN and the tap delivers none to the VM while the guest
    /// sends (the host kernel drops mirred into a tap, vrnetlab issue 504): use macvtap.
    #[serde(default)]
    pub tc_stall: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub state: String,
    pub since: f64,
    pub reason: String,
    pub restarts: u32,
    pub healthy: bool,
    pub accel: String,
    pub qemu_pid: Option<i32>,
    pub links: Vec<LinkReport>,
    /// Each VM of the node (also for one VM).
    #[serde(default)]
    pub vms: Vec<VmReport>,
    /// Log and console lines dropped since the start because stdout was not drained.
    #[serde(default)]
    pub log_lines_dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmReport {
    pub name: String,
    pub state: String,
    pub since: f64,
    pub reason: String,
    pub restarts: u32,
    pub qemu_pid: Option<i32>,
    pub telnet_port: u16,
    #[serde(default)]
    pub management: String,
    /// Where its serial logs are (console.log first; rotated ones are `.1`, `.2`, ...).
    #[serde(default)]
    pub logs: Vec<String>,
}

/// The answer to `health`: from the snapshot alone (no netlink).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub name: String,
    pub state: String,
    pub healthy: bool,
}

impl Health {
    pub fn of(s: &Snapshot) -> Self {
        Self {
            name: s.name.clone(),
            state: s.lifecycle.state.as_str().into(),
            healthy: s.lifecycle.state == State::Ready,
        }
    }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The human status line's note for a port with `tc_stall`.
const TC_STALL_NOTE: &str = "  warning: frames reach ethN, the tap delivers none (host kernel drops mirred into a tap): set CONNECTION_MODE=macvtap";

/// Joins the link table with a fresh dump of the links (pure, for testing).
pub fn link_reports(rows: &[LinkRow], live: &[LinkInfo]) -> Vec<LinkReport> {
    rows.iter()
        .map(|r| {
            let eth = r
                .eth_ifindex
                .and_then(|i| live.iter().find(|l| l.index == i));
            let tap = live.iter().find(|l| l.index == r.tap_ifindex);
            LinkReport {
                port: r.port,
                eth: r.eth.clone(),
                tap: r.tap.clone(),
                eth_ifindex: r.eth_ifindex,
                tap_ifindex: r.tap_ifindex,
                link_up: eth.map(|e| e.up && e.lower_up).unwrap_or(false),
                mtu: eth.map(|e| e.mtu).unwrap_or(0),
                tap_mtu: tap.map(|t| t.mtu).unwrap_or(0),
                wired: r.wired,
                wirings: r.wirings,
                to_vm_packets: eth.map(|e| e.rx_packets).unwrap_or(0),
                to_vm_bytes: eth.map(|e| e.rx_bytes).unwrap_or(0),
                from_vm_packets: tap.map(|t| t.rx_packets).unwrap_or(0),
                from_vm_bytes: tap.map(|t| t.rx_bytes).unwrap_or(0),
                error: r.last_error.clone(),
                port_state: r.port_state.as_str().into(),
                spare: r.spare,
                datapath: if r.macvtap { "macvtap" } else { "tc" }.into(),
                tc_stall: r.tc_stall,
            }
        })
        .collect()
}

impl Report {
    /// The node's report: the snapshot, with the link table joined to a fresh link dump.
    pub fn build(s: &Snapshot, rows: &[LinkRow], live: &[LinkInfo]) -> Self {
        Report {
            name: s.name.clone(),
            state: s.lifecycle.state.as_str().into(),
            since: secs(s.lifecycle.since),
            reason: s.lifecycle.reason.clone(),
            restarts: s.lifecycle.restarts,
            healthy: s.lifecycle.state == State::Ready,
            accel: s.accel.clone(),
            // The node's qemu pid is the first VM's.
            qemu_pid: s.vms.first().and_then(|v| v.qemu_pid),
            links: link_reports(rows, live),
            vms: s
                .vms
                .iter()
                .map(|v| VmReport {
                    name: v.name.clone(),
                    state: v.lifecycle.state.as_str().into(),
                    since: secs(v.lifecycle.since),
                    reason: v.lifecycle.reason.clone(),
                    restarts: v.lifecycle.restarts,
                    qemu_pid: v.qemu_pid,
                    telnet_port: v.telnet_port,
                    management: management_text(&v.management),
                    logs: v.logs.iter().map(|l| l.display().to_string()).collect(),
                })
                .collect(),
            log_lines_dropped: 0,
        }
    }
}

/// How a VM is managed, for people: "user 10.0.0.15/24 (11 forwards)",
/// "passthrough eth0 192.0.2.2/24 via 192.0.2.1", "none".
pub fn management_text(m: &MgmtView) -> String {
    match m {
        MgmtView::None => "none".into(),
        MgmtView::User { address, forwards } => format!("user {address} ({forwards} forwards)"),
        MgmtView::Passthrough {
            interface,
            address,
            gateway,
        } => format!(
            "passthrough {interface} {address} via {}",
            gateway.as_deref().unwrap_or("-")
        ),
    }
}

/// The human rendering of a report.
pub fn render(r: &Report) -> String {
    let age = (secs(SystemTime::now()) - r.since).max(0.0);
    let mut out = format!(
        "{}: {} for {:.0}s ({}), accel {}, qemu pid {}, restarts {}\n",
        r.name,
        r.state,
        age,
        r.reason,
        r.accel,
        r.qemu_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        r.restarts
    );
    if let [vm] = r.vms.as_slice() {
        out.push_str(&format!("management: {}\n", vm.management));
    }
    for vm in &r.vms {
        let who = if r.vms.len() > 1 {
            format!(" {}", vm.name)
        } else {
            String::new()
        };
        out.push_str(&format!("logs{who}: {}\n", vm.logs.join(", ")));
    }
    if r.log_lines_dropped > 0 {
        out.push_str(&format!(
            "stdout: {} log lines dropped (stdout was not drained)\n",
            r.log_lines_dropped
        ));
    }
    if r.vms.len() > 1 {
        out.push_str(&format!(
            "{:<12} {:<22} {:>8} {:>9} {:>7}  {:<40} {}\n",
            "VM", "STATE", "PID", "RESTARTS", "TELNET", "MANAGEMENT", "REASON"
        ));
        for v in &r.vms {
            out.push_str(&format!(
                "{:<12} {:<22} {:>8} {:>9} {:>7}  {:<40} {}\n",
                v.name,
                v.state,
                v.qemu_pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                v.restarts,
                if v.telnet_port == 0 {
                    "-".to_string()
                } else {
                    v.telnet_port.to_string()
                },
                v.management,
                v.reason
            ));
        }
    }
    if !r.links.is_empty() {
        out.push_str(&format!(
            "{:<5} {:<10} {:>7} {:<10} {:>7} {:<6} {:>5} {:<6} {:>20} {:>20}\n",
            "PORT",
            "ETH",
            "IFINDEX",
            "TAP",
            "IFINDEX",
            "LINK",
            "MTU",
            "WIRED",
            "TO-VM pkts/bytes",
            "FROM-VM pkts/bytes"
        ));
        for l in &r.links {
            out.push_str(&format!(
                "{:<5} {:<10} {:>7} {:<10} {:>7} {:<6} {:>5} {:<6} {:>20} {:>20}{}\n",
                l.port,
                l.eth,
                l.eth_ifindex
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "gone".into()),
                l.tap,
                l.tap_ifindex,
                l.port_state,
                l.mtu,
                if l.wired { "yes" } else { "no" },
                format!("{}/{}", l.to_vm_packets, l.to_vm_bytes),
                format!("{}/{}", l.from_vm_packets, l.from_vm_bytes),
                l.error
                    .as_ref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
                    + if l.tc_stall { TC_STALL_NOTE } else { "" },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PortState;

    #[test]
    fn reports_join_counters_and_mark_gone_links() {
        let rows = vec![
            LinkRow {
                port: 1,
                eth: "eth1".into(),
                tap: "tap1".into(),
                eth_ifindex: Some(5),
                tap_ifindex: 3,
                wired: true,
                wirings: 2,
                last_error: None,
                spare: false,
                carrier: true,
                port_state: PortState::Up,
                macvtap: false,
                tc_stall: true,
            },
            LinkRow {
                port: 2,
                eth: "eth2".into(),
                tap: "tap2".into(),
                eth_ifindex: None,
                tap_ifindex: 4,
                wired: false,
                wirings: 1,
                last_error: None,
                spare: true,
                carrier: false,
                port_state: PortState::Absent,
                macvtap: true,
                tc_stall: false,
            },
        ];
        let live = vec![
            LinkInfo {
                index: 5,
                name: "eth1".into(),
                mtu: 9500,
                up: true,
                lower_up: true,
                rx_packets: 10,
                rx_bytes: 1000,
                ..Default::default()
            },
            LinkInfo {
                index: 3,
                name: "tap1".into(),
                mtu: 9500,
                up: true,
                rx_packets: 7,
                rx_bytes: 700,
                ..Default::default()
            },
        ];
        let r = link_reports(&rows, &live);
        assert_eq!(
            (
                r[0].to_vm_packets,
                r[0].from_vm_bytes,
                r[0].link_up,
                r[0].mtu
            ),
            (10, 700, true, 9500)
        );
        assert!(!r[1].link_up && !r[1].wired);
        let r0 = r[0].clone();
        let rep = Report {
            name: "r1".into(),
            state: "ready".into(),
            since: 0.0,
            reason: "x".into(),
            restarts: 0,
            healthy: true,
            accel: "tcg".into(),
            qemu_pid: Some(9),
            links: r,
            vms: vec![],
            log_lines_dropped: 0,
        };
        let text = render(&rep);
        assert!(text.contains("eth2") && text.contains("absent"), "{text}");
        assert!(text.contains(" up "), "{text}");
        assert_eq!((r0.port_state.as_str(), r0.spare), ("up", false));
        assert!(text.contains("10/1000"), "{text}");
        // The datapath per port, and the tc failure named with its way out.
        assert_eq!((r0.datapath.as_str(), r0.tc_stall), ("tc", true));
        assert_eq!(rep.links[1].datapath, "macvtap");
        assert!(
            (text.lines().find(|l| l.contains("eth1")).unwrap())
                .contains("CONNECTION_MODE=macvtap"),
            "{text}"
        );
        // Several VMs: one line each.
        let vm = |name: &str, state: &str, port| VmReport {
            name: name.into(),
            state: state.into(),
            since: 0.0,
            reason: format!("{name} why"),
            restarts: 0,
            qemu_pid: None,
            telnet_port: port,
            logs: vec![],
            management: "none".into(),
        };
        let two = Report {
            vms: vec![vm("vcp", "ready", 5000), vm("vfp", "booting", 5001)],
            ..rep
        };
        let text = render(&two);
        assert!(
            text.lines()
                .any(|l| l.starts_with("vfp") && l.contains("booting") && l.contains("5001")),
            "{text}"
        );
    }

    #[test]
    fn management_is_rendered_as_before() {
        assert_eq!(management_text(&MgmtView::None), "none");
        let user = MgmtView::User {
            address: "10.0.0.15/24".into(),
            forwards: 11,
        };
        assert_eq!(management_text(&user), "user 10.0.0.15/24 (11 forwards)");
        let pt = |gateway: Option<&str>| MgmtView::Passthrough {
            interface: "eth0".into(),
            address: "192.0.2.2/24".into(),
            gateway: gateway.map(String::from),
        };
        assert_eq!(
            management_text(&pt(Some("192.0.2.1"))),
            "passthrough eth0 192.0.2.2/24 via 192.0.2.1"
        );
        assert_eq!(
            management_text(&pt(None)),
            "passthrough eth0 192.0.2.2/24 via -"
        );
    }

    #[test]
    fn node_pid_is_the_first_vms() {
        let vm = |pid| crate::state::VmSnapshot {
            name: "vm".into(),
            qemu_pid: pid,
            logs: vec!["/var/log/launcher/vm.console.log".into()],
            management: MgmtView::None,
            ..Default::default()
        };
        let s = Snapshot {
            name: "r1".into(),
            vms: vec![vm(Some(42)), vm(Some(43))],
            ..Default::default()
        };
        let r = Report::build(&s, &[], &[]);
        assert_eq!(r.qemu_pid, Some(42));
        assert_eq!(r.vms[1].management, "none");
        let text = render(&r);
        assert!(text.contains("qemu pid 42"), "{text}");
        assert!(
            text.contains("logs vm: /var/log/launcher/vm.console.log\n"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "name", "state", "since", "reason", "restarts", "healthy", "accel", "qemu_pid",
            "links", "vms",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(
            json["vms"][0]["logs"][0],
            "/var/log/launcher/vm.console.log"
        );
    }

    #[test]
    fn dropped_log_lines_are_shown_only_when_there_are_some() {
        let mut r = Report::build(&Snapshot::default(), &[], &[]);
        assert!(!render(&r).contains("dropped"), "{}", render(&r));
        r.log_lines_dropped = 17;
        let text = render(&r);
        assert!(
            text.contains("stdout: 17 log lines dropped (stdout was not drained)\n"),
            "{text}"
        );
        assert_eq!(serde_json::to_value(&r).unwrap()["log_lines_dropped"], 17);
    }
}
