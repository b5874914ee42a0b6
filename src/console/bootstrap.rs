//! The bootstrap runner, the console's scripted user: a declarative sequence of steps (expect a
//! regex within a time-out, send a templated line, send the startup config line by line waiting
//! for the prompt, wait). While it runs it holds the console's write side, so a human typing on
//! telnet cannot race it; readers still see everything. What a time-out leads to (retry, restart
//! qemu, fail) is returned to the supervisor.

use crate::config::{BootAction, Bootstrap, Step};
use crate::console::Hub;
use crate::template::{render, Values};
use regex::Regex;
use std::time::Duration;
use tokio::sync::broadcast;

/// Console text as a pattern should see it: no carriage returns, no terminal escape sequences
/// (a shell's prompt may be followed by a cursor-position query such as ESC [ 6 n).
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\r' => {}
            '\x1b' => {
                if it.peek() == Some(&'[') {
                    it.next();
                    // CSI: parameters, then one final byte in 0x40..=0x7e.
                    for c in it.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                } else {
                    it.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bootstrap step {step} ({what}) timed out after {timeout:?} on attempt {attempt}")]
pub struct StepTimeout {
    pub step: usize,
    pub what: String,
    pub timeout: Duration,
    pub attempt: u32,
    pub action: BootAction,
}

/// Reads the console into a text buffer and matches regexes against it.
struct Reader {
    rx: broadcast::Receiver<std::sync::Arc<[u8]>>,
    buf: String,
}

impl Reader {
    /// Waits until `re` matches what arrived since the last match; consumes up to the match.
    async fn expect(&mut self, re: &Regex, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(m) = re.find(&self.buf) {
                self.buf.drain(..m.end());
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return false,
                Ok(Ok(bytes)) => {
                    self.buf
                        .push_str(&strip_escapes(&String::from_utf8_lossy(&bytes)));
                    if self.buf.len() > 65536 {
                        let cut = self.buf.len() - 32768;
                        let cut = (cut..self.buf.len())
                            .find(|&i| self.buf.is_char_boundary(i))
                            .unwrap_or(0);
                        self.buf.drain(..cut);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return false,
            }
        }
    }
}

fn send_line(hub: &Hub, line: &str) {
    let mut b = line.as_bytes().to_vec();
    b.push(b'\r');
    hub.write(&b);
}

/// Runs the bootstrap to the end, retrying per its policy. Holds the console while it runs.
pub async fn run(
    b: &Bootstrap,
    hub: &Hub,
    values: &Values,
    startup_config: Option<&str>,
) -> Result<(), StepTimeout> {
    let mut reader = Reader {
        rx: hub.subscribe(),
        buf: String::new(),
    };
    hub.hold(true);
    let result = run_attempts(b, hub, values, startup_config, &mut reader).await;
    hub.hold(false);
    result
}

async fn run_attempts(
    b: &Bootstrap,
    hub: &Hub,
    values: &Values,
    startup_config: Option<&str>,
    reader: &mut Reader,
) -> Result<(), StepTimeout> {
    let mut attempt = 1;
    loop {
        match run_steps(b, hub, values, startup_config, reader, attempt).await {
            Ok(()) => return Ok(()),
            Err(e) if e.action == BootAction::Retry && attempt < b.attempts => {
                tracing::warn!(error = %e, "bootstrap: retrying from the first step");
                attempt += 1;
                // Provoke a fresh prompt.
                hub.write(b"\r");
            }
            Err(mut e) => {
                if e.action == BootAction::Retry {
                    e.action = BootAction::Fail;
                }
                return Err(e);
            }
        }
    }
}

async fn run_steps(
    b: &Bootstrap,
    hub: &Hub,
    values: &Values,
    startup_config: Option<&str>,
    reader: &mut Reader,
    attempt: u32,
) -> Result<(), StepTimeout> {
    for (i, step) in b.steps.iter().enumerate() {
        let fail = |what: String, timeout| StepTimeout {
            step: i,
            what,
            timeout,
            attempt,
            action: b.on_timeout,
        };
        match step {
            Step::Expect { pattern, timeout } => {
                let re = Regex::new(pattern).expect("validated in config");
                tracing::debug!(step = i, %pattern, "bootstrap: expect");
                if !reader.expect(&re, *timeout).await {
                    return Err(fail(format!("expect {pattern:?}"), *timeout));
                }
            }
            Step::Send(t) => {
                let line = render(t, values);
                tracing::debug!(step = i, "bootstrap: send");
                send_line(hub, &line);
            }
            Step::SendConfig { prompt, timeout } => {
                let Some(cfg) = startup_config else {
                    tracing::info!("bootstrap: no startup config to send");
                    continue;
                };
                let re = Regex::new(prompt).expect("validated in config");
                let lines: Vec<&str> = cfg.lines().filter(|l| !l.trim().is_empty()).collect();
                tracing::info!(lines = lines.len(), "bootstrap: sending the startup config");
                for (n, l) in lines.iter().enumerate() {
                    send_line(hub, l);
                    if !reader.expect(&re, *timeout).await {
                        return Err(fail(
                            format!("prompt {prompt:?} after startup config line {}", n + 1),
                            *timeout,
                        ));
                    }
                }
            }
            Step::Wait(d) => tokio::time::sleep(*d).await,
        }
    }
    tracing::info!(attempt, "bootstrap finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("r1# \x1b[6n\r\n\x1b[1;32mok\x1b[0m"),
            "r1# \nok"
        );
    }
}
