//! Every golden argv (tests/golden/*.argv, every VM of each) starts in the real qemu, paused
//! (`-S`): the launcher's own argv with throwaway backends in their place (tap fds become user
//! netdevs, sockets, disks and the RAM's file live in a temp dir, KVM becomes TCG, host
//! forwards bind port 0).
//! qemu checks every device, drive and option before it pauses, so a refused argv fails here
//! with qemu's own message.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("lt-platforms-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tinylinux(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images/tinylinux/build")
        .join(file);
    assert!(
        p.exists(),
        "{} is missing: run images/tinylinux/build.sh (the README test command does)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// `key=value` pairs of a qemu option value (no escaped commas in the golden files' keys).
fn kv(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn join(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A throwaway image for a `-drive` value, created in `dir`; returns the rewritten value.
fn drive(value: &str, dir: &Path, n: usize) -> String {
    // file= is last in the launcher's drives except for the cache options after it.
    let (head, file) = value.split_once("file=").expect("a -drive without file=");
    let (file, tail) = match file.split_once(",cache=") {
        Some((f, t)) => (f, format!(",cache={t}")),
        None => (file, String::new()),
    };
    let format = get(&kv(head), "format").unwrap_or("raw").to_string();
    let new = if file.starts_with("fat:") {
        // The folder is replaced; its options (file.label=...) stay.
        let opts = file.find(",file.").map_or("", |i| &file[i..]);
        let d = dir.join(format!("fat{n}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("licence.txt"), "x\n").unwrap();
        format!("fat:{}{opts}", d.display())
    } else if format == "raw" {
        let p = dir.join(format!("disk{n}.img"));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        p.display().to_string()
    } else {
        let p = dir.join(format!("disk{n}.{format}"));
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", &format])
            .arg(&p)
            .arg("64M")
            .output()
            .expect("qemu-img is missing: run the README test command, which installs it");
        assert!(out.status.success(), "qemu-img create {format}: {out:?}");
        p.display().to_string()
    };
    format!("{head}file={new}{tail}")
}

/// The golden argv with throwaway backends and `-S`, ready to spawn; the QMP socket's path.
fn throwaway(argv: &[String], dir: &Path) -> (Vec<String>, PathBuf) {
    let qmp = dir.join("qmp.sock");
    let mut out = Vec::new();
    let mut it = argv.iter().enumerate();
    while let Some((i, a)) = it.next() {
        let Some(value) = argv.get(i + 1).filter(|_| a.starts_with('-')) else {
            out.push(a.clone());
            continue;
        };
        let new = match a.as_str() {
            "-accel" => "tcg".to_string(),
            "-cpu" if value == "host" || value.starts_with("host,") => "max".to_string(),
            "-qmp" => format!("unix:{},server=on,wait=off", qmp.display()),
            "-chardev" => {
                let id = get(&kv(value), "id").unwrap().to_string();
                let p = dir.join(format!("{id}.sock"));
                format!("socket,id={id},server=on,wait=off,path={}", p.display())
            }
            "-kernel" => tinylinux("vmlinuz"),
            "-initrd" => tinylinux("initramfs.cpio.gz"),
            "-drive" => drive(value, dir, i),
            "-fw_cfg" => {
                let p = dir.join(format!("fwcfg{i}"));
                std::fs::write(&p, "hostname r1\n").unwrap();
                let name = get(&kv(value), "name").unwrap().to_string();
                format!("name={name},file={}", p.display())
            }
            "-netdev" => netdev(value, dir),
            // The RAM's memfd (an fd the launcher hands over) becomes a file qemu makes in
            // the temp dir (a folder as mem-path: an unlinked file of its own; never touched
            // while paused).
            "-object" if value.contains("mem-path=/proc/self/fd/") => {
                let pairs: Vec<(String, String)> = (kv(value).into_iter())
                    .map(|(k, v)| match k.as_str() {
                        "mem-path" => (k, dir.display().to_string()),
                        _ => (k, v),
                    })
                    .collect();
                join(&pairs)
            }
            _ => {
                out.push(a.clone());
                continue;
            }
        };
        out.push(a.clone());
        out.push(new);
        it.next();
    }
    out.push("-S".into());
    (out, qmp)
}

/// A tap handed over as fd(s) becomes a user netdev (one queue; virtio-net's mq adapts);
/// user netdevs keep their options, forwards on port 0 and the TFTP root in the temp dir.
fn netdev(value: &str, dir: &Path) -> String {
    let pairs = kv(value);
    let id = get(&pairs, "id").unwrap().to_string();
    match pairs[0].0.as_str() {
        "tap" => format!("user,id={id},restrict=on"),
        "user" => {
            let pairs: Vec<(String, String)> = pairs
                .into_iter()
                .map(|(k, v)| match k.as_str() {
                    "hostfwd" => {
                        // proto::HOSTPORT-GUEST:PORT -> proto::0-GUEST:PORT
                        let (proto, rest) = v.split_once("::").unwrap();
                        let (_, guest) = rest.split_once('-').unwrap();
                        (k, format!("{proto}::0-{guest}"))
                    }
                    "tftp" => (k, dir.display().to_string()),
                    _ => (k, v),
                })
                .collect();
            join(&pairs)
        }
        other => panic!("unexpected netdev type {other} in a golden argv"),
    }
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the argv paused; Ok when QMP answers `prelaunch`, Err with qemu's stderr when qemu
/// exits first. Bounded: 60 s.
fn starts_paused(argv: &[String], qmp: &Path) -> Result<(), String> {
    let mut q = Qemu(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", argv[0]))?,
    );
    let start = Instant::now();
    loop {
        if let Some(status) = q.0.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(q.0.stderr.as_mut().unwrap(), &mut err).unwrap();
            return Err(format!("qemu exited ({status}): {err}"));
        }
        if let Ok(s) = UnixStream::connect(qmp) {
            // QMP listens before the devices are created: a refused device closes it, and
            // qemu's exit (below, on the next turn) carries the message.
            match query_status(s) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(60) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err("no QMP socket within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn query_status(s: UnixStream) -> Result<String, String> {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut read = |r: &mut BufReader<UnixStream>| -> Result<String, String> {
        line.clear();
        r.read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        Ok(line.clone())
    };
    read(&mut r)?; // greeting
    for cmd in ["qmp_capabilities", "query-status"] {
        // qemu closes QMP when it refuses a device, maybe right after its greeting: a write
        // that fails is that, not a harness error (CI saw EPIPE here).
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").map_err(|e| format!("QMP write: {e}"))?;
        let mut reply = read(&mut r)?;
        while reply.contains("\"event\"") {
            reply = read(&mut r)?;
        }
        if cmd == "query-status" {
            if !reply.contains("\"prelaunch\"") {
                return Err(format!("not paused before launch: {reply}"));
            }
            let _ = writeln!(w, "{{\"execute\":\"quit\"}}");
            return Ok(reply);
        }
    }
    unreachable!()
}

/// The VMs of one golden file: argvs separated by a blank line.
fn vms(text: &str) -> Vec<Vec<String>> {
    text.split("\n\n")
        .map(|vm| vm.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect()
}

#[test]
fn every_golden_argv_starts_in_qemu_paused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "argv"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "golden files missing in {}",
        dir.display()
    );
    let mut refused = Vec::new();
    let mut started = 0;
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        for (k, vm) in vms(&std::fs::read_to_string(f).unwrap()).iter().enumerate() {
            let tmp = TempDir::new(&format!("{name}-{k}"));
            let (argv, qmp) = throwaway(vm, &tmp.0);
            match starts_paused(&argv, &qmp) {
                Ok(()) => started += 1,
                Err(e) => refused.push(format!("{name} (VM {k}): {e}")),
            }
        }
    }
    assert!(
        refused.is_empty(),
        "qemu refused golden argv(s):\n{}",
        refused.join("\n")
    );
    eprintln!("{started} golden VM argvs started paused");
}

#[test]
fn a_refused_argv_is_reported() {
    // The harness itself: an argv qemu refuses is an Err with qemu's message, never Ok.
    let tmp = TempDir::new("refused");
    let argv: Vec<String> = ["qemu-system-x86_64", "-nodefaults", "-display", "none"]
        .iter()
        .map(|s| s.to_string())
        .chain(["-device".into(), "no-such-device".into()])
        .chain(["-qmp".into(), "unix:/x,server=on,wait=off".into()])
        .collect();
    let (argv, qmp) = throwaway(&argv, &tmp.0);
    let err = starts_paused(&argv, &qmp).unwrap_err();
    assert!(err.contains("no-such-device"), "{err}");
}
