//! The control socket: `launcher status`, `launcher health`, `launcher console` and `launcher
//! reset` (run through `docker exec`) ask the running launcher over a Unix socket (mode 0600). One request line
//! (`verb [arg]`), one answer line in one JSON envelope for every verb: `{"ok": ...}` or
//! `{"error": "..."}`; a console session continues on the same stream after its `ok`. The server
//! bounds its clients (how many at once, how long and how large a request line may be) and
//! answers each refusal with the error envelope.
//! The server answers from the node snapshot ([`crate::state`]) plus the link table; it never
//! changes state and never imports the supervisor: a reset is a [`ResetRequest`] handed to
//! whoever holds the VM's receiving end, and its answer passed back.

pub mod client;
pub mod report;
pub mod server;
pub mod snapshot;

pub mod reset;

pub use client::{attach, health, reset, status};
pub use report::{render, Health, LinkReport, Report, VmReport};
pub use reset::{ResetRequest, Resets};
pub use server::{serve, Consoles, Request};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const DEFAULT_SOCKET: &str = "/run/launcher/control.sock";

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on control socket {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the launcher at {path} (is it running? LAUNCHER_SOCKET overrides the path)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the launcher at {path}")]
    Exchange {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad answer from the launcher at {path}: {why}")]
    Answer { path: PathBuf, why: String },
    #[error("undecodable answer from the launcher at {path}: {answer:?}")]
    Decode {
        path: PathBuf,
        answer: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the launcher refused: {0}")]
    Refused(String),
}

/// The socket path: LAUNCHER_SOCKET, else the default.
pub fn socket_path() -> PathBuf {
    std::env::var_os("LAUNCHER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The one answer shape of the protocol: `{"ok": T}` or `{"error": "why"}`, on one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope<T> {
    Ok(T),
    Error(String),
}

impl<T: Serialize> Envelope<T> {
    /// The answer line, newline included.
    pub fn encode(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"error":{:?}}}"#,
                format!("cannot encode the answer: {e}")
            )
        });
        line.push('\n');
        line
    }
}

impl<T: serde::de::DeserializeOwned> Envelope<T> {
    /// Parses one answer line.
    pub fn decode(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip() {
        let ok = Envelope::Ok(Health {
            name: "r1".into(),
            state: "ready".into(),
            healthy: true,
        });
        let line = ok.encode();
        assert!(line.starts_with(r#"{"ok":{"name":"r1""#), "{line}");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(Envelope::<Health>::decode(&line).unwrap(), ok);
        let err: Envelope<Health> = Envelope::Error("unknown request \"x\"".into());
        let line = err.encode();
        assert_eq!(line, "{\"error\":\"unknown request \\\"x\\\"\"}\n");
        assert_eq!(Envelope::<Health>::decode(&line).unwrap(), err);
        // An error answers any question: the client never fails to parse it.
        assert!(matches!(
            Envelope::<Report>::decode(&line).unwrap(),
            Envelope::Error(_)
        ));
        assert!(Envelope::<Health>::decode("error: plain text").is_err());
    }
}
