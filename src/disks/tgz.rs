//! A gzip'd tar of a small folder tree, as a vendor's config loader reads it (vJunos takes its
//! config as `vmm-config.tgz` on a USB stick). Owns the ustar headers, the gzip framing (stored
//! deflate blocks: valid for any inflater, no compression needed for a few kilobytes of text)
//! and CRC-32. Pure: the caller gives the entries and writes the bytes; never reads the system.

/// One entry: a path inside the archive (`config/juniper.conf`, '/'-separated, relative) and
/// its content, or `None` for a folder.
pub type Entry = (String, Option<Vec<u8>>);

/// Why an entry cannot go into a ustar archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TgzError {
    #[error("{path}: a path in the archive has at most 100 bytes")]
    LongPath { path: String },
    #[error("{path}: a file in the archive has at most 8 GiB")]
    Large { path: String },
}

/// The `.tgz` bytes of `entries`, in the order given (folders before their files).
pub fn tgz(entries: &[Entry]) -> Result<Vec<u8>, TgzError> {
    Ok(gzip(&tar(entries)?))
}

/// A ustar archive: a 512-byte header per entry, the content padded to 512, two zero blocks.
fn tar(entries: &[Entry]) -> Result<Vec<u8>, TgzError> {
    let mut out = Vec::new();
    for (path, data) in entries {
        let name = match data {
            Some(_) => path.clone(),
            None => format!("{}/", path.trim_end_matches('/')),
        };
        if name.len() > 100 {
            return Err(TgzError::LongPath { path: path.clone() });
        }
        let size = data.as_ref().map_or(0, Vec::len);
        if size as u64 >= 1 << 33 {
            return Err(TgzError::Large { path: path.clone() });
        }
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mode = if data.is_some() { 0o644 } else { 0o755 };
        octal(&mut h[100..108], mode);
        octal(&mut h[108..116], 0); // uid
        octal(&mut h[116..124], 0); // gid
        octal(&mut h[124..136], size as u64);
        octal(&mut h[136..148], 0); // mtime: fixed, so the archive is the same every start
        h[156] = if data.is_some() { b'0' } else { b'5' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        octal(&mut h[148..155], u64::from(sum));
        out.extend_from_slice(&h);
        if let Some(d) = data {
            out.extend_from_slice(d);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// `v` in octal, zero-padded, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], v: u64) {
    let digits = format!("{v:0width$o}", width = field.len() - 1);
    field[..digits.len()].copy_from_slice(digits.as_bytes());
    field[field.len() - 1] = 0;
}

/// gzip (RFC 1952) of `data` with stored deflate blocks (RFC 1951 BTYPE 00).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    /// The system's tar and gzip (real tools, not ours) read the archive back, byte for byte;
    /// a file past one stored block (64 KiB) checks the block chaining.
    #[test]
    fn gnu_tar_reads_it_back() {
        let dir = std::env::temp_dir().join(format!("lt-tgz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let entries: Vec<Entry> = vec![
            ("config".into(), None),
            (
                "config/juniper.conf".into(),
                Some(b"system { host-name r1; }\n".to_vec()),
            ),
            ("big.bin".into(), Some(big.clone())),
            ("empty".into(), Some(vec![])),
        ];
        let file = dir.join("a.tgz");
        std::fs::write(&file, tgz(&entries).unwrap()).unwrap();
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(&file)
            .arg("-C")
            .arg(&dir)
            .output()
            .expect("tar must be installed for this test");
        assert!(out.status.success(), "{out:?}");
        let got = |p: &str| std::fs::read(dir.join(p)).unwrap();
        assert_eq!(got("config/juniper.conf"), b"system { host-name r1; }\n");
        assert_eq!(got("big.bin"), big);
        assert!(got("empty").is_empty());
        let gz = Command::new("gzip").arg("-t").arg(&file).output().unwrap();
        assert!(gz.status.success(), "{gz:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_path_is_refused_by_name() {
        let long = "d/".repeat(60) + "f";
        assert_eq!(
            tgz(&[(long.clone(), Some(vec![]))]),
            Err(TgzError::LongPath { path: long })
        );
    }
}
