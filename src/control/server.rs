//! The control server: listens on the Unix socket (mode 0600) and answers each connection's
//! one request line with one envelope: `status` (the report, with fresh link counters),
//! `health` (from the snapshot alone, no netlink), `console [VM]` (then the session). It reads
//! the snapshot and the link table; it never changes state and never imports the supervisor.

use crate::console::Hub;
use crate::control::report::{Health, Report};
use crate::control::{ControlError, Envelope};
use crate::net::{LinkTable, Netlink};
use crate::state::Shared;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The consoles `launcher console [VM]` can attach to, by VM name; the first is the default.
pub type Consoles = Arc<Vec<(String, Hub)>>;

/// What the server answers from: the snapshot, the link table and a netlink handle for the
/// counters (both absent without data links), and the consoles.
#[derive(Clone)]
struct Sources {
    snap: Shared,
    table: Option<LinkTable>,
    nl: Option<Netlink>,
    consoles: Consoles,
}

/// Binds the socket and serves status, health and console sessions until the task is dropped.
pub fn serve(
    path: PathBuf,
    snap: Shared,
    table: Option<LinkTable>,
    nl: Option<Netlink>,
    consoles: Consoles,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let listen = |source| ControlError::Listen {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(listen)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(listen)?;
    let sources = Sources {
        snap,
        table,
        nl,
        consoles,
    };
    Ok(tokio::spawn(accept_loop(listener, sources)))
}

/// Accepts for ever. A failing accept (EMFILE, ENFILE, ENOMEM: it persists until something is
/// freed) is logged and backed off, from 10 ms doubling to 1 s, instead of spinning.
async fn accept_loop(listener: UnixListener, sources: Sources) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                backoff = Duration::from_millis(10);
                let sources = sources.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(conn, sources).await {
                        tracing::debug!(error = %e, "control client");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "control socket cannot accept");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Reads the request line byte by byte, so nothing after it is consumed (a console session
/// continues on the same stream).
async fn request_line(conn: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 256 && conn.read(&mut b).await? == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim().to_string())
}

async fn answer(mut conn: UnixStream, src: Sources) -> std::io::Result<()> {
    let req = request_line(&mut conn).await?;
    let (verb, arg) = match req.split_once(' ') {
        Some((v, a)) => (v, Some(a.trim())),
        None => (req.as_str(), None),
    };
    let line = match verb {
        "console" => return console(conn, &src.consoles, arg).await,
        "status" => Envelope::Ok(status(&src).await).encode(),
        "health" => Envelope::Ok(Health::of(&src.snap.lock().unwrap())).encode(),
        other => Envelope::<()>::Error(format!("unknown request {other:?}")).encode(),
    };
    conn.write_all(line.as_bytes()).await?;
    conn.shutdown().await
}

/// The report, with a fresh dump of the links for their counters (only when there are data
/// links to report).
async fn status(src: &Sources) -> Report {
    let snap = src.snap.lock().unwrap().clone();
    let rows = src
        .table
        .as_ref()
        .map(|t| t.lock().unwrap().clone())
        .unwrap_or_default();
    let live = match (&src.nl, rows.is_empty()) {
        (Some(nl), false) => nl.links().await.unwrap_or_default(),
        _ => vec![],
    };
    Report::build(&snap, &rows, &live)
}

/// `console [VM]`: `{"ok":"attached"}` then the session, or why not.
async fn console(
    mut conn: UnixStream,
    consoles: &Consoles,
    vm: Option<&str>,
) -> std::io::Result<()> {
    let hub = match vm {
        None => consoles.first(),
        Some(name) => consoles.iter().find(|(n, _)| n == name),
    };
    let Some((name, hub)) = hub else {
        let names: Vec<&str> = consoles.iter().map(|(n, _)| n.as_str()).collect();
        let why = format!(
            "no VM {:?} here; VMs: {}",
            vm.unwrap_or_default(),
            names.join(", ")
        );
        conn.write_all(Envelope::<()>::Error(why).encode().as_bytes())
            .await?;
        return conn.shutdown().await;
    };
    conn.write_all(Envelope::Ok("attached").encode().as_bytes())
        .await?;
    tracing::info!(vm = %name, "console client attached");
    hub.attach(conn, false).await;
    tracing::info!(vm = %name, "console client left");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{client, ControlError};
    use crate::state::{Snapshot, State};

    /// Every verb answers one envelope the client opens: status and health as values, an
    /// unknown verb and a refused console as the launcher's refusal.
    #[tokio::test]
    async fn every_verb_answers_one_envelope() {
        let dir = std::env::temp_dir().join(format!("launcher-ctl-{}", std::process::id()));
        let path = dir.join("control.sock");
        let mut snap = Snapshot {
            name: "r1".into(),
            accel: "tcg".into(),
            ..Default::default()
        };
        snap.lifecycle.state = State::Ready;
        let shared: Shared = Arc::new(std::sync::Mutex::new(snap));
        let task = serve(path.clone(), shared, None, None, Arc::new(vec![])).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let h = client::health(&path).await.unwrap();
        assert_eq!(
            (h.name.as_str(), h.state.as_str(), h.healthy),
            ("r1", "ready", true)
        );
        let r = client::status(&path).await.unwrap();
        assert_eq!(
            (r.name.as_str(), r.accel.as_str(), r.qemu_pid),
            ("r1", "tcg", None)
        );
        let e = client::query::<Report>(&path, "reboot").await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Refused(why) if why == "unknown request \"reboot\""),
            "{e:?}"
        );
        let e = client::attach(&path, Some("vfp")).await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Refused(why) if why.starts_with("no VM \"vfp\" here")),
            "{e:?}"
        );
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
