//! A small ISO 9660 writer: the files of one folder as a CD image, the way many router images
//! take their day-0 configuration or licence (a CD-ROM with `iosxe_config.txt`, ...). [`image`]
//! is pure (names and bytes in, image out); [`write_from_dir`] reads the folder and writes the
//! image, [`write_rendered`] renders each file as a template first (a cloud-init seed). One flat
//! root directory, ISO 9660 level 2 names (up to 30 characters, upper case, as `genisoimage -l`
//! writes them) plus Rock Ridge (RRIP 1991A) names and modes, so Linux shows each file under
//! its own name (`user-data`, `meta-data`: a hyphen is no ISO 9660 character).

use crate::template;
use std::path::{Path, PathBuf};

const SECTOR: usize = 2048;
/// Sectors 0-15 are the system area; the volume descriptors follow.
const PVD: usize = 16;
const L_PATH: usize = 18;
const M_PATH: usize = 19;
const ROOT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot read folder {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write CD image {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Entry { path: PathBuf, why: String },
}

/// The ISO 9660 name: upper case, `-` as `_`, plus the version suffix `;1` (the Rock Ridge
/// name keeps the original). Only letters, digits, `_`, `-` and one `.` are allowed, 30
/// characters at most.
fn iso_name(name: &str) -> Result<String, String> {
    let up = name.to_ascii_uppercase().replace('-', "_");
    let ok = !up.is_empty()
        && up.len() <= 30
        && up.matches('.').count() <= 1
        && up
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !ok {
        return Err(format!(
            "{name:?} cannot be an ISO 9660 name (letters, digits, '_', '-', one '.', at most 30)"
        ));
    }
    Ok(format!("{up};1"))
}

/// Rock Ridge's POSIX attributes (RRIP 1991A `PX`): mode, one link, owner root.
fn px(mode: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    for v in [mode, 1, 0, 0] {
        e.extend_from_slice(&both32(v));
    }
    e
}

/// Rock Ridge's alternate name (`NM`): the file's own name, case and hyphens kept.
fn nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', 5 + name.len() as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// The root's `.` record announces the extensions: SUSP's `SP` (no bytes skipped) and an `ER`
/// naming RRIP 1991A.
fn root_su() -> Vec<u8> {
    let (id, des, src): (&[u8], &[u8], &[u8]) =
        (b"RRIP_1991A", b"POSIX FILE SYSTEM SEMANTICS", b"RRIP");
    let mut e = vec![b'S', b'P', 7, 1, 0xBE, 0xEF, 0];
    e.extend_from_slice(&[b'E', b'R', (8 + id.len() + des.len() + src.len()) as u8, 1]);
    e.extend_from_slice(&[id.len() as u8, des.len() as u8, src.len() as u8, 1]);
    for part in [id, des, src] {
        e.extend_from_slice(part);
    }
    e.extend_from_slice(&px(0o040_555));
    e
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// One directory record (ECMA-119 9.1), its system use area `su` (Rock Ridge) after the name.
fn record(name: &[u8], extent: u32, len: u32, dir: bool, su: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(len));
    // Recorded 1970-01-01 00:00 UTC: images are byte-for-byte reproducible.
    r[18..25].copy_from_slice(&[70, 1, 1, 0, 0, 0, 0]);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r.extend_from_slice(name);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r.extend_from_slice(su);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

fn pad(s: &str, n: usize) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(n, b' ');
    v
}

/// The CD image of `files` (name, content), in one root directory, labelled `label`.
pub fn image(label: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut entries: Vec<(String, &[u8], Vec<u8>)> = Vec::new();
    for (name, data) in files {
        let n = iso_name(name)?;
        if entries.iter().any(|(m, _, _)| *m == n) {
            return Err(format!(
                "{name:?}: two files with this name (names ignore case, '-' is '_')"
            ));
        }
        let mut su = px(0o100_444);
        su.extend_from_slice(&nm(name));
        entries.push((n, data, su));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    // The root directory's records, none crossing a sector boundary.
    let lay_out = |extents: &[u32], root_sectors: u32| -> Vec<u8> {
        let root_len = root_sectors * SECTOR as u32;
        let mut dir = Vec::new();
        let mut put = |r: Vec<u8>| {
            if dir.len() / SECTOR != (dir.len() + r.len() - 1) / SECTOR {
                dir.resize(dir.len().div_ceil(SECTOR) * SECTOR, 0);
            }
            dir.extend_from_slice(&r);
        };
        put(record(&[0], ROOT as u32, root_len, true, &root_su()));
        put(record(&[1], ROOT as u32, root_len, true, &px(0o040_555)));
        for ((name, data, su), ext) in entries.iter().zip(extents) {
            put(record(name.as_bytes(), *ext, data.len() as u32, false, su));
        }
        dir
    };
    // Two passes: the directory's size decides where the files start.
    let root_sectors = lay_out(&vec![0; entries.len()], 1)
        .len()
        .div_ceil(SECTOR)
        .max(1) as u32;
    let mut extents = Vec::new();
    let mut next = ROOT as u32 + root_sectors;
    for (_, data, _) in &entries {
        extents.push(if data.is_empty() { 0 } else { next });
        next += data.len().div_ceil(SECTOR) as u32;
    }
    let total = next as usize;
    let mut img = vec![0u8; total * SECTOR];
    let dir = lay_out(&extents, root_sectors);
    img[ROOT * SECTOR..ROOT * SECTOR + dir.len()].copy_from_slice(&dir);
    for ((_, data, _), ext) in entries.iter().zip(&extents) {
        let at = *ext as usize * SECTOR;
        img[at..at + data.len()].copy_from_slice(data);
    }

    // Primary volume descriptor (ECMA-119 8.4).
    let p = &mut img[PVD * SECTOR..(PVD + 1) * SECTOR];
    p[0] = 1;
    p[1..6].copy_from_slice(b"CD001");
    p[6] = 1;
    p[8..40].copy_from_slice(&pad("LINUX", 32));
    p[40..72].copy_from_slice(&pad(&label.to_ascii_uppercase(), 32));
    p[80..88].copy_from_slice(&both32(total as u32));
    p[120..124].copy_from_slice(&both16(1));
    p[124..128].copy_from_slice(&both16(1));
    p[128..132].copy_from_slice(&both16(SECTOR as u16));
    p[132..140].copy_from_slice(&both32(10));
    p[140..144].copy_from_slice(&(L_PATH as u32).to_le_bytes());
    p[148..152].copy_from_slice(&(M_PATH as u32).to_be_bytes());
    p[156..190].copy_from_slice(&record(
        &[0],
        ROOT as u32,
        root_sectors * SECTOR as u32,
        true,
        &[],
    ));
    for (at, n) in [
        (190, 128),
        (318, 128),
        (446, 128),
        (574, 128),
        (702, 37),
        (739, 37),
        (776, 37),
    ] {
        p[at..at + n].copy_from_slice(&pad("", n));
    }
    p[574..602].copy_from_slice(&pad("LAUNCHER", 28));
    for at in [813, 830, 847, 864] {
        p[at..at + 16].copy_from_slice(b"0000000000000000");
    }
    p[881] = 1;
    // Set terminator.
    let t = &mut img[(PVD + 1) * SECTOR..(PVD + 2) * SECTOR];
    t[0] = 255;
    t[1..6].copy_from_slice(b"CD001");
    t[6] = 1;
    // Path tables: the root alone, little-endian (L) and big-endian (M).
    for (sector, le) in [(L_PATH, true), (M_PATH, false)] {
        let e = &mut img[sector * SECTOR..sector * SECTOR + 10];
        e[0] = 1;
        let (ext, parent) = if le {
            ((ROOT as u32).to_le_bytes(), 1u16.to_le_bytes())
        } else {
            ((ROOT as u32).to_be_bytes(), 1u16.to_be_bytes())
        };
        e[2..6].copy_from_slice(&ext);
        e[6..8].copy_from_slice(&parent);
    }
    Ok(img)
}

/// Writes the CD image of the files in `dir` (no subfolders) to `out`.
pub fn write_from_dir(dir: &Path, label: &str, out: &Path) -> Result<(), IsoError> {
    let files = read_files(dir)?;
    write_image(dir, label, &files, out)
}

/// Writes the CD image of the files in `dir` to `out`, each file rendered as a template first
/// (`{hostname}`, `{password}`, `{mgmt_ip}`, ...: see [`template`]). A file must be UTF-8.
pub fn write_rendered(
    dir: &Path,
    label: &str,
    out: &Path,
    values: &template::Values,
) -> Result<(), IsoError> {
    let mut files = read_files(dir)?;
    for (name, data) in &mut files {
        let text = std::str::from_utf8(data).map_err(|_| IsoError::Entry {
            path: dir.join(&*name),
            why: "a template file must be UTF-8 text".into(),
        })?;
        *data = template::render(text, values).into_bytes();
    }
    write_image(dir, label, &files, out)
}

/// The plain files of `dir` (no subfolders), name and content.
fn read_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, IsoError> {
    let read = |source| IsoError::Read {
        path: dir.into(),
        source,
    };
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read)? {
        let e = e.map_err(read)?;
        let path = e.path();
        if !e.file_type().map_err(read)?.is_file() {
            return Err(IsoError::Entry {
                path,
                why: "only plain files go on the CD image (no folders)".into(),
            });
        }
        let data = std::fs::read(&path).map_err(read)?;
        files.push((e.file_name().to_string_lossy().into_owned(), data));
    }
    Ok(files)
}

pub fn write_image(
    dir: &Path,
    label: &str,
    files: &[(String, Vec<u8>)],
    out: &Path,
) -> Result<(), IsoError> {
    let img = image(label, files).map_err(|why| IsoError::Entry {
        path: dir.into(),
        why,
    })?;
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).map_err(|source| IsoError::Write {
            path: out.into(),
            source,
        })?;
    }
    std::fs::write(out, img).map_err(|source| IsoError::Write {
        path: out.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32le(b: &[u8]) -> u32 {
        u32::from_le_bytes(b[..4].try_into().unwrap())
    }

    #[test]
    fn layout_follows_ecma_119() {
        let files = vec![
            ("iosxe_config.txt".to_string(), b"hostname r1\n".to_vec()),
            ("a.lic".to_string(), vec![7u8; 5000]),
            ("empty".to_string(), vec![]),
        ];
        let img = image("config", &files).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        let pvd = &img[PVD * SECTOR..];
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&pvd[40..46], b"CONFIG");
        assert_eq!(u32le(&pvd[80..]) as usize, img.len() / SECTOR);
        assert_eq!(
            &img[(PVD + 1) * SECTOR..(PVD + 1) * SECTOR + 7],
            b"\xffCD001\x01"
        );
        // Root records: ".", "..", then the files in name order with their extents.
        let dir = &img[ROOT * SECTOR..(ROOT + 1) * SECTOR];
        let mut at = 0;
        let mut names = Vec::new();
        while dir[at] != 0 {
            let len = dir[at] as usize;
            let name = dir[at + 33..at + 33 + dir[at + 32] as usize].to_vec();
            let ext = u32le(&dir[at + 2..]) as usize;
            let size = u32le(&dir[at + 10..]) as usize;
            if name == b"IOSXE_CONFIG.TXT;1" {
                assert_eq!(&img[ext * SECTOR..ext * SECTOR + size], b"hostname r1\n");
            }
            if name == b"A.LIC;1" {
                assert_eq!(size, 5000);
                assert!(img[ext * SECTOR..ext * SECTOR + size]
                    .iter()
                    .all(|&b| b == 7));
            }
            names.push(String::from_utf8_lossy(&name).into_owned());
            at += len;
        }
        assert_eq!(
            names,
            ["\0", "\u{1}", "A.LIC;1", "EMPTY;1", "IOSXE_CONFIG.TXT;1"]
        );
        // Reproducible: the same files give the same bytes.
        assert_eq!(img, image("config", &files).unwrap());
    }

    #[test]
    fn many_files_spill_the_directory_over_sectors() {
        let files: Vec<(String, Vec<u8>)> = (0..200)
            .map(|i| {
                (
                    format!("file_number_{i:03}.cfg"),
                    format!("{i}").into_bytes(),
                )
            })
            .collect();
        let img = image("x", &files).unwrap();
        let root_len = u32le(&img[PVD * SECTOR + 156 + 10..]) as usize;
        assert!(root_len > SECTOR, "{root_len}");
        assert_eq!(root_len % SECTOR, 0);
    }

    /// A system use entry: its signature and its data.
    type Entry = ([u8; 2], Vec<u8>);

    /// Each root record's ISO name and the Rock Ridge entries of its system use area.
    fn records(img: &[u8]) -> Vec<(Vec<u8>, Vec<Entry>)> {
        let dir = &img[ROOT * SECTOR..(ROOT + 1) * SECTOR];
        let mut out = Vec::new();
        let mut at = 0;
        while dir[at] != 0 {
            let len = dir[at] as usize;
            let nlen = dir[at + 32] as usize;
            let name = dir[at + 33..at + 33 + nlen].to_vec();
            let mut su = at + 33 + nlen + (33 + nlen) % 2;
            let mut entries = Vec::new();
            while su + 4 <= at + len && dir[su + 2] > 0 {
                let l = dir[su + 2] as usize;
                entries.push(([dir[su], dir[su + 1]], dir[su + 4..su + l].to_vec()));
                su += l;
            }
            out.push((name, entries));
            at += len;
        }
        out
    }

    #[test]
    fn rock_ridge_keeps_each_files_own_name() {
        let files = vec![
            ("user-data".to_string(), b"#cloud-config\n".to_vec()),
            ("meta-data".to_string(), b"instance-id: r1\n".to_vec()),
            ("network-config".to_string(), vec![]),
        ];
        let recs = records(&image("cidata", &files).unwrap());
        // The root's "." starts with SP (magic BE EF, skip 0) and names RRIP 1991A.
        let (dot, su) = &recs[0];
        assert_eq!(dot, &[0]);
        assert_eq!(su[0], (*b"SP", vec![0xBE, 0xEF, 0]));
        assert_eq!(su[1].0, *b"ER");
        assert!(su[1].1.windows(10).any(|w| w == b"RRIP_1991A"));
        let named: Vec<(String, String, u32)> = recs[2..]
            .iter()
            .map(|(iso, su)| {
                let nm = su.iter().find(|(s, _)| s == b"NM").unwrap();
                let px = su.iter().find(|(s, _)| s == b"PX").unwrap();
                (
                    String::from_utf8_lossy(iso).into_owned(),
                    String::from_utf8_lossy(&nm.1[1..]).into_owned(),
                    u32le(&px.1),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("META_DATA;1".into(), "meta-data".into(), 0o100_444),
                (
                    "NETWORK_CONFIG;1".into(),
                    "network-config".into(),
                    0o100_444
                ),
                ("USER_DATA;1".into(), "user-data".into(), 0o100_444),
            ]
        );
    }

    #[test]
    fn rendered_files_fill_in_the_templates() {
        let dir = std::env::temp_dir().join(format!("lt-debian-iso-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("meta-data"), "local-hostname: {hostname}\n").unwrap();
        let out = dir.with_extension("iso");
        let mut v = template::Values::new();
        v.insert("hostname", "r7".into());
        write_rendered(&dir, "cidata", &out, &v).unwrap();
        let img = std::fs::read(&out).unwrap();
        assert!(img.windows(18).any(|w| w == b"local-hostname: r7"));
        std::fs::write(dir.join("bin"), [0xff, 0xfe]).unwrap();
        let e = write_rendered(&dir, "cidata", &out, &v).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&out).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["with space.txt", "a.b.c", "", &"x".repeat(31), "ümlaut"] {
            assert!(
                image("x", &[(bad.to_string(), vec![1])]).is_err(),
                "{bad:?}"
            );
        }
        let dup = [("A.txt".to_string(), vec![]), ("a.TXT".to_string(), vec![])];
        assert!(image("x", &dup).unwrap_err().contains("two files"));
        let dup = [("a-b".to_string(), vec![]), ("a_b".to_string(), vec![])];
        assert!(image("x", &dup).unwrap_err().contains("two files"));
    }
}
