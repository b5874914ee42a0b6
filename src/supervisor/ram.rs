//! The guest RAM as the launcher holds it: one memfd per qemu run ([`Ram::new`]), handed to qemu
//! at its fd layout's RAM number and mapped there shared (`memory-backend-file,share=on`), so a
//! snapshot compresses the stopped guest's RAM from the launcher's side ([`Ram::save`]; the
//! migration stream skips it with `x-ignore-shared`) and a restore fills a fresh memfd while
//! qemu starts ([`Ram::fill`]), instead of qemu loading it page by page. The RAM travels in up
//! to [`PARTS`] contiguous parts, each its own `zstd` stream, cut so that each holds about as
//! much work ([`Ram::plan`]: a MiB of data costs a fill several times a MiB of zeros), so a
//! fill decompresses on every core at once. Each `zstd` is the launcher's child, watched by
//! the reaper. Never talks to qemu; a
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

/// The most parts the RAM is saved in.
pub const PARTS: usize = 8;
/// The unit parts are cut in.
const BLOCK: u64 = 1 << 20;
/// What a MiB holding data costs a fill, against 1 for a MiB of zeros (measured on a Debian
/// guest's RAM: 256 MiB of zeros filled in 0.09 s, 230 MiB of data in 0.47 s).
const DATA_WEIGHT: u64 = 5;
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

/// The `(offset, length)` of at most `n` contiguous parts covering `blocks` (one per
/// [`BLOCK`], `true` for one holding data; the last may be shorter, `bytes` in all), cut so
/// that each weighs about the same ([`DATA_WEIGHT`]).
pub fn cut(blocks: &[bool], bytes: u64, n: usize) -> Vec<(u64, u64)> {
    let weight = |b: &bool| if *b { DATA_WEIGHT } else { 1 };
    let total: u64 = blocks.iter().map(weight).sum();
    let mut out = Vec::new();
    let (mut start, mut acc) = (0u64, 0u64);
    for (i, b) in blocks.iter().enumerate() {
        acc += weight(b);
        let end = ((i as u64 + 1) * BLOCK).min(bytes);
        let due = total * (out.len() as u64 + 1) / n as u64;
        if acc >= due && out.len() + 1 < n && end < bytes {
            out.push((start, end - start));
            start = end;
        }
    }
    if start < bytes {
        out.push((start, bytes - start));
    }
    out
}

/// zstd helpers started for one RAM; [`Helpers::wait`] waits for them all.
#[derive(Default)]
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

    /// Where to cut it in parts ([`cut`]), from which of its MiB hold data now. Read while
    /// the guest may run: the cut only balances the work, any cut is correct.
    pub fn plan(&self) -> std::io::Result<Vec<(u64, u64)>> {
        let f = self.reopen(false)?;
        let zero = vec![0u8; BLOCK as usize];
        let mut buf = vec![0u8; BLOCK as usize];
        let mut blocks = Vec::new();
        let mut at = 0;
        while at < self.bytes {
            let n = (self.bytes - at).min(BLOCK) as usize;
            f.read_exact_at(&mut buf[..n], at)?;
            blocks.push(buf[..n] != zero[..n]);
            at += n as u64;
        }
        Ok(cut(&blocks, self.bytes, PARTS))
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

    /// Starts compressing the RAM's `parts` (from [`Ram::plan`]) into `dsts`, one each
    /// ([`SAVE_ARGS`]), each fed by a thread that copies its part into a pipe. The guest must
    /// stay stopped until they end, so the RAM is of the same instant as the stream and the
    /// disks.
    pub fn save(
        &self,
        parts: &[(u64, u64)],
        dsts: &[PathBuf],
        reaper: &Reaper,
    ) -> std::io::Result<Helpers> {
        let mut h = Helpers::default();
        for (&(at, len), dst) in parts.iter().zip(dsts) {
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

    /// Starts filling the RAM from `srcs` (what [`Ram::save`] wrote of `parts`), every part at
    /// once, each `zstd` writing into its own open file of the memfd from its part's offset.
    pub fn fill(
        &self,
        parts: &[(u64, u64)],
        srcs: &[PathBuf],
        reaper: &Reaper,
    ) -> std::io::Result<Helpers> {
        let mut h = Helpers::default();
        for (input, output) in self.fill_io(parts, srcs)? {
            h.zstd
                .push(zstd(FILL_ARGS, input.into(), output.into(), reaper)?);
        }
        Ok(h)
    }

    /// Per part: its compressed file, and the memfd opened at the part's offset. The parts
    /// must follow each other from 0 to the RAM's end.
    fn fill_io(
        &self,
        parts: &[(u64, u64)],
        srcs: &[PathBuf],
    ) -> std::io::Result<Vec<(File, File)>> {
        let mut end = 0;
        for &(at, len) in parts {
            if at != end {
                return Err(std::io::Error::other(format!(
                    "RAM part at {at} follows {end}"
                )));
            }
            end = at + len;
        }
        if end != self.bytes || srcs.len() != parts.len() {
            return Err(std::io::Error::other(format!(
                "{} RAM parts of {} bytes ({} files) do not make {} MiB",
                parts.len(),
                end,
                srcs.len(),
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
    fn parts_are_cut_by_their_work_and_cover_the_ram() {
        let m = 1u64 << 20;
        // All zeros: equal parts.
        assert_eq!(
            cut(&[false; 8], 8 * m, 4),
            [(0, 2 * m), (2 * m, 2 * m), (4 * m, 2 * m), (6 * m, 2 * m)]
        );
        // Data in the first 2 MiB of 12 (weights 5 5 1 x10 = 20): 4 parts of 5 each.
        let mut b = [false; 12];
        b[..2].fill(true);
        assert_eq!(
            cut(&b, 12 * m, 4),
            [(0, m), (m, m), (2 * m, 5 * m), (7 * m, 5 * m)]
        );
        // A last, shorter block; never more parts than blocks; nothing for no RAM.
        assert_eq!(cut(&[true, true], m + 4096, 8), [(0, m), (m, 4096)]);
        assert_eq!(cut(&[], 0, 8), []);
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
        // The 2 MiB holding data weigh 10, the 8 of zeros 8: 8 parts.
        let cuts = a.plan().unwrap();
        assert_eq!(cuts.len(), 8, "{cuts:?}");
        assert_eq!(cuts[..2], [(0, 2 << 20), (2 << 20, 1 << 20)], "{cuts:?}");
        let parts = part_paths(&dir.join("ram"), cuts.len());
        assert!(parts[1].ends_with("ram.1.zst"), "{parts:?}");
        for (&(at, len), p) in cuts.iter().zip(&parts) {
            let (r, w) = pipe().unwrap();
            let src = a.reopen(false).unwrap();
            let t = std::thread::spawn(move || feed(&src, at, len, File::from(w)));
            run(r, File::create(p).unwrap(), SAVE_ARGS);
            t.join().unwrap().unwrap();
        }
        let b = Ram::new("t", 10).unwrap();
        for (input, output) in b.fill_io(&cuts, &parts).unwrap() {
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
        // Parts that do not make this RAM are refused, saying why.
        let e = b.fill_io(&cuts[..2], &parts[..2]).unwrap_err().to_string();
        assert_eq!(
            e,
            "2 RAM parts of 3145728 bytes (2 files) do not make 10 MiB"
        );
        let gap = [cuts[0], cuts[2]];
        let e = b.fill_io(&gap, &parts[..2]).unwrap_err().to_string();
        assert_eq!(e, "RAM part at 3145728 follows 2097152");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
