//! The snapshot's tar (POSIX ustar, regular files only, as containerlab `docker cp`s it): a
//! writer that appends files, and an index that finds a member's bytes in place so a restore
//! reads them straight from the mounted file, no extraction to a folder first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

const BLOCK: u64 = 512;

/// One member: its name, where its data starts in the tar, its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// The ustar header of a regular file `name` of `size` bytes (mode 0644).
pub fn header(name: &str, size: u64, mtime: u64) -> std::io::Result<[u8; 512]> {
    if name.len() > 99 || size >= 1 << 33 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("tar member {name:?} ({size} bytes): name over 99 bytes or size over 8 GiB"),
        ));
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mut field = |at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(100, 8, 0o644);
    field(108, 8, 0);
    field(116, 8, 0);
    field(124, 12, size);
    field(136, 12, mtime);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Appends the file at `src` to the tar being written to `out` as `name`.
pub fn append(out: &mut File, name: &str, src: &Path, mtime: u64) -> std::io::Result<u64> {
    let mut f = File::open(src)?;
    let size = f.metadata()?.len();
    out.write_all(&header(name, size, mtime)?)?;
    let copied = std::io::copy(&mut (&mut f).take(size), out)?;
    if copied != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} shrank while it was archived", src.display()),
        ));
    }
    out.write_all(&vec![0u8; padding(size) as usize])?;
    Ok(size)
}

/// Appends `data` as `name`.
pub fn append_bytes(out: &mut File, name: &str, data: &[u8], mtime: u64) -> std::io::Result<()> {
    out.write_all(&header(name, data.len() as u64, mtime)?)?;
    out.write_all(data)?;
    out.write_all(&vec![0u8; padding(data.len() as u64) as usize])
}

/// Ends the tar (two zero blocks).
pub fn finish(out: &mut File) -> std::io::Result<()> {
    out.write_all(&[0u8; 1024])?;
    out.sync_all()
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The regular files of the tar read from `r`, with where their bytes are. A header that does
/// not check out is an error saying where.
pub fn index<R: Read + Seek>(r: &mut R) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut h = [0u8; 512];
    loop {
        r.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
        if r.read_exact(&mut h).is_err() {
            return Ok(out); // no end blocks: what was found
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let stored = octal(&h[148..156]).ok_or(format!("bad header checksum field at {at}"))?;
        let mut sum: u64 = h.iter().map(|&b| b as u64).sum();
        sum = sum - h[148..156].iter().map(|&b| b as u64).sum::<u64>() + 8 * b' ' as u64;
        if sum != stored {
            return Err(format!("header checksum mismatch at byte {at}"));
        }
        let end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let mut name = String::from_utf8_lossy(&h[..end]).into_owned();
        if &h[257..262] == b"ustar" && h[345] != 0 {
            let pend = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
            name = format!("{}/{name}", String::from_utf8_lossy(&h[345..345 + pend]));
        }
        let size = octal(&h[124..136]).ok_or(format!("bad size field at {at}"))?;
        if matches!(h[156], b'0' | 0) {
            let name = name.trim_start_matches("./").to_string();
            out.push(Member {
                name,
                offset: at + BLOCK,
                size,
            });
        }
        at += BLOCK + size + padding(size);
    }
}

/// Copies member `m` of the tar `r` to `dst` (created or truncated).
pub fn extract<R: Read + Seek>(r: &mut R, m: &Member, dst: &Path) -> std::io::Result<()> {
    r.seek(SeekFrom::Start(m.offset))?;
    let mut f = File::create(dst)?;
    let n = std::io::copy(&mut r.take(m.size), &mut f)?;
    if n != m.size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "tar member cut short",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("lt-snapshot-tar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn gnu_tar_reads_what_we_write_and_we_read_what_it_writes() {
        let d = dir("rt");
        std::fs::write(d.join("a"), vec![1u8; 1000]).unwrap();
        let tar = d.join("out.tar");
        let mut out = File::create(&tar).unwrap();
        append_bytes(&mut out, "manifest.json", b"{}", 1).unwrap();
        append(&mut out, "r1/memory.zst", &d.join("a"), 1).unwrap();
        finish(&mut out).unwrap();
        let list = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
        assert!(
            list.status.success(),
            "{}",
            String::from_utf8_lossy(&list.stderr)
        );
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            list.contains("manifest.json")
                && list.contains("1000 ")
                && list.contains("r1/memory.zst"),
            "{list}"
        );
        let idx = index(&mut File::open(&tar).unwrap()).unwrap();
        assert_eq!(
            idx[1],
            Member {
                name: "r1/memory.zst".into(),
                offset: 512 * 3,
                size: 1000
            }
        );
        extract(&mut File::open(&tar).unwrap(), &idx[1], &d.join("b")).unwrap();
        assert_eq!(std::fs::read(d.join("b")).unwrap(), vec![1u8; 1000]);
        // A tar made by GNU tar (folders, ./ prefixes) is read too.
        std::fs::create_dir_all(d.join("t/r2")).unwrap();
        std::fs::write(d.join("t/r2/disk0.qcow2"), b"qcow").unwrap();
        let st = Command::new("tar")
            .arg("-C")
            .arg(d.join("t"))
            .arg("-cf")
            .arg(d.join("gnu.tar"))
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let idx = index(&mut File::open(d.join("gnu.tar")).unwrap()).unwrap();
        assert_eq!(
            idx.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["r2/disk0.qcow2"]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_that_is_no_tar_is_refused_with_where() {
        let mut junk = std::io::Cursor::new(vec![b'x'; 2048]);
        assert_eq!(
            index(&mut junk).unwrap_err(),
            "bad header checksum field at 0"
        );
        assert!(header(&"n".repeat(100), 1, 0).is_err());
    }
}
