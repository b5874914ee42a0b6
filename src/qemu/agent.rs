//! A qemu guest agent client (QGA: `qemu-ga` in the guest, behind the virtio-serial port
//! `org.qemu.guest_agent.0` that [`super::argv`] adds with `vm.clock = "guest-agent"`). It
//! speaks QMP's JSON, but with no greeting and no capabilities, and the agent may still hold
//! half a command or an answer meant for an earlier client: so every session starts with a
//! 0xFF byte (resets the agent's parser) and `guest-sync-delimited` with a fresh id, whose
//! answer follows a 0xFF byte; anything before it is dropped. Only what the launcher needs:
//! set the guest's wall clock and read it. Every wait is bounded. Policy (when to set the
//! clock, what a failure means) is the supervisor's.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one `guest-sync-delimited` may wait before it is sent again with a new id.
const SYNC_RETRY: Duration = Duration::from_secs(1);
/// How long a command may take (`guest-set-time` runs `hwclock` in the guest).
const COMMAND_WAIT: Duration = Duration::from_secs(15);
/// The longest answer line read.
const MAX_LINE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the guest agent socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest agent: no answer to guest-sync-delimited within {0:?} (is qemu-ga running in the guest?)")]
    NoSync(Duration),
    #[error("guest agent {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("guest agent {command}: no answer within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("guest agent {command}: unexpected answer {answer}")]
    Answer { command: String, answer: String },
    #[error("guest agent connection closed")]
    Closed,
    #[error("guest agent I/O")]
    Io(#[from] std::io::Error),
}

/// A synchronised session with the guest agent.
pub struct Agent {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

/// Now, in ns since the epoch (what `guest-set-time` takes).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Agent {
    /// Connects to the agent socket (qemu listens on it) and synchronises, both within `within`.
    pub async fn connect(path: &Path, within: Duration) -> Result<Agent, AgentError> {
        let deadline = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(_) if Instant::now() + Duration::from_millis(50) < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => {
                    return Err(AgentError::Connect {
                        path: path.into(),
                        source,
                    })
                }
            }
        };
        let (r, w) = stream.into_split();
        let mut a = Agent {
            r: BufReader::new(r),
            w,
        };
        let mut id: u64 = (now_ns() as u64 & 0x7fff_ffff) | 1;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::NoSync(within));
            }
            id = id.wrapping_add(1);
            if a.sync(id, left.min(SYNC_RETRY)).await? {
                return Ok(a);
            }
        }
    }

    /// One `guest-sync-delimited` round: true when the answer with `id` came within `wait`.
    async fn sync(&mut self, id: u64, wait: Duration) -> Result<bool, AgentError> {
        let cmd = json!({"execute": "guest-sync-delimited", "arguments": {"id": id}});
        let mut msg = vec![0xff];
        msg.extend(cmd.to_string().into_bytes());
        msg.push(b'\n');
        self.w.write_all(&msg).await?;
        let r = &mut self.r;
        let found = tokio::time::timeout(wait, async {
            loop {
                // Everything up to the delimiter is stale.
                while r.read_u8().await? != 0xff {}
                let line = read_line(r).await?;
                let v: Value = serde_json::from_str(line.trim()).unwrap_or(Value::Null);
                if v.get("return").and_then(Value::as_u64) == Some(id) {
                    return Ok::<(), std::io::Error>(());
                }
            }
        })
        .await;
        match found {
            Ok(Ok(())) => Ok(true),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(AgentError::Closed),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Ok(false),
        }
    }

    /// Runs `command`; its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        let mut cmd = json!({"execute": command});
        if let Some(a) = arguments {
            cmd["arguments"] = a;
        }
        self.w.write_all(format!("{cmd}\n").as_bytes()).await?;
        let r = &mut self.r;
        let answer = tokio::time::timeout(COMMAND_WAIT, async {
            loop {
                let line = read_line(r).await?;
                let v: Value = match serde_json::from_str(
                    line.trim_matches(|c: char| c.is_whitespace() || c == '\u{fffd}'),
                ) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v.get("return").is_some() || v.get("error").is_some() {
                    return Ok::<Value, std::io::Error>(v);
                }
            }
        })
        .await
        .map_err(|_| AgentError::Timeout {
            command: command.into(),
            timeout: COMMAND_WAIT,
        })?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => AgentError::Closed,
            _ => e.into(),
        })?;
        if let Some(e) = answer.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(AgentError::Command {
                command: command.into(),
                class: s("class"),
                desc: s("desc"),
            });
        }
        Ok(answer["return"].clone())
    }

    /// Sets the guest's wall clock to the host's, now (`guest-set-time`, which also writes it
    /// to the guest's RTC).
    pub async fn set_time_now(&mut self) -> Result<(), AgentError> {
        self.execute("guest-set-time", Some(json!({"time": now_ns()})))
            .await
            .map(|_| ())
    }

    /// The guest's wall clock, in ns since the epoch (`guest-get-time`).
    pub async fn get_time(&mut self) -> Result<i64, AgentError> {
        let v = self.execute("guest-get-time", None).await?;
        v.as_i64().ok_or_else(|| AgentError::Answer {
            command: "guest-get-time".into(),
            answer: v.to_string(),
        })
    }
}

/// One line, at most [`MAX_LINE`] bytes, decoded lossily; EOF is `UnexpectedEof`.
async fn read_line(r: &mut BufReader<OwnedReadHalf>) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};

    /// A fake agent (the real one runs in the Debian guest: tests/snapshot_clock.rs): it answers
    /// a sync only after junk and a stale delimited answer, ignores the first sync (as an agent
    /// still starting would), and keeps the time it was set to.
    fn fake_agent(
        listener: std::os::unix::net::UnixListener,
    ) -> std::thread::JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = std::io::BufReader::new(s);
            let (mut seen, mut clock, mut syncs) = (Vec::new(), 0i64, 0);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).unwrap() > 0 {
                let text = String::from_utf8_lossy(&line)
                    .trim_start_matches('\u{fffd}')
                    .trim()
                    .to_string();
                line.clear();
                let v: Value = serde_json::from_str(&text).unwrap();
                let cmd = v["execute"].as_str().unwrap().to_string();
                seen.push(cmd.clone());
                let out = match cmd.as_str() {
                    "guest-sync-delimited" => {
                        syncs += 1;
                        if syncs == 1 {
                            continue;
                        }
                        let id = &v["arguments"]["id"];
                        format!("{{\"return\": 7}}\n\u{ff}junk\u{ff}{{\"return\": 1}}\n\u{ff}{{\"return\": {id}}}\n")
                    }
                    "guest-set-time" => {
                        clock = v["arguments"]["time"].as_i64().unwrap();
                        "{\"return\": {}}\n".to_string()
                    }
                    "guest-get-time" => format!("{{\"return\": {clock}}}\n"),
                    _ => "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"no\"}}\n".into(),
                };
                // 0xFF as a raw byte, not UTF-8.
                let bytes: Vec<u8> = out
                    .chars()
                    .map(|c| if c == '\u{ff}' { 0xff } else { c as u8 })
                    .collect();
                w.write_all(&bytes).unwrap();
            }
            seen
        })
    }

    #[tokio::test]
    async fn syncs_past_stale_answers_then_sets_and_reads_the_clock() {
        let dir = std::env::temp_dir().join(format!("lt-clock-qga-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qga.sock");
        let _ = std::fs::remove_file(&path);
        let fake = fake_agent(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let mut a = Agent::connect(&path, Duration::from_secs(10))
            .await
            .unwrap();
        let before = now_ns();
        a.set_time_now().await.unwrap();
        let t = a.get_time().await.unwrap();
        assert!(t >= before && t <= now_ns(), "{t}");
        let e = a.execute("guest-shutdown", None).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest agent guest-shutdown: CommandNotFound: no"
        );
        drop(a);
        let seen = fake.join().unwrap();
        assert_eq!(
            seen,
            [
                "guest-sync-delimited",
                "guest-sync-delimited",
                "guest-set-time",
                "guest-get-time",
                "guest-shutdown"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_agent_that_never_answers_is_a_bounded_error() {
        let dir = std::env::temp_dir().join(format!("lt-clock-qga-mute-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qga.sock");
        let _ = std::fs::remove_file(&path);
        let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t0 = Instant::now();
        let e = Agent::connect(&path, Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, AgentError::NoSync(_)), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4));
        let e = Agent::connect(&dir.join("none.sock"), Duration::from_millis(200))
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("cannot connect to the guest agent socket"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
