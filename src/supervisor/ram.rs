//! The guest RAM as the launcher holds it: one memfd per qemu run ([`Ram::new`]), handed to qemu
//! at its fd layout's RAM number and mapped there shared (`memory-backend-file,share=on`), so a
//! snapshot compresses the stopped guest's RAM from the launcher's side ([`Ram::save`]; the
//! migration stream skips it with `x-ignore-shared`) and a restore fills a fresh memfd while
//! qemu starts ([`Ram::fill`]), instead of qemu loading it page by page. The RAM travels in
//! [`CHUNKS`] equal parts, each its own `zstd` stream, so a fill decompresses on every core at
//! once. Each `zstd` is the launcher's child, watched by the reaper. Never talks to qemu; a
//! memfd lives as long as the one qemu run it was made for, and its pages go with it.

use super::reaper::Reaper;
use super::zstd::{pipe, zstd, Helper};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The parts the RAM is saved in (the last may be shorter).
pub const CHUNKS: usize = 4;
/// zstd's arguments for a save: fast, on every core.
const SAVE_ARGS: &[&str] = &["-q", "-1", "-T0", "-c"];
/// And for a fill: zero runs are skipped (`--sparse`, forced on its standard output: the
/// memfd), so they stay holes and a mostly idle guest's RAM costs only what it used.
const FILL_ARGS: &[&str] = &["-q", "-d", "--sparse", "-c"];

/// One qemu run's guest RAM.
pub struct Ram {
    fd: OwnedFd,
    bytes: u64,
}

/// The `(offset, length)` of each part of `bytes` of RAM: [`CHUNKS`] parts of whole MiB.
pub fn chunks(bytes: u64) -> Vec<(u64, u64)> {
    let mib = 1u64 << 20;
    let size = bytes.div_ceil(CHUNKS as u64).div_ceil(mib) * mib;
    (0..CHUNKS as u64)
        .map(|i| (i * size).min(bytes))
        .map(|at| (at, size.min(bytes - at)))
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// zstd helpers started for one RAM; [`Helpers::wait`] waits for them all.
pub struct Helpers {
    zstd: Vec<Helper>,
    /// A save's feeders (part of the memfd into a zstd's pipe), joined after their zstd.
    feeders: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Helpers {
    /// All of them ended well, within `within` each; Err says what did not.
    pub async fn wait(self, within: Duration) -> Result<(), String> {
        let mut first = Ok(());
        for (i, z) in self.zstd.into_iter().enumerate() {
            if let Err(why) = z.wait(within).await {
                first = first.and(Err(format!("part {i}: {why}")));
            }
        }
        for (i, f) in self.feeders.into_iter().enumerate() {
            // Finished: its zstd read to the end (or died), which the feeder's end caused.
            match f.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first = first.and(Err(format!("part {i}: reading the RAM: {e}"))),
                Err(_) => first = first.and(Err(format!("part {i}: reader panicked"))),
            }
        }
        first
    }
}

impl Ram {
    /// A fresh memfd of `mib` MiB (all holes: pages cost memory only once the guest or a
    /// restore writes them), closed on exec (the spawn moves a copy to its number).
    pub fn new(vm: &str, mib: u64) -> std::io::Result<Ram> {
        let name = format!("launcher-ram-{vm}");
        let fd = memfd_create(name.as_str(), MFdFlags::MFD_CLOEXEC)?;
        let bytes = mib << 20;
        nix::unistd::ftruncate(&fd, bytes as i64)?;
        Ok(Ram { fd, bytes })
    }

    /// How many parts it is saved in.
    pub fn parts(&self) -> usize {
        chunks(self.bytes).len()
    }

    /// The launcher's fd, for the spawn to hand over.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// An open file of its own (own offset, from 0) on the same memory: qemu's copy and this
    /// one never move each other's offset.
    fn reopen(&self, write: bool) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(format!("/proc/self/fd/{}", self.raw()))
    }

    /// Starts compressing the RAM into `dsts`, one per part of [`chunks`] ([`SAVE_ARGS`]),
    /// each fed by a thread that copies its part into a pipe. The guest must stay stopped
    /// until they end, so the RAM is of the same instant as the stream and the disks.
    pub fn save(&self, dsts: &[PathBuf], reaper: &Reaper) -> std::io::Result<Helpers> {
        let mut h = Helpers {
            zstd: Vec::new(),
            feeders: Vec::new(),
        };
        for (&(at, len), dst) in chunks(self.bytes).iter().zip(dsts) {
            let (r, w) = pipe()?;
            let z = zstd(SAVE_ARGS, r.into(), File::create(dst)?.into(), reaper)?;
            h.zstd.push(z);
            let src = self.reopen(false)?;
            h.feeders.push(std::thread::spawn(move || {
                feed(&src, at, len, File::from(w))
            }));
        }
        Ok(h)
    }

    /// Starts filling the RAM from `srcs` (what [`Ram::save`] wrote), every part at once, each
    /// `zstd` writing into its own open file of the memfd from its part's offset.
    pub fn fill(&self, srcs: &[PathBuf], reaper: &Reaper) -> std::io::Result<Helpers> {
        let mut h = Helpers {
            zstd: Vec::new(),
            feeders: Vec::new(),
        };
        for (input, output) in self.fill_io(srcs)? {
            h.zstd
                .push(zstd(FILL_ARGS, input.into(), output.into(), reaper)?);
        }
        Ok(h)
    }

    /// Per part: its compressed file, and the memfd opened at the part's offset.
    fn fill_io(&self, srcs: &[PathBuf]) -> std::io::Result<Vec<(File, File)>> {
        let parts = chunks(self.bytes);
        if srcs.len() != parts.len() {
            return Err(std::io::Error::other(format!(
                "{} RAM parts saved, {} expected for {} MiB",
                srcs.len(),
                parts.len(),
                self.bytes >> 20
            )));
        }
        (parts.iter().zip(srcs))
            .map(|(&(at, _), src)| {
                let mut out = self.reopen(true)?;
                out.seek(SeekFrom::Start(at))?;
                Ok((File::open(src)?, out))
            })
            .collect()
    }
}

/// Copies `len` bytes of `src` from `at` into `to` (a pipe), then closes it.
fn feed(src: &File, mut at: u64, len: u64, mut to: File) -> std::io::Result<()> {
    let end = at + len;
    let mut buf = vec![0u8; 1 << 20];
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], at)?;
        to.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// The RAM of a VM's current qemu, as its life publishes it (None between runs): what a save
/// reads.
#[derive(Clone, Default)]
pub struct RamSlot(Arc<Mutex<Option<Arc<Ram>>>>);

impl RamSlot {
    pub fn set(&self, r: Option<Arc<Ram>>) {
        *self.0.lock().unwrap() = r;
    }
    pub fn get(&self) -> Option<Arc<Ram>> {
        self.0.lock().unwrap().clone()
    }
}

/// The compressed parts' paths: `stem.0.zst`, `stem.1.zst`, ... beside `stem`.
pub fn part_paths(stem: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let mut s = stem.as_os_str().to_owned();
            s.push(format!(".{i}.zst"));
            PathBuf::from(s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    fn contents(r: &Ram) -> Vec<u8> {
        let mut v = Vec::new();
        r.reopen(false).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn the_parts_cover_the_ram_in_whole_mib() {
        let m = 1u64 << 20;
        assert_eq!(
            chunks(256 * m),
            [
                (0, 64 * m),
                (64 * m, 64 * m),
                (128 * m, 64 * m),
                (192 * m, 64 * m)
            ]
        );
        assert_eq!(
            chunks(10 * m),
            [(0, 3 * m), (3 * m, 3 * m), (6 * m, 3 * m), (9 * m, m)]
        );
        assert_eq!(chunks(2 * m), [(0, m), (m, m)]);
        assert_eq!(chunks(0), []);
    }

    /// zstd as a helper runs it, waited for here (a test must not start a reaper: it would
    /// take other tests' children's statuses).
    fn run(input: impl Into<std::process::Stdio>, output: File, args: &[&str]) {
        let st = std::process::Command::new("zstd")
            .args(args)
            .stdin(input)
            .stdout(output)
            .status()
            .expect("zstd is missing: the README test command installs it");
        assert!(st.success(), "zstd {args:?}: {st}");
    }

    #[test]
    fn saved_ram_fills_a_fresh_memfd_byte_for_byte_and_zeros_stay_holes() {
        let a = Ram::new("t", 10).unwrap();
        // One MiB of data across the border of parts 0 and 1 (3 MiB each), zeros elsewhere.
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        a.reopen(true)
            .unwrap()
            .write_all_at(&data, (5 << 19) as u64)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("lt-ram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let parts = part_paths(&dir.join("ram"), chunks(a.bytes).len());
        assert_eq!(parts.len(), 4);
        assert!(parts[1].ends_with("ram.1.zst"), "{parts:?}");
        for (&(at, len), p) in chunks(a.bytes).iter().zip(&parts) {
            let (r, w) = pipe().unwrap();
            let src = a.reopen(false).unwrap();
            let t = std::thread::spawn(move || feed(&src, at, len, File::from(w)));
            run(r, File::create(p).unwrap(), SAVE_ARGS);
            t.join().unwrap().unwrap();
        }
        let b = Ram::new("t", 10).unwrap();
        for (input, output) in b.fill_io(&parts).unwrap() {
            run(input, output, FILL_ARGS);
        }
        assert_eq!(contents(&a), contents(&b));
        assert_eq!(contents(&b).len(), 10 << 20);
        // Only the written MiB (not the 9 MiB of zeros) takes memory.
        let used = b.reopen(false).unwrap().metadata().unwrap().blocks() * 512;
        assert!(
            (1 << 20..=(1 << 20) + (64 << 10)).contains(&used),
            "{used} bytes used"
        );
        // A snapshot with other parts than this RAM has is refused, naming both.
        let e = b.fill_io(&parts[..2]).unwrap_err().to_string();
        assert_eq!(e, "2 RAM parts saved, 4 expected for 10 MiB");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
