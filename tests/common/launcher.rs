//! The launcher binary run inside a namespace: [`Running`] (killed with its qemu if a test fails
//! half way), `launcher status --json` and waits on it, the health file, and the launcher's
//! log read as structured data ([`Log`]): tests run it with `LAUNCHER_LOG_FORMAT=json` and
//! assert on messages and fields, never on the human log text.

use crate::common::{wait_for, Netns};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_launcher");

impl Netns {
    /// The launcher binary inside the namespace, with its control socket in our temp dir.
    pub fn launcher(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, LAUNCHER]).args(args);
        c.env("LAUNCHER_SOCKET", self.dir.join("control.sock"));
        c
    }

    /// The health file's line (`paths.health_file` of the test configs: DIR/health).
    pub fn health(&self) -> String {
        std::fs::read_to_string(self.dir.join("health"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// `launcher status --json` of the launcher in `ns`, parsed; None while it does not answer.
pub fn status(ns: &Netns) -> Option<Value> {
    let out = ns.launcher(&["status", "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits (bounded) until `launcher status` shows data links, every one wired (spare NIC slots,
/// whose ethN was absent at start, aside); returns the status. (With CLAB_INTFS the table is
/// empty until that many interfaces are there.)
pub fn wait_all_wired(ns: &Netns, within: Duration) -> Value {
    wait_for(within, "every data link wired", || {
        status(ns).filter(|s| {
            s["links"].as_array().is_some_and(|l| {
                !l.is_empty() && l.iter().all(|l| l["wired"] == true || l["spare"] == true)
            })
        })
    })
}

/// Waits (bounded) until `launcher status` shows state `want`; returns the status.
pub fn wait_state(ns: &Netns, want: &str, within: Duration) -> Value {
    wait_for(within, &format!("state {want}"), || {
        status(ns).filter(|s| s["state"] == want)
    })
}

/// `kill(pid, sig)`: whether the signal was delivered (0 probes that `pid` is alive).
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill takes no pointers; a stale pid only makes it fail.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// One line of the launcher's JSON log.
#[derive(Debug, Clone)]
pub struct Event {
    pub timestamp: String,
    pub level: String,
    pub message: String,
    /// The structured fields (`vm`, `from`, `to`, `reason`, `error`, ...), without `message`.
    pub fields: Map<String, Value>,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let mut fields = v.get("fields")?.as_object()?.clone();
        let message = match fields.remove("message")? {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Some(Event {
            timestamp: v["timestamp"].as_str().unwrap_or_default().to_string(),
            level: v["level"].as_str().unwrap_or_default().to_string(),
            message,
            fields,
        })
    }

    /// A field as text: a string as it is, anything else in JSON notation; "" when absent.
    pub fn field(&self, name: &str) -> String {
        match self.fields.get(name) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }

    /// The message is `message` and every `(name, value)` field is there with that value.
    pub fn is(&self, message: &str, fields: &[(&str, &str)]) -> bool {
        self.message == message && fields.iter().all(|(k, v)| self.field(k) == *v)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:>5} {}", self.timestamp, self.level, self.message)?;
        for k in self.fields.keys() {
            write!(f, " {k}={}", self.field(k))?;
        }
        Ok(())
    }
}

/// What a launcher printed: its log events in order, the other stdout lines (the console's
/// `label: text` lines for docker logs), and stderr (the final error report).
#[derive(Debug, Clone, Default)]
pub struct Log {
    pub events: Vec<Event>,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Log {
    /// The index of the first event `e.is(message, fields)`.
    pub fn position(&self, message: &str, fields: &[(&str, &str)]) -> Option<usize> {
        self.events.iter().position(|e| e.is(message, fields))
    }

    /// Like [`Log::position`], panicking (with the whole log) when there is no such event.
    pub fn at(&self, message: &str, fields: &[(&str, &str)]) -> usize {
        self.position(message, fields).unwrap_or_else(|| {
            panic!("no log event {message:?} with {fields:?} in the launcher's output:\n{self}")
        })
    }

    /// Whether some event `e.is(message, fields)`.
    pub fn has(&self, message: &str, fields: &[(&str, &str)]) -> bool {
        self.position(message, fields).is_some()
    }

    /// Whether some event satisfies `pred`.
    pub fn any(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(pred)
    }

    /// Whether a state transition to `to` (the node's `state` event, or with several VMs a
    /// `VM state` event) has a reason containing `reason`.
    pub fn transition(&self, to: &str, reason: &str) -> bool {
        self.any(|e| {
            (e.is("state", &[("to", to)]) || e.is("VM state", &[("to", to)]))
                && e.field("reason").contains(reason)
        })
    }

    /// Whether a stdout line that is not a log event (a console line) is exactly `line`.
    pub fn has_line(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
}

impl std::fmt::Display for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.events {
            writeln!(f, "{e}")?;
        }
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        write!(f, "{}", self.stderr)
    }
}

/// A launcher running in a namespace with its log as JSON; killed (with its qemu) if the test
/// fails half way.
pub struct Running {
    pub child: Option<Child>,
    /// Its stdout (log events and console lines).
    pub stdout: PathBuf,
    /// Its stderr (the final error report).
    pub stderr: PathBuf,
}

impl Running {
    pub fn start(ns: &Netns, config: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_under(ns, config, env, &[])
    }

    /// Like [`Running::start`], the launcher run by `wrapper` (a command that execs its
    /// arguments, as `prlimit --nofile=1024:1024` does, so the pid is still the launcher's).
    pub fn start_under(ns: &Netns, config: &Path, env: &[(&str, &str)], wrapper: &[&str]) -> Self {
        let stdout = ns.dir.join("launcher.out");
        let stderr = ns.dir.join("launcher.err");
        let mut c = ns.launcher(&["run", "--config", config.to_str().unwrap()]);
        if let Some((prog, args)) = wrapper.split_first() {
            let inner = c;
            c = Command::new(prog);
            c.args(args).arg(inner.get_program()).args(inner.get_args());
            for (k, v) in inner.get_envs() {
                c.env(k, v.expect("no removed variables"));
            }
        }
        c.stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .env("LAUNCHER_LOG_FORMAT", "json");
        for (k, v) in env {
            c.env(k, v);
        }
        Running {
            child: Some(c.spawn().unwrap()),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    /// Everything the launcher printed so far, parsed.
    pub fn log(&self) -> Log {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let mut log = Log {
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            ..Log::default()
        };
        for line in out.lines() {
            match Event::parse(line) {
                Some(e) => log.events.push(e),
                None => log.lines.push(line.to_string()),
            }
        }
        log
    }

    /// Everything the launcher printed so far, readable (for failure messages).
    pub fn output(&self) -> String {
        self.log().to_string()
    }

    /// Waits (bounded) for the launcher to exit on its own; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        wait_for(within, "the launcher to exit", || child.try_wait().unwrap()).code()
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn stop(&mut self, within: Duration) -> (i32, Duration) {
        let t = Instant::now();
        // `ip netns exec` execs the launcher, so this pid is the launcher itself.
        kill(self.pid(), libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let code = wait_for(within, "the launcher to exit after SIGTERM", || {
            child.try_wait().unwrap()
        })
        .code()
        .unwrap_or(-1);
        (code, t.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("launcher output:\n{}", self.output());
        }
    }
}
