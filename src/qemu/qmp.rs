//! A tolerant QMP client: connect with retry, negotiate capabilities, run commands, and turn
//! events into [`Event`]s. Decoding is done on plain JSON values: unknown events, unknown enum
//! values and extra fields from a newer qemu are logged and ignored, never fatal. Lines are read
//! as bytes, capped at [`MAX_LINE`] (a longer one is skipped with a warning) and decoded
//! lossily, so neither invalid UTF-8 nor a runaway line ends the connection. Policy (what an
//! event means for the VM, reconnecting) is the supervisor's.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP socket {path}: no greeting ({why})")]
    Greeting { path: PathBuf, why: String },
    #[error("QMP socket {path}: cannot read the greeting")]
    GreetingRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP {command}: no answer within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("QMP write")]
    Io(#[from] std::io::Error),
}

/// The events the launcher acts on; everything else is `Other` with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Shutdown { guest: bool, reason: String },
    Powerdown,
    Reset { guest: bool },
    Stop,
    Resume,
    GuestPanicked { action: String },
    Other(String),
}

/// What one line from qemu is.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Greeting,
    Return {
        id: Option<u64>,
        value: Value,
    },
    Error {
        id: Option<u64>,
        class: String,
        desc: String,
    },
    Event(Event),
    /// Valid JSON we do not understand, or not JSON at all.
    Unknown(String),
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Decodes one QMP line. Never fails: the worst case is `Unknown`.
pub fn decode(line: &str) -> Incoming {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return Incoming::Unknown(line.chars().take(200).collect()),
    };
    let id = v.get("id").and_then(Value::as_u64);
    if v.get("QMP").is_some() {
        return Incoming::Greeting;
    }
    if let Some(r) = v.get("return") {
        return Incoming::Return {
            id,
            value: r.clone(),
        };
    }
    if let Some(e) = v.get("error") {
        return Incoming::Error {
            id,
            class: s(e, "class"),
            desc: s(e, "desc"),
        };
    }
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        let guest = data.get("guest").and_then(Value::as_bool).unwrap_or(false);
        return Incoming::Event(match name {
            "SHUTDOWN" => Event::Shutdown {
                guest,
                reason: s(&data, "reason"),
            },
            "POWERDOWN" => Event::Powerdown,
            "RESET" => Event::Reset { guest },
            "STOP" => Event::Stop,
            "RESUME" => Event::Resume,
            "GUEST_PANICKED" => Event::GuestPanicked {
                action: s(&data, "action"),
            },
            other => Event::Other(other.to_string()),
        });
    }
    Incoming::Unknown(line.chars().take(200).collect())
}

/// The longest QMP line read (a `query-qmp-schema` answer is a few hundred KiB); a longer one
/// is skipped.
pub const MAX_LINE: usize = 8 << 20;

/// One line read from qemu.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line (without its newline), decoded lossily.
    Text(String),
    /// A line over [`MAX_LINE`] bytes, skipped: its length.
    TooLong(usize),
    /// The connection closed.
    Eof,
}

/// Reads one line of at most `max` bytes as bytes. A longer line is consumed to its end and
/// reported as [`Line::TooLong`]; invalid UTF-8 becomes U+FFFD. A last line without a newline
/// still counts.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut len = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(match len {
                0 => Line::Eof,
                n if n > max => Line::TooLong(n),
                _ => Line::Text(String::from_utf8_lossy(&buf).into_owned()),
            });
        }
        let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let data = &chunk[..if done { used - 1 } else { used }];
        len += data.len();
        if len <= max {
            buf.extend_from_slice(data);
        } else {
            buf = Vec::new();
        }
        r.consume(used);
        if done {
            if len > max {
                return Ok(Line::TooLong(len));
            }
            if std::str::from_utf8(&buf).is_err() {
                tracing::warn!(bytes = len, "QMP line is not UTF-8; decoded lossily");
            }
            return Ok(Line::Text(String::from_utf8_lossy(&buf).into_owned()));
        }
    }
}

/// The next line that is not over-long (those are skipped with a warning); None at the end.
async fn next_line<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<String>> {
    loop {
        match read_line(r, MAX_LINE).await? {
            Line::Text(t) => return Ok(Some(t)),
            Line::TooLong(n) => {
                tracing::warn!(bytes = n, max = MAX_LINE, "over-long QMP line skipped")
            }
            Line::Eof => return Ok(None),
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, (String, String)>>>>>;

/// A negotiated QMP connection.
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: std::sync::atomic::AtomicU64,
}

impl Qmp {
    /// Connects (retrying until `within` has passed: qemu creates the socket a little after
    /// exec), reads the greeting, negotiates. Events arrive on the returned receiver, which
    /// closes when the connection does.
    pub async fn connect(
        path: &Path,
        within: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.into(),
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (r, w) = stream.into_split();
        let mut lines = BufReader::new(r);
        let greeting = tokio::time::timeout(Duration::from_secs(10), next_line(&mut lines)).await;
        match greeting {
            Ok(Ok(Some(l))) if decode(&l) == Incoming::Greeting => {}
            Ok(Ok(Some(l))) => {
                return Err(QmpError::Greeting {
                    path: path.into(),
                    why: format!("got {l:?}"),
                })
            }
            Ok(Ok(None)) => {
                return Err(QmpError::Greeting {
                    path: path.into(),
                    why: "closed".into(),
                })
            }
            Ok(Err(source)) => {
                return Err(QmpError::GreetingRead {
                    path: path.into(),
                    source,
                })
            }
            Err(_) => {
                return Err(QmpError::Greeting {
                    path: path.into(),
                    why: "timed out".into(),
                })
            }
        }
        let pending: Pending = Default::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let p2 = pending.clone();
        tokio::spawn(async move {
            loop {
                let line = match next_line(&mut lines).await {
                    Ok(Some(l)) => l,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "QMP read failed");
                        break;
                    }
                };
                match decode(&line) {
                    Incoming::Return {
                        id: Some(id),
                        value,
                    } => {
                        if let Some(w) = p2.lock().unwrap().remove(&id) {
                            let _ = w.send(Ok(value));
                        }
                    }
                    Incoming::Error {
                        id: Some(id),
                        class,
                        desc,
                    } => {
                        if let Some(w) = p2.lock().unwrap().remove(&id) {
                            let _ = w.send(Err((class, desc)));
                        }
                    }
                    Incoming::Event(Event::Other(name)) => {
                        tracing::debug!(event = %name, "QMP event ignored")
                    }
                    Incoming::Event(e) => {
                        let _ = tx.send(e);
                    }
                    other => tracing::debug!(?other, "QMP message ignored"),
                }
            }
            // Connection gone: fail every waiter.
            p2.lock().unwrap().clear();
        });
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(w),
            pending,
            next_id: 1.into(),
        };
        qmp.execute("qmp_capabilities", None, Duration::from_secs(10))
            .await?;
        Ok((qmp, rx))
    }

    /// Runs one command and waits (bounded) for its answer.
    pub async fn execute(
        &self,
        command: &str,
        args: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.send(command, args, None, timeout).await
    }

    /// `getfd`: hands qemu a copy of `fd` (SCM_RIGHTS on the QMP socket) under `name`, for a
    /// later `migrate fd:NAME` or `migrate-incoming fd:NAME`. qemu never opens a file itself.
    pub async fn getfd(&self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        let args = json!({ "fdname": name });
        self.send("getfd", Some(args), Some(fd), Duration::from_secs(5))
            .await
            .map(drop)
    }

    async fn send(
        &self,
        command: &str,
        args: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            let sent = match fd {
                Some(fd) => send_with_fd(&mut w, line.as_bytes(), fd).await,
                None => w.write_all(line.as_bytes()).await,
            };
            if let Err(e) = sent {
                self.pending.lock().unwrap().remove(&id);
                return Err(e.into());
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(QmpError::Timeout {
                    command: command.into(),
                    timeout,
                })
            }
            Ok(Err(_)) => Err(QmpError::Closed),
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err((class, desc)))) => Err(QmpError::Command {
                command: command.into(),
                class,
                desc,
            }),
        }
    }

    /// `set_link`: the NIC behind netdev `name` shows its link up or down to the guest (a
    /// cable plugged in or pulled).
    pub async fn set_link(&self, name: &str, up: bool) -> Result<(), QmpError> {
        let args = json!({ "name": name, "up": up });
        (self
            .execute("set_link", Some(args), Duration::from_secs(5))
            .await)
            .map(|_| ())
    }

    /// `query-status`: the run state as qemu names it ("running", "paused", ... or anything
    /// a newer qemu invents).
    pub async fn query_status(&self) -> Result<String, QmpError> {
        let v = self
            .execute("query-status", None, Duration::from_secs(5))
            .await?;
        Ok(s(&v, "status"))
    }
}

/// Writes `line` with `fd` attached (SCM_RIGHTS on its first byte), the rest plainly.
async fn send_with_fd(
    w: &mut OwnedWriteHalf,
    line: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let sock: &UnixStream = w.as_ref();
    let fds = [fd.as_raw_fd()];
    let sent = loop {
        sock.writable().await?;
        let r = sock.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(line)];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(std::io::Error::from)
        });
        match r {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    w.write_all(&line[sent..]).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn connect_error_keeps_its_cause_as_source() {
        use std::error::Error;
        let e = Qmp::connect(Path::new("/nonexistent/qmp.sock"), Duration::ZERO)
            .await
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "cannot connect to QMP socket /nonexistent/qmp.sock"
        );
        assert!(e.source().is_some());
    }

    #[test]
    fn decode_is_tolerant() {
        assert_eq!(
            decode(r#"{"QMP":{"version":{},"capabilities":["oob","future"]}}"#),
            Incoming::Greeting
        );
        assert_eq!(
            decode(
                r#"{"timestamp":{"seconds":1},"event":"SHUTDOWN","data":{"guest":true,"reason":"guest-shutdown","new-field":[1]}}"#
            ),
            Incoming::Event(Event::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            })
        );
        assert_eq!(
            decode(r#"{"event":"SHUTDOWN","data":{"guest":false,"reason":"reason-from-qemu-12"}}"#),
            Incoming::Event(Event::Shutdown {
                guest: false,
                reason: "reason-from-qemu-12".into()
            })
        );
        assert_eq!(
            decode(r#"{"event":"BRAND_NEW_EVENT","data":{"x":1}}"#),
            Incoming::Event(Event::Other("BRAND_NEW_EVENT".into()))
        );
        assert_eq!(
            decode(r#"{"return":{"status":"hibernating","running":false,"extra":1},"id":3}"#),
            Incoming::Return {
                id: Some(3),
                value: json!({"status":"hibernating","running":false,"extra":1})
            }
        );
        assert!(matches!(decode("not json"), Incoming::Unknown(_)));
        assert!(matches!(
            decode(r#"{"surprise":true}"#),
            Incoming::Unknown(_)
        ));
        assert!(matches!(decode(r#"[1,2]"#), Incoming::Unknown(_)));
    }

    /// A fresh folder and the QMP socket a fake qemu listens on there.
    fn fake_qmp_socket(name: &str) -> (std::path::PathBuf, std::path::PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("launcher-qmp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    /// A fake qemu that greets with unknown capabilities, floods unknown events and fields and
    /// garbage, and answers with an enum value no qemu has: the client keeps working.
    #[tokio::test(flavor = "current_thread")]
    async fn survives_a_fake_qemu_from_the_future() {
        let (dir, path, listener) = fake_qmp_socket("future");
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\":{\"version\":{\"qemu\":{\"major\":99}},\"capabilities\":[\"oob\",\"teleport\"]}}\n").await.unwrap();
            while let Some(l) = lines.next_line().await.unwrap() {
                let v: Value = serde_json::from_str(&l).unwrap();
                let id = v["id"].clone();
                w.write_all(b"{\"event\":\"QUANTUM_FLUX\",\"data\":{\"level\":11}}\ngarbage line\n{\"unexpected\":1}\n").await.unwrap();
                let reply = match v["execute"].as_str().unwrap() {
                    "qmp_capabilities" => json!({"return":{}, "id": id}),
                    "query-status" => {
                        json!({"return":{"status":"warp-speed","running":true,"singlestep":false,"new":{}}, "id": id})
                    }
                    _ => {
                        json!({"error":{"class":"CommandNotFound","desc":"nope","extra":1}, "id": id})
                    }
                };
                w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
                w.write_all(b"{\"event\":\"RESET\",\"data\":{\"guest\":true,\"reason\":\"new-reason\"},\"timestamp\":{}}\n").await.unwrap();
            }
        });
        let (qmp, mut events) = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!(qmp.query_status().await.unwrap(), "warp-speed");
        let err = qmp
            .execute("frobnicate", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
        assert_eq!(events.recv().await, Some(Event::Reset { guest: true }));
        drop(qmp);
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn lines_are_read_as_capped_bytes_and_decoded_lossily() {
        let input: &[u8] = b"ok\n\xff\xfe{}\n0123456789ABC\nlast";
        let mut r = BufReader::with_capacity(4, input);
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Text("ok".into())
        );
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Text("\u{fffd}\u{fffd}{}".into())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::TooLong(13));
        assert_eq!(
            read_line(&mut r, 10).await.unwrap(),
            Line::Text("last".into())
        );
        assert_eq!(read_line(&mut r, 10).await.unwrap(), Line::Eof);
    }

    /// A hostile QMP peer (a fake qemu: the misbehaviour is the point) sends a line of invalid
    /// UTF-8 and a line over the cap: both are skipped, the connection lives on and the event
    /// after them arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn invalid_utf8_and_an_over_long_line_do_not_end_the_client() {
        let (dir, path, listener) = fake_qmp_socket("bytes");
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\":{\"version\":{},\"capabilities\":[]}}\n")
                .await
                .unwrap();
            let l = r.next_line().await.unwrap().unwrap();
            let v: Value = serde_json::from_str(&l).unwrap();
            let reply = json!({"return": {}, "id": v["id"]});
            w.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            w.write_all(b"{\"event\":\"STOP\",\"data\":{\"x\":\"\xff\xc3\x28\"}}\n")
                .await
                .unwrap();
            let mut long = vec![b'x'; MAX_LINE + 100];
            long.push(b'\n');
            w.write_all(&long).await.unwrap();
            w.write_all(b"{\"event\":\"RESET\",\"data\":{\"guest\":true}}\n")
                .await
                .unwrap();
            // Held open until the client has read everything.
            let _ = r.next_line().await;
        });
        let (qmp, mut events) = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the event after the bad lines");
        // The invalid UTF-8 sits in a string value: lossily decoded, the STOP still counts.
        assert_eq!(got, Some(Event::Stop));
        let got = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the event after the over-long line");
        assert_eq!(got, Some(Event::Reset { guest: true }));
        drop(qmp);
        server.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
