//! The control server: listens on the Unix socket (mode 0600) and answers each connection's
//! one request line with one envelope: `status` (the report, with fresh link counters),
//! `health` (from the snapshot alone, no netlink), `console [VM]` (then the session), `reset
//! [VM]` (handed to the VMs, their answer passed back). It reads the snapshot and the link
//! table; it never changes state and never imports the supervisor.

use crate::console::Hub;
use crate::control::report::{Health, Report};
use crate::control::{reset, ControlError, Envelope, Resets};
use crate::net::{LinkTable, Netlink};
use crate::state::Shared;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// The most control clients served at once (a console session counts until it ends); one more
/// is answered `{"error": ...}` and closed.
pub const MAX_CLIENTS: usize = 32;
/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line, newline excluded.
pub const MAX_REQUEST: usize = 256;

/// What one server allows its clients (the constants above, smaller in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    clients: usize,
    timeout: Duration,
}

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
    resets: Resets,
}

/// Binds the socket and serves status, health, console sessions and resets until the task is
/// dropped.
pub fn serve(
    path: PathBuf,
    snap: Shared,
    table: Option<LinkTable>,
    nl: Option<Netlink>,
    (consoles, resets): (Consoles, Resets),
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    serve_with(
        path,
        Sources {
            snap,
            table,
            nl,
            consoles,
            resets,
        },
        Limits {
            clients: MAX_CLIENTS,
            timeout: REQUEST_TIMEOUT,
        },
    )
}

fn serve_with(
    path: PathBuf,
    sources: Sources,
    limits: Limits,
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
    Ok(tokio::spawn(accept_loop(listener, sources, limits)))
}

/// Accepts for ever. A failing accept (EMFILE, ENFILE, ENOMEM: it persists until something is
/// freed) is logged and backed off, from 10 ms doubling to 1 s, instead of spinning. Past
/// `limits.clients` clients at once, a new one is told so and closed.
async fn accept_loop(listener: UnixListener, sources: Sources, limits: Limits) {
    let mut backoff = Duration::from_millis(10);
    let slots = Arc::new(Semaphore::new(limits.clients));
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                backoff = Duration::from_millis(10);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(max = limits.clients, "control socket: client refused");
                    let why = format!("too many control clients ({} at once)", limits.clients);
                    tokio::spawn(refuse(conn, why));
                    continue;
                };
                let sources = sources.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(conn, sources, limits.timeout).await {
                        tracing::debug!(error = %e, "control client");
                    }
                    drop(slot);
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

/// How long a refused client's unread input is discarded before its socket is closed.
const DRAIN: Duration = Duration::from_secs(1);

/// Answers `{"error": why}` and closes, without serving. The client's unread input is read and
/// discarded for up to [`DRAIN`] first: closing a Unix socket with unread data resets it, and
/// the client would lose the answer.
async fn refuse(mut conn: UnixStream, why: String) {
    let line = Envelope::<()>::Error(why).encode();
    let _ = tokio::time::timeout(DRAIN, conn.write_all(line.as_bytes())).await;
    let _ = conn.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(DRAIN, async {
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// One request, parsed from its line (pure; what [`answer`] acts on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Health,
    /// `console [VM]`: the VM's name, None for the first.
    Console(Option<String>),
    /// `snapshot [FILE]`: save the node (fast start) to FILE, or containerlab's default.
    Snapshot(Option<String>),
    /// `reset [VM]`: the VM's name, none for every VM.
    Reset(Vec<String>),
    /// Any other verb, as given.
    Unknown(String),
}

impl Request {
    /// Parses a request line (without its newline): lossy UTF-8, trimmed, `VERB [ARG]`.
    pub fn parse(line: &[u8]) -> Request {
        let req = String::from_utf8_lossy(line);
        let req = req.trim();
        let (verb, arg) = match req.split_once(' ') {
            Some((v, a)) => (v, Some(a.trim())),
            None => (req, None),
        };
        match verb {
            "console" => Request::Console(arg.map(str::to_string)),
            "status" => Request::Status,
            "health" => Request::Health,
            "snapshot" => Request::Snapshot(arg.map(str::to_string)),
            "reset" => Request::Reset(arg.into_iter().map(str::to_string).collect()),
            other => Request::Unknown(other.to_string()),
        }
    }
}

/// Reads the request line byte by byte, so nothing after it is consumed (a console session
/// continues on the same stream). Err(why) when it is longer than [`MAX_REQUEST`].
async fn request_line(conn: &mut UnixStream) -> std::io::Result<Result<Request, String>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if conn.read(&mut b).await? != 1 || b[0] == b'\n' {
            break;
        }
        if line.len() == MAX_REQUEST {
            return Ok(Err(format!("request line longer than {MAX_REQUEST} bytes")));
        }
        line.push(b[0]);
    }
    Ok(Ok(Request::parse(&line)))
}

async fn answer(mut conn: UnixStream, src: Sources, timeout: Duration) -> std::io::Result<()> {
    let req = match tokio::time::timeout(timeout, request_line(&mut conn)).await {
        Ok(read) => read?,
        Err(_) => Err(format!("no request line within {timeout:?}")),
    };
    let req = match req {
        Ok(req) => req,
        Err(why) => {
            refuse(conn, why).await;
            return Ok(());
        }
    };
    let line = match req {
        Request::Console(vm) => return console(conn, &src.consoles, vm.as_deref()).await,
        Request::Status => Envelope::Ok(status(&src).await).encode(),
        Request::Snapshot(file) => return super::snapshot::answer(conn, file.as_deref()).await,
        Request::Health => Envelope::Ok(Health::of(&src.snap.lock().unwrap())).encode(),
        Request::Reset(vms) => {
            let which: Vec<&str> = vms.iter().map(String::as_str).collect();
            match reset::reset(&src.resets, &which).await {
                Ok(done) => {
                    tracing::info!(vms = ?done, "reset asked over the control socket");
                    Envelope::Ok(done).encode()
                }
                Err(why) => Envelope::<()>::Error(why).encode(),
            }
        }
        Request::Unknown(other) => {
            Envelope::<()>::Error(format!("unknown request {other:?}")).encode()
        }
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
    let mut report = Report::build(&snap, &rows, &live);
    report.log_lines_dropped = crate::logout::dropped();
    report
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
        let task = serve(path.clone(), shared, None, None, none()).unwrap();
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
        let e = client::reset(&path, Some("vfp")).await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Refused(why) if why.starts_with("no VM \"vfp\" here")),
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

    fn sources() -> Sources {
        let snap = Snapshot {
            name: "r1".into(),
            ..Default::default()
        };
        Sources {
            snap: Arc::new(std::sync::Mutex::new(snap)),
            table: None,
            nl: None,
            consoles: Arc::new(vec![]),
            resets: Arc::new(vec![]),
        }
    }

    fn none() -> (Consoles, Resets) {
        (Arc::new(vec![]), Arc::new(vec![]))
    }

    fn socket(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("launcher-ctl-{tag}-{}", std::process::id()));
        (dir.join("control.sock"), dir)
    }

    /// Everything the server sends on `conn` until it closes (bounded wait).
    async fn answer_of(conn: UnixStream) -> String {
        let (mut r, _w) = conn.into_split();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_to_string(&mut out))
            .await
            .expect("the server closes")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_silent_client_gets_an_error_after_the_time_out_and_holds_nobody() {
        let (path, dir) = socket("silent");
        let limits = Limits {
            clients: MAX_CLIENTS,
            timeout: Duration::from_millis(300),
        };
        let task = serve_with(path.clone(), sources(), limits).unwrap();
        let silent = UnixStream::connect(&path).await.unwrap();
        // Meanwhile others are answered.
        assert_eq!(client::health(&path).await.unwrap().name, "r1");
        let t = std::time::Instant::now();
        let got = answer_of(silent).await;
        assert_eq!(got, "{\"error\":\"no request line within 300ms\"}\n");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn ten_megabytes_without_a_newline_get_an_error_not_a_request() {
        let (path, dir) = socket("long");
        let task = serve(path.clone(), sources().snap, None, None, none()).unwrap();
        let (r, mut w) = UnixStream::connect(&path).await.unwrap().into_split();
        let writer = tokio::spawn(async move { w.write_all(&vec![b'x'; 10 << 20]).await });
        let mut got = String::new();
        let mut r = r;
        tokio::time::timeout(Duration::from_secs(5), r.read_to_string(&mut got))
            .await
            .expect("the server answers and closes")
            .unwrap();
        assert_eq!(
            got,
            format!("{{\"error\":\"request line longer than {MAX_REQUEST} bytes\"}}\n")
        );
        let _ = writer.await; // the rest is discarded (or the socket reset)
        assert_eq!(client::health(&path).await.unwrap().name, "r1");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn past_the_client_cap_a_client_is_told_why_and_a_freed_slot_serves_again() {
        let (path, dir) = socket("cap");
        let task = serve(path.clone(), sources().snap, None, None, none()).unwrap();
        let mut held = Vec::new();
        for _ in 0..MAX_CLIENTS {
            held.push(UnixStream::connect(&path).await.unwrap());
        }
        let refused = UnixStream::connect(&path).await.unwrap();
        assert_eq!(
            answer_of(refused).await,
            format!("{{\"error\":\"too many control clients ({MAX_CLIENTS} at once)\"}}\n")
        );
        let e = client::health(&path).await.unwrap_err();
        assert!(matches!(&e, ControlError::Refused(_)), "{e:?}");
        // One leaves: its slot serves the next client.
        let mut one = held.pop().unwrap();
        one.write_all(b"health\n").await.unwrap();
        assert!(answer_of(one).await.starts_with("{\"ok\""));
        let h = wait_health(&path).await;
        assert_eq!(h.name, "r1");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Health, retried briefly (a freed slot is released just after its answer is sent).
    async fn wait_health(path: &std::path::Path) -> Health {
        for _ in 0..100 {
            if let Ok(h) = client::health(path).await {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no slot freed");
    }
}
