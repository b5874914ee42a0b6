//! Entry points for the cargo-fuzz targets in `fuzz/` (one per parser or writer that takes
//! outside input), each with the properties it checks: it panics when one does not hold, and
//! returns quietly for input the parser rightly refuses. Thin: each calls the real code the
//! launcher runs, changes nothing of it, and owns no behaviour. Hidden from the docs; not an API.
//!
//! Inputs are raw fuzzer bytes; each function says how it reads them.

use crate::config::{self, Env, Overrides};
use crate::console::{ConsoleEvent, LineSplitter, TelnetFilter, CUT_MARK, MAX_LINE};
use crate::control::{Envelope, Health, Report, Request};
use crate::disks::{iso, tgz};
use crate::qemu::{self, qmp};
use crate::snapshot::archive;
use std::path::Path;
use tokio::sync::mpsc;

/// The config parser, TOML plus environment: the bytes before the first NUL are the file, the
/// lines after it `KEY=VALUE` variables. A config that parses must build a qemu argv per VM
/// (as `launcher check` does) without panicking.
pub fn config(data: &[u8]) {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let env: Env = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let origin = Path::new("/cfg/launcher.toml");
    let Ok(node) = config::parse(text, origin, Path::new("/cfg"), &env, &Overrides::default())
    else {
        return;
    };
    for plan in &node.vms {
        let launch = qemu::Launch::for_check(plan);
        let argv = qemu::argv(plan, &launch, &qemu::Resolved::planned(plan));
        assert!(!argv.is_empty());
    }
}

/// The QMP reader and decoder: byte 0 sets the read buffer's size (1-64), byte 1 the longest
/// line (0-255), the rest is what qemu sent. Each line must come back as it was sent (lossy
/// UTF-8), an over-long one as its length, then be decoded without panicking.
pub fn qmp(data: &[u8]) {
    let [cap, max, rest @ ..] = data else { return };
    let (cap, max) = (usize::from(cap % 64) + 1, usize::from(*max));
    let mut expected: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    if expected.last().is_some_and(|l| l.is_empty()) {
        expected.pop();
    }
    let mut r = tokio::io::BufReader::with_capacity(cap, rest);
    for want in expected {
        let got = futures::executor::block_on(qmp::read_line(&mut r, max)).unwrap();
        match got {
            qmp::Line::TooLong(n) => assert!(n == want.len() && n > max, "{n} vs {want:?}"),
            qmp::Line::Text(t) => {
                assert!(want.len() <= max);
                assert_eq!(t, String::from_utf8_lossy(want));
                let _ = qmp::decode(&t);
            }
            qmp::Line::Eof => panic!("EOF before the line {want:?}"),
        }
    }
    let end = futures::executor::block_on(qmp::read_line(&mut r, max)).unwrap();
    assert_eq!(end, qmp::Line::Eof);
    let _ = qmp::decode(&String::from_utf8_lossy(rest));
}

/// The telnet filter: byte 0 sets a chunk size (1-256), the rest is a client's input. Fed in
/// chunks it gives what it gives fed at once (negotiation split across reads is carried over),
/// never more bytes than came in.
pub fn telnet(data: &[u8]) {
    let [size, rest @ ..] = data else { return };
    let whole = TelnetFilter::default().feed(rest);
    assert!(whole.len() <= rest.len());
    let mut f = TelnetFilter::default();
    let chunked: Vec<u8> = rest
        .chunks(usize::from(*size) + 1)
        .flat_map(|c| f.feed(c))
        .collect();
    assert_eq!(whole, chunked);
}

/// The console line splitter: byte 0 sets the readiness pattern's length (0-15), then the
/// pattern (must be UTF-8 and non-empty, as the config demands), then a chunk size (two bytes),
/// then the serial bytes. Checks: the log gets the bytes unchanged; the printed lines are
/// exactly the input's lines cut every [`MAX_LINE`] bytes (CR dropped); the pattern is reported
/// once exactly when some line holds it.
pub fn console_lines(data: &[u8]) {
    let [n, rest @ ..] = data else { return };
    let n = usize::from(n % 16);
    if rest.len() < n + 2 {
        return;
    }
    let Ok(pattern) = std::str::from_utf8(&rest[..n]) else {
        return;
    };
    if pattern.is_empty() {
        return;
    }
    let size = usize::from(u16::from_le_bytes([rest[n], rest[n + 1]])) + 1;
    let input = &rest[n + 2..];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = LineSplitter::new("c", Vec::new(), Vec::new(), Some(pattern.into()), tx);
    for chunk in input.chunks(size) {
        s.feed(chunk);
    }
    s.flush();
    let (log, out) = s.into_parts();
    assert_eq!(log, input);

    let stripped: Vec<u8> = input.iter().copied().filter(|&b| b != b'\r').collect();
    let lines: Vec<&[u8]> = stripped.split(|&b| b == b'\n').collect();
    let last = lines.len() - 1;
    let printed: usize = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let pieces = l.len() / MAX_LINE;
            // A line that ended is printed once more (its rest, perhaps empty); the last,
            // unfinished one only when something of it is left.
            pieces + usize::from(i < last || l.len() % MAX_LINE != 0)
        })
        .sum();
    let out_lines = out.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(out_lines, printed, "lines printed");
    let cuts = String::from_utf8_lossy(&out).matches(CUT_MARK).count();
    assert!(cuts >= lines.iter().map(|l| l.len() / MAX_LINE).sum::<usize>());

    let want = lines
        .iter()
        .any(|l| l.windows(pattern.len()).any(|w| w == pattern.as_bytes()));
    let mut seen = 0;
    while let Ok(ConsoleEvent::ReadyPattern(p)) = rx.try_recv() {
        assert_eq!(p, pattern);
        seen += 1;
    }
    assert_eq!(seen, usize::from(want), "pattern {pattern:?} reports");
}

/// The control protocol: the request line the server parses, and the answer lines the client
/// decodes (a status report, a health answer): one that decodes encodes to a line that decodes
/// to the same.
pub fn control(data: &[u8]) {
    let _ = Request::parse(data);
    let line = String::from_utf8_lossy(data);
    if let Ok(h) = Envelope::<Health>::decode(&line) {
        assert_eq!(Envelope::<Health>::decode(&h.encode()).unwrap(), h);
    }
    if let Ok(r) = Envelope::<Report>::decode(&line) {
        let again = r.encode();
        let back = Envelope::<Report>::decode(&again).unwrap();
        assert_eq!(back.encode(), again);
    }
}

/// The ISO 9660 writer (a templated CD's folder tree): byte 0 is the label's length (0-31),
/// then the label, then records as [`records`] reads them; a `/` in a name makes folders, a
/// name ending in `/` is a folder alone. An image written must read back: the volume
/// descriptors, its size, and every file under its ISO path (folders walked from the root)
/// with its bytes at its extent.
pub fn iso(data: &[u8]) {
    let [n, rest @ ..] = data else { return };
    let n = usize::from(n % 32).min(rest.len());
    let label = String::from_utf8_lossy(&rest[..n]).into_owned();
    let entries: Vec<tgz::Entry> = records(&rest[n..]).into_iter().map(tree_entry).collect();
    let Ok(img) = iso::tree_image(&label, &entries) else {
        return;
    };
    // Each file's ISO path: its folders upper-cased with '-' and '.' as '_', its name
    // upper-cased with '-' as '_' and ";1" added (the writer refuses other characters).
    let mut want: Vec<(String, Vec<u8>)> = entries
        .iter()
        .filter_map(|(path, d)| {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let (last, up) = parts.split_last()?;
            let mut p: Vec<String> = up
                .iter()
                .map(|f| f.to_ascii_uppercase().replace(['-', '.'], "_"))
                .collect();
            p.push(format!("{};1", last.to_ascii_uppercase().replace('-', "_")));
            d.clone().map(|d| (p.join("/"), d))
        })
        .collect();
    want.sort();
    iso_reads_back(&img, want);
}

const SECTOR: usize = 2048;

fn le32(b: &[u8]) -> usize {
    u32::from_le_bytes(b[..4].try_into().unwrap()) as usize
}

/// A minimal ISO 9660 reader for [`iso`]'s check.
fn iso_reads_back(img: &[u8], want: Vec<(String, Vec<u8>)>) {
    assert_eq!(img.len() % SECTOR, 0);
    let pvd = &img[16 * SECTOR..17 * SECTOR];
    assert_eq!(&pvd[..7], b"\x01CD001\x01");
    assert_eq!(&img[17 * SECTOR..17 * SECTOR + 7], b"\xffCD001\x01");
    assert_eq!(le32(&pvd[80..]), img.len() / SECTOR);
    let (root, root_len) = (le32(&pvd[158..]), le32(&pvd[166..]));
    let mut found = Vec::new();
    iso_walk(img, (root, root_len), "", 0, &mut found);
    found.sort();
    assert_eq!(found, want);
}

/// The files under the directory at `(extent, length)`, their paths after `prefix`.
fn iso_walk(
    img: &[u8],
    (ext, len): (usize, usize),
    prefix: &str,
    depth: usize,
    found: &mut Vec<(String, Vec<u8>)>,
) {
    assert!(depth <= 8, "folders nest deeper than the writer allows");
    assert_eq!(len % SECTOR, 0);
    let dir = &img[ext * SECTOR..ext * SECTOR + len];
    let mut at = 0;
    while at < dir.len() {
        let l = usize::from(dir[at]);
        if l == 0 {
            // The rest of this sector is padding: records never cross a sector.
            at = (at / SECTOR + 1) * SECTOR;
            continue;
        }
        assert_eq!(
            at / SECTOR,
            (at + l - 1) / SECTOR,
            "a record crosses a sector"
        );
        let name = &dir[at + 33..at + 33 + usize::from(dir[at + 32])];
        let (e, size) = (le32(&dir[at + 2..]), le32(&dir[at + 10..]));
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        if dir[at + 25] & 2 == 0 {
            found.push((path, img[e * SECTOR..e * SECTOR + size].to_vec()));
        } else if name != [0] && name != [1] {
            iso_walk(img, (e, size), &format!("{path}/"), depth + 1, found);
        }
        at += l;
    }
}

/// Reads `[name length][name][data length, two bytes][data]` records from `at` (the layout
/// [`iso`] and [`tgz`] take), each cut to what is left.
fn records(mut at: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while let [len, tail @ ..] = at {
        let len = usize::from(*len).min(tail.len());
        let name = String::from_utf8_lossy(&tail[..len]).into_owned();
        let tail = &tail[len..];
        let size = match tail {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])).min(tail.len() - 2),
            _ => 0,
        };
        let body = tail.get(2..2 + size).unwrap_or_default();
        out.push((name, body.to_vec()));
        at = tail.get(2 + size..).unwrap_or_default();
    }
    out
}

/// A record as a folder tree's entry: a name ending in `/` is a folder, any other a file.
fn tree_entry((name, data): (String, Vec<u8>)) -> tgz::Entry {
    match name.strip_suffix('/') {
        Some(dir) => (dir.to_string(), None),
        None => (name, Some(data)),
    }
}

/// The `.tgz` writer (a templated disk's `archive`): records as [`iso`] reads them; a name
/// ending in `/` is a folder. Names are made as a folder tree gives them (no NUL, not empty).
/// An archive written must be gzip with stored blocks that add up (LEN and NLEN, the last
/// block marked, ISIZE), around a tar whose regular files [`archive::index`] (the snapshot
/// reader, another ustar reader) finds with the same names and bytes, in order.
pub fn tgz(data: &[u8]) {
    let entries: Vec<tgz::Entry> = records(data)
        .into_iter()
        .map(|(n, d)| (n.replace('\0', "_"), d))
        .filter(|(n, _)| !n.trim_end_matches('/').is_empty())
        .map(tree_entry)
        .collect();
    let Ok(gz) = tgz::tgz(&entries) else {
        return;
    };
    assert_eq!(&gz[..3], b"\x1f\x8b\x08");
    let (mut at, mut tar) = (10, Vec::new());
    loop {
        let last = gz[at] == 1;
        assert!(gz[at] <= 1, "a stored block, BFINAL only");
        let len = usize::from(u16::from_le_bytes([gz[at + 1], gz[at + 2]]));
        let nlen = u16::from_le_bytes([gz[at + 3], gz[at + 4]]);
        assert_eq!(nlen, !(len as u16));
        tar.extend_from_slice(&gz[at + 5..at + 5 + len]);
        at += 5 + len;
        if last {
            break;
        }
    }
    assert_eq!(gz.len(), at + 8, "CRC-32 and ISIZE end it");
    assert_eq!(le32(&gz[at + 4..]), tar.len());
    assert_eq!(tar.len() % 512, 0);
    let members = archive::index(&mut std::io::Cursor::new(&tar)).unwrap();
    let files: Vec<(&str, &Vec<u8>)> = entries
        .iter()
        .filter_map(|(n, d)| d.as_ref().map(|d| (n.trim_start_matches("./"), d)))
        .collect();
    assert_eq!(members.len(), files.len());
    for (m, (name, body)) in members.iter().zip(files) {
        assert_eq!(m.name, name);
        let at = usize::try_from(m.offset).unwrap();
        assert_eq!(&tar[at..at + body.len()], &body[..], "{name}");
    }
}

/// The snapshot tar reader: `/snapshot.tar` is whatever file the user mounts. Any bytes index
/// without a panic, and what is found lies after its header, on a 512-byte boundary, in order.
pub fn snapshot_tar(data: &[u8]) {
    let Ok(members) = archive::index(&mut std::io::Cursor::new(data)) else {
        return;
    };
    let mut last = 0;
    for m in members {
        assert_eq!(m.offset % 512, 0, "{}", m.name);
        assert!(m.offset >= last + 512, "{} at {}", m.name, m.offset);
        last = m.offset;
    }
}

#[cfg(test)]
mod tests {
    /// Every seed input and every input a fuzz run found (kept in `fuzz/regressions/TARGET/`,
    /// named after what it found) still passes its target's checks.
    #[test]
    fn seeds_and_found_inputs_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        type Target = (&'static str, fn(&[u8]));
        let targets: [Target; 8] = [
            ("config", super::config),
            ("qmp", super::qmp),
            ("telnet", super::telnet),
            ("console_lines", super::console_lines),
            ("control", super::control),
            ("iso", super::iso),
            ("tgz", super::tgz),
            ("snapshot_tar", super::snapshot_tar),
        ];
        let mut ran = 0;
        for (name, run) in targets {
            for kind in ["seeds", "regressions"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for e in dir {
                    let path = e.unwrap().path();
                    println!("{}", path.display());
                    run(&std::fs::read(&path).unwrap());
                    ran += 1;
                }
            }
        }
        assert!(ran >= 6, "only {ran} inputs under {}", root.display());
    }
}
