//! QMP's migration commands, as the snapshot uses them: a stream to or from an fd the launcher
//! owns (handed over with `getfd`, never an `exec:` or file URI, so a sandboxed qemu that may
//! not spawn or open files can still save and restore), the bandwidth cap lifted, and a bounded
//! wait for the end. Policy (when to stop the guest, what the stream becomes) is the
//! supervisor's.

use super::qmp::{Qmp, QmpError};
use serde_json::{json, Value};
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// The name the stream's fd has inside qemu.
const FD_NAME: &str = "launcher-snapshot";
/// How often `query-migrate` is asked while a migration runs.
const POLL: Duration = Duration::from_millis(2);
const CMD: Duration = Duration::from_secs(5);

impl Qmp {
    /// The stream leaves out the RAM blocks mapped shared (the guest RAM: the launcher saves
    /// and fills it itself); both ends of a stream must say so.
    async fn ignore_shared(&self) -> Result<(), QmpError> {
        let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] });
        self.execute("migrate-set-capabilities", Some(caps), CMD)
            .await
            .map(drop)
    }

    /// Starts writing the VM's state to `fd` (the write end of a pipe). The guest should be
    /// stopped first, so the stream and the disks are of one instant. qemu 7.2 caps a
    /// migration at 128 MiB/s by default, even of a stopped guest: the cap is lifted first.
    pub async fn migrate_to_fd(&self, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.ignore_shared().await?;
        let unlimited = json!({ "max-bandwidth": i64::MAX / 2, "downtime-limit": 100_000 });
        self.execute("migrate-set-parameters", Some(unlimited), CMD)
            .await?;
        self.getfd(FD_NAME, fd).await?;
        let uri = json!({ "uri": format!("fd:{FD_NAME}") });
        self.execute("migrate", Some(uri), CMD).await.map(drop)
    }

    /// Starts reading the VM's state from `fd` (the read end of a pipe) into a qemu started
    /// with `-incoming defer`.
    pub async fn migrate_incoming_fd(&self, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.ignore_shared().await?;
        self.getfd(FD_NAME, fd).await?;
        let uri = json!({ "uri": format!("fd:{FD_NAME}") });
        self.execute("migrate-incoming", Some(uri), CMD)
            .await
            .map(drop)
    }

    /// Waits (bounded) until the outgoing migration has completed; a failed or cancelled one
    /// is an error with qemu's reason. Returns the bytes of the stream (qemu's count).
    pub async fn wait_migration(&self, within: Duration) -> Result<u64, QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // qemu answers nothing while it writes a stopped guest's RAM (the last phase holds
            // its main loop), which under load takes longer than one command's time-out: the
            // answer may take up to the whole wait.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.execute("query-migrate", None, left.max(CMD)).await?;
            match outcome(&v) {
                Outcome::Done => {
                    let ram = v.get("ram").and_then(|r| r.get("transferred"));
                    return Ok(ram.and_then(Value::as_u64).unwrap_or(0));
                }
                Outcome::Failed(why) => return Err(QmpError::Migration(why)),
                Outcome::Running if tokio::time::Instant::now() >= deadline => {
                    return Err(QmpError::Timeout {
                        command: "migration".into(),
                        timeout: within,
                    })
                }
                Outcome::Running => tokio::time::sleep(POLL).await,
            }
        }
    }
}

impl Qmp {
    /// Waits (bounded) until an incoming stream is loaded: the run state leaves `inmigrate`
    /// (a stream saved from a paused guest loads `paused`: the caller sends `cont`). qemu 7.2
    /// exits when a load fails, so that shows as the connection closing.
    pub async fn wait_incoming(&self, within: Duration) -> Result<String, QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Likewise while it loads: the answer may take up to the whole wait.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.execute("query-status", None, left.max(CMD)).await?;
            let st = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if st != "inmigrate" {
                return Ok(st);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(QmpError::Timeout {
                    command: "incoming migration".into(),
                    timeout: within,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Done,
    Failed(String),
}

/// What one `query-migrate` answer says about an outgoing migration (none yet: running).
fn outcome(v: &Value) -> Outcome {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "completed" => Outcome::Done,
        "failed" | "cancelled" => Outcome::Failed(
            v.get("error-desc")
                .and_then(Value::as_str)
                .map_or_else(|| status.to_string(), str::to_string),
        ),
        _ => Outcome::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

    /// A fake qemu (what arrives on the socket is the point): greets, answers every command,
    /// and takes the fd that comes with `getfd` (SCM_RIGHTS), writing "stream" into it.
    fn fake_qemu(listener: std::os::unix::net::UnixListener) -> Vec<String> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let (mut sock, _) = listener.accept().unwrap();
        sock.write_all(b"{\"QMP\":{\"version\":{},\"capabilities\":[]}}\n")
            .unwrap();
        let mut seen = Vec::new();
        let mut pending = Vec::new();
        loop {
            let mut buf = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                sock.as_fd().as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .unwrap();
            let n = msg.bytes;
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the fd was just received with SCM_RIGHTS: a new fd this test owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
                    std::fs::File::from(fd).write_all(b"stream").unwrap();
                }
            }
            if n == 0 {
                return seen;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let v: Value = serde_json::from_slice(&line).unwrap();
                seen.push(
                    v["execute"].as_str().unwrap_or_default().to_string()
                        + " "
                        + &v["arguments"].to_string(),
                );
                let reply = match v["execute"].as_str() {
                    Some("query-migrate") => {
                        json!({"return": {"status": "completed", "ram": {"transferred": 6}}, "id": v["id"]})
                    }
                    _ => json!({"return": {}, "id": v["id"]}),
                };
                sock.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_stream_goes_to_an_fd_handed_over_with_getfd_never_to_a_file_or_exec() {
        let dir = std::env::temp_dir().join(format!("lt-snapshot-getfd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fake = std::thread::spawn(move || fake_qemu(listener));
        let (qmp, _events) = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        qmp.migrate_to_fd(w.as_fd()).await.unwrap();
        drop(w);
        assert_eq!(qmp.wait_migration(Duration::from_secs(5)).await.unwrap(), 6);
        drop(qmp);
        let mut got = String::new();
        std::fs::File::from(r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "stream", "the fake wrote into the fd it was handed");
        let seen = fake.join().unwrap();
        assert_eq!(
            seen[1],
            r#"migrate-set-capabilities {"capabilities":[{"capability":"x-ignore-shared","state":true}]}"#,
            "the guest RAM (shared) is left out of the stream"
        );
        assert_eq!(
            seen[2].split(' ').next(),
            Some("migrate-set-parameters"),
            "{seen:?}"
        );
        assert_eq!(seen[3], r#"getfd {"fdname":"launcher-snapshot"}"#);
        assert_eq!(seen[4], r#"migrate {"uri":"fd:launcher-snapshot"}"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// qemu holds its main loop while it writes a stopped guest's last RAM: QMP answers late
    /// (seen as "QMP query-migrate: no answer within 5s" saving a 1 GiB guest under load).
    #[tokio::test]
    async fn a_late_answer_within_the_whole_wait_is_no_failure() {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!("lt-clock-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.write_all(b"{\"QMP\":{\"version\":{},\"capabilities\":[]}}\n")
                .unwrap();
            let r = std::io::BufReader::new(sock.try_clone().unwrap());
            for line in r.lines() {
                let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
                let reply = match v["execute"].as_str() {
                    Some("query-migrate") => {
                        std::thread::sleep(CMD + Duration::from_secs(1));
                        json!({"return": {"status": "completed", "ram": {"transferred": 6}}, "id": v["id"]})
                    }
                    Some("query-status") => {
                        std::thread::sleep(CMD + Duration::from_secs(1));
                        json!({"return": {"status": "paused"}, "id": v["id"]})
                    }
                    _ => json!({"return": {}, "id": v["id"]}),
                };
                sock.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
        });
        let (qmp, _events) = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let within = Duration::from_secs(30);
        assert_eq!(qmp.wait_migration(within).await.unwrap(), 6);
        assert_eq!(qmp.wait_incoming(within).await.unwrap(), "paused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn query_migrate_answers_are_read_tolerantly() {
        assert_eq!(outcome(&json!({"status": "active"})), Outcome::Running);
        assert_eq!(outcome(&json!({"status": "setup"})), Outcome::Running);
        assert_eq!(outcome(&json!({"status": "device"})), Outcome::Running);
        assert_eq!(outcome(&json!({"status": "completed"})), Outcome::Done);
        assert_eq!(outcome(&json!({})), Outcome::Running);
        assert_eq!(
            outcome(&json!({"status": "failed", "error-desc": "Unable to write to socket"})),
            Outcome::Failed("Unable to write to socket".into())
        );
        assert_eq!(
            outcome(&json!({"status": "cancelled"})),
            Outcome::Failed("cancelled".into())
        );
    }
}
