//! `write_templated` with a CD of folders, read back by the kernel's own ISO 9660 driver.

use super::*;
use std::path::Path;
use std::process::Command;

/// Unmounts (and removes) its mount point when dropped, so a failed check leaves nothing.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Every file under `dir` (relative path, content) and every folder (relative path, mode).
fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>, u32)>) {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let meta = std::fs::metadata(&p).unwrap();
        if meta.is_dir() {
            out.push((rel, None, meta.permissions().mode()));
            read_tree(root, &p, out);
        } else {
            let data = std::fs::read(&p).unwrap();
            out.push((rel, Some(data), meta.permissions().mode()));
        }
    }
}

/// A templated CD keeps its folders (vSRX reads `config/juniper.conf`): Linux mounts the
/// image and shows each folder and file under its own name, files rendered, folders 040555.
#[test]
fn templated_cd_keeps_its_folders() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts an ISO image: run it as root"
    );
    let base = std::env::temp_dir().join(format!("lt-iso-tree-{}", std::process::id()));
    let src = base.join("day0");
    std::fs::create_dir_all(src.join("config")).unwrap();
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    std::fs::write(src.join("config/juniper.conf"), "host-name {hostname};\n").unwrap();
    std::fs::write(src.join("a/b/c.txt"), "deep\n").unwrap();
    std::fs::write(src.join("top-level"), "top\n").unwrap();
    let toml = format!(
        "[vm]\nname = \"r\"\n[kernel]\npath = \"k\"\n[[disk]]\npath = \"{}\"\nformat = \"iso\"\n\
         interface = \"ide\"\ntemplate = true\n[paths]\nstate_dir = \"{}\"\n",
        src.display(),
        base.join("state").display()
    );
    let plan = crate::config::parse_with(&toml, &[]).unwrap().vms.remove(0);
    let DiskKind::Cd { image, .. } = &plan.boot.disks[0].kind else {
        panic!("not a CD: {:?}", plan.boot.disks[0]);
    };
    let mut values = template::Values::new();
    values.insert("hostname", "vsrx7".into());
    write_templated(&plan, &values, None).unwrap();

    let blkid = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(image)
        .output()
        .expect("blkid (util-linux) must be installed");
    let said = String::from_utf8_lossy(&blkid.stdout);
    assert!(said.contains("TYPE=iso9660"), "{said}");
    assert!(said.contains("LABEL=CONFIG"), "{said}");

    let iso = |args: &[&str]| {
        let out = Command::new("isoinfo")
            .args(args)
            .arg("-i")
            .arg(image)
            .output()
            .expect("isoinfo (Debian package genisoimage, scripts/deps.sh) must be installed");
        assert!(out.status.success(), "isoinfo {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The path table: every directory, by level, then parent number, then name.
    let table: Vec<String> = iso(&["-p"])
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[1], f.get(3).unwrap_or(&"/"))
        })
        .collect();
    assert_eq!(table, ["1 /", "1 A", "1 CONFIG", "1 EMPTY_DIR", "2 B"]);
    // Each directory's records (its own extent, `.` and `..`) with the Rock Ridge names and modes.
    let listing = iso(&["-R", "-l"]);
    for (dir, entries) in [
        (
            "/",
            &[". ", ".. ", "a ", "config ", "empty-dir ", "top-level "][..],
        ),
        ("/a/", &[". ", ".. ", "b "]),
        ("/a/b/", &[". ", ".. ", "c.txt "]),
        ("/config/", &[". ", ".. ", "juniper.conf "]),
        ("/empty-dir/", &[". ", ".. "]),
    ] {
        let block = listing
            .split(&format!("Directory listing of {dir}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {dir} in {listing}"));
        let block = block.split("\n\n").next().unwrap();
        for e in entries {
            let line = block.lines().find(|l| l.ends_with(&format!("]  {e}")));
            let line = line.unwrap_or_else(|| panic!("no {e:?} in {dir}: {block}"));
            let is_file = ["c.txt ", "juniper.conf ", "top-level "].contains(e);
            let mode = if is_file { "-r--r--r--" } else { "dr-xr-xr-x" };
            assert!(line.starts_with(mode), "{line}");
        }
    }
    assert_eq!(
        iso(&["-R", "-x", "/config/juniper.conf"]),
        "host-name vsrx7;\n"
    );
    assert_eq!(iso(&["-R", "-x", "/a/b/c.txt"]), "deep\n");
    assert_eq!(iso(&["-R", "-x", "/top-level"]), "top\n");

    let kernel_reads_iso = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("iso9660");
    if kernel_reads_iso {
        mount_and_compare(image, &base);
    } else {
        eprintln!("NOTE: this kernel has no iso9660 driver: the image was read by isoinfo only");
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// The kernel's own reader: the image mounted, each folder and file under its own name.
fn mount_and_compare(image: &Path, base: &Path) {
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "iso9660", "-o", "loop,ro"])
        .arg(image)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount -o loop,ro {}", image.display());
    let guard = Mounted(mnt.clone());
    let mut seen = Vec::new();
    read_tree(&mnt, &mnt, &mut seen);
    let file = |p: &str, d: &str| (p.to_string(), Some(d.as_bytes().to_vec()), 0o100_444);
    let dir = |p: &str| (p.to_string(), None, 0o040_555);
    assert_eq!(
        seen,
        [
            dir("a"),
            dir("a/b"),
            file("a/b/c.txt", "deep\n"),
            dir("config"),
            file("config/juniper.conf", "host-name vsrx7;\n"),
            dir("empty-dir"),
            file("top-level", "top\n"),
        ]
    );
    drop(guard);
}
