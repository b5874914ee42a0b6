//! A small ISO 9660 writer: a folder tree as a CD image, the way many router images take
//! their day-0 configuration or licence (a CD-ROM with `iosxe_config.txt`, vSRX's
//! `config/juniper.conf`, ...). [`tree_image`] is pure (paths and bytes in, image out; [`image`]
//! the same for one flat folder); [`write_from_dir`] reads a flat folder and writes the image,
//! and [`write_image`] writes a tree already rendered (a templated CD such as a cloud-init
//! seed: `super::render` renders it). Each directory has its own extent with `.`
//! and `..`, the path tables (L and M) list them by level, parent and name (ECMA-119 9.4), at
//! most 8 levels. ISO 9660 level 2 names (up to 30 characters, upper case, as `genisoimage -l`
//! writes them) plus Rock Ridge (RRIP 1991A) names and modes (files 0444, folders 0555), so
//! Linux shows each entry under its own name (`user-data`, `meta-data`: a hyphen is no ISO
//! 9660 character).

use super::tgz::Entry;
use std::path::{Path, PathBuf};

const SECTOR: usize = 2048;
/// Sectors 0-15 are the system area; the volume descriptors follow.
const PVD: usize = 16;
const L_PATH: usize = 18;

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

/// The CD image of `files` (path, content: a `/` in a path makes folders, as [`tree_image`]).
pub fn image(label: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(n, d)| (n.clone(), Some(d.clone())))
        .collect();
    tree_image(label, &entries)
}

/// A child of a directory: its ISO name, its Rock Ridge entries, what it is.
struct Node {
    iso: String,
    su: Vec<u8>,
    kind: Kid,
}

enum Kid {
    Dir(usize),
    File(usize),
}

/// The folder tree: `dirs[0]` is the root; each dir's parent and children.
struct Tree<'a> {
    dirs: Vec<(usize, Vec<Node>)>,
    files: Vec<&'a [u8]>,
    paths: std::collections::HashMap<String, usize>,
}

impl<'a> Tree<'a> {
    fn of(entries: &'a [Entry]) -> Result<Self, String> {
        let mut t = Tree {
            dirs: vec![(0, Vec::new())],
            files: Vec::new(),
            paths: Default::default(),
        };
        for (path, data) in entries {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((last, up)) = parts.split_last() else {
                return Err(format!("{path:?}: an empty name"));
            };
            if parts.iter().any(|p| *p == "." || *p == "..") || parts.len() > 8 {
                return Err(format!(
                    "{path:?}: no '.' or '..' in a path, at most 7 folders deep"
                ));
            }
            let mut d = 0;
            for (i, name) in up.iter().enumerate() {
                d = t.dir(d, &parts[..=i].join("/"), name)?;
            }
            match data {
                None => {
                    t.dir(d, &parts.join("/"), last)?;
                }
                Some(data) => {
                    let mut su = px(0o100_444);
                    su.extend_from_slice(&nm(last));
                    let iso = iso_name(last)?;
                    t.claim(d, iso, su, Kid::File(t.files.len()), last)?;
                    t.files.push(data);
                }
            }
        }
        for (_, kids) in &mut t.dirs {
            kids.sort_by(|a, b| a.iso.cmp(&b.iso));
        }
        Ok(t)
    }

    /// The folder `path` (`name` in `parent`), made if new.
    fn dir(&mut self, parent: usize, path: &str, name: &str) -> Result<usize, String> {
        if let Some(&i) = self.paths.get(path) {
            return Ok(i);
        }
        let i = self.dirs.len();
        let mut su = px(0o040_555);
        su.extend_from_slice(&nm(name));
        let iso = iso_name(name)?.trim_end_matches(";1").replace('.', "_");
        self.claim(parent, iso, su, Kid::Dir(i), name)?;
        self.dirs.push((parent, Vec::new()));
        self.paths.insert(path.to_string(), i);
        Ok(i)
    }

    fn claim(
        &mut self,
        d: usize,
        iso: String,
        su: Vec<u8>,
        kind: Kid,
        name: &str,
    ) -> Result<(), String> {
        let stem = |s: &str| s.trim_end_matches(";1").to_string();
        if self.dirs[d].1.iter().any(|n| stem(&n.iso) == stem(&iso)) {
            return Err(format!(
                "{name:?}: two files (or folders) with this name in one folder (names ignore case, '-' is '_')"
            ));
        }
        self.dirs[d].1.push(Node { iso, su, kind });
        Ok(())
    }

    /// The directories in path table order (ECMA-119 9.4: by level, then parent, then name).
    fn order(&self) -> Vec<usize> {
        let mut order = vec![0];
        let mut i = 0;
        while i < order.len() {
            for n in &self.dirs[order[i]].1 {
                if let Kid::Dir(d) = n.kind {
                    order.push(d);
                }
            }
            i += 1;
        }
        order
    }

    /// Directory `d`'s records, none crossing a sector boundary; `loc`/`size` of the
    /// directories, `ext` of the files.
    fn records(&self, d: usize, loc: &[u32], size: &[u32], ext: &[u32]) -> Vec<u8> {
        let mut dir = Vec::new();
        let mut put = |r: Vec<u8>| {
            if dir.len() / SECTOR != (dir.len() + r.len() - 1) / SECTOR {
                dir.resize(dir.len().div_ceil(SECTOR) * SECTOR, 0);
            }
            dir.extend_from_slice(&r);
        };
        let dot_su = if d == 0 { root_su() } else { px(0o040_555) };
        let up = self.dirs[d].0;
        put(record(&[0], loc[d], size[d], true, &dot_su));
        put(record(&[1], loc[up], size[up], true, &px(0o040_555)));
        for n in &self.dirs[d].1 {
            put(match n.kind {
                Kid::Dir(i) => record(n.iso.as_bytes(), loc[i], size[i], true, &n.su),
                Kid::File(i) => record(
                    n.iso.as_bytes(),
                    ext[i],
                    self.files[i].len() as u32,
                    false,
                    &n.su,
                ),
            });
        }
        dir
    }
}

/// The path table (ECMA-119 9.4), little-endian (`le`, type L) or big-endian (type M).
fn path_table(t: &Tree, order: &[usize], loc: &[u32], le: bool) -> Vec<u8> {
    let mut num = vec![0u16; t.dirs.len()];
    for (i, d) in order.iter().enumerate() {
        num[*d] = i as u16 + 1;
    }
    let mut out = Vec::new();
    for &d in order {
        let id: Vec<u8> = if d == 0 {
            vec![0]
        } else {
            let up = &t.dirs[t.dirs[d].0].1;
            let n = up.iter().find(|n| matches!(n.kind, Kid::Dir(i) if i == d));
            n.map(|n| n.iso.as_bytes().to_vec()).unwrap_or_default()
        };
        let parent = num[t.dirs[d].0];
        out.extend_from_slice(&[id.len() as u8, 0]);
        if le {
            out.extend_from_slice(&loc[d].to_le_bytes());
            out.extend_from_slice(&parent.to_le_bytes());
        } else {
            out.extend_from_slice(&loc[d].to_be_bytes());
            out.extend_from_slice(&parent.to_be_bytes());
        }
        out.extend_from_slice(&id);
        if id.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

/// The CD image of `entries` (a path with `/` between folders; content, or `None` for a
/// folder: parent folders are made as needed), labelled `label`.
pub fn tree_image(label: &str, entries: &[Entry]) -> Result<Vec<u8>, String> {
    let t = Tree::of(entries)?;
    let order = t.order();
    let n = t.dirs.len();
    // The directories' sizes depend on their names only; the extents follow from them.
    let zero = (vec![0; n], vec![0; t.files.len()]);
    let size: Vec<u32> = (0..n)
        .map(|d| {
            (t.records(d, &zero.0, &zero.0, &zero.1)
                .len()
                .div_ceil(SECTOR)
                * SECTOR) as u32
        })
        .collect();
    let pt_len = path_table(&t, &order, &zero.0, true).len();
    let pt_sectors = pt_len.div_ceil(SECTOR) as u32;
    let m_path = L_PATH as u32 + pt_sectors;
    let mut next = m_path + pt_sectors;
    let mut loc = vec![0; n];
    for &d in &order {
        loc[d] = next;
        next += size[d] / SECTOR as u32;
    }
    let mut ext = Vec::new();
    for data in &t.files {
        ext.push(if data.is_empty() { 0 } else { next });
        next += data.len().div_ceil(SECTOR) as u32;
    }
    let total = next as usize;
    let mut img = vec![0u8; total * SECTOR];
    for d in 0..n {
        let dir = t.records(d, &loc, &size, &ext);
        let at = loc[d] as usize * SECTOR;
        img[at..at + dir.len()].copy_from_slice(&dir);
    }
    for (data, e) in t.files.iter().zip(&ext) {
        let at = *e as usize * SECTOR;
        img[at..at + data.len()].copy_from_slice(data);
    }
    for (sector, le) in [(L_PATH as u32, true), (m_path, false)] {
        let pt = path_table(&t, &order, &loc, le);
        let at = sector as usize * SECTOR;
        img[at..at + pt.len()].copy_from_slice(&pt);
    }
    let root = record(&[0], loc[0], size[0], true, &[]);
    pvd(&mut img, label, total as u32, pt_len as u32, m_path, &root);
    Ok(img)
}

/// The primary volume descriptor (ECMA-119 8.4) and the set terminator.
fn pvd(img: &mut [u8], label: &str, total: u32, pt_len: u32, m_path: u32, root: &[u8]) {
    let p = &mut img[PVD * SECTOR..(PVD + 1) * SECTOR];
    p[0] = 1;
    p[1..6].copy_from_slice(b"CD001");
    p[6] = 1;
    p[8..40].copy_from_slice(&pad("LINUX", 32));
    p[40..72].copy_from_slice(&pad(&label.to_ascii_uppercase(), 32));
    p[80..88].copy_from_slice(&both32(total));
    p[120..124].copy_from_slice(&both16(1));
    p[124..128].copy_from_slice(&both16(1));
    p[128..132].copy_from_slice(&both16(SECTOR as u16));
    p[132..140].copy_from_slice(&both32(pt_len));
    p[140..144].copy_from_slice(&(L_PATH as u32).to_le_bytes());
    p[148..152].copy_from_slice(&m_path.to_be_bytes());
    p[156..190].copy_from_slice(root);
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
    let t = &mut img[(PVD + 1) * SECTOR..(PVD + 2) * SECTOR];
    t[0] = 255;
    t[1..6].copy_from_slice(b"CD001");
    t[6] = 1;
}

/// Writes the CD image of the files in `dir` (no subfolders) to `out`.
pub fn write_from_dir(dir: &Path, label: &str, out: &Path) -> Result<(), IsoError> {
    let files = read_files(dir)?;
    write_image(dir, label, &as_entries(files), out)
}

fn as_entries(files: Vec<(String, Vec<u8>)>) -> Vec<Entry> {
    files.into_iter().map(|(n, d)| (n, Some(d))).collect()
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

/// Writes the CD image of `entries` (see [`tree_image`]) to `out`; `dir` names the source in
/// errors.
pub fn write_image(dir: &Path, label: &str, entries: &[Entry], out: &Path) -> Result<(), IsoError> {
    let img = tree_image(label, entries).map_err(|why| IsoError::Entry {
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
    use crate::template;

    /// The root directory's sector when the path table fits in one sector.
    const ROOT: usize = 20;

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
        // The templated CD's path: the folder rendered, then written.
        let write_rendered = |dir: &Path, label: &str, out: &Path, v: &template::Values| {
            let e = crate::disks::render::render_tree(dir, v).map_err(|e| e.to_string())?;
            write_image(dir, label, &e, out).map_err(|e| e.to_string())
        };
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
