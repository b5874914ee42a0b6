//! `snapshot [FILE]` on the control socket: the request is handed to whoever saves (the
//! supervisor registers a channel with [`accept_saves`]; control never imports it) and its
//! result answered in the one envelope. Without a saver registered, the request is refused.

use crate::control::Envelope;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::OnceLock;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// What a save produced, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// How long the guests were paused.
    pub paused_ms: u64,
    pub total_ms: u64,
}

/// One save asked for: where to (None: containerlab's `/snapshot-output.tar`), and where its
/// result goes (Err: why it failed).
pub struct Request {
    pub path: Option<PathBuf>,
    pub reply: oneshot::Sender<Result<SaveReport, String>>,
}

static SAVER: OnceLock<mpsc::UnboundedSender<Request>> = OnceLock::new();

/// From now on `snapshot` requests arrive on the returned receiver (once per process).
pub fn accept_saves() -> Option<mpsc::UnboundedReceiver<Request>> {
    let (tx, rx) = mpsc::unbounded_channel();
    SAVER.set(tx).ok().map(|()| rx)
}

/// Answers `snapshot [FILE]`.
pub async fn answer(mut conn: UnixStream, arg: Option<&str>) -> std::io::Result<()> {
    let path = arg.filter(|a| !a.is_empty()).map(PathBuf::from);
    let line = match ask(path).await {
        Ok(r) => Envelope::Ok(r).encode(),
        Err(why) => Envelope::<()>::Error(why).encode(),
    };
    conn.write_all(line.as_bytes()).await?;
    conn.shutdown().await
}

async fn ask(path: Option<PathBuf>) -> Result<SaveReport, String> {
    if path.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err("the snapshot file must be an absolute path in the container".into());
    }
    let saver = SAVER.get().ok_or("no VM is running yet: nothing to save")?;
    let (reply, rx) = oneshot::channel();
    saver
        .send(Request { path, reply })
        .map_err(|_| "the launcher is stopping")?;
    rx.await
        .map_err(|_| "the launcher is stopping".to_string())?
}
