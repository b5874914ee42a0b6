//! Each platform builds and starts: scripts/build-image.sh builds vrnetlab/<kind>:<version>
//! from a placeholder disk (a blank image named like the vendor's file, from build.conf), and
//! the container starts qemu with the platform's argv and reaches "booting" (the blank disk
//! never boots; that is fine). Needs root and Docker (fails loudly without them). The image is
//! built on this build's launcher (lt-platforms-base, launcher-base plus target's binary).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub(super) fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub(super) fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "{cmd}: {out}");
    out
}

/// `KEY=value` of build.conf (a plain value, no arrays).
fn conf(kind: &str, key: &str) -> String {
    let text = std::fs::read_to_string(
        super::catalogue::root()
            .join("images")
            .join(kind)
            .join("build.conf"),
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{kind}/build.conf: no {key}="))
        .trim_matches('\'')
        .to_string()
}

pub(super) struct Cleanup(pub(super) Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = sh(c);
        }
    }
}

/// The base image of this run (named by the process, so two runs side by side do not share it).
pub(super) fn base_image(tmp: &Path) -> String {
    let (ok, out) = sh("docker image inspect launcher-base:latest >/dev/null && echo ok");
    assert!(
        ok,
        "Docker or launcher-base:latest is missing: run the README test command ({out})"
    );
    std::fs::copy(env!("CARGO_BIN_EXE_launcher"), tmp.join("launcher")).unwrap();
    std::fs::write(
        tmp.join("Dockerfile"),
        "FROM launcher-base:latest\nCOPY launcher /usr/local/bin/launcher\n",
    )
    .unwrap();
    let tag = format!("lt-platforms-base:{}", std::process::id());
    must(&format!(
        "docker build -q --network none -t {tag} {}",
        tmp.display()
    ));
    tag
}

fn builds_and_boots(kind: &str, base: &str, tmp: &Path, clean: &mut Cleanup) {
    // One placeholder per vendor file (vQFX ships two), names separated by spaces.
    let files: Vec<_> = conf(kind, "PLACEHOLDER")
        .split_whitespace()
        .map(|n| tmp.join(n))
        .collect();
    for file in &files {
        must(&format!(
            "qemu-img create -q -f {} {} 64M",
            conf(kind, "PLACEHOLDER_FORMAT"),
            file.display()
        ));
    }
    let script = super::catalogue::root().join("scripts/build-image.sh");
    let out = Command::new(&script)
        .env("BASE", base)
        .arg(kind)
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh {kind}: {out:?}");
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(tag.starts_with(&format!("vrnetlab/{kind}:0.0.0")), "{tag}");
    clean.0.push(format!("docker rmi -f {tag}"));
    let name = format!("lt-platforms-{kind}");
    let _ = sh(&format!("docker rm -f {name}"));
    clean.0.insert(0, format!("docker rm -f {name}"));
    must(&format!(
        "docker run -d --name {name} --cap-add NET_ADMIN --device /dev/net/tun -e LAUNCHER_ACCEL=tcg {tag} --username admin --password admin --hostname r-{} --connection-mode tc --trace",
        kind.replace('_', "-")
    ));
    let start = Instant::now();
    loop {
        let (_, logs) = sh(&format!("docker logs {name}"));
        if logs.contains("to=\"booting\"") || logs.contains("\"to\":\"booting\"") {
            let (_, ps) = sh(&format!("docker top {name}"));
            assert!(
                ps.contains("qemu-system-x86_64")
                    && ps.contains(&format!("-name {}", conf(kind, "VM_NAME"))),
                "{kind}: no qemu: {ps}"
            );
            return;
        }
        let (_, running) = sh(&format!(
            "docker inspect -f '{{{{.State.Running}}}}' {name}"
        ));
        assert!(
            running.trim() == "true",
            "{kind}: the container ended:\n{logs}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{kind}: no \"booting\" within 120 s:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn every_platform_builds_from_a_placeholder_and_reaches_booting() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (Docker)"
    );
    let tmp = std::env::temp_dir().join(format!("lt-platforms-build-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut clean = Cleanup(vec![format!("rm -rf {}", tmp.display())]);
    let base = base_image(&tmp);
    clean.0.push(format!("docker rmi -f {base}"));
    // LT_PLATFORMS=kind,kind narrows the run while working on a platform (said on stderr);
    // the test command leaves it unset and builds every platform.
    let only: Option<Vec<String>> = std::env::var("LT_PLATFORMS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let kinds: Vec<String> = super::catalogue::kinds()
        .into_iter()
        .filter(|k| only.as_ref().is_none_or(|o| o.contains(k)))
        .collect();
    if only.is_some() {
        eprintln!("LT_PLATFORMS: building only {kinds:?}");
    }
    assert!(!kinds.is_empty(), "LT_PLATFORMS names no platform folder");
    for kind in &kinds {
        builds_and_boots(kind, &base, &tmp, &mut clean);
    }
    drop(clean);
}

#[test]
fn a_file_without_a_version_in_its_name_is_refused() {
    let script = super::catalogue::root().join("scripts/build-image.sh");
    let tmp = std::env::temp_dir().join(format!("lt-platforms-nover-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("disk.vmdk"), "x").unwrap();
    let out = Command::new(&script)
        .args(["arista_veos"])
        .arg(tmp.join("disk.vmdk"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no version"),
        "{out:?}"
    );
}
