//! Each platform builds and starts: scripts/build-image.sh builds vrnetlab/<kind>:<version>
//! from a placeholder disk (a blank image named like the vendor's file, from build.conf), and
//! the container starts qemu with the platform's argv and reaches "booting" (the blank disk
//! never boots; that is fine). Needs root and Docker (fails loudly without them). The image is
//! built on this build's launcher (lt-platforms-base, launcher-base plus target's binary).
//! The build runs with NO_INSTALL=1: a blank placeholder can never finish a platform's install
//! phase (INSTALL=1), so it is skipped, and the test checks the script said so; another test
//! shows that without NO_INSTALL the install phase is run (`launcher install` boots qemu).

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
    conf_opt(kind, key).unwrap_or_else(|| panic!("{kind}/build.conf: no {key}="))
}

/// `KEY=value` of build.conf, if it has that key.
fn conf_opt(kind: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(
        super::catalogue::root()
            .join("images")
            .join(kind)
            .join("build.conf"),
    )
    .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('\'').to_string())
}

/// Whether build.conf has exactly this line.
fn conf_has(kind: &str, line: &str) -> bool {
    std::fs::read_to_string(
        super::catalogue::root()
            .join("images")
            .join(kind)
            .join("build.conf"),
    )
    .unwrap()
    .lines()
    .any(|l| l.trim() == line)
}

pub(super) struct Cleanup(pub(super) Vec<String>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = sh(c);
        }
    }
}

/// The base image of this run (named by the process and `name`, so two runs, or two tests of
/// a run, side by side do not share it).
pub(super) fn base_image(tmp: &Path, name: &str) -> String {
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
    let tag = format!("lt-platforms-base:{name}-{}", std::process::id());
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
    // PLACEHOLDER_TEXT='NAME WORDS...': that placeholder is a text file of WORDS (SR OS's
    // licence), the others blank disks.
    let text = conf_opt(kind, "PLACEHOLDER_TEXT");
    let text = text.as_deref().and_then(|t| t.split_once(' '));
    for file in &files {
        match text {
            Some((name, words)) if file.ends_with(name) => {
                std::fs::write(file, format!("{words}\n")).unwrap()
            }
            _ => {
                must(&format!(
                    "qemu-img create -q -f {} {} 64M",
                    conf(kind, "PLACEHOLDER_FORMAT"),
                    file.display()
                ));
            }
        }
    }
    let script = super::catalogue::root().join("scripts/build-image.sh");
    let out = Command::new(&script)
        .env("BASE", base)
        .env("NO_INSTALL", "1")
        .arg(kind)
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh {kind}: {out:?}");
    if conf_has(kind, "INSTALL=1") {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{kind}: install phase skipped (NO_INSTALL=1)")),
            "build-image.sh {kind}: NO_INSTALL=1 not said: {err}"
        );
    }
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(tag.starts_with(&format!("vrnetlab/{kind}:0.0.0")), "{tag}");
    clean.0.push(format!("docker rmi -f {tag}"));
    let vm = conf(kind, "VM_NAME");
    runs_and_boots(kind, &tag, "", &[vm.as_str()], clean);
    // VARIANT_RUN='VARIANT VM...': the image also starts with --variant VARIANT, each VM's qemu
    // running (SR OS's distributed chassis: a control plane and line cards).
    if let Some(v) = conf_opt(kind, "VARIANT_RUN") {
        let mut words = v.split_whitespace();
        let variant = words.next().expect("VARIANT_RUN names a variant");
        let vms: Vec<&str> = words.collect();
        runs_and_boots(kind, &tag, &format!("--variant {variant}"), &vms, clean);
    }
}

/// Runs `tag` as containerlab would (plus `extra` flags) and waits until it is booting with a
/// qemu for each of `vms`; the container is removed after.
fn runs_and_boots(kind: &str, tag: &str, extra: &str, vms: &[&str], clean: &mut Cleanup) {
    let name = format!("lt-platforms-{kind}");
    let _ = sh(&format!("docker rm -f {name}"));
    clean.0.insert(0, format!("docker rm -f {name}"));
    must(&format!(
        "docker run -d --name {name} --cap-add NET_ADMIN --device /dev/net/tun -e LAUNCHER_ACCEL=tcg {tag} --username admin --password admin --hostname r-{} --connection-mode tc --trace {extra}",
        kind.replace('_', "-")
    ));
    let start = Instant::now();
    loop {
        let (_, logs) = sh(&format!("docker logs {name}"));
        if logs.contains("to=\"booting\"") || logs.contains("\"to\":\"booting\"") {
            let (_, ps) = sh(&format!("docker top {name}"));
            let all = vms.iter().all(|vm| ps.contains(&format!("-name {vm},")));
            if ps.contains("qemu-system-x86_64") && all {
                let _ = sh(&format!("docker rm -f {name}"));
                return;
            }
        }
        let (_, running) = sh(&format!(
            "docker inspect -f '{{{{.State.Running}}}}' {name}"
        ));
        assert!(
            running.trim() == "true",
            "{kind} {extra}: the container ended:\n{logs}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{kind} {extra}: no \"booting\" with a qemu for each of {vms:?} within 120 s:\n{logs}\n{}",
            sh(&format!("docker top {name}")).1
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
    let base = base_image(&tmp, "build");
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

/// Without NO_INSTALL, a platform with INSTALL=1 (cisco_asav, the smallest) runs its install
/// phase: the script says so and `launcher install` boots qemu in the install container. The
/// blank placeholder would never finish it: the test stops the script once qemu runs, and no
/// image is tagged.
#[test]
fn without_no_install_the_build_runs_the_install_phase() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (Docker)"
    );
    let kind = "cisco_asav";
    assert!(conf_has(kind, "INSTALL=1"), "{kind}: no INSTALL=1");
    let tmp = std::env::temp_dir().join(format!("lt-install-build-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut clean = Cleanup(vec![format!("rm -rf {}", tmp.display())]);
    let base = base_image(&tmp, "install");
    clean.0.push(format!("docker rmi -f {base}"));
    let file = tmp.join("asav0.0.1-lt-install.qcow2");
    must(&format!(
        "qemu-img create -q -f qcow2 {} 64M",
        file.display()
    ));
    let tag = "vrnetlab/cisco_asav:0.0.1-lt-install";
    let _ = sh(&format!("docker rmi -f {tag}"));
    clean.0.push(format!("docker rmi -f {tag}"));
    let err_path = tmp.join("build.err");
    let mut child = Command::new(super::catalogue::root().join("scripts/build-image.sh"))
        .env("BASE", &base)
        .env("LAUNCHER_ACCEL", "tcg")
        .env_remove("NO_INSTALL")
        .arg(kind)
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let ctr = format!("build-image-install-{kind}-{}", child.id());
    clean.0.insert(0, format!("docker rm -f {ctr}"));
    clean.0.insert(
        1,
        format!(
            "docker rmi -f build-image-install/{kind}:0.0.1-lt-install-{}",
            child.id()
        ),
    );
    let start = Instant::now();
    let seen = loop {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let (_, ps) = sh(&format!("docker top {ctr}"));
        if err.contains(&format!(
            "{kind}: install phase (launcher install in container {ctr})"
        )) && ps.contains("qemu-system-x86_64")
            && ps.contains("-name asav")
        {
            break Ok(ps);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!(
                "build-image.sh ended ({status}) before the install ran: {err}"
            ));
        }
        if start.elapsed() > Duration::from_secs(300) {
            break Err(format!("no install qemu within 300 s: {err}\n{ps}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let waited = Instant::now();
    while child.try_wait().unwrap().is_none() && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    let ps = seen.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ps.contains("launcher install"),
        "not `launcher install`: {ps}"
    );
    let (tagged, _) = sh(&format!("docker image inspect {tag} >/dev/null 2>&1"));
    assert!(!tagged, "an unfinished install tagged {tag}");
    drop(clean);
}
