//! Restoring the node: before any qemu starts, [`prepare`] reads the snapshot's manifest,
//! compares each VM's saved [`Key`] with the one this start would run (a mismatch never loads:
//! it logs every difference and boots cold, or fails, by `LAUNCHER_SNAPSHOT_MISMATCH`), then puts
//! each saved overlay in place of the VM's overlay and its stream beside it. The VM's
//! next qemu gets a RAM memfd that the launcher fills (LZ4, a thread per part) from the
//! snapshot file (open since the check: a suspend's file loses its name at once) while qemu
//! starts, with the same argv plus
//! `-incoming defer`; once QMP is up, [`resume`] starts the devices' stream through `zstd -d`,
//! waits for the fill, hands the stream to qemu (QMP `getfd` + `migrate-incoming`, no file or
//! `exec:` URI), waits for the load, tells the NICs their cables as they are now (the load
//! gave them the save's links) and sends `cont`. Readiness is earned again: the TCP probe
//! runs as for a boot; a console pattern (printed once, at boot) counts when the restored
//! console answers a carriage return, or, when a TCP probe checks the guest, as restored (the
//! carriage return's answer would take the guest's one vCPU from the probed service); with
//! `vm.clock = "guest-agent"` the guest agent sets the guest's clock once the VM is ready
//! ([`super::resumed`] runs what follows `cont`).
//! Never decides a restart (a failed load kills qemu; the restart policy boots it cold).

use super::cables;
use super::ram::{Helpers, Ram, Source};
use super::resumed::{after_cont, restored_probes, AfterCont, Console};
use super::snapshot::{overlays, Extracted, SaveError, Saver};
use super::vm::Vm;
use super::zstd::{pipe, zstd, Helper};
use super::SupervisorError;
use crate::config::VmPlan;
use crate::qemu::qmp::Qmp;
use crate::snapshot::{self as snap, archive, Key, Manifest, OnMismatch, Options, VmEntry};
use crate::state::Probe;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a stream may take to load.
const LOAD_WAIT: Duration = Duration::from_secs(300);
/// The pipe a devices stream is decompressed into: the most an unprivileged process may ask
/// for by default (`/proc/sys/fs/pipe-max-size`), about one whole stream.
const STREAM_PIPE: i32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot {path} does not fit this node: {}", reasons.join("; "))]
    Refused { path: PathBuf, reasons: Vec<String> },
    #[error("snapshot {path}: {why}")]
    Format { path: PathBuf, why: String },
    #[error("snapshot {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] SaveError),
}

/// The snapshot this start restores from, if any, and whether it is the suspend's file.
fn source(opts: &Options) -> Option<(PathBuf, bool)> {
    let suspended = opts.restore.is_none() && opts.suspend && opts.suspend_file.exists();
    match (&opts.restore, suspended) {
        (Some(p), _) => Some((p.clone(), false)),
        (None, true) => Some((opts.suspend_file.clone(), true)),
        _ => None,
    }
}

/// A snapshot file, open, with its tar index and manifest read.
struct Opened {
    file: File,
    idx: Vec<archive::Member>,
    manifest: Manifest,
}

/// Opens the snapshot at `path` and reads its index and manifest.
fn open(path: &Path) -> Result<Opened, RestoreError> {
    let mut file = File::open(path).map_err(|source| RestoreError::Io {
        path: path.into(),
        source,
    })?;
    let idx = archive::index(&mut file).map_err(|why| RestoreError::Format {
        path: path.into(),
        why,
    })?;
    let manifest = read_manifest(&mut file, &idx, path)?;
    Ok(Opened {
        file,
        idx,
        manifest,
    })
}

/// The snapshot file opened at the start, and the RAM fills begun from it before its key can
/// be checked (the key needs the argv, which waits for the links): a restore's longest step
/// runs while the launcher sets up and waits for its links. Per VM in the snapshot: a fresh
/// memfd and its fill ([`Ram::fill`], which refuses parts that do not cover this start's RAM
/// size). [`prepare`] hands them to the VMs when the key fits; when it does not, they are
/// dropped (their work wasted, nothing else: a memfd is no file).
pub struct EarlyFill {
    opened: Opened,
    vms: Vec<(String, Arc<Ram>, Helpers<()>)>,
}

/// Opens this start's snapshot and begins its fills ([`EarlyFill`]). None when nothing is
/// restored or the file cannot be read: [`prepare`] then reports why, as without it.
pub fn fill_early(plans: &[VmPlan], opts: &Options) -> Option<EarlyFill> {
    let (path, _) = source(opts)?;
    let opened = open(&path).ok()?;
    let shared = Arc::new(opened.file.try_clone().ok()?);
    let mut vms = Vec::new();
    for p in plans {
        let Some(e) = opened.manifest.vm(&p.name) else {
            continue;
        };
        let Ok(srcs) = ram_sources(&shared, &opened.idx, e, &path) else {
            continue;
        };
        let started = Ram::new(&p.name, p.machine.memory_mib)
            .map(Arc::new)
            .and_then(|r| r.fill(&srcs).map(|h| (r, h)));
        match started {
            Ok((r, h)) => vms.push((p.name.clone(), r, h)),
            Err(e) => tracing::debug!(vm = %p.name, error = %e, "no early RAM fill"),
        }
    }
    Some(EarlyFill { opened, vms })
}

/// Decides whether this start restores and prepares it (see the module doc), with the fills
/// begun by [`fill_early`] when there are any. Ok: restore set up, or a cold boot after a
/// refusal that the policy allows.
pub fn prepare(
    vms: &mut [Vm],
    saver: &Saver,
    opts: &Options,
    early: Option<EarlyFill>,
) -> Result<(), SupervisorError> {
    let Some((path, suspended)) = source(opts) else {
        return Ok(());
    };
    let r = load(vms, saver, &path, early);
    if suspended {
        // Used once: the guest runs on from it and the file is stale from here on.
        let _ = std::fs::remove_file(&path);
    }
    match r {
        Ok(age) => {
            tracing::info!(path = %path.display(), age_s = age, "restoring from snapshot instead of booting");
            Ok(())
        }
        Err(e) if opts.on_mismatch == OnMismatch::Boot => {
            tracing::warn!(
                "snapshot not restored: {}; booting cold",
                crate::exit::chain(&e)
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn read_manifest(
    f: &mut File,
    idx: &[archive::Member],
    path: &Path,
) -> Result<Manifest, RestoreError> {
    let bad = |why: String| RestoreError::Format {
        path: path.into(),
        why,
    };
    let m = idx
        .iter()
        .find(|m| m.name == snap::MANIFEST)
        .ok_or_else(|| bad(format!("no {}", snap::MANIFEST)))?;
    let mut json = Vec::new();
    std::io::Seek::seek(f, std::io::SeekFrom::Start(m.offset)).map_err(|e| bad(e.to_string()))?;
    f.take(m.size.min(16 << 20))
        .read_to_end(&mut json)
        .map_err(|e| bad(e.to_string()))?;
    parse_manifest(&json).map_err(bad)
}

/// The manifest in `json`; its format is read first, so another format's layout is refused as
/// that format, not as a field it lacks.
fn parse_manifest(json: &[u8]) -> Result<Manifest, String> {
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    let f: Format = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if f.format != snap::FORMAT {
        return Err(format!(
            "format {} (this launcher reads {})",
            f.format,
            snap::FORMAT
        ));
    }
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Checks the keys, then extracts the overlays and streams; returns the snapshot's age in s.
/// With `early`, the file it opened (the one its fills read) is the one checked.
fn load(
    vms: &mut [Vm],
    saver: &Saver,
    path: &Path,
    early: Option<EarlyFill>,
) -> Result<u64, RestoreError> {
    let io = |source| RestoreError::Io {
        path: path.into(),
        source,
    };
    let (opened, mut filling) = match early {
        Some(e) => (e.opened, e.vms),
        None => (open(path)?, Vec::new()),
    };
    let Opened {
        file: mut f,
        idx,
        manifest: m,
    } = opened;
    let mut reasons = Vec::new();
    if m.vms.len() != saver.targets.len() {
        reasons.push(format!(
            "VMs: saved {}, here {}",
            m.vms.len(),
            saver.targets.len()
        ));
    }
    let mut plan = Vec::new();
    for t in &saver.targets {
        let Some(e) = m.vm(&t.name) else {
            reasons.push(format!("VM {} is not in the snapshot", t.name));
            continue;
        };
        let disks = overlays(&t.plan)?;
        let fps = disks
            .iter()
            .map(|(_, base)| snap::fingerprint(base).map_err(io))
            .collect::<Result<Vec<_>, _>>()?;
        let here = Key::of(&t.argv, saver.qemu_version(), fps);
        reasons.extend(
            here.differences(&e.key)
                .into_iter()
                .map(|d| format!("VM {}: {d}", t.name)),
        );
        plan.push((e.clone(), disks));
    }
    if !reasons.is_empty() {
        return Err(RestoreError::Refused {
            path: path.into(),
            reasons,
        });
    }
    let member = |name: &str| member(&idx, name, path);
    let file = Arc::new(f.try_clone().map_err(io)?);
    for (vm, (e, disks)) in vms.iter_mut().zip(plan) {
        for (name, (overlay, _)) in e.disks.iter().zip(&disks) {
            archive::extract(&mut f, member(name)?, overlay).map_err(io)?;
        }
        let stream = vm.plan.run_dir.join("restore-stream.zst");
        archive::extract(&mut f, member(&e.stream)?, &stream).map_err(io)?;
        let ram = ram_sources(&file, &idx, &e, path)?;
        let filling = (filling.iter().position(|(n, ..)| *n == vm.plan.name))
            .map(|i| filling.swap_remove(i))
            .map(|(_, r, h)| (r, h));
        vm.snap.restore = Some(Extracted {
            stream,
            ram,
            filling,
        });
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(now.saturating_sub(m.saved_unix))
}

/// The tar member `name` of the snapshot at `path`.
fn member<'a>(
    idx: &'a [archive::Member],
    name: &str,
    path: &Path,
) -> Result<&'a archive::Member, RestoreError> {
    idx.iter()
        .find(|m| m.name == name)
        .ok_or_else(|| RestoreError::Format {
            path: path.into(),
            why: format!("no member {name}"),
        })
}

/// Where VM entry `e`'s RAM parts lie in `file`.
fn ram_sources(
    file: &Arc<File>,
    idx: &[archive::Member],
    e: &VmEntry,
    path: &Path,
) -> Result<Vec<Source>, RestoreError> {
    (e.ram.iter())
        .map(|part| {
            let m = member(idx, &part.member, path)?;
            Ok(Source {
                file: file.clone(),
                at: m.offset,
                len: m.size,
                part: (part.offset, part.bytes),
                extents: part.extents.clone(),
            })
        })
        .collect()
}

/// The RAM of a VM's next qemu, and what it restores: a fresh memfd for a boot; for a restore
/// the RAM its fill began early ([`EarlyFill`]) or a fresh one whose fill starts now. A fill
/// that cannot start is logged and the VM boots cold.
pub fn ram_for(
    vm: &str,
    mib: u64,
    x: Option<Extracted>,
) -> std::io::Result<(Arc<Ram>, Option<Restoring>)> {
    let Some(mut x) = x else {
        return Ok((Arc::new(Ram::new(vm, mib)?), None));
    };
    if let Some((ram, fill)) = x.filling.take() {
        return Ok((ram, Some(Restoring { x, fill })));
    }
    let ram = Arc::new(Ram::new(vm, mib)?);
    match ram.fill(&x.ram) {
        Ok(fill) => Ok((ram, Some(Restoring { x, fill }))),
        Err(e) => {
            tracing::warn!(
                vm,
                "snapshot not restored: cannot fill the guest RAM: {e}; booting cold"
            );
            Ok((ram, None))
        }
    }
}

/// The argv of the next qemu: `argv`, plus `-incoming defer` when it restores.
pub fn argv_for(argv: &[OsString], restoring: bool) -> Vec<OsString> {
    let mut a = argv.to_vec();
    if restoring {
        crate::qemu::incoming_defer(&mut a);
    }
    a
}

/// A qemu being restored: what it loads, and the RAM fill running while it starts.
pub struct Restoring {
    pub x: Extracted,
    pub fill: Helpers<()>,
}

/// Waits for the RAM fill, loads the stream into the qemu behind `q` (started with
/// `-incoming defer`) and resumes it. Ok: the probes the restore itself satisfies
/// ([`restored_probes`]), and the checks that follow `cont` ([`after_cont`]), already
/// running on their own task so the supervise loop never waits for them; Err: why the load
/// failed.
pub async fn resume(
    vm: &Vm,
    q: &Qmp,
    r: Restoring,
) -> Result<(Vec<(Probe, String)>, AfterCont), String> {
    let t0 = Instant::now();
    // The devices' stream is decompressed beside the fill: qemu reads it at once after.
    let stream = start_stream(vm, &r.x.stream);
    let filled = r.fill.wait(LOAD_WAIT).await;
    let filled_ms = t0.elapsed().as_millis() as u64;
    let (loaded, fill_ms) = match (filled, stream) {
        (Ok(d), Ok(s)) => (load_stream(q, s).await, d.took.as_millis() as u64),
        (Ok(d), Err(why)) => (Err(why), d.took.as_millis() as u64),
        // The stream's read end goes with it: its zstd ends on a broken pipe.
        (Err(why), _) => (Err(format!("RAM fill: {why}")), 0),
    };
    let _ = std::fs::remove_file(&r.x.stream);
    loaded?;
    // The NICs took the links of the save at the load: the cables as they are now, before
    // the guest runs.
    if let Some(c) = &vm.cables {
        if !cables::tell_again(q, c).await {
            tracing::warn!(vm = %vm.plan.name, "the restored guest may see some ports' links as they were at the save, until they change");
        }
    }
    q.execute("cont", None, Duration::from_secs(5))
        .await
        .map_err(|e| format!("cont: {}", crate::exit::chain(&e)))?;
    let console = Console::of(vm);
    tracing::info!(vm = %vm.plan.name, ms = t0.elapsed().as_millis() as u64, ram_wait_ms = filled_ms, fill_ms, console = console.name(), "restored from snapshot and resumed");
    Ok((restored_probes(vm, console), after_cont(vm, console)))
}

/// Starts `zstd -d` on a VM's saved devices stream into a pipe of [`STREAM_PIPE`] bytes when
/// the kernel allows (a whole stream, about 1 MiB: zstd is done before qemu reads), and gives
/// the pipe's read end and the zstd.
fn start_stream(vm: &Vm, stream: &Path) -> Result<(OwnedFd, Helper), String> {
    let file = File::open(stream).map_err(|e| format!("{}: {e}", stream.display()))?;
    let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // Best effort: a smaller pipe only makes zstd wait for qemu's reads.
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STREAM_PIPE));
    let z = zstd(&["-q", "-d", "-c"], file.into(), w.into(), &vm.reaper)
        .map_err(|e| format!("cannot run zstd: {e}"))?;
    Ok((r, z))
}

/// Loads the stream [`start_stream`] began into the qemu behind `q` (started with
/// `-incoming defer`) and waits for both to end.
async fn load_stream(q: &Qmp, (r, z): (OwnedFd, Helper)) -> Result<(), String> {
    let started = q.migrate_incoming_fd(r.as_fd()).await;
    drop(r);
    let st = match started {
        Ok(()) => q.wait_incoming(LOAD_WAIT).await,
        Err(e) => Err(e),
    };
    let zw = z
        .wait(Duration::from_secs(if st.is_ok() { 30 } else { 0 }))
        .await;
    let st = st.map_err(|e| format!("migrate-incoming: {}", crate::exit::chain(&e)))?;
    zw.map_err(|why| format!("zstd {why}"))?;
    tracing::debug!(status = %st, "stream loaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_format_is_refused_as_that_format_and_a_bad_manifest_names_what_is_wrong() {
        // A format-2 manifest: its RAM parts have no extents.
        let old = r#"{"format": 2, "saved_unix": 1, "vms": [{"ram": [{"member": "a", "offset": 0, "bytes": 1}]}]}"#;
        assert_eq!(
            parse_manifest(old.as_bytes()).unwrap_err(),
            format!("format 2 (this launcher reads {})", snap::FORMAT)
        );
        let bad = format!(r#"{{"format": {}, "saved_unix": 1}}"#, snap::FORMAT);
        let e = parse_manifest(bad.as_bytes()).unwrap_err();
        assert!(e.starts_with("missing field `vms`"), "{e}");
        assert!(parse_manifest(b"{}")
            .unwrap_err()
            .starts_with("missing field `format`"));
    }
}
