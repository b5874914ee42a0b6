//! Templated disk folders: a folder's tree (subfolders kept) read and each file rendered with
//! the VM's template values, then laid out as files in a folder a FAT disk shows, or packed
//! as one `.tgz` ([`super::tgz`]). Never decides the values; never starts qemu.

use super::tgz::{self, Entry};
use super::DiskError;
use crate::template;
use std::path::{Path, PathBuf};

/// Every entry under `dir` in a stable order (folders before their files), each file
/// rendered: templates are UTF-8 text. Links are refused (a template folder is the
/// platform's own files).
pub fn render_tree(dir: &Path, values: &template::Values) -> Result<Vec<Entry>, DiskError> {
    let mut out = Vec::new();
    walk(dir, dir, values, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    values: &template::Values,
    out: &mut Vec<Entry>,
) -> Result<(), DiskError> {
    let bad = |path: PathBuf, why: &str| DiskError::Template {
        path,
        why: why.into(),
    };
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskError::Read { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read(dir))?
        .collect::<Result<_, _>>()
        .map_err(read(dir))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let kind = e.file_type().map_err(read(&path))?;
        if kind.is_dir() {
            out.push((rel, None));
            walk(root, &path, values, out)?;
        } else if kind.is_file() {
            let data = std::fs::read(&path).map_err(read(&path))?;
            let text = String::from_utf8(data)
                .map_err(|_| bad(path.clone(), "a template file must be UTF-8 text"))?;
            out.push((rel, Some(template::render(&text, values).into_bytes())));
        } else {
            return Err(bad(path, "only files and folders go on a templated disk"));
        }
    }
    Ok(())
}

/// The entries as they go on the disk: laid out as they are, or packed as `archive`.
pub fn packed(entries: Vec<Entry>, archive: Option<&str>) -> Result<Vec<Entry>, DiskError> {
    match archive {
        None => Ok(entries),
        Some(a) => {
            let bytes = tgz::tgz(&entries).map_err(|source| DiskError::Archive {
                archive: a.to_string(),
                source,
            })?;
            Ok(vec![(a.to_string(), Some(bytes))])
        }
    }
}

/// Writes `entries` afresh under `dir` (what was there is removed first: a changed config
/// takes effect at the next start), folders 0750 and files 0640, given to `gid` when set.
pub fn write_folder(dir: &Path, entries: &[Entry], gid: Option<u32>) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskError::Dir { path, source }
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut all = vec![(dir.to_path_buf(), 0o750)];
    for (rel, data) in entries {
        let path = dir.join(rel);
        match data {
            None => {
                std::fs::create_dir_all(&path).map_err(io(&path))?;
                all.push((path, 0o750));
            }
            Some(d) => {
                std::fs::write(&path, d).map_err(io(&path))?;
                all.push((path, 0o640));
            }
        }
    }
    for (path, mode) in all {
        match gid {
            Some(g) => give(&path, g, mode)?,
            None => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io(&path))?,
        }
    }
    Ok(())
}

/// `path` to group `gid` with `mode` (what a sandboxed qemu reads), links never followed.
pub fn give(path: &Path, gid: u32, mode: u32) -> Result<(), DiskError> {
    use std::os::unix::fs::{lchown, PermissionsExt};
    let err = |source| DiskError::Group {
        path: path.to_path_buf(),
        gid,
        source,
    };
    lchown(path, None, Some(gid)).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lt-render-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn values() -> template::Values {
        let mut v = template::Values::new();
        v.insert("hostname", "r1".into());
        v.insert("startup_config", "interfaces { ge-0/0/0; }\n".into());
        v
    }

    /// A Junos-style config keeps its own braces; placeholders are filled; the tree's
    /// subfolders stay; the order is stable.
    #[test]
    fn a_tree_renders_with_its_folders_and_the_startup_config() {
        let src = tmp("tree");
        std::fs::create_dir_all(src.join("config")).unwrap();
        std::fs::write(
            src.join("config/juniper.conf"),
            "system {\n    host-name {hostname};\n}\n{startup_config}",
        )
        .unwrap();
        std::fs::write(src.join("a.txt"), "x").unwrap();
        let e = render_tree(&src, &values()).unwrap();
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "config", "config/juniper.conf"]);
        assert_eq!(
            String::from_utf8(e[2].1.clone().unwrap()).unwrap(),
            "system {\n    host-name r1;\n}\ninterfaces { ge-0/0/0; }\n"
        );
        // Written as a folder: files and folders as in the source, nothing left from before.
        let out = tmp("out");
        std::fs::write(out.join("stale"), "old").unwrap();
        write_folder(&out, &e, None).unwrap();
        assert!(!out.join("stale").exists());
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "x");
        // Packed: one .tgz that the system's tar reads back with its folder.
        let packed = packed(e, Some("vmm-config.tgz")).unwrap();
        assert_eq!(packed.len(), 1);
        write_folder(&out, &packed, None).unwrap();
        let x = tmp("x");
        let st = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(out.join("vmm-config.tgz"))
            .arg("-C")
            .arg(&x)
            .status()
            .expect("tar must be installed for this test");
        assert!(st.success());
        assert!(std::fs::read_to_string(x.join("config/juniper.conf"))
            .unwrap()
            .contains("host-name r1;"));
        for d in [src, out, x] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_binary_file_or_a_link_is_refused_naming_it() {
        let src = tmp("bad");
        std::fs::write(src.join("blob"), [0xff, 0xfe]).unwrap();
        let e = render_tree(&src, &values()).unwrap_err().to_string();
        assert!(
            e.ends_with("blob: a template file must be UTF-8 text"),
            "{e}"
        );
        std::fs::remove_file(src.join("blob")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("l")).unwrap();
        let e = render_tree(&src, &values()).unwrap_err().to_string();
        assert!(
            e.ends_with("l: only files and folders go on a templated disk"),
            "{e}"
        );
        std::fs::remove_dir_all(src).unwrap();
    }
}
