//! One `[[disk]]` entry: its format (an image, a folder as FAT, a folder as a CD), its bus,
//! its label, whether its files are templates and whether they go into an archive; and the IDE
//! positions of a VM's disks together. Never looks at another section and never at the system.

use super::schema::DiskSection;
use super::{choice, resolve, ConfigError, Disk, DiskInterface, DiskKind, Key, Rendered};
use std::path::Path;

/// What a `[[disk]]`'s format makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Image,
    Fat,
    Iso,
}

/// One `[[disk]]` (entry `i`, under `key`).
pub(super) fn disk(
    key: &Key,
    i: usize,
    d: &DiskSection,
    base: &Path,
    state_dir: &Path,
) -> Result<Disk, ConfigError> {
    if d.path.is_empty() {
        return Err(key.child("path").invalid("", "must name a disk image"));
    }
    let format = choice(
        &key.child("format"),
        &d.format,
        &[
            ("qcow2", Format::Image),
            ("raw", Format::Image),
            ("vmdk", Format::Image),
            ("vdi", Format::Image),
            ("vhdx", Format::Image),
            ("fat (a folder as a read-only FAT disk)", Format::Fat),
            ("iso (a folder as a CD-ROM)", Format::Iso),
        ],
    )?;
    let label = label_template_archive(key, d, format)?;
    if format == Format::Fat && d.path.contains(':') {
        return Err(key.child("path").invalid(
            &d.path,
            "a fat disk's folder cannot contain ':' (qemu's vvfat syntax)",
        ));
    }
    let interface = disk_interface(&key.child("interface"), d.interface.as_deref(), format)?;
    if let (Some(u), false) = (d.ide_unit, interface == DiskInterface::Ide) {
        return Err(key
            .child("ide_unit")
            .invalid(u, "only a disk on interface = \"ide\" has an IDE position"));
    }
    let path = resolve(base, &d.path);
    let file_part = |p: Option<&std::ffi::OsStr>| {
        p.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let kind = match format {
        Format::Fat => DiskKind::Fat {
            label: d.label.clone(),
            rendered: d.template.then(|| Rendered {
                dir: state_dir.join(format!("{}-{i}.fat", file_part(path.file_name()))),
                archive: d.archive.clone(),
            }),
        },
        Format::Iso => DiskKind::Cd {
            image: state_dir.join(format!("{}-{i}.iso", file_part(path.file_name()))),
            label,
            template: d.template,
            archive: d.archive.clone(),
        },
        Format::Image => DiskKind::Image {
            format: d.format.clone(),
            overlay: d
                .overlay
                .then(|| state_dir.join(format!("{}-overlay.qcow2", file_part(path.file_stem())))),
        },
    };
    Ok(Disk {
        path,
        interface,
        kind,
        ide_unit: d.ide_unit,
    })
}

/// A disk's `label` (what it may be for its format), and `template` and `archive` (only
/// folders are rendered; an archive only of rendered files, named as a .tgz): the label.
fn label_template_archive(
    key: &Key,
    d: &DiskSection,
    format: Format,
) -> Result<String, ConfigError> {
    let label = d.label.clone().unwrap_or_else(|| "config".into());
    match format {
        Format::Image if d.label.is_some() => {
            return Err(key.child("label").invalid(
                &label,
                "only a CD image (format = \"iso\") or a fat folder has a label",
            ))
        }
        Format::Iso
            if label.is_empty()
                || label.len() > 32
                || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            return Err(key
                .child("label")
                .invalid(&label, "1-32 letters, digits or '_' (ISO 9660)"))
        }
        Format::Fat
            if label.is_empty()
                || label.len() > 11
                || !label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) =>
        {
            return Err(key.child("label").invalid(
                &label,
                "1-11 letters, digits, '-' or '_' (a FAT volume label)",
            ))
        }
        _ => {}
    }
    if d.template && format == Format::Image {
        return Err(key.child("template").invalid(
            true,
            "only a CD image (format = \"iso\") or a fat folder is rendered as templates",
        ));
    }
    if let Some(a) = &d.archive {
        if !d.template {
            return Err(key
                .child("archive")
                .invalid(a, "an archive holds rendered files: set template = true"));
        }
        if !(a.ends_with(".tgz") || a.ends_with(".tar.gz"))
            || a.contains('/')
            || !a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(key.child("archive").invalid(
                a,
                "a file name ending .tgz or .tar.gz (letters, digits, '-', '_', '.')",
            ));
        }
    }
    Ok(label)
}

/// virtio for disks, ide for a CD image, unless the entry says; a CD-ROM never on virtio.
fn disk_interface(
    key: &Key,
    asked: Option<&str>,
    format: Format,
) -> Result<DiskInterface, ConfigError> {
    use DiskInterface::{Ide, Sata, Scsi, Usb, Virtio};
    if format == Format::Iso {
        let asked = asked.unwrap_or("ide");
        return super::pick(asked, &[("ide", Ide), ("scsi", Scsi), ("sata", Sata)])
            .ok_or_else(|| key.invalid(asked, "a CD-ROM sits on ide, scsi or sata"));
    }
    choice(
        key,
        asked.unwrap_or("virtio"),
        &[
            ("virtio", Virtio),
            ("ide", Ide),
            ("scsi", Scsi),
            ("sata (an AHCI port)", Sata),
            ("usb (a USB stick)", Usb),
        ],
    )
}

/// Each IDE disk's position: its `ide_unit` (below `max`, one disk each), else the lowest
/// position no disk asked for, in file order (`max` IDE disks at most, counted before).
pub(super) fn ide_units(key: &Key, disks: &mut [Disk], max: usize) -> Result<(), ConfigError> {
    let mut taken = vec![false; max];
    for (i, u) in disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, d.ide_unit?)))
    {
        let k = key.index(i).child("ide_unit");
        match taken.get_mut(u as usize) {
            None => {
                return Err(k.invalid(
                    u,
                    format!(
                        "0 to {} on this machine (0 primary master, 1 primary slave, 2 secondary master, 3 secondary slave)",
                        max - 1
                    ),
                ))
            }
            Some(true) => return Err(k.invalid(u, "another IDE disk has that position")),
            Some(t) => *t = true,
        }
    }
    for d in disks
        .iter_mut()
        .filter(|d| d.interface == DiskInterface::Ide && d.ide_unit.is_none())
    {
        let u = taken.iter().position(|t| !t).expect("IDE disks counted");
        taken[u] = true;
        d.ide_unit = Some(u as u32);
    }
    Ok(())
}
