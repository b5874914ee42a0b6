//! The guest RAM as the launcher holds it: one memfd per qemu run ([`Ram::new`]), handed to qemu
//! at its fd layout's RAM number and mapped there shared (`memory-backend-file,share=on`), so a
//! snapshot compresses the stopped guest's RAM from the launcher's side ([`Ram::save`]; the
//! migration stream skips it with `x-ignore-shared`) and a restore fills a fresh memfd while
//! qemu starts ([`Ram::fill`]), instead of qemu loading it page by page. The RAM travels in up
//! to [`PARTS`] contiguous parts, each one LZ4 frame ([`super::lz4`]; `lz4 -d` reads it) of
//! only the part's data: its zero pages are left out (a fresh memfd reads zeros), and the runs
//! of data it holds are its [`Extents`]. Parts are cut so that each holds about as much data
//! ([`Ram::plan`]), so a fill decompresses on every core at once, straight from the snapshot
//! file: one thread per part, in this process (no pipe, no helper process: a restore's qemu
//! waits for the fill, and LZ4 decompresses about twice as fast as zstd here). Never talks
//! to qemu; a memfd lives as long as the one qemu run it was made for, and its pages go with it.

use super::lz4;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::unistd::Whence;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The most parts the RAM is saved in.
pub const PARTS: usize = 8;
/// The unit parts are cut in.
const BLOCK: u64 = 1 << 20;
/// The unit zeros are left out in.
const PAGE: usize = 4096;
/// Zero pages between two runs of data that are kept (and the runs joined): up to this many,
/// so a RAM has at most one extent per 17 pages, however its data is scattered.
const GAP_PAGES: u64 = 16;
/// What a MiB holding data costs a save and a fill, against 1 for a MiB of zeros (scanned at
/// a save, never stored).
const DATA_WEIGHT: u64 = 16;

/// The runs of a part's data, `(offset in the RAM, length)`, in order: what its stream holds,
/// one after the other.
pub type Extents = Vec<(u64, u64)>;

/// One qemu run's guest RAM.
pub struct Ram {
    fd: OwnedFd,
    bytes: u64,
}

/// Where a saved part is read from at a fill: `len` bytes at `at` in `file` (its tar member,
/// open since the snapshot was checked: a suspend's file loses its name at once), an LZ4
/// frame of the data at its [`Extents`], which lie in its `part` of the RAM (offset, length).
#[derive(Debug, Clone)]
pub struct Source {
    pub file: Arc<File>,
    pub at: u64,
    pub len: u64,
    pub part: (u64, u64),
    pub extents: Extents,
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

/// The threads saving or filling one RAM, a part each, each returning a `T` (a save's: its
/// part's extents; a fill's: nothing); [`Helpers::wait`] waits for them all.
pub struct Helpers<T> {
    /// When they were started.
    started: Instant,
    /// What each thread returns and when it ended, in the order they started.
    done: Vec<oneshot::Receiver<(std::io::Result<T>, Instant)>>,
}

/// What [`Helpers::wait`] gives when all ended well.
#[derive(Debug)]
pub struct Done<T> {
    /// What each returned, in the order they started.
    pub results: Vec<T>,
    /// From their start to the last one's end.
    pub took: Duration,
}

impl<T: Send + 'static> Helpers<T> {
    fn new() -> Self {
        Helpers {
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs `work` on a thread of its own that first gives up every capability (it only reads
    /// and writes files it was handed, and may start before the launcher drops its own); its
    /// result arrives at [`Helpers::wait`] (never joined: the supervisor's one runtime thread
    /// must not block on it).
    fn spawn(&mut self, work: impl FnOnce() -> std::io::Result<T> + Send + 'static) {
        let (tx, rx) = oneshot::channel();
        std::thread::spawn(move || {
            let none = crate::sandbox::caps::Sets {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            };
            let r = crate::sandbox::caps::set(none).and_then(|()| work());
            let _ = tx.send((r, Instant::now()));
        });
        self.done.push(rx);
    }

    /// All of them ended well, within `within` in all. Err says what did not end well.
    pub async fn wait(self, within: Duration) -> Result<Done<T>, String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut first = Ok(());
        let (mut results, mut last) = (Vec::new(), self.started);
        for (i, rx) in self.done.into_iter().enumerate() {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok((r, end))) => {
                    last = last.max(end);
                    match r {
                        Ok(r) => results.push(r),
                        Err(e) => first = first.and(Err(format!("RAM part {i}: {e}"))),
                    }
                }
                Ok(Err(_)) => first = first.and(Err(format!("RAM part {i}: its thread died"))),
                Err(_) => {
                    first = first.and(Err(format!("RAM part {i}: not done within {within:?}")))
                }
            }
        }
        let took = last.duration_since(self.started);
        first.map(|()| Done { results, took })
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
        let mut holes = Holes::new(&f);
        let zero = vec![0u8; BLOCK as usize];
        let mut buf = vec![0u8; BLOCK as usize];
        let mut blocks = Vec::new();
        let mut at = 0;
        while at < self.bytes {
            let n = (self.bytes - at).min(BLOCK) as usize;
            let data = !holes.within(at, at + n as u64)? && {
                f.read_exact_at(&mut buf[..n], at)?;
                buf[..n] != zero[..n]
            };
            blocks.push(data);
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

    /// Starts compressing the RAM's `parts` (from [`Ram::plan`]) into `dsts`, one each, a
    /// thread per part ([`pack`] into an LZ4 frame). The guest must stay stopped until they
    /// end, so the RAM is of the same instant as the stream and the disks. [`Helpers::wait`]
    /// gives each part's extents.
    pub fn save(
        &self,
        parts: &[(u64, u64)],
        dsts: &[PathBuf],
    ) -> std::io::Result<Helpers<Extents>> {
        let mut h = Helpers::new();
        for (&(at, len), dst) in parts.iter().zip(dsts) {
            let (src, dst) = (self.reopen(false)?, File::create(dst)?);
            h.spawn(move || save_part(&src, at, len, dst));
        }
        Ok(h)
    }

    /// Starts filling the RAM from `srcs` (what [`Ram::save`] wrote, where it is now), every
    /// part at once, a thread each ([`Ram::fill_part`]).
    pub fn fill(&self, srcs: &[Source]) -> std::io::Result<Helpers<()>> {
        self.check(srcs)?;
        let mut h = Helpers::new();
        for s in srcs {
            let work = self.fill_part(s)?;
            h.spawn(work);
        }
        Ok(h)
    }

    /// One part's work: its range of the source file (read at positions: the file's offset
    /// is never moved), decompressed, written at its extents ([`Scatter`]).
    fn fill_part(
        &self,
        s: &Source,
    ) -> std::io::Result<impl FnOnce() -> std::io::Result<()> + Send + 'static> {
        let (file, at, len) = (s.file.clone(), s.at, s.len);
        let (to, extents) = (self.reopen(true)?, s.extents.clone());
        Ok(move || {
            let mut put = Scatter::new(&to, &extents);
            lz4::decode(&file, at, len, |d| put.put(d))?;
            put.end()
        })
    }

    /// The sources' parts cover this RAM, one after the other, and each part's extents are in
    /// order, apart, and inside it.
    fn check(&self, srcs: &[Source]) -> std::io::Result<()> {
        let bad = |why: String| Err(std::io::Error::other(why));
        let mut next = 0;
        for s in srcs {
            let (start, len) = s.part;
            let end = start.saturating_add(len);
            if start != next || end > self.bytes {
                return bad(format!(
                    "RAM part of {len} bytes at {start} does not follow the one before (to {next}) \
                     inside {} MiB",
                    self.bytes >> 20
                ));
            }
            let mut from = start;
            for &(at, n) in &s.extents {
                if at < from || at.checked_add(n).is_none_or(|e| e > end) {
                    return bad(format!(
                        "RAM extent of {n} bytes at {at} is out of order or beyond its part \
                         ({len} bytes at {start})"
                    ));
                }
                from = at + n;
            }
            next = end;
        }
        if next != self.bytes {
            return bad(format!(
                "RAM parts end at {next}, not at {} MiB",
                self.bytes >> 20
            ));
        }
        Ok(())
    }
}

/// One part of a save: [`pack`] into `dst` as one LZ4 frame; its extents.
fn save_part(src: &File, at: u64, len: u64, dst: File) -> std::io::Result<Extents> {
    let mut z = lz4::Encoder::new(BufWriter::with_capacity(BLOCK as usize, dst))?;
    let extents = pack(src, at, len, &mut z)?;
    z.finish()?.flush()?;
    Ok(extents)
}

/// Where a memfd's holes are (pages never written, which read as zeros), so that a scan skips
/// them unread: the kernel is asked (`SEEK_DATA`, `SEEK_HOLE`) as the scan moves on. Moves
/// the offset of the file it is given, which must be its own.
struct Holes<'a> {
    file: &'a File,
    /// The next data from the last position asked about, and the hole after it (MAX: none).
    data: u64,
    hole: u64,
}

impl<'a> Holes<'a> {
    fn new(file: &'a File) -> Self {
        Holes {
            file,
            data: 0,
            hole: 0,
        }
    }

    /// Whether `start..end` lies in one hole. `start` never goes back from call to call.
    fn within(&mut self, start: u64, end: u64) -> std::io::Result<bool> {
        if start >= self.hole {
            self.data = self.seek(start, Whence::SeekData)?;
            self.hole = match self.data {
                u64::MAX => u64::MAX,
                d => self.seek(d, Whence::SeekHole)?,
            };
        }
        Ok(end <= self.data)
    }

    /// Where `whence` finds the next data or hole from `at`; MAX when there is none.
    fn seek(&self, at: u64, whence: Whence) -> std::io::Result<u64> {
        match nix::unistd::lseek(self.file, at as i64, whence) {
            Ok(o) => Ok(o as u64),
            Err(nix::errno::Errno::ENXIO) => Ok(u64::MAX),
            Err(e) => Err(std::io::Error::other(format!(
                "RAM {whence:?} from {at}: {e}"
            ))),
        }
    }
}

/// Copies the data of `len` bytes of `src` (a file of its own) from `at` into `to`, leaving
/// out zero pages (but keeping gaps of up to [`GAP_PAGES`] between data); a hole of a whole
/// read is skipped unread ([`Holes`]). Returns the extents written. Each run is written in as
/// few writes as the reads allow.
fn pack(src: &File, at: u64, len: u64, to: &mut impl Write) -> std::io::Result<Extents> {
    let zero = [0u8; PAGE];
    let page = PAGE as u64;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut holes = Holes::new(src);
    let mut extents: Extents = Vec::new();
    // The open run's start, and the zero pages seen since its last data page.
    let (mut run, mut gap): (Option<u64>, u64) = (None, 0);
    let (mut pos, end) = (at, at + len);
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        if holes.within(pos, pos + n as u64)? {
            // As n.div_ceil(PAGE) zero pages: the open run ends where its zeros began.
            let pages = n.div_ceil(PAGE) as u64;
            if gap + pages > GAP_PAGES {
                if let Some(s) = run.take() {
                    extents.push((s, pos - gap * page - s));
                }
            }
            gap += pages;
            pos += n as u64;
            continue;
        }
        src.read_exact_at(&mut buf[..n], pos)?;
        // Where the open run's bytes not yet written start in `buf`.
        let mut from: Option<usize> = None;
        for (i, p) in buf[..n].chunks(PAGE).enumerate() {
            let off = i * PAGE;
            if p == &zero[..p.len()] {
                gap += 1;
                if gap > GAP_PAGES {
                    if let Some(s) = run.take() {
                        let last = pos + off as u64 - (gap - 1) * page;
                        if let Some(f) = from.take() {
                            to.write_all(&buf[f..(last - pos) as usize])?;
                        }
                        extents.push((s, last - s));
                    }
                }
                continue;
            }
            match (run, from) {
                (None, _) => {
                    run = Some(pos + off as u64);
                    from = Some(off);
                }
                (Some(_), None) => {
                    // The run goes on from an earlier read: its zeros from there are not in `buf`.
                    for _ in i as u64..gap {
                        to.write_all(&zero)?;
                    }
                    from = Some(0);
                }
                (Some(_), Some(_)) => {}
            }
            gap = 0;
        }
        if let Some(f) = from {
            to.write_all(&buf[f..n - (gap * page) as usize])?;
        }
        pos += n as u64;
    }
    if let Some(s) = run {
        extents.push((s, end - gap * page - s));
    }
    Ok(extents)
}

/// Writes a part's data, piece by piece as it is decompressed, at its extents in `to`, one
/// after the other; [`Scatter::end`] checks that they got all of it.
struct Scatter<'a> {
    to: &'a File,
    extents: &'a [(u64, u64)],
    /// The extent being written, and how much of it is.
    at: usize,
    done: u64,
}

impl<'a> Scatter<'a> {
    fn new(to: &'a File, extents: &'a [(u64, u64)]) -> Self {
        Scatter {
            to,
            extents,
            at: 0,
            done: 0,
        }
    }

    fn put(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let Some(&(start, len)) = self.extents.get(self.at) else {
                return Err(std::io::Error::other("more RAM data than its extents hold"));
            };
            let n = ((len - self.done) as usize).min(data.len());
            self.to.write_all_at(&data[..n], start + self.done)?;
            data = &data[n..];
            self.done += n as u64;
            if self.done == len {
                (self.at, self.done) = (self.at + 1, 0);
            }
        }
        Ok(())
    }

    fn end(&self) -> std::io::Result<()> {
        let rest = self.extents.get(self.at..).unwrap_or_default();
        match rest.iter().any(|&(_, len)| len > 0) {
            true => Err(std::io::Error::other("less RAM data than its extents hold")),
            false => Ok(()),
        }
    }
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
        // Data in the first 2 MiB of 12 (weights 16 16 1 x10 = 42): a part per data MiB.
        let mut b = [false; 12];
        b[..2].fill(true);
        assert_eq!(
            cut(&b, 12 * m, 4),
            [(0, m), (m, m), (2 * m, m), (3 * m, 9 * m)]
        );
        // A last, shorter block; never more parts than blocks; nothing for no RAM.
        assert_eq!(cut(&[true, true], m + 4096, 8), [(0, m), (m, 4096)]);
        assert_eq!(cut(&[], 0, 8), []);
    }

    /// `pack` of `ram`'s first `mib` MiB: its extents and what it wrote.
    fn packed(ram: &Ram, mib: u64) -> (Extents, Vec<u8>) {
        let mut out = Vec::new();
        let ex = pack(&ram.reopen(false).unwrap(), 0, mib << 20, &mut out).unwrap();
        (ex, out)
    }

    #[test]
    fn packing_keeps_short_gaps_across_reads_and_drops_long_ones() {
        let ram = Ram::new("t", 3).unwrap();
        let w = ram.reopen(true).unwrap();
        let page = |n: u64| n * PAGE as u64;
        let mib = 256; // pages
                       // A gap of 2 pages across the first read's end (kept); a gap of 17 across the second's
                       // (dropped); data in the last page.
        for n in [mib - 2, mib + 1, 2 * mib - 9, 2 * mib + 9, 3 * mib - 1] {
            w.write_all_at(&[n as u8 | 1; PAGE], page(n)).unwrap();
        }
        let (ex, out) = packed(&ram, 3);
        assert_eq!(
            ex,
            [
                (page(mib - 2), page(4)),
                (page(2 * mib - 9), page(1)),
                (page(2 * mib + 9), page(1)),
                (page(3 * mib - 1), page(1)),
            ]
        );
        let mut want = Vec::new();
        for (at, len) in &ex {
            let mut b = vec![0u8; *len as usize];
            w.read_exact_at(&mut b, *at).unwrap();
            want.extend(b);
        }
        assert_eq!(out, want, "the extents' bytes, in order");
        // All zeros: nothing.
        assert_eq!(packed(&Ram::new("t", 2).unwrap(), 2), (vec![], vec![]));
        // A read that lies in a hole is skipped unread, with the result of one of zeros
        // written: the run before it ends where its zeros began.
        let (holed, zeroed) = (Ram::new("t", 3).unwrap(), Ram::new("t", 3).unwrap());
        for r in [&holed, &zeroed] {
            let w = r.reopen(true).unwrap();
            w.write_all_at(&[3u8; 2 * PAGE], page(mib - 3)).unwrap();
            w.write_all_at(&[4u8; PAGE], page(2 * mib)).unwrap();
        }
        let w = zeroed.reopen(true).unwrap();
        w.write_all_at(&vec![0u8; 1 << 20], page(mib)).unwrap();
        let used = |r: &Ram| r.reopen(false).unwrap().metadata().unwrap().blocks() * 512;
        assert_eq!(
            (used(&holed), used(&zeroed)),
            (3 * PAGE as u64, (1 << 20) + 3 * PAGE as u64)
        );
        let (ex, out) = packed(&holed, 3);
        assert_eq!(ex, [(page(mib - 3), page(2)), (page(2 * mib), page(1))]);
        assert_eq!((ex, out), packed(&zeroed, 3));
    }

    #[test]
    fn saved_ram_holds_only_data_and_fills_a_fresh_memfd_byte_for_byte() {
        let a = Ram::new("t", 10).unwrap();
        let w = a.reopen(true).unwrap();
        // One MiB of data across the border of parts 1 and 2, zeros elsewhere...
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8 | 1).collect();
        w.write_all_at(&data, 5 << 19).unwrap();
        // ...and in MiB 8: pages 0 and 4 (a gap of 3 zero pages, kept), then page 30 (after 25).
        let page = |n: u64| (8 << 20) + n * PAGE as u64;
        for n in [0, 4, 30] {
            w.write_all_at(&[n as u8 + 1; PAGE], page(n)).unwrap();
        }
        let cuts = a.plan().unwrap();
        assert_eq!(cuts[..2], [(0, 3 << 20), (3 << 20, 1 << 20)], "{cuts:?}");
        // Each part saved into one file, behind a header of junk (as in a tar).
        let dir = std::env::temp_dir().join(format!("lt-ram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tar = dir.join("snapshot");
        std::fs::write(&tar, [7u8; 512]).unwrap();
        let mut srcs = Vec::new();
        for &(at, bytes) in &cuts {
            let before = std::fs::metadata(&tar).unwrap().len();
            let out = OpenOptions::new().append(true).open(&tar).unwrap();
            let extents = save_part(&a.reopen(false).unwrap(), at, bytes, out).unwrap();
            let len = std::fs::metadata(&tar).unwrap().len() - before;
            srcs.push(Source {
                file: Arc::new(File::open(&tar).unwrap()),
                at: before,
                len,
                part: (at, bytes),
                extents,
            });
        }
        let all: Extents = srcs.iter().flat_map(|s| s.extents.clone()).collect();
        assert_eq!(
            all,
            [
                (5 << 19, 1 << 19),
                (3 << 20, 1 << 19),
                (page(0), 5 * PAGE as u64),
                (page(30), PAGE as u64)
            ],
            "the data, cut at the parts' border, the short gap kept, the long one left out"
        );
        // A fill, as `Ram::fill` runs each part (on this thread).
        let b = Ram::new("t", 10).unwrap();
        b.check(&srcs).unwrap();
        for s in &srcs {
            b.fill_part(s).unwrap()().unwrap();
        }
        assert_eq!(contents(&a), contents(&b));
        // Only the data and the short gap take memory.
        let used = b.reopen(false).unwrap().metadata().unwrap().blocks() * 512;
        assert_eq!(used, (1 << 20) + 6 * PAGE as u64, "{used} bytes used");
        // Extents out of order or beyond their part, and parts that do not cover the RAM one
        // after the other, are refused before anything starts.
        let mut bad = srcs.clone();
        bad[0].extents = vec![(page(0), 8), (0, 8)];
        assert_eq!(
            b.check(&bad).unwrap_err().to_string(),
            format!("RAM extent of 8 bytes at {} is out of order or beyond its part (3145728 bytes at 0)", page(0))
        );
        bad[0].extents = vec![(4 << 20, 1)];
        assert!(b.check(&bad).is_err(), "in the RAM but not in its part");
        let mut gap = srcs.clone();
        gap.remove(1);
        let (at, bytes) = gap[1].part;
        assert_eq!(
            b.check(&gap).unwrap_err().to_string(),
            format!("RAM part of {bytes} bytes at {at} does not follow the one before (to 3145728) inside 10 MiB")
        );
        let mut short = srcs.clone();
        short.pop();
        assert!(b
            .check(&short)
            .unwrap_err()
            .to_string()
            .ends_with("not at 10 MiB"));
        // Data longer than its extents is an error, not a silent cut; shorter, too.
        let to = b.reopen(true).unwrap();
        let mut put = Scatter::new(&to, &[(0, 8)]);
        put.put(&[1u8; 4]).unwrap();
        let e = put.end().unwrap_err();
        assert_eq!(e.to_string(), "less RAM data than its extents hold");
        put.put(&[1u8; 4]).unwrap();
        put.end().unwrap();
        let e = put.put(&[1u8; 2]).unwrap_err();
        assert_eq!(e.to_string(), "more RAM data than its extents hold");
        // A damaged part (a byte of its frame changed) fails its fill; it never panics.
        let mut bytes = std::fs::read(&tar).unwrap();
        let s = &srcs[0];
        bytes[(s.at + s.len / 2) as usize] ^= 0x5a;
        bytes[(s.at + 20) as usize] ^= 0xff;
        std::fs::write(&tar, &bytes).unwrap();
        let damaged = Source {
            file: Arc::new(File::open(&tar).unwrap()),
            ..s.clone()
        };
        let c = Ram::new("t", 10).unwrap();
        assert!(c.fill_part(&damaged).unwrap()().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
