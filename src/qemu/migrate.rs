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
const POLL: Duration = Duration::from_millis(10);
const CMD: Duration = Duration::from_secs(5);

impl Qmp {
    /// Starts writing the VM's state to `fd` (the write end of a pipe). The guest should be
    /// stopped first, so the stream and the disks are of one instant. qemu 7.2 caps a
    /// migration at 128 MiB/s by default, even of a stopped guest: the cap is lifted first.
    pub async fn migrate_to_fd(&self, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
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
            let v = self.execute("query-migrate", None, CMD).await?;
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
            let st = self.query_status().await?;
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
