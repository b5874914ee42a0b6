//! A serial port's log file, bounded: [`RotatingLog`] appends the raw bytes to `console.log`
//! and, before the file would pass its maximum size, renames it to `console.log.1` (the older
//! ones to `.2`, `.3`, ...; the oldest beyond `keep` is removed) and starts a new one. So one
//! log costs at most `(keep + 1) * max` bytes however long the router runs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only log file that rotates at `max` bytes (0: never), keeping `keep` old files.
#[derive(Debug)]
pub(crate) struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl RotatingLog {
    /// Opens (creates, with its folder) `path` for appending; what it already holds counts
    /// towards `max`.
    pub(crate) fn open(path: &Path, max: u64, keep: u32) -> io::Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max,
            keep,
        })
    }

    /// `console.log.n`.
    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `.1..` up by one (dropping the one past `keep`), the current file to `.1`, and
    /// opens a new current file.
    fn rotate(&mut self) -> io::Result<()> {
        let _ = std::fs::remove_file(self.numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = self.numbered(n);
            if from.exists() {
                std::fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        self.file.flush()?;
        std::fs::rename(&self.path, self.numbered(1))?;
        self.file = append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingLog {
    /// Writes what fits under `max` (a chunk may be split across two files), rotating first
    /// when the file is full. A failed rotation is reported and the current file grows on,
    /// rather than losing the console output.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.max == 0 || buf.is_empty() {
            let n = self.file.write(buf)?;
            self.size += n as u64;
            return Ok(n);
        }
        if self.size >= self.max {
            if let Err(e) = self.rotate() {
                tracing::warn!(log = %self.path.display(), error = %e, "cannot rotate the log");
                self.size = 0;
            }
        }
        let room = usize::try_from(self.max - self.size).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("launcher-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    #[test]
    fn writes_past_the_size_rotate_and_keep_a_bounded_number_of_files() {
        let dir = temp_dir("rotate");
        let path = dir.join("logs/console.log");
        let mut log = RotatingLog::open(&path, 100, 3).unwrap();
        // 1000 bytes in 70-byte chunks, each chunk naming its number.
        for i in 0..1000 / 70 + 1 {
            let chunk = format!("{i:03}{}\n", "x".repeat(66));
            log.write_all(chunk.as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "console.log",
                "console.log.1",
                "console.log.2",
                "console.log.3"
            ]
        );
        // 15 chunks of 70 = 1050 bytes: 10 full files of 100 and 50 in the current one.
        assert_eq!(read(&path).len(), 50);
        for n in 1..=3 {
            assert_eq!(read(&path.with_extension(format!("log.{n}"))).len(), 100);
        }
        // The newest bytes are in console.log (the end of chunk 14), the ones just before in .1
        // (chunk 14's start at byte 980, after chunk 13's at 910).
        let chunk14 = format!("014{}\n", "x".repeat(66));
        assert_eq!(read(&path), chunk14.as_bytes()[20..]);
        let one = String::from_utf8(read(&path.with_extension("log.1"))).unwrap();
        assert!(
            one.ends_with(&chunk14[..20]) && one.contains("013"),
            "{one}"
        );
    }

    #[test]
    fn what_the_file_holds_counts_and_zero_never_rotates() {
        let dir = temp_dir("zero");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        std::fs::write(&path, [b'a'; 90]).unwrap();
        let mut log = RotatingLog::open(&path, 100, 2).unwrap();
        log.write_all(&[b'b'; 20]).unwrap();
        assert_eq!(read(&path), [b'b'; 10]);
        assert_eq!(read(&path.with_extension("log.1")).len(), 100);

        let path = dir.join("big.log");
        let mut log = RotatingLog::open(&path, 0, 2).unwrap();
        log.write_all(&[b'c'; 5000]).unwrap();
        assert_eq!(read(&path).len(), 5000);
        assert!(!path.with_extension("log.1").exists());
    }
}
