//! The VM's serial console. The launcher listens on the serial socket and each qemu it starts
//! connects to it, so the console (and its log) outlives a qemu restart and no early boot output
//! is lost. Every line goes to stdout marked `console:` (docker logs) and to the log file; the
//! readiness pattern is watched here.

use std::io::Write;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot listen on serial socket {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open console log {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the console tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// The readiness pattern was seen (once per qemu run).
    ReadyPattern(String),
}

/// Starts the console owner: binds `socket`, appends to `log`, reports on the returned channel.
pub fn start(
    socket: &Path,
    log: &Path,
    ready: Option<String>,
) -> Result<mpsc::UnboundedReceiver<ConsoleEvent>, ConsoleError> {
    if let Some(d) = socket.parent() {
        std::fs::create_dir_all(d).map_err(|source| ConsoleError::Listen {
            path: socket.into(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|source| ConsoleError::Listen {
        path: socket.into(),
        source,
    })?;
    if let Some(d) = log.parent() {
        std::fs::create_dir_all(d).map_err(|source| ConsoleError::Log {
            path: log.into(),
            source,
        })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| ConsoleError::Log {
            path: log.into(),
            source,
        })?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tracing::debug!("qemu connected to the serial console");
            let mut seen_ready = false;
            let mut line = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let _ = file.write_all(&buf[..n]);
                for &b in &buf[..n] {
                    if b == b'\n' {
                        emit_line(&mut line, ready.as_deref(), &mut seen_ready, &tx);
                    } else if b != b'\r' {
                        line.push(b);
                    }
                }
                // A prompt has no newline: check the partial line for the pattern too.
                if let Some(p) = ready.as_deref() {
                    if !seen_ready && String::from_utf8_lossy(&line).contains(p) {
                        seen_ready = true;
                        let _ = tx.send(ConsoleEvent::ReadyPattern(p.to_string()));
                    }
                }
            }
            if !line.is_empty() {
                emit_line(&mut line, None, &mut seen_ready, &tx);
            }
            let _ = file.flush();
            tracing::debug!("qemu left the serial console");
        }
    });
    Ok(rx)
}

fn emit_line(
    line: &mut Vec<u8>,
    ready: Option<&str>,
    seen: &mut bool,
    tx: &mpsc::UnboundedSender<ConsoleEvent>,
) {
    let text = String::from_utf8_lossy(line);
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "console: {text}");
    }
    if let Some(p) = ready {
        if !*seen && text.contains(p) {
            *seen = true;
            let _ = tx.send(ConsoleEvent::ReadyPattern(p.to_string()));
        }
    }
    line.clear();
}
