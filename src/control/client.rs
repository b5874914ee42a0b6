//! The control client: connects to the launcher's socket, sends one request line and decodes
//! the one envelope that answers it (`status`, `health`, `reset`), or performs the console handshake
//! and hands the stream back. Never prints and never touches the terminal (`commands` do).

use crate::control::report::{Health, Report};
use crate::control::{ControlError, Envelope};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long a status or health answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the launcher at `path` and sends one request line.
async fn request(path: &Path, what: &str) -> Result<UnixStream, ControlError> {
    let mut c = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.into(),
            source,
        })?;
    c.write_all(format!("{what}\n").as_bytes())
        .await
        .map_err(|source| ControlError::Exchange {
            path: path.into(),
            source,
        })?;
    Ok(c)
}

/// Opens the envelope: the value, or the launcher's refusal.
fn open<T: DeserializeOwned>(path: &Path, line: &str) -> Result<T, ControlError> {
    match Envelope::<T>::decode(line) {
        Ok(Envelope::Ok(v)) => Ok(v),
        Ok(Envelope::Error(why)) => Err(ControlError::Refused(why)),
        Err(source) => Err(ControlError::Decode {
            path: path.into(),
            answer: line.trim_end().into(),
            source,
        }),
    }
}

/// Sends `verb` and decodes the answer.
pub async fn query<T: DeserializeOwned>(path: &Path, verb: &str) -> Result<T, ControlError> {
    query_within(path, verb, ANSWER_TIMEOUT).await
}

/// `snapshot [FILE]`: saves the node (the answer comes once the file is written).
pub async fn snapshot(
    path: &Path,
    file: Option<&Path>,
) -> Result<crate::control::snapshot::SaveReport, ControlError> {
    let verb = match file {
        Some(f) => format!("snapshot {}", f.display()),
        None => "snapshot".into(),
    };
    query_within(path, &verb, Duration::from_secs(600)).await
}

async fn query_within<T: DeserializeOwned>(
    path: &Path,
    verb: &str,
    within: Duration,
) -> Result<T, ControlError> {
    let mut c = request(path, verb).await?;
    let mut buf = String::new();
    tokio::time::timeout(within, c.read_to_string(&mut buf))
        .await
        .map_err(|_| ControlError::Answer {
            path: path.into(),
            why: "timed out".into(),
        })?
        .map_err(|source| ControlError::Exchange {
            path: path.into(),
            source,
        })?;
    open(path, &buf)
}

/// `status`: the whole report.
pub async fn status(path: &Path) -> Result<Report, ControlError> {
    query(path, "status").await
}

/// `health`: the node's state, from the snapshot.
pub async fn health(path: &Path) -> Result<Health, ControlError> {
    query(path, "health").await
}

/// `reset [VM]`: the names of the VMs reset (every VM without a name).
pub async fn reset(path: &Path, vm: Option<&str>) -> Result<Vec<String>, ControlError> {
    match vm {
        Some(v) => query(path, &format!("reset {v}")).await,
        None => query(path, "reset").await,
    }
}

/// Asks to attach to `vm`'s console (the first VM's without a name). On `Ok`, the stream
/// carries the session; a refusal (no such VM) is [`ControlError::Refused`].
pub async fn attach(path: &Path, vm: Option<&str>) -> Result<UnixStream, ControlError> {
    let what = match vm {
        Some(v) => format!("console {v}"),
        None => "console".into(),
    };
    let mut c = request(path, &what).await?;
    // The envelope line, read byte by byte: what follows it is the session.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    loop {
        let n = c
            .read(&mut b)
            .await
            .map_err(|source| ControlError::Exchange {
                path: path.into(),
                source,
            })?;
        if n == 0 || b[0] == b'\n' || first.len() >= 4096 {
            break;
        }
        first.push(b[0]);
    }
    let line = String::from_utf8_lossy(&first);
    open::<String>(path, &line)?;
    Ok(c)
}
