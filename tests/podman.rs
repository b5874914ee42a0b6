//! The router image under a second runtime, rootful Podman (issue 17 item 6), and the
//! Kubernetes pod manifest (deploy/k8s/router-pod.yaml) run with `podman kube play`, here
//! without a Kubernetes cluster. The image comes from Docker (`docker save | podman load`),
//! never from a registry. Each test: the tinylinux router, a link injected after start as
//! containerlab and the Kubernetes network plugins do, health, the console prompt, traffic
//! across the link, a clean stop.
//!
//! This host lacks CAP_SYS_RESOURCE, so runc cannot raise the container's rlimits to Podman's
//! defaults: the tests give Podman lower defaults through CONTAINERS_CONF (the README says so).

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn podman(conf: &Path, args: &[&str]) -> Output {
    std::process::Command::new("podman")
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .expect("podman")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Fails loudly when Podman is missing; writes the containers.conf the tests use.
fn setup(ns: &Netns) -> PathBuf {
    let v = sh("podman --version");
    assert!(
        v.status.success(),
        "podman is missing: run the README test command (scripts/deps.sh installs it)"
    );
    let conf = ns.dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=4096:4096\"]\n",
    )
    .unwrap();
    conf
}

/// launcher-tinylinux imported from Docker under `tag` (this helper's name in it); removed
/// from both runtimes on drop.
struct Image {
    name: String,
    tag: String,
    conf: PathBuf,
}

impl Image {
    fn import(conf: &Path, tag: &str) -> Image {
        must(&format!("docker tag launcher-tinylinux:latest {tag}"));
        let out = sh(&format!(
            "docker save {tag} | CONTAINERS_CONF={} podman load",
            conf.display()
        ));
        let text = ok(&out);
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .or_else(|| {
                text.lines()
                    .find_map(|l| l.strip_prefix("Loaded image(s): "))
            })
            .unwrap_or_else(|| panic!("podman load said: {text}"))
            .trim()
            .to_string();
        Image {
            name,
            tag: tag.into(),
            conf: conf.into(),
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = podman(&self.conf, &["rmi", "-f", &self.name]);
        let _ = sh(&format!("docker rmi {}", self.tag));
    }
}

/// A container (or a pod, `kube`) removed on drop.
struct Removed {
    conf: PathBuf,
    args: Vec<String>,
}

impl Drop for Removed {
    fn drop(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let _ = podman(&self.conf, &args);
    }
}

fn pid_of(conf: &Path, name: &str) -> i32 {
    wait_for(Duration::from_secs(60), "the container's pid", || {
        let out = podman(conf, &["inspect", "-f", "{{.State.Pid}}", name]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 0)
    })
}

/// A veth pair: `host_end` moved into the container (pid) as `eth`, its peer `p1` in `ns`
/// with `addr`, both up: a link injected after the container started.
fn inject_link(ns: &Netns, pid: i32, host_end: &str, eth: &str, addr: &str) {
    must(&format!(
        "ip link add {host_end} type veth peer name p1 netns {}",
        ns.name
    ));
    must(&format!("ip link set {host_end} netns {pid}"));
    must(&format!(
        "nsenter -t {pid} -n ip link set {host_end} name {eth}"
    ));
    must(&format!("nsenter -t {pid} -n ip link set {eth} up"));
    ns.ip(&format!("addr add {addr} dev p1"));
    ns.ip("link set p1 up");
}

/// `launcher health` in the container, until it says ready (bounded).
fn wait_healthy(conf: &Path, name: &str) {
    wait_for(Duration::from_secs(240), "launcher health = 0", || {
        std::thread::sleep(Duration::from_secs(1));
        podman(conf, &["exec", name, "launcher", "health"])
            .status
            .success()
            .then_some(())
    });
}

/// The console's telnet port inside the container's network namespace, read until the
/// login prompt.
fn console_prompt(pid: i32) -> String {
    std::thread::spawn(move || {
        let target = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        // SAFETY: setns on an open namespace fd only moves this (throwaway) thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        telnet_read(None, "127.0.0.1:5000", "login:")
    })
    .join()
    .unwrap()
}

/// Ping from `ns` to the guest's address on the link (bounded: a few tries while its ARP and
/// the wiring settle).
fn ping(ns: &Netns, addr: &str) {
    ns.wait_ping(addr, Duration::from_secs(30), || "across the link".into());
}

#[test]
fn the_router_image_runs_under_podman() {
    let ns = Netns::new("clabenv-podrun");
    let conf = setup(&ns);
    let image = Image::import(&conf, "lt-clabenv-tinylinux:podman-run");
    let cfg = ns.dir.join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("startup-config.cfg"),
        "ip addr add 198.51.100.2/24 dev eth1\n",
    )
    .unwrap();
    let name = "lt-clabenv-pod-r1";
    let _gone = Removed {
        conf: conf.clone(),
        args: vec!["rm".into(), "-f".into(), name.into()],
    };
    // As containerlab starts a vr-* node: its environment, flags and /config mount. The
    // health timer needs systemd, which this host lacks: `podman healthcheck run` below runs
    // the image's check by hand.
    let vol = format!("{}:/config", cfg.display());
    ok(&podman(
        &conf,
        &[
            "run",
            "-d",
            "--name",
            name,
            "--hostname",
            "r1",
            "--health-interval",
            "disable",
            // qemu runs unprivileged and binds the forwarded port 22: Podman, unlike Docker,
            // keeps the kernel's 1024 and mounts /proc/sys read-only (README Security).
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "--cap-add",
            "NET_ADMIN",
            "--device",
            "/dev/net/tun",
            "-v",
            &vol,
            "-e",
            "CLAB_INTFS=1",
            "-e",
            "USERNAME=admin",
            "-e",
            "PASSWORD=admin",
            "-e",
            "CONNECTION_MODE=tc",
            &image.name,
            "--username",
            "admin",
            "--password",
            "admin",
            "--hostname",
            "r1",
            "--connection-mode",
            "tc",
            "--trace",
        ],
    ));
    let pid = pid_of(&conf, name);
    inject_link(&ns, pid, "lt-clabenv-r1e1", "eth1", "198.51.100.1/24");
    wait_healthy(&conf, name);
    // The image's HEALTHCHECK came along from Docker and passes under Podman.
    let hc = ok(&podman(
        &conf,
        &["inspect", "-f", "{{json .Config.Healthcheck.Test}}", name],
    ));
    assert!(hc.contains("launcher") && hc.contains("health"), "{hc}");
    ok(&podman(&conf, &["healthcheck", "run", name]));
    let prompt = console_prompt(pid);
    assert!(prompt.contains("r1 login:"), "console: {prompt:?}");
    ping(&ns, "198.51.100.2");
    ok(&podman(&conf, &["stop", "-t", "60", name]));
    let code = ok(&podman(
        &conf,
        &["inspect", "-f", "{{.State.ExitCode}}", name],
    ));
    assert_eq!(code, "0", "{}", ok(&podman(&conf, &["logs", name])));
}

#[test]
#[ignore = "Podman 4.3's kube play ignores the pod's sysctls, so the sandboxed qemu cannot bind \
            port 22 (ip_unprivileged_port_start stays 1024); passes with vm.sandbox = false"]
fn the_pod_manifest_runs_with_podman_kube_play() {
    let ns = Netns::new("clabenv-kube");
    let conf = setup(&ns);
    let image = Image::import(&conf, "lt-clabenv-tinylinux:podman-kube");
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/k8s/router-pod.yaml"),
    )
    .unwrap();
    // The grace period covers the image's shutdown time-out plus the 3 s quit wait.
    let image_cfg = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("images/tinylinux/container.toml"),
    )
    .unwrap();
    let grace = number_after(&manifest, "terminationGracePeriodSeconds:");
    let shutdown = number_after(&image_cfg, "shutdown_timeout =");
    assert!(
        grace > shutdown + 3,
        "grace {grace} s, shutdown {shutdown} s"
    );
    let pod = "lt-clabenv-k8s";
    let text = replace_once(
        &manifest,
        "image: launcher-tinylinux:latest",
        &format!("image: {}", image.name),
    );
    let text = replace_once(&text, "  name: r1\n", &format!("  name: {pod}\n"));
    let yaml = ns.dir.join("pod.yaml");
    std::fs::write(&yaml, text).unwrap();
    let _gone = Removed {
        conf: conf.clone(),
        args: vec!["kube".into(), "down".into(), yaml.display().to_string()],
    };
    ok(&podman(&conf, &["kube", "play", yaml.to_str().unwrap()]));
    let name = format!("{pod}-router");
    let pid = pid_of(&conf, &name);
    // Not ready while the link the manifest announces (CLAB_INTFS=1) is not there.
    std::thread::sleep(Duration::from_secs(3));
    let h = podman(&conf, &["exec", &name, "launcher", "health"]);
    assert_eq!(
        h.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&h.stdout)
    );
    inject_link(&ns, pid, "lt-clabenv-k8e1", "eth1", "198.51.100.1/24");
    wait_healthy(&conf, &name);
    let hc = ok(&podman(
        &conf,
        &["inspect", "-f", "{{json .Config.Healthcheck.Test}}", &name],
    ));
    assert!(
        hc.contains("launcher") && hc.contains("health"),
        "liveness: {hc}"
    );
    let caps = ok(&podman(
        &conf,
        &["inspect", "-f", "{{json .HostConfig.CapAdd}}", &name],
    ));
    assert!(caps.contains("NET_ADMIN"), "{caps}");
    let prompt = console_prompt(pid);
    assert!(prompt.contains("r1 login:"), "console: {prompt:?}");
    let st = ok(&podman(
        &conf,
        &["exec", &name, "launcher", "status", "--json"],
    ));
    let st: serde_json::Value = serde_json::from_str(&st).unwrap();
    assert_eq!(st["links"][0]["wired"], true, "{st}");
    ok(&podman(&conf, &["pod", "stop", "-t", "60", pod]));
    let code = ok(&podman(
        &conf,
        &["inspect", "-f", "{{.State.ExitCode}}", &name],
    ));
    assert_eq!(code, "0", "{}", ok(&podman(&conf, &["logs", &name])));
}

/// The number after `key` in `text` (the first occurrence).
fn number_after(text: &str, key: &str) -> u64 {
    let rest = &text[text.find(key).unwrap_or_else(|| panic!("{key} missing")) + key.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key}"))
}
