//! LZ4 frames through the reference C library (`lz4-sys`, built from its bundled source): the
//! codec of a snapshot's RAM parts ([`super::ram`]). Owns the library's two contexts and the
//! frame's settings; never opens, seeks or names a file (it writes to the `Write` and reads
//! the range of the `File` it is given).
//!
//! A frame is the standard one (`lz4 -d` reads it): independent blocks of up to 1 MiB, each
//! followed by a checksum of its compressed bytes, so a damaged part fails its fill and never
//! loads silently wrong. There is no checksum of the whole: the blocks' checksums cover every
//! byte read, and hashing the compressed data costs a third of hashing the RAM. A frame with a
//! checksum of the whole (the launcher's earlier writer) still reads, and that checksum is
//! checked. The C decoder takes a little over half the time of the pure-Rust one (lz4_flex)
//! here, and its encoder three quarters: a restore's qemu waits for the one, a save's paused
//! guests for the other.

use lz4_sys::{
    BlockChecksum, BlockMode, BlockSize, ContentChecksum, FrameType, LZ4FCompressionContext,
    LZ4FDecompressionContext, LZ4FFrameInfo, LZ4FPreferences, LZ4F_VERSION,
};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::ptr;

/// The largest block, and the most the encoder takes from one `write`.
const BLOCK: usize = 1 << 20;
/// The most a frame's header may take (LZ4F_HEADER_SIZE_MAX).
const HEADER_MAX: usize = 19;
/// What the decoder reads first: the shortest header (LZ4F_HEADER_SIZE_MIN).
const HEADER_MIN: usize = 7;

/// `code` from an LZ4F call, or the library's name for the error it is.
fn check(code: usize, what: &str) -> io::Result<usize> {
    // SAFETY: LZ4F_isError only inspects the integer it is given.
    if unsafe { lz4_sys::LZ4F_isError(code) } == 0 {
        return Ok(code);
    }
    // SAFETY: for an error code, LZ4F_getErrorName returns a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(lz4_sys::LZ4F_getErrorName(code)) };
    Err(io::Error::other(format!(
        "LZ4 {what}: {}",
        name.to_string_lossy()
    )))
}

fn preferences() -> LZ4FPreferences {
    LZ4FPreferences {
        frame_info: LZ4FFrameInfo {
            block_size_id: BlockSize::Max1MB,
            block_mode: BlockMode::Independent,
            content_checksum_flag: ContentChecksum::NoChecksum,
            frame_type: FrameType::Frame,
            content_size: 0,
            dict_id: 0,
            block_checksum_flag: BlockChecksum::BlockChecksumEnabled,
        },
        compression_level: 0,
        auto_flush: 0,
        favor_dec_speed: 0,
        reserved: [0; 3],
    }
}

/// A compression context, freed on drop.
struct Cctx(LZ4FCompressionContext);

impl Cctx {
    fn new() -> io::Result<Self> {
        let mut raw = LZ4FCompressionContext(ptr::null_mut());
        // SAFETY: `raw` is a valid place for the new context; the version is the one the
        // bindings declare.
        check(
            unsafe { lz4_sys::LZ4F_createCompressionContext(&mut raw, LZ4F_VERSION) },
            "compression context",
        )?;
        Ok(Cctx(raw))
    }
}

impl Drop for Cctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by LZ4F_createCompressionContext and is freed once.
        unsafe { lz4_sys::LZ4F_freeCompressionContext(self.0) };
    }
}

/// A decompression context, freed on drop.
struct Dctx(LZ4FDecompressionContext);

impl Dctx {
    fn new() -> io::Result<Self> {
        let mut raw = LZ4FDecompressionContext(ptr::null_mut());
        // SAFETY: `raw` is a valid place for the new context; the version is the bindings'.
        check(
            unsafe { lz4_sys::LZ4F_createDecompressionContext(&mut raw, LZ4F_VERSION) },
            "decompression context",
        )?;
        Ok(Dctx(raw))
    }
}

impl Drop for Dctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by LZ4F_createDecompressionContext and is freed once.
        unsafe { lz4_sys::LZ4F_freeDecompressionContext(self.0) };
    }
}

/// Compresses what is written to it into one frame on `out`; [`Encoder::finish`] ends the
/// frame. `flush` flushes `out` only (a block ends when it is full or at the end).
pub struct Encoder<W: Write> {
    ctx: Cctx,
    /// Room for the most one `write` may put out: LZ4F_compressBound(BLOCK).
    buf: Vec<u8>,
    out: W,
}

impl<W: Write> Encoder<W> {
    /// Starts a frame on `out` (its header is written at once).
    pub fn new(mut out: W) -> io::Result<Self> {
        let prefs = preferences();
        let ctx = Cctx::new()?;
        // SAFETY: `prefs` is a valid preferences struct for the call's duration.
        let bound = unsafe { lz4_sys::LZ4F_compressBound(BLOCK, &prefs) };
        let mut buf = vec![0u8; bound.max(HEADER_MAX)];
        // SAFETY: `buf` is writable for its length, `prefs` is valid, `ctx` is fresh.
        let n = check(
            unsafe { lz4_sys::LZ4F_compressBegin(ctx.0, buf.as_mut_ptr(), buf.len(), &prefs) },
            "frame header",
        )?;
        out.write_all(&buf[..n])?;
        Ok(Encoder { ctx, buf, out })
    }

    /// Ends the frame (its last block and end mark) and gives `out` back.
    pub fn finish(self) -> io::Result<W> {
        let Encoder {
            ctx,
            mut buf,
            mut out,
        } = self;
        // SAFETY: `buf` is writable for its length, at least LZ4F_compressBound(BLOCK), which
        // covers a full block left in the context plus the end mark; null options: defaults.
        let n = check(
            unsafe { lz4_sys::LZ4F_compressEnd(ctx.0, buf.as_mut_ptr(), buf.len(), ptr::null()) },
            "frame end",
        )?;
        out.write_all(&buf[..n])?;
        Ok(out)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let src = &data[..data.len().min(BLOCK)];
        // SAFETY: `buf` is writable for its length, LZ4F_compressBound(BLOCK), the most an
        // update of up to BLOCK bytes may put out; `src` is readable for its length; null
        // options: defaults.
        let n = check(
            unsafe {
                lz4_sys::LZ4F_compressUpdate(
                    self.ctx.0,
                    self.buf.as_mut_ptr(),
                    self.buf.len(),
                    src.as_ptr(),
                    src.len(),
                    ptr::null(),
                )
            },
            "compression",
        )?;
        self.out.write_all(&self.buf[..n])?;
        Ok(src.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Decodes the one frame of exactly `len` bytes at `at` in `file`, giving its data to `sink`
/// piece by piece, in order. Err: a damaged frame, one cut short, bytes after its end, or
/// what `sink` returned.
pub fn decode(
    file: &File,
    at: u64,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let ctx = Dctx::new()?;
    // A block with its size and checksum, and the next block's size: what the decoder asks
    // for at most.
    let mut src = vec![0u8; BLOCK + 16];
    let mut dst = vec![0u8; BLOCK];
    let end = at
        .checked_add(len)
        .ok_or_else(|| io::Error::other("LZ4 frame beyond 2^64"))?;
    let (mut pos, mut want) = (at, HEADER_MIN);
    loop {
        let n = (want.min(src.len()) as u64).min(end - pos) as usize;
        if n == 0 {
            return Err(io::Error::other("LZ4 frame cut short"));
        }
        file.read_exact_at(&mut src[..n], pos)?;
        pos += n as u64;
        let mut off = 0;
        while off < n {
            let (mut took, mut made) = (n - off, dst.len());
            // SAFETY: `dst` is writable for `made` bytes and `src[off..n]` readable for `took`;
            // the decoder writes back how much of each it used; null options: defaults.
            let hint = check(
                unsafe {
                    lz4_sys::LZ4F_decompress(
                        ctx.0,
                        dst.as_mut_ptr(),
                        &mut made,
                        src[off..].as_ptr(),
                        &mut took,
                        ptr::null(),
                    )
                },
                "frame",
            )?;
            if made > 0 {
                sink(&dst[..made])?;
            }
            off += took;
            if hint == 0 {
                if off < n || pos < end {
                    return Err(io::Error::other("data after the LZ4 frame's end"));
                }
                return Ok(());
            }
            if took == 0 && made == 0 {
                return Err(io::Error::other("LZ4 decoder made no progress"));
            }
            want = hint;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file holding `junk` bytes, then `frame`, then `tail` bytes.
    fn file_with(frame: &[u8], junk: usize, tail: usize) -> File {
        let path = std::env::temp_dir().join(format!(
            "lt-lz4-{}-{junk}-{tail}-{}",
            std::process::id(),
            frame.len()
        ));
        let mut all = vec![9u8; junk];
        all.extend_from_slice(frame);
        all.extend(std::iter::repeat_n(5u8, tail));
        std::fs::write(&path, &all).unwrap();
        let f = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn decoded(f: &File, at: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decode(f, at, len, |d| {
            out.extend_from_slice(d);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn a_frame_written_in_pieces_decodes_whole_from_its_range_and_damage_is_an_error() {
        // 3.5 MiB: compressible text, incompressible bytes, zeros; written in uneven pieces.
        let mut data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut x = 0x2545f491u32;
        data.extend((0..(3u32 << 19)).map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        }));
        data.extend(vec![0u8; 1 << 20]);
        let mut z = Encoder::new(Vec::new()).unwrap();
        for piece in data.chunks(777_777) {
            z.write_all(piece).unwrap();
        }
        let frame = z.finish().unwrap();
        assert!(frame.len() < data.len(), "{} bytes", frame.len());
        assert_eq!(
            &frame[..4],
            &[0x04, 0x22, 0x4d, 0x18],
            "the LZ4 frame magic"
        );
        let f = file_with(&frame, 512, 100);
        let len = frame.len() as u64;
        assert_eq!(decoded(&f, 512, len).unwrap(), data);
        // Cut short, or with bytes of the next member inside the range: errors.
        let e = decoded(&f, 512, len - 1).unwrap_err();
        assert_eq!(e.to_string(), "LZ4 frame cut short");
        let e = decoded(&f, 512, len + 1).unwrap_err();
        assert_eq!(e.to_string(), "data after the LZ4 frame's end");
        // A changed byte in a block: its checksum fails (never wrong data).
        let mut bad = frame.clone();
        let mid = bad.len() / 3;
        bad[mid] ^= 0x20;
        let e = decoded(&file_with(&bad, 0, 0), 0, len).unwrap_err();
        assert!(e.to_string().starts_with("LZ4 frame: "), "{e}");
        // An empty frame holds nothing; a sink's error ends the decode with it.
        let empty = Encoder::new(Vec::new()).unwrap().finish().unwrap();
        let f = file_with(&empty, 0, 0);
        assert_eq!(decoded(&f, 0, empty.len() as u64).unwrap(), b"");
        let f = file_with(&frame, 0, 0);
        let e = decode(&f, 0, len, |_| Err(io::Error::other("full"))).unwrap_err();
        assert_eq!(e.to_string(), "full");
    }

    #[test]
    fn a_frame_with_a_checksum_of_the_whole_reads_and_that_checksum_is_checked() {
        // `printf 'launcher: hello, hello, hello RAM' | lz4 -c` (lz4 1.9.4's defaults: a
        // checksum of the whole, none per block), as the launcher's earlier writer did.
        let frame = [
            0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7, 0x1a, 0x00, 0x00, 0x00, 0xf8, 0x01, 0x6c,
            0x61, 0x75, 0x6e, 0x63, 0x68, 0x65, 0x72, 0x3a, 0x20, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
            0x2c, 0x07, 0x00, 0x50, 0x6f, 0x20, 0x52, 0x41, 0x4d, 0x00, 0x00, 0x00, 0x00, 0xb1,
            0xf4, 0x24, 0xff,
        ];
        let f = file_with(&frame, 3, 0);
        let got = decoded(&f, 3, frame.len() as u64).unwrap();
        assert_eq!(got, b"launcher: hello, hello, hello RAM");
        let mut bad = frame;
        bad[20] ^= 1; // a literal: the block decodes, the checksum of the whole fails
        let f = file_with(&bad, 0, 0);
        let e = decoded(&f, 0, bad.len() as u64).unwrap_err();
        assert!(e.to_string().contains("LZ4 frame: "), "{e}");
    }
}
