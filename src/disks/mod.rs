//! The VM's disks as files, made ready before qemu starts: qcow2 overlays (created once with
//! `qemu-img`, kept across restarts) and CD images (written afresh from their folders at every
//! start, by the ISO 9660 writer in [`iso`]; a templated CD, such as a cloud-init seed, once the
//! template values are known: [`write_templated`]), handed to the user a sandboxed qemu runs as
//! ([`hand_over`]). Never starts qemu, never touches the network.

pub mod iso;
pub mod render;
#[cfg(test)]
mod tests;
pub mod tgz;

use crate::config::{DiskKind, VmPlan};
use crate::template;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// qemu-img could not be run at all.
    #[error("cannot create disk overlay {overlay} over {base}")]
    QemuImg {
        overlay: PathBuf,
        base: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// qemu-img ran and refused; `why` is what it said.
    #[error("cannot create disk overlay {overlay} over {base}: {why}")]
    Overlay {
        overlay: PathBuf,
        base: PathBuf,
        why: String,
    },
    #[error(transparent)]
    Iso(#[from] iso::IsoError),
    #[error("cannot give {path} to qemu's group (gid {gid})")]
    Group {
        path: PathBuf,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Template { path: PathBuf, why: String },
    #[error("cannot pack {archive}")]
    Archive {
        archive: String,
        #[source]
        source: tgz::TgzError,
    },
    #[error("cannot give {path} to qemu's user (uid {uid})")]
    Owner {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// What a sandboxed qemu (uid, gid) writes becomes its own: the overlays (mode 0660: the
/// launcher, without CAP_DAC_OVERRIDE but in qemu's group, copies them into a snapshot and
/// writes a saved one back at a restore), and an
/// image written in place (`overlay = false`, its mode kept). What it only reads goes to its
/// group, mode 0640: the CD images. Links are never followed (a file qemu owned and replaced by
/// a link changes nothing else). The images behind overlays and the FAT folders stay as they
/// are: qemu only reads them.
pub fn hand_over(plan: &VmPlan, uid: u32, gid: u32) -> Result<(), DiskError> {
    use std::os::unix::fs::{lchown, PermissionsExt};
    for d in &plan.boot.disks {
        let (path, owner, mode) = match &d.kind {
            DiskKind::Image {
                overlay: Some(o), ..
            } => (o, Some(uid), Some(0o660)),
            // The user's own image: its mode stays.
            DiskKind::Image { overlay: None, .. } => (&d.path, Some(uid), None),
            // A templated CD is written later, once the template values are known: its group
            // is set then (`write_templated`).
            DiskKind::Cd { template: true, .. } => continue,
            DiskKind::Cd { image, .. } => (image, None, Some(0o640)),
            // A FAT folder is only read; a templated one is written later (`write_templated`).
            DiskKind::Fat { .. } => continue,
        };
        let err = |source| DiskError::Owner {
            path: path.clone(),
            uid,
            source,
        };
        lchown(path, owner, Some(gid)).map_err(err)?;
        if let Some(mode) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        }
    }
    Ok(())
}

/// Everything one VM's disks need before its qemu starts: the overlays, then the CD images.
pub fn prepare(plan: &VmPlan) -> Result<(), DiskError> {
    make_overlays(plan)?;
    make_cd_images(plan)
}

/// Writes the CD images (format = "iso") afresh from their folders: a changed day-0 config
/// takes effect at the next start. Templated ones wait for [`write_templated`].
fn make_cd_images(plan: &VmPlan) -> Result<(), DiskError> {
    for d in &plan.boot.disks {
        if let DiskKind::Cd {
            image,
            label,
            template: false,
            ..
        } = &d.kind
        {
            iso::write_from_dir(&d.path, label, image)?;
            tracing::info!(folder = %d.path.display(), image = %image.display(), "CD image written");
        }
    }
    Ok(())
}

/// Writes the templated disks (`template = true`: a cloud-init seed CD, a vendor's day-0
/// config CD or FAT folder) with the VM's template values (hostname, credentials, management
/// addresses) and `{startup_config}`, the startup config file's text (empty without one).
/// `qemu`: a sandboxed qemu's (uid, gid); its group is given what it reads (mode 0640, folders
/// 0750) as [`hand_over`] does for the other CDs (the launcher, a member of that group, needs
/// no capability for it).
pub fn write_templated(
    plan: &VmPlan,
    values: &template::Values,
    qemu: Option<(u32, u32)>,
) -> Result<(), DiskError> {
    // The startup config is read only when a templated disk may use it.
    let templated = plan.boot.disks.iter().any(|d| {
        matches!(
            d.kind,
            DiskKind::Cd { template: true, .. }
                | DiskKind::Fat {
                    rendered: Some(_),
                    ..
                }
        )
    });
    if !templated {
        return Ok(());
    }
    let mut values = values.clone();
    let startup = plan
        .startup_config
        .as_ref()
        .and_then(|s| std::fs::read_to_string(&s.path).ok())
        .unwrap_or_default();
    values.insert("startup_config", startup);
    let gid = qemu.map(|(_, g)| g);
    for d in &plan.boot.disks {
        match &d.kind {
            DiskKind::Cd {
                image,
                label,
                template: true,
                archive,
            } => {
                let entries = render::render_tree(&d.path, &values)?;
                let files = render::packed(entries, archive.as_deref())?;
                iso::write_image(&d.path, label, &files, image)?;
                if let Some(g) = gid {
                    render::give(image, g, 0o640)?;
                }
                tracing::info!(folder = %d.path.display(), image = %image.display(), "templated CD image written");
            }
            DiskKind::Fat {
                rendered: Some(r), ..
            } => {
                let entries = render::render_tree(&d.path, &values)?;
                let entries = render::packed(entries, r.archive.as_deref())?;
                render::write_folder(&r.dir, &entries, gid)?;
                tracing::info!(folder = %d.path.display(), rendered = %r.dir.display(), "templated FAT folder written");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Creates missing disk overlays with `qemu-img create -b`. Runs before qemu exists; the status
/// is collected by std's own waitpid on that pid, which the supervisor's reaper cannot race
/// because both run on the launcher's one runtime thread (see `commands::run`).
fn make_overlays(plan: &VmPlan) -> Result<(), DiskError> {
    for d in &plan.boot.disks {
        let DiskKind::Image {
            format,
            overlay: Some(o),
        } = &d.kind
        else {
            continue;
        };
        if o.exists() {
            tracing::info!(overlay = %o.display(), "reusing disk overlay");
            continue;
        }
        if let Some(dir) = o.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DiskError::Dir {
                path: dir.into(),
                source,
            })?;
        }
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
            .arg(&d.path)
            .arg(o)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| DiskError::QemuImg {
                overlay: o.clone(),
                base: d.path.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(DiskError::Overlay {
                overlay: o.clone(),
                base: d.path.clone(),
                why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        tracing::info!(overlay = %o.display(), base = %d.path.display(), "created disk overlay");
    }
    Ok(())
}
