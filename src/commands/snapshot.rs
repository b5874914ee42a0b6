//! `launcher snapshot save [FILE]`: asks the running launcher (control socket) to save the
//! node, and prints where, how large, and how long the guests were paused.

use crate::control;
use crate::exit::Code;
use std::path::Path;

pub fn save(rt: &tokio::runtime::Runtime, file: Option<&Path>) -> Code {
    if let Some(f) = file.filter(|f| !f.is_absolute()) {
        eprintln!(
            "launcher: snapshot save {}: the file must be an absolute path in the container",
            f.display()
        );
        return Code::BadInput;
    }
    match rt.block_on(control::client::snapshot(&control::socket_path(), file)) {
        Ok(r) => {
            println!(
                "Snapshot saved to {} ({} bytes; guests paused {} ms, {} ms in all)",
                r.path.display(),
                r.bytes,
                r.paused_ms,
                r.total_ms
            );
            Code::Ok
        }
        Err(e) => {
            super::report(&e);
            Code::Failure
        }
    }
}
