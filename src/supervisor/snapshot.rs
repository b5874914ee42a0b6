//! Saving the node: containerlab's trigger (`touch /snapshot-save` writes `/snapshot-output.tar`
//! and logs `Snapshot saved to ...` or `Snapshot save failed: ...`), the control socket's
//! `snapshot [FILE]`, and a suspend on stop all come to [`save`]: every VM ready, all stopped
//! at one instant, each migration stream handed to qemu as a pipe (QMP `getfd`, never a file
//! or `exec:` URI) and compressed by `zstd` on the launcher's side, each guest RAM compressed
//! (LZ4, in process) from the launcher's own memfd (the stream skips it), each disk overlay
//! copied at that same instant, then every VM resumed (on success and on failure alike), then
//! the tar written. Restoring is in `restore`. Never changes a VM's state.

use super::ram::RamSlot;
use super::reaper::Reaper;
use super::vm::Vm;
use super::zstd::{pipe, zstd};
use crate::config::{DiskKind, VmPlan};
use crate::control::snapshot::{Request, SaveReport};
use crate::qemu::qmp::{Qmp, QmpError};
use crate::snapshot::{self as snap, archive, Key, Manifest, VmEntry};
use crate::state::{State, VmHandle};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// How long one VM's stream may take to save (a multi-GiB guest on a slow disk included).
const STREAM_WAIT: Duration = Duration::from_secs(300);
/// How often containerlab's trigger file is looked for.
const TRIGGER_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("VM {vm} is {state}, not ready: a snapshot is only taken of a ready router")]
    NotReady { vm: String, state: &'static str },
    #[error("VM {vm}: no QMP connection")]
    NoQmp { vm: String },
    #[error("VM {vm}: no guest RAM to read (qemu is not running)")]
    NoRam { vm: String },
    #[error(
        "VM {vm}: disk {path} has no overlay, so its state cannot be saved apart from its image"
    )]
    NoOverlay { vm: String, path: PathBuf },
    #[error("VM {vm}: QMP {step}")]
    Qmp {
        vm: String,
        step: &'static str,
        #[source]
        source: QmpError,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("VM {vm}: zstd {why}")]
    Zstd { vm: String, why: String },
    #[error("VM {vm}: {why}")]
    Ram { vm: String, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SaveError {
    let what = what.into();
    move |source| SaveError::Io { what, source }
}

/// The QMP connection of a VM's current qemu, as the run publishes it (None between runs).
#[derive(Clone, Default)]
pub struct QmpSlot(Arc<Mutex<Option<Arc<Qmp>>>>);

impl QmpSlot {
    pub fn set(&self, q: Option<Arc<Qmp>>) {
        *self.0.lock().unwrap() = q;
    }
    fn get(&self) -> Option<Arc<Qmp>> {
        self.0.lock().unwrap().clone()
    }
}

/// What a VM's next qemu restores from: the devices' stream (extracted), and the RAM's parts
/// (read from the snapshot file where they lie), or a RAM already being filled from them
/// (started before the key was checked: [`super::restore::EarlyFill`]).
pub struct Extracted {
    pub stream: PathBuf,
    pub ram: Vec<super::ram::Source>,
    pub filling: Option<(Arc<super::ram::Ram>, super::ram::Helpers<()>)>,
}

/// A VM's part in fast start: where its run publishes QMP and its RAM, and what its next qemu
/// loads instead of booting (taken by that spawn: a restart after it boots cold).
#[derive(Default)]
pub struct VmSnap {
    pub qmp: QmpSlot,
    pub ram: RamSlot,
    pub restore: Option<Extracted>,
}

/// What saving needs of one VM, taken before the node drives it.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub qmp: QmpSlot,
    pub ram: RamSlot,
    pub handle: VmHandle,
    pub argv: Vec<OsString>,
    pub plan: VmPlan,
    pub reaper: Reaper,
}

/// The node as saving sees it.
#[derive(Clone)]
pub struct Saver {
    pub targets: Vec<Target>,
    qemu: PathBuf,
    /// `qemu --version`'s first line (the key's first field), asked once, when first needed.
    version: Arc<std::sync::OnceLock<String>>,
}

impl Saver {
    pub fn of(vms: &[Vm], state: &crate::state::NodeState) -> Saver {
        let qemu = vms
            .first()
            .map(|v| v.plan.machine.qemu.clone())
            .unwrap_or_default();
        Saver {
            targets: vms
                .iter()
                .enumerate()
                .map(|(i, vm)| Target {
                    name: vm.plan.name.clone(),
                    qmp: vm.snap.qmp.clone(),
                    ram: vm.snap.ram.clone(),
                    handle: state.vm(i),
                    argv: vm.argv.clone(),
                    plan: vm.plan.clone(),
                    reaper: vm.reaper.clone(),
                })
                .collect(),
            qemu,
            version: Default::default(),
        }
    }

    pub fn qemu_version(&self) -> &str {
        self.version.get_or_init(|| qemu_version(&self.qemu))
    }
}

/// `qemu --version`'s first line, "unknown" when it cannot be run. std waits for it itself:
/// safe on the launcher's one runtime thread (see `commands::run`).
pub fn qemu_version(qemu: &Path) -> String {
    Command::new(qemu)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The overlays of `plan`'s disks with their base images, in order; a writable disk without
/// an overlay cannot be saved.
pub fn overlays(plan: &VmPlan) -> Result<Vec<(PathBuf, PathBuf)>, SaveError> {
    let mut out = Vec::new();
    for d in &plan.boot.disks {
        match &d.kind {
            DiskKind::Image {
                overlay: Some(o), ..
            } => out.push((o.clone(), d.path.clone())),
            DiskKind::Image { overlay: None, .. } => {
                return Err(SaveError::NoOverlay {
                    vm: plan.name.clone(),
                    path: d.path.clone(),
                })
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What a save produced.
#[derive(Debug, Clone)]
pub struct Saved {
    pub path: PathBuf,
    pub bytes: u64,
    /// How long the guests were stopped.
    pub paused: Duration,
    pub total: Duration,
}

fn qmp_err(vm: &str, step: &'static str) -> impl FnOnce(QmpError) -> SaveError {
    let vm = vm.to_string();
    move |source| SaveError::Qmp { vm, step, source }
}

/// What the guests do once saved: run on, or end (a suspend: qemu quits, exit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Resume,
    Quit,
}

/// Saves the whole node to `out` (see the module doc), each stream within `within`. The
/// guests are paused only for the streams and the overlay copies; the tar is written after
/// they run again (or, `After::Quit` and saved, after their qemus were told to quit).
pub async fn save(
    s: &Saver,
    out: &Path,
    after: After,
    within: Duration,
) -> Result<Saved, SaveError> {
    let t0 = Instant::now();
    let mut qmps = Vec::new();
    for t in &s.targets {
        let st = t.handle.state();
        if st != State::Ready {
            return Err(SaveError::NotReady {
                vm: t.name.clone(),
                state: st.as_str(),
            });
        }
        overlays(&t.plan)?;
        qmps.push(t.qmp.get().ok_or(SaveError::NoQmp { vm: t.name.clone() })?);
    }
    let cuts = plan_cuts(s).await?;
    let parts = out.with_extension("parts");
    let _ = std::fs::remove_dir_all(&parts);
    std::fs::create_dir_all(&parts).map_err(io(format!("cannot create {}", parts.display())))?;
    let saved_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // One instant: every guest stopped before any stream starts.
    let mut stopped = Vec::new();
    let mut result = Ok(Vec::new());
    for (t, q) in s.targets.iter().zip(&qmps) {
        match q.execute("stop", None, Duration::from_secs(5)).await {
            Ok(_) => stopped.push(q),
            Err(e) => {
                result = Err(qmp_err(&t.name, "stop")(e));
                break;
            }
        }
    }
    if result.is_ok() {
        result = save_stopped(s, &qmps, &cuts, &parts, within).await;
    }
    let last = match (after, &result) {
        (After::Quit, Ok(_)) => "quit",
        _ => "cont",
    };
    for q in stopped {
        if let Err(e) = q.execute(last, None, Duration::from_secs(5)).await {
            tracing::error!(error = %e, command = last, "QMP after the snapshot failed");
        }
    }
    let paused = t0.elapsed();
    let entries = match result {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&parts);
            return Err(e);
        }
    };
    let manifest = Manifest {
        format: snap::FORMAT,
        saved_unix,
        vms: entries,
    };
    let bytes = write_tar(&manifest, &parts, out);
    let _ = std::fs::remove_dir_all(&parts);
    Ok(Saved {
        path: out.into(),
        bytes: bytes?,
        paused,
        total: t0.elapsed(),
    })
}

/// The stopped guests' streams and overlays into `parts`.
async fn save_stopped(
    s: &Saver,
    qmps: &[Arc<Qmp>],
    cuts: &[Vec<(u64, u64)>],
    parts: &Path,
    within: Duration,
) -> Result<Vec<VmEntry>, SaveError> {
    let mut entries = Vec::new();
    for (i, (t, q)) in s.targets.iter().zip(qmps).enumerate() {
        let stream = parts.join(snap::stream_member(&t.name));
        let dir = stream.parent().unwrap_or(parts);
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let stream_bytes = stream_vm(t, q, &stream, within).await?;
        let ram = save_ram(t, &cuts[i], parts, within).await?;
        let mut disks = Vec::new();
        let mut fps = Vec::new();
        for (i, (overlay, base)) in overlays(&t.plan)?.into_iter().enumerate() {
            let member = snap::disk_member(&t.name, i);
            std::fs::copy(&overlay, parts.join(&member))
                .map_err(io(format!("cannot copy overlay {}", overlay.display())))?;
            fps.push(
                snap::fingerprint(&base).map_err(io(format!("cannot read {}", base.display())))?,
            );
            disks.push(member);
        }
        entries.push(VmEntry {
            name: t.name.clone(),
            key: Key::of(&t.argv, s.qemu_version(), fps),
            stream: snap::stream_member(&t.name),
            stream_bytes,
            ram,
            disks,
        });
    }
    Ok(entries)
}

/// One stopped VM's migration stream, through a pipe to `zstd -1`, into `dst`.
async fn stream_vm(t: &Target, q: &Qmp, dst: &Path, within: Duration) -> Result<u64, SaveError> {
    let (r, w) = pipe().map_err(io("cannot make a pipe"))?;
    let file = File::create(dst).map_err(io(format!("cannot create {}", dst.display())))?;
    let z = zstd(&["-q", "-1", "-T0", "-c"], r.into(), file.into(), &t.reaper)
        .map_err(io("cannot run zstd"))?;
    let started = q.migrate_to_fd(w.as_fd()).await;
    drop(w); // qemu holds its own copy; the stream ends when qemu closes it
    let bytes = match started {
        Ok(()) => q
            .wait_migration(within)
            .await
            .map_err(qmp_err(&t.name, "migrate")),
        Err(e) => Err(qmp_err(&t.name, "migrate")(e)),
    };
    if bytes.is_err() {
        // Late or failed: end it, so the guest can run on and the pipe closes.
        let _ = q
            .execute("migrate_cancel", None, Duration::from_secs(5))
            .await;
    }
    let zwait = if bytes.is_ok() {
        within
    } else {
        Duration::from_secs(5)
    };
    let z = z.wait(zwait).await;
    let bytes = bytes?;
    z.map_err(|why| SaveError::Zstd {
        vm: t.name.clone(),
        why,
    })?;
    Ok(bytes)
}

/// One stopped VM's RAM, its data from the launcher's memfd as LZ4 frames, cut as `cuts`
/// says (from [`Ram::plan`](super::ram::Ram::plan)), into `parts`.
async fn save_ram(
    t: &Target,
    cuts: &[(u64, u64)],
    parts: &Path,
    within: Duration,
) -> Result<Vec<snap::RamPart>, SaveError> {
    let ram = current_ram(t)?;
    let members: Vec<String> = (0..cuts.len())
        .map(|i| snap::ram_member(&t.name, i))
        .collect();
    let paths: Vec<PathBuf> = members.iter().map(|m| parts.join(m)).collect();
    let z = ram
        .save(cuts, &paths)
        .map_err(io(format!("cannot compress the RAM of {}", t.name)))?;
    let done = z.wait(within).await.map_err(|why| SaveError::Ram {
        vm: t.name.clone(),
        why,
    })?;
    tracing::debug!(vm = %t.name, ms = done.took.as_millis() as u64, "RAM compressed");
    let extents = done.results;
    Ok((members.into_iter().zip(cuts).zip(extents))
        .map(|((member, &(offset, bytes)), extents)| snap::RamPart {
            member,
            offset,
            bytes,
            extents,
        })
        .collect())
}

fn current_ram(t: &Target) -> Result<Arc<super::ram::Ram>, SaveError> {
    t.ram
        .get()
        .ok_or_else(|| SaveError::NoRam { vm: t.name.clone() })
}

/// Per VM, where to cut its RAM ([`Ram::plan`](super::ram::Ram::plan)), read while the guests
/// still run (the cut only balances a fill's work), off the runtime's thread (it reads the
/// whole RAM).
async fn plan_cuts(s: &Saver) -> Result<Vec<Vec<(u64, u64)>>, SaveError> {
    let mut out = Vec::new();
    for t in &s.targets {
        let ram = current_ram(t)?;
        let what = format!("cannot read the RAM of {}", t.name);
        let planned = tokio::task::spawn_blocking(move || ram.plan())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        out.push(planned.map_err(io(what))?);
    }
    Ok(out)
}

/// The manifest and the parts, as one tar at `out` (written beside it, then renamed).
fn write_tar(m: &Manifest, parts: &Path, out: &Path) -> Result<u64, SaveError> {
    let tmp = out.with_extension("tmp");
    let what = || format!("cannot write {}", tmp.display());
    let mut f = File::create(&tmp).map_err(io(what()))?;
    let json = serde_json::to_vec_pretty(m).unwrap_or_default();
    archive::append_bytes(&mut f, snap::MANIFEST, &json, m.saved_unix).map_err(io(what()))?;
    for v in &m.vms {
        let ram = v.ram.iter().map(|p| &p.member);
        for member in std::iter::once(&v.stream).chain(ram).chain(&v.disks) {
            archive::append(&mut f, member, &parts.join(member), m.saved_unix)
                .map_err(io(what()))?;
        }
    }
    archive::finish(&mut f).map_err(io(what()))?;
    let bytes = f.metadata().map_or(0, |m| m.len());
    std::fs::rename(&tmp, out).map_err(io(format!(
        "cannot rename {} to {}",
        tmp.display(),
        out.display()
    )))?;
    Ok(bytes)
}

/// The save server; dropped, it ends.
pub struct Serving(tokio::task::JoinHandle<()>);
impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves saves until dropped: containerlab's trigger file and the control socket's requests
/// (None: the trigger file only).
pub fn serve(s: Saver, requests: Option<mpsc::UnboundedReceiver<Request>>) -> Serving {
    let mut requests = requests.unwrap_or_else(|| mpsc::unbounded_channel().1);
    Serving(tokio::spawn(async move {
        let trigger = Path::new(snap::SAVE_TRIGGER);
        loop {
            let (out, reply) = tokio::select! {
                Some(r) = requests.recv() => (r.path.unwrap_or_else(|| snap::SAVE_OUTPUT.into()), Some(r.reply)),
                _ = tokio::time::sleep(TRIGGER_POLL) => {
                    if !trigger.exists() {
                        continue;
                    }
                    let _ = std::fs::remove_file(trigger);
                    (PathBuf::from(snap::SAVE_OUTPUT), None)
                }
            };
            let r = save_logged(&s, &out).await;
            if let Some(reply) = reply {
                let _ = reply.send(r);
            }
        }
    }))
}

/// [`save`] with containerlab's log lines (it waits for one of the two).
pub async fn save_logged(s: &Saver, out: &Path) -> Result<SaveReport, String> {
    tracing::info!(path = %out.display(), "saving a snapshot");
    match save(s, out, After::Resume, STREAM_WAIT).await {
        Ok(v) => {
            tracing::info!(
                bytes = v.bytes,
                paused_ms = v.paused.as_millis() as u64,
                total_ms = v.total.as_millis() as u64,
                "Snapshot saved to {}",
                v.path.display()
            );
            Ok(SaveReport {
                path: v.path,
                bytes: v.bytes,
                paused_ms: v.paused.as_millis() as u64,
                total_ms: v.total.as_millis() as u64,
            })
        }
        Err(e) => {
            let why = crate::exit::chain(&e);
            tracing::error!("Snapshot save failed: {why}");
            Err(why)
        }
    }
}
