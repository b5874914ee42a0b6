//! `launcher install` against the real qemu and the tinylinux guest: the install steps play on
//! the console, the guest powers off, and what it wrote is in the image file itself (no
//! overlay); a step that never sees its prompt fails naming the step; a config without
//! `[install]` is refused. Root (a throwaway netns) for the qemu tests.

mod common;

use common::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The marker the guest's shell computes ($((6*7))), so the typed command line alone never
/// carries it.
const MARKER: &str = "LT-INSTALL-MARKER-42";

/// `launcher install --config CONFIG` in `ns`, its output in the netns dir, as a [`Running`].
fn install(ns: &Netns, config: &Path) -> Running {
    let stdout = ns.dir.join("launcher.out");
    let stderr = ns.dir.join("launcher.err");
    let mut c = ns.launcher(&["install", "--config", config.to_str().unwrap()]);
    c.stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .stdin(Stdio::null())
        .env("LAUNCHER_LOG_FORMAT", "json");
    Running {
        child: Some(c.spawn().unwrap()),
        stdout,
        stderr,
    }
}

/// A tinylinux config with a 1 MiB raw data disk (`overlay` left at its default: on) and
/// `[install]` logging in, then `then` (TOML steps).
fn config(ns: &Netns, name: &str, then: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let disk = ns.dir.join("data.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let section = login_bootstrap("install", then).replace(
        "[install]\non_timeout = \"fail\"\nattempts = 1\nusername = \"admin\"\npassword = \"admin\"\n",
        "[install]\ntimeout = 240\n",
    );
    // [install] has no credentials of its own: the admin login is typed literally.
    let section = section
        .replace("{ send = \"{username}\" }", "{ send = \"admin\" }")
        .replace("{ send = \"{password}\" }", "{ send = \"admin\" }");
    let extra = format!(
        "[[disk]]\npath = \"{}\"\nformat = \"raw\"\n{section}",
        disk.display()
    );
    (tinylinux_config(ns, name, "", &extra), disk)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn install_writes_the_image_in_place_then_powers_off_and_exits_0() {
    let ns = Netns::new("install-ok");
    let (cfg, disk) = config(
        &ns,
        "inst",
        r#"  { send = "echo LT-INSTALL-MARKER-$((6*7)) > /dev/vda; sync; echo WRITTEN-$((1+1))" },
  { expect = "WRITTEN-2", timeout = 30 },"#,
    );
    let mut l = install(&ns, &cfg);
    let code = l.wait_exit(Duration::from_secs(300));
    let log = l.log();
    assert_eq!(code, Some(0), "{log}");
    // Powered off on the ACPI button, not quit.
    assert!(
        log.transition("stopping", "install finished: ACPI powerdown"),
        "{log}"
    );
    let image = std::fs::read(&disk).unwrap();
    assert!(
        contains(&image, MARKER),
        "the marker is not in {}",
        disk.display()
    );
    // No overlay was made: the write landed in the image file.
    let overlays: Vec<_> = std::fs::read_dir(ns.dir.join("state"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        overlays
            .iter()
            .all(|p: &std::path::PathBuf| !p.to_string_lossy().contains("overlay")),
        "{overlays:?}"
    );
}

#[test]
fn a_guest_deaf_to_the_power_button_is_quit_after_the_shutdown_timeout_and_the_install_kept() {
    let ns = Netns::new("install-deaf");
    let (cfg, disk) = config(
        &ns,
        "instd",
        r#"  { send = "echo LT-INSTALL-MARKER-$((6*7)) > /dev/vda; sync; echo WRITTEN-$((1+1))" },
  { expect = "WRITTEN-2", timeout = 30 },"#,
    );
    edit_file(
        &cfg,
        &[
            ("tl.mgmt=user", "tl.mgmt=user tl.acpi=off"),
            ("shutdown_timeout = 20", "shutdown_timeout = 3"),
        ],
    );
    let mut l = install(&ns, &cfg);
    let code = l.wait_exit(Duration::from_secs(300));
    let log = l.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.has("guest did not power off in time: QMP quit", &[])
            && log.has(
                "the guest did not power off in time; qemu quit: install kept",
                &[]
            ),
        "{log}"
    );
    assert!(contains(&std::fs::read(&disk).unwrap(), MARKER));
}

#[test]
fn an_install_step_that_never_sees_its_prompt_fails_naming_the_step() {
    let ns = Netns::new("install-stuck");
    let (cfg, _) = config(
        &ns,
        "instf",
        r#"  { expect = "NEVER-PRINTED", timeout = 3 },"#,
    );
    let mut l = install(&ns, &cfg);
    let code = l.wait_exit(Duration::from_secs(300));
    let log = l.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.stderr
            .contains("install did not finish on VM instf: during install step 5")
            && log.stderr.contains("\"NEVER-PRINTED\""),
        "{}",
        log.stderr
    );
}

/// A guest that powers itself off before the steps finished is no install: exit 1 naming the
/// step it died in.
#[test]
fn a_guest_that_dies_during_the_install_fails_naming_the_step() {
    let ns = Netns::new("install-dies");
    let (cfg, _) = config(
        &ns,
        "insto",
        r#"  { send = "poweroff -f" },
  { expect = "NEVER-PRINTED", timeout = 120 },"#,
    );
    let mut l = install(&ns, &cfg);
    let code = l.wait_exit(Duration::from_secs(300));
    let log = l.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.stderr.contains(
            "install did not finish on VM insto: during install step 6: guest powered itself off"
        ),
        "{}",
        log.stderr
    );
}

/// A `sendkey` step presses keys through QMP: ctrl-alt-delete on tinylinux's PS/2 keyboard
/// makes busybox init run its ctrlaltdel action (poweroff), whose shutdown script prints
/// "tinylinux: shutting down" while the install still waits: only the key press can print it.
#[test]
fn a_sendkey_step_presses_keys_on_the_vm_keyboard() {
    let ns = Netns::new("install-key");
    let (cfg, _) = config(
        &ns,
        "instk",
        r#"  { sendkey = "ctrl-alt-delete" },
  { expect = "tinylinux: shutting down", timeout = 30 },"#,
    );
    let mut l = install(&ns, &cfg);
    let code = l.wait_exit(Duration::from_secs(300));
    let log = l.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.has("bootstrap: sendkey", &[("keys", "ctrl-alt-delete")]),
        "{log}"
    );
}

#[test]
fn a_config_without_install_is_exit_2_saying_so() {
    let dir = std::env::temp_dir().join(format!("lt-install-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("launcher.toml");
    std::fs::write(&cfg, "[kernel]\npath = \"k\"\n").unwrap();
    let out = std::process::Command::new(LAUNCHER)
        .args(["install", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no [install] section"), "{err}");
}

/// A fake platform folder (tinylinux on a raw data disk, an `[install]` writing the marker to
/// it, `INSTALL=1`) in a temp copy of scripts/ and images/_shared, never in images/ where the
/// catalogue tests would pick it up. `then`: the install steps after the login.
fn fake_platform(root: &Path, then: &str) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kind = root.join("images/lt-install-fake");
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    std::fs::create_dir_all(&kind).unwrap();
    std::fs::copy(
        repo.join("scripts/build-image.sh"),
        root.join("scripts/build-image.sh"),
    )
    .unwrap();
    sh(&format!(
        "cp -r {} {}",
        repo.join("images/_shared").display(),
        root.join("images/_shared").display()
    ));
    std::fs::write(
        kind.join("build.conf"),
        "VERSION_SED='s/^fake-(.+)\\.img$/\\1/p'\nDISKS=(data.img)\nINSTALL=1\n",
    )
    .unwrap();
    std::fs::write(
        kind.join("Dockerfile"),
        "ARG BASE=launcher-base:latest\nFROM ${BASE}\nARG VERSION\nCOPY images/ /images/\n\
         COPY launcher/ /etc/launcher/\n\
         ENV LAUNCHER_CONFIG=/etc/launcher/lt-install-fake/launcher.toml\n",
    )
    .unwrap();
    let install = login_bootstrap("install", then)
        .replace(
            "[install]\non_timeout = \"fail\"\nattempts = 1\nusername = \"admin\"\npassword = \"admin\"\n",
            "[install]\ntimeout = 240\n",
        )
        .replace("{ send = \"{username}\" }", "{ send = \"admin\" }")
        .replace("{ send = \"{password}\" }", "{ send = \"admin\" }");
    std::fs::write(
        kind.join("launcher.toml"),
        format!(
            r#"[vm]
name = "fake"
machine = "q35"
memory = 256
shutdown_timeout = 20
boot_timeout = 180
[kernel]
path = "/opt/tinylinux/vmlinuz"
initrd = "/opt/tinylinux/initramfs.cpio.gz"
append = "console=ttyS0 panic=-1 tl.mgmt=user"
[[disk]]
path = "/images/data.img"
format = "raw"
[management]
mode = "user"
forwards = []
[console]
ready_pattern = "TINYLINUX-READY"
{install}"#
        ),
    )
    .unwrap();
    let vendor = root.join("fake-1.0.img");
    std::fs::write(&vendor, vec![0u8; 1 << 20]).unwrap();
    vendor
}

/// Removes a docker image tag of this test however it ends.
struct RmiOnDrop(String);
impl Drop for RmiOnDrop {
    fn drop(&mut self) {
        let _ = sh(&format!("docker rmi -f {}", self.0));
    }
}

/// build-image.sh with INSTALL=1: the install runs in a container, the result is committed as
/// the tag with the image's ENTRYPOINT and CMD; a failed install leaves no tag.
#[test]
fn build_image_runs_the_install_and_commits_it_or_tags_nothing() {
    require_docker_image(
        "launcher-tinylinux:latest",
        "scripts/images.sh builds it (the README test command does)",
    );
    let tag = "vrnetlab/lt-install-fake:1.0";
    let _ = sh(&format!("docker rmi -f {tag}"));
    // tinylinux with this build's launcher (the image's own may predate `install`).
    let ctx = std::env::temp_dir().join(format!("lt-install-base-{}", std::process::id()));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy(LAUNCHER, ctx.join("launcher")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM launcher-tinylinux:latest\nCOPY launcher /usr/local/bin/launcher\n",
    )
    .unwrap();
    let base = format!("lt-install-base:{}", std::process::id());
    let built = sh(&format!(
        "docker build -q --network none -t {base} {}",
        ctx.display()
    ));
    let _ = std::fs::remove_dir_all(&ctx);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let _rmi = RmiOnDrop(base.clone());
    for (case, then, ok) in [
        (
            "ok",
            r#"  { send = "echo LT-INSTALL-MARKER-$((6*7)) > /dev/vda; sync; echo WRITTEN-$((1+1))" },
  { expect = "WRITTEN-2", timeout = 30 },"#,
            true,
        ),
        (
            "stuck",
            r#"  { expect = "NEVER-PRINTED", timeout = 3 },"#,
            false,
        ),
    ] {
        let root =
            std::env::temp_dir().join(format!("lt-install-build-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let vendor = fake_platform(&root, then);
        let out = std::process::Command::new("timeout")
            .arg("600")
            .arg(root.join("scripts/build-image.sh"))
            .arg("lt-install-fake")
            .arg(&vendor)
            .env("BASE", &base)
            .env("LAUNCHER_ACCEL", "tcg")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::remove_dir_all(&root);
        let inspect = sh(&format!(
            "docker image inspect {tag} --format '{{{{json .Config.Entrypoint}}}} {{{{json .Config.Cmd}}}}'"
        ));
        if !ok {
            assert_eq!(out.status.code(), Some(1), "{case}: {err}");
            assert!(err.contains("the install failed"), "{case}: {err}");
            assert!(
                !inspect.status.success(),
                "{case}: a failed install left {tag}"
            );
            continue;
        }
        assert!(out.status.success(), "{case}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), tag);
        assert_eq!(
            String::from_utf8_lossy(&inspect.stdout).trim(),
            r#"["/usr/local/bin/launcher"] ["run"]"#
        );
        // The committed image carries the written disk.
        let grep = sh(&format!(
            "docker run --rm --entrypoint grep {tag} -c {MARKER} /images/data.img"
        ));
        let _ = sh(&format!("docker rmi -f {tag}"));
        assert!(
            grep.status.success(),
            "{case}: the marker is not in the committed image"
        );
    }
}
