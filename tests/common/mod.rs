//! Shared helpers for the root tests, one file per concern:
//! - [`netns`]: throwaway network namespaces behind RAII guards, shell helpers;
//! - [`frames`]: raw packet sockets and taps opened inside a namespace;
//! - [`launcher`]: the launcher binary run in a namespace, its status and its JSON log;
//! - [`guest`]: the tinylinux guest: config builder, login bootstrap, telnet and HTTP;
//! - [`docker`]: router containers under real Docker: the test image, a container's pid, logs,
//!   health and status, the guest's console since its latest boot.
//!
//! Every test binary uses a different part of this, hence dead code and unused re-exports are
//! allowed here.
#![allow(dead_code, unused_imports)]

pub mod docker;
pub mod frames;
pub mod guest;
pub mod launcher;
pub mod netns;

pub use docker::*;
pub use frames::*;
pub use guest::*;
pub use launcher::*;
pub use netns::*;

use std::time::{Duration, Instant};

/// Waits until `f` returns Some, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `text` with the one occurrence of `from` replaced by `to`. Panics when `from` is absent or
/// occurs more than once, so a test editing a config cannot silently test the unedited one
/// after the base text changes.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    match text.matches(from).count() {
        1 => text.replacen(from, to, 1),
        0 => panic!("replace_once: {from:?} is not in the text:\n{text}"),
        n => panic!("replace_once: {from:?} occurs {n} times in the text:\n{text}"),
    }
}

/// Applies `edits` (each with [`replace_once`]) to the file at `path`, in order.
pub fn edit_file(path: &std::path::Path, edits: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("edit_file: cannot read {}: {e}", path.display()));
    for (from, to) in edits {
        text = replace_once(&text, from, to);
    }
    std::fs::write(path, text).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_once_replaces_the_one_occurrence() {
        assert_eq!(
            replace_once("a = 20\nb = 1", "a = 20", "a = 2"),
            "a = 2\nb = 1"
        );
    }

    #[test]
    #[should_panic(expected = "is not in the text")]
    fn replace_once_panics_when_absent() {
        replace_once("shutdown_timeout = 20", "shutdown_timeout = 30", "x");
    }

    #[test]
    #[should_panic(expected = "occurs 2 times")]
    fn replace_once_panics_when_ambiguous() {
        replace_once("[vm]\n[vm]", "[vm]", "x");
    }
}
