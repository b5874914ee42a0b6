//! A vendor licence file read for what qemu must show the guest (vm.license: SR OS's
//! /tftpboot/license.txt, bound to the machine's uuid and valid from a date): the uuid
//! (`-uuid`) and the guest clock's start (`-rtc base=`). Pure: [`License::parse`] takes the
//! file's text; the supervisor and `check` read the file.

/// What a licence file says about the machine it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    /// The licence's first word: the uuid of the machine it binds to.
    pub uuid: String,
    /// The day after the licence's first date (`YYYY-MM-DD`), when it has one: the guest's
    /// clock starts there, inside the licence's validity whatever the host's date.
    pub rtc_base: Option<String>,
}

/// Why a licence file cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("no licence text (only comments or blank lines)")]
    Empty,
    #[error("its first word {0:?} is not a uuid (8-4-4-4-12 hex digits)")]
    Uuid(String),
}

impl License {
    /// Lines starting with `#` are comments; the first word of the rest is the uuid, its first
    /// date plus one day the clock's base (vrnetlab's reading of the SR OS licence).
    pub fn parse(text: &str) -> Result<License, LicenseError> {
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let body = body.join("\n");
        let uuid = body.split_whitespace().next().ok_or(LicenseError::Empty)?;
        let lens: Vec<usize> = uuid.split('-').map(str::len).collect();
        if lens != [8, 4, 4, 4, 12] || !uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
            return Err(LicenseError::Uuid(uuid.to_string()));
        }
        Ok(License {
            uuid: uuid.to_string(),
            rtc_base: first_date(&body).map(|(y, m, d)| next_day(y, m, d)),
        })
    }
}

/// The first `YYYY-MM-DD` in `text` that is a calendar date.
fn first_date(text: &str) -> Option<(u32, u32, u32)> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let w = &b[i..i + 10];
        let digits = |r: std::ops::Range<usize>| {
            let part = &w[r];
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(part).ok()?.parse::<u32>().ok())
                .flatten()
        };
        if w[4] != b'-' || w[7] != b'-' {
            return None;
        }
        let (y, m, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        ((1..=12).contains(&m) && (1..=days_in(y, m)).contains(&d)).then_some((y, m, d))
    })
}

fn days_in(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The calendar day after y-m-d, as `YYYY-MM-DD` (vrnetlab adds one to the day's number,
/// which gives a 32nd on a month's last day).
fn next_day(y: u32, m: u32, d: u32) -> String {
    let (y, m, d) = match (d < days_in(y, m), m < 12) {
        (true, _) => (y, m, d + 1),
        (false, true) => (y, m + 1, 1),
        (false, false) => (y + 1, 1, 1),
    };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_is_the_first_word_and_the_clock_starts_the_day_after_the_first_date() {
        let text = "# TiMOS-XX-25.3\n\
                    0a1b2c3d-1111-2222-3333-444455556666 aAbBcC== TIMOS-VSR vsim 2025-03-31 2025-12-31\n";
        let l = License::parse(text).unwrap();
        assert_eq!(l.uuid, "0a1b2c3d-1111-2222-3333-444455556666");
        assert_eq!(l.rtc_base.as_deref(), Some("2025-04-01"));
        for (date, next) in [
            ("2024-02-28", "2024-02-29"),
            ("2023-02-28", "2023-03-01"),
            ("2025-12-31", "2026-01-01"),
            ("2025-06-14", "2025-06-15"),
        ] {
            let l = License::parse(&format!("{} x {date}", l.uuid)).unwrap();
            assert_eq!(l.rtc_base.as_deref(), Some(next), "{date}");
        }
        let undated = License::parse("0a1b2c3d-1111-2222-3333-444455556666 key").unwrap();
        assert_eq!(undated.rtc_base, None);
    }

    #[test]
    fn an_empty_licence_or_one_without_a_uuid_first_is_refused() {
        assert_eq!(License::parse("# only\n\n"), Err(LicenseError::Empty));
        assert_eq!(
            License::parse("TIMOS 2025-01-01"),
            Err(LicenseError::Uuid("TIMOS".into()))
        );
    }
}
