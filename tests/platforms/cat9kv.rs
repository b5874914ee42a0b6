//! cisco_cat9kv's optional vswitch.xml (the ASIC emulation settings): a file at /vswitch.xml
//! in the container (containerlab's docs bind it there) goes on the day-0 CD as
//! conf/vswitch.xml with a serial of its own; without it the CD has no such file. Built from
//! a placeholder disk in Docker (needs root and Docker; fails loudly without them), the CD
//! read in the running container (the launcher writes it before qemu starts).

use super::build::{base_image, must, sh, Cleanup};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts `tag` as `name` with extra `docker run` options and waits for "booting".
fn start(name: &str, opts: &str, tag: &str) {
    let _ = sh(&format!("docker rm -f {name}"));
    must(&format!(
        "docker run -d --name {name} {opts} --cap-add NET_ADMIN --device /dev/net/tun -e LAUNCHER_ACCEL=tcg {tag} --hostname sw1"
    ));
    booted(name, 1);
}

/// Waits until container `name`'s logs say "booting" `times` times (once per start).
fn booted(name: &str, times: usize) {
    let start = Instant::now();
    loop {
        let (_, logs) = sh(&format!("docker logs {name}"));
        if logs.matches("to=\"booting\"").count() + logs.matches("\"to\":\"booting\"").count()
            >= times
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{name}: no \"booting\" within 120 s:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the day-0 CD of container `name` holds that `pattern` (grep -E) finds.
fn on_cd(name: &str, pattern: &str) -> String {
    let (_, out) = sh(&format!(
        "docker exec {name} sh -c \"grep -a -o -E '{pattern}' /var/lib/launcher/day0-*.iso\""
    ));
    out
}

#[test]
fn cat9kv_puts_the_optional_vswitch_xml_on_its_day0_cd() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (Docker)"
    );
    let id = std::process::id();
    let tmp = std::env::temp_dir().join(format!("lt-platforms-vswitch-{id}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut clean = Cleanup(vec![format!("rm -rf {}", tmp.display())]);
    let base = base_image(&tmp, "cat9kv");
    clean.0.push(format!("docker rmi -f {base}"));
    let disk = tmp.join("cat9kv_prd.0.0.0-lt-vswitch.qcow2");
    must(&format!(
        "qemu-img create -q -f qcow2 {} 64M",
        disk.display()
    ));
    let out = Command::new(super::catalogue::root().join("scripts/build-image.sh"))
        .env("BASE", &base)
        .arg("cisco_cat9kv")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh: {out:?}");
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    clean.0.push(format!("docker rmi -f {tag}"));
    let xml = tmp.join("vswitch.xml");
    std::fs::write(
        &xml,
        "<switch>\n  <prod_serial_number>CMLUADP</prod_serial_number>\n  <asic>lt-vswitch-q200</asic>\n</switch>\n",
    )
    .unwrap();
    let (with, without) = (
        format!("lt-platforms-vswitch-{id}"),
        format!("lt-platforms-novswitch-{id}"),
    );
    clean.0.insert(0, format!("docker rm -f {with} {without}"));

    start(
        &with,
        &format!("-v {}:/vswitch.xml:ro", xml.display()),
        &tag,
    );
    // The file under its Rock Ridge name, its content, and a serial of the container's own.
    assert!(
        on_cd(&with, "vswitch\\.xml").contains("vswitch.xml"),
        "no vswitch.xml on the CD"
    );
    assert!(
        on_cd(&with, "lt-vswitch-q200").contains("lt-vswitch-q200"),
        "not the file given"
    );
    let serial = on_cd(&with, "<prod_serial_number>[^<]*</prod_serial_number>");
    let serial = serial
        .trim()
        .strip_prefix("<prod_serial_number>")
        .and_then(|s| s.strip_suffix("</prod_serial_number>"))
        .unwrap_or_else(|| panic!("no serial on the CD: {serial:?}"))
        .to_string();
    assert!(
        serial.len() == 7
            && serial != "CMLUADP"
            && serial
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
        "serial {serial:?}"
    );
    // The same serial after a restart of the container (kept in the state dir).
    must(&format!("docker restart -t 5 {with}"));
    booted(&with, 2);
    assert!(
        on_cd(&with, "<prod_serial_number>[^<]*").contains(&serial),
        "the serial changed after a restart"
    );

    start(&without, "", &tag);
    assert!(
        on_cd(&without, "iosxe_config\\.txt").contains("iosxe_config.txt"),
        "no day-0 CD"
    );
    assert_eq!(
        on_cd(&without, "vswitch\\.xml"),
        "",
        "a vswitch.xml without one given"
    );
    drop(clean);
}
