//! Docker end to end, in the demo lab (scripts/demo.sh): two tinylinux router containers run
//! with the least-privilege set (NET_ADMIN + /dev/net/tun), linked back to back the way
//! containerlab does it. The LACP bond forms across our datapath; `docker stop` powers the guest
//! off through ACPI and exits 0; `docker start` brings it back with the same MACs. And one
//! container in management passthrough: the guest answers on the container's own address.

mod common;
use common::*;
use std::time::Duration;

struct Lab {
    name: String,
}

impl Lab {
    fn sh(&self, cmd: &str) -> String {
        must(&format!(
            "cd {} && LAB={} {cmd}",
            env!("CARGO_MANIFEST_DIR"),
            self.name
        ))
    }
    fn c(&self, r: &str) -> String {
        format!("{}-{r}", self.name)
    }
    fn logs(&self, r: &str) -> String {
        must(&format!("docker logs {} 2>&1", self.c(r)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "cd {} && LAB={} scripts/demo.sh down",
            env!("CARGO_MANIFEST_DIR"),
            self.name
        ));
    }
}

/// `LAB-BOND-UP mac=.. partner=.. aggregator=.. eth1_agg=.. eth2_agg=..` as key/value pairs.
fn bond_line(logs: &str) -> Option<std::collections::HashMap<String, String>> {
    let line = logs.lines().rev().find(|l| l.contains("LAB-BOND-UP"))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn nic_line(logs: &str) -> String {
    logs.lines()
        .rev()
        .find(|l| l.contains("tinylinux: 3 NICs:"))
        .unwrap_or_default()
        .to_string()
}

/// The `ethN=MAC` pairs of a NICs line (a kernel message may land on the same console line).
fn nic_macs(line: &str) -> Vec<String> {
    let macs: Vec<String> = line
        .split("NICs:")
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter(|t| t.starts_with("eth") && t.contains('='))
        .map(|t| t.split('/').next().unwrap_or_default().to_string())
        .collect();
    assert!(!macs.is_empty(), "no NICs in {line:?}");
    macs
}

#[test]
fn lacp_bond_forms_across_the_datapath_and_survives_stop_start() {
    require_docker();
    let lab = Lab {
        name: format!("e2e{}", std::process::id()),
    };
    let out = lab.sh("scripts/demo.sh up");
    println!("{out}");

    // Both guests: both links in one aggregator, the partner is the other router.
    let b1 = bond_line(&lab.logs("r1")).expect("r1 bond line");
    let b2 = bond_line(&lab.logs("r2")).expect("r2 bond line");
    assert_eq!(b1["partner"], b2["mac"], "r1's LACP partner is r2");
    assert_eq!(b2["partner"], b1["mac"], "r2's LACP partner is r1");
    for b in [&b1, &b2] {
        assert_eq!(
            b["eth1_agg"], b["eth2_agg"],
            "both links in one aggregator: {b:?}"
        );
        assert_eq!(b["aggregator"], b["eth1_agg"]);
    }
    // (LAB-BOND-UP is printed only after a ping over the bond succeeded.)

    // Status through docker exec: both links wired, counters moving both ways.
    let st: serde_json::Value = serde_json::from_str(&must(&format!(
        "docker exec {} launcher status --json",
        lab.c("r1")
    )))
    .unwrap();
    assert_eq!(st["state"], "ready");
    assert_eq!(st["name"], "r1");
    for l in st["links"].as_array().unwrap() {
        assert_eq!(l["wired"], true, "{l}");
        assert!(
            l["to_vm_packets"].as_u64().unwrap() > 0 && l["from_vm_packets"].as_u64().unwrap() > 0,
            "{l}"
        );
        assert_eq!(l["mtu"], 9500, "{l}");
    }
    // Management: the guest's web server answers on the container's own address, port 80
    // (user-mode networking with the launcher's forwards), as vrnetlab does for SSH/NETCONF.
    let ip = must(&format!("docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' {}", lab.c("r1")));
    let page = wait_for(Duration::from_secs(30), "the forwarded port", || {
        http_get(None, &format!("{}:80", ip.trim())).filter(|b| b.contains("tinylinux"))
    });
    assert!(page.contains("200 OK"), "{page}");
    let macs_before = nic_line(&lab.logs("r1"));
    assert!(!macs_before.is_empty());

    // docker stop: ACPI powerdown, exit 0 within the grace period.
    let t = std::time::Instant::now();
    must(&format!("docker stop -t 30 {}", lab.c("r1")));
    let took = t.elapsed();
    println!("docker stop took {took:?}");
    assert!(took < Duration::from_secs(30));
    assert_eq!(
        must(&format!(
            "docker inspect -f '{{{{.State.ExitCode}}}}' {}",
            lab.c("r1")
        ))
        .trim(),
        "0"
    );
    let logs = lab.logs("r1");
    assert!(
        logs.contains("ACPI power button pressed, powering off"),
        "{logs}"
    );
    assert!(logs.contains("clean shutdown"), "{logs}");

    // docker start: same MACs, healthy, the bond forms again once the links are back.
    let bonds_before = logs.matches("LAB-BOND-UP").count();
    must(&format!("docker start {}", lab.c("r1")));
    lab.sh("scripts/demo.sh links");
    wait_for(
        Duration::from_secs(120),
        "r1 healthy after docker start",
        || {
            let h = must(&format!(
                "docker inspect -f '{{{{.State.Health.Status}}}}' {}",
                lab.c("r1")
            ));
            (h.trim() == "healthy").then_some(())
        },
    );
    wait_for(Duration::from_secs(120), "the bond to re-form", || {
        (lab.logs("r1").matches("LAB-BOND-UP").count() > bonds_before).then_some(())
    });
    let macs_after = nic_line(&lab.logs("r1"));
    assert_eq!(
        nic_macs(&macs_before),
        nic_macs(&macs_after),
        "same MACs after docker start:\n{macs_before}\n{macs_after}"
    );
    let b1 = bond_line(&lab.logs("r1")).unwrap();
    assert_eq!(b1["partner"], b2["mac"]);
    // r2 saw its links vanish and come back: re-wired without a VM restart.
    let st2: serde_json::Value = serde_json::from_str(&must(&format!(
        "docker exec {} launcher status --json",
        lab.c("r2")
    )))
    .unwrap();
    assert_eq!(st2["restarts"], 0);
    for l in st2["links"].as_array().unwrap() {
        assert_eq!(l["wired"], true);
        assert!(l["wirings"].as_u64().unwrap() >= 2, "re-wired: {l}");
    }
}

/// A container removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rm -f {}", self.0));
    }
}

#[test]
fn passthrough_container_answers_on_its_own_address() {
    require_docker();
    let c = Container(format!("pt{}", std::process::id()));
    must(&format!(
        "docker run -d --name {} --hostname rpt --cap-add NET_ADMIN --device /dev/net/tun \
         -e CLAB_MGMT_PASSTHROUGH=true launcher-tinylinux:latest",
        c.0
    ));
    wait_for(Duration::from_secs(120), "the router healthy", || {
        let h = must(&format!(
            "docker inspect -f '{{{{.State.Health.Status}}}}' {}",
            c.0
        ));
        (h.trim() == "healthy").then_some(())
    });
    let ip = must(&format!(
        "docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}}{{{{end}}}}' {}",
        c.0
    ));
    let mac = must(&format!(
        "docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.MacAddress}}}}{{{{end}}}}' {}",
        c.0
    ));
    let logs = must(&format!("docker logs {} 2>&1", c.0));
    // The guest has the container's address (on its kernel command line) and its MAC.
    assert!(logs.contains(&format!("tl.ip={}/", ip.trim())), "{logs}");
    assert!(logs.contains(&format!("eth0={}/", mac.trim())), "{logs}");
    // From the Docker host: the guest's own web server on the container's address...
    let page = wait_for(Duration::from_secs(30), "the guest's web server", || {
        http_get(None, &format!("{}:80", ip.trim())).filter(|b| b.contains("tinylinux rpt"))
    });
    assert!(page.contains("200 OK"), "{page}");
    // ...and the launcher's telnet console too, on the same address.
    let seen = telnet_read(None, &format!("{}:5000", ip.trim()), "TINYLINUX-READY");
    assert!(
        seen.contains("TINYLINUX-READY"),
        "console history over telnet: {seen:?}"
    );
    let t0 = std::time::Instant::now();
    must(&format!("docker stop -t 30 {}", c.0));
    println!("passthrough docker stop: {:?}", t0.elapsed());
    assert_eq!(
        must(&format!(
            "docker inspect -f '{{{{.State.ExitCode}}}}' {}",
            c.0
        ))
        .trim(),
        "0"
    );
}
