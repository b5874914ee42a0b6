//! The console dialog test harness: plays a transcript (images/<kind>/dialog/*.txt, written
//! from the vendor's documented prompts) as the guest against the real bootstrap runner
//! (console::start + console::bootstrap::run with the platform's launcher.toml) and checks
//! every line the launcher sends, in order, and that it sends nothing more.
//!
//! Transcript lines:
//! - `< text`: the guest prints `text` and a newline; `<< text`: without newline (a prompt);
//! - `> line`: the launcher must send exactly `line` (then CR) next, within 10 s (`>` alone:
//!   an empty line, as a retry sends);
//! - `k KEYS`: the launcher must press exactly `KEYS` (a `sendkey` step, e.g. `ctrl-alt-f2`)
//!   next, within 10 s;
//! - `~ SECONDS`: the guest stays silent that long (a slow prompt, a hang);
//! - `! timeouts SECONDS`: every bootstrap time-out is cut to at most that (retry paths);
//! - `! waits SECONDS`: every `wait` step is cut to at most that (a 15 s pause in seconds);
//! - `! fails`: the bootstrap must end with an error (retries used up), not succeed;
//! - `! no-startup-config`: played without the folder's startup-config.cfg;
//! - `! variant NAME`: the platform's variant NAME (as `--variant NAME`), not its default;
//! - `#` comments and blank lines are skipped.
//!
//! A transcript named `install*.txt` plays the platform's install phase instead: the `[install]`
//! steps of the config `launcher install` runs at build (build.conf's INSTALL_CONFIG, else
//! launcher.toml), as that command plays them (one attempt, a time-out fails).
//!
//! The values: hostname `router1`, USERNAME `clab`, PASSWORD `clab@123` (the environment
//! overrides the platform's defaults), user-mode management .15 via .2 of the platform's subnet
//! (10.0.0.0/24 by default); the startup config is images/<kind>/dialog/startup-config.cfg when
//! there is one.

use launcher::config::{self, Bootstrap, Overrides, Step};
use launcher::console::{self, bootstrap, LogFile};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The harness's temp dir, removed however the transcript ends.
struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Line {
    Print(String),
    Expect(String),
    Keys(String),
    Silent(Duration),
}

pub(crate) struct Transcript {
    lines: Vec<Line>,
    pub(crate) timeouts: Option<Duration>,
    waits: Option<Duration>,
    pub(crate) fails: bool,
    no_startup_config: bool,
    variant: Option<String>,
}

pub(crate) fn parse(text: &str) -> Transcript {
    let mut t = Transcript {
        lines: Vec::new(),
        timeouts: None,
        waits: None,
        fails: false,
        no_startup_config: false,
        variant: None,
    };
    for l in text.lines() {
        let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
        match op {
            "" | "#" => {}
            _ if op.starts_with('#') => {}
            "<" => t.lines.push(Line::Print(format!("{rest}\r\n"))),
            "<<" => t.lines.push(Line::Print(rest.to_string())),
            ">" => t.lines.push(Line::Expect(rest.to_string())),
            "k" => t.lines.push(Line::Keys(rest.to_string())),
            "~" => t
                .lines
                .push(Line::Silent(Duration::from_secs_f64(rest.parse().unwrap()))),
            "!" if rest == "fails" => t.fails = true,
            "!" if rest == "no-startup-config" => t.no_startup_config = true,
            "!" if rest.starts_with("variant ") => t.variant = Some(rest[8..].to_string()),
            "!" if rest.starts_with("waits ") => {
                let s = &rest["waits ".len()..];
                t.waits = Some(Duration::from_secs_f64(s.parse().unwrap()));
            }
            "!" => {
                let s = rest
                    .strip_prefix("timeouts ")
                    .expect("! timeouts N, ! waits N or ! fails");
                t.timeouts = Some(Duration::from_secs_f64(s.parse().unwrap()));
            }
            _ => panic!("transcript line {l:?}: starts with <, <<, >, k, ~, ! or #"),
        }
    }
    t
}

fn cut(b: &mut Bootstrap, max: Duration) {
    for s in &mut b.steps {
        match s {
            Step::Expect { timeout, .. } | Step::SendConfig { timeout, .. } => {
                *timeout = (*timeout).min(max)
            }
            _ => {}
        }
    }
}

fn cut_waits(b: &mut Bootstrap, max: Duration) {
    for s in &mut b.steps {
        if let Step::Wait(d) = s {
            *d = (*d).min(max);
        }
    }
}

/// Reads what the launcher sends up to the next CR (LF after it ignored): one line.
async fn sent_line(guest: &mut UnixStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = pending.iter().position(|&b| b == b'\r') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            let s = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            return Some(s.trim_start_matches('\n').to_string());
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), guest.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
}

/// Which steps a transcript plays: the run's bootstrap, or the install phase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Run,
    Install,
}

impl Phase {
    pub(crate) fn of(name: &str) -> Phase {
        if name.starts_with("install") {
            Phase::Install
        } else {
            Phase::Run
        }
    }
}

/// The config `launcher install` runs for `kind` at build: build.conf's INSTALL_CONFIG, else
/// launcher.toml.
pub fn install_config(kind: &str) -> std::path::PathBuf {
    let dir = super::catalogue::root().join("images").join(kind);
    let conf = std::fs::read_to_string(dir.join("build.conf")).unwrap_or_default();
    let file = conf
        .lines()
        .find_map(|l| l.strip_prefix("INSTALL_CONFIG="))
        .unwrap_or("launcher.toml");
    dir.join(file.trim_matches('\''))
}

/// Plays `transcript` for `kind`; Err says which line went wrong.
pub fn play(kind: &str, name: &str) -> Result<(), String> {
    let dir = super::catalogue::root()
        .join("images")
        .join(kind)
        .join("dialog");
    let config = match Phase::of(name) {
        Phase::Run => super::catalogue::config(kind),
        Phase::Install => install_config(kind),
    };
    play_in(&config, &dir, kind, name)
}

/// Plays transcript `name` of `dir` against the bootstrap of `config` (`kind` labels errors).
fn play_in(config: &Path, dir: &Path, kind: &str, name: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    let t = parse(&text);
    let startup = std::fs::read_to_string(dir.join("startup-config.cfg"))
        .ok()
        .filter(|_| !t.no_startup_config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(config, kind, name, t, startup))
}

pub(crate) async fn run(
    config: &Path,
    kind: &str,
    name: &str,
    t: Transcript,
    startup: Option<String>,
) -> Result<(), String> {
    let env: config::Env = [
        ("USERNAME", "clab"),
        ("PASSWORD", "clab@123"),
        ("HOSTNAME", "router1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let over = Overrides {
        variant: t.variant.clone(),
        ..Overrides::default()
    };
    let node = config::load(config, &env, &over).map_err(|e| format!("{kind}: {e}"))?;
    // The install phase: the node `launcher install` runs, its install VM's steps.
    let (node, vm) = match Phase::of(name) {
        Phase::Run => (node, 0),
        Phase::Install => {
            let vm = node
                .install
                .as_ref()
                .ok_or(format!("{kind}: {}: no [install]", config.display()))?
                .vm;
            (node.for_install().unwrap(), vm)
        }
    };
    let plan = &node.vms[vm];
    let mut b = plan
        .bootstrap
        .clone()
        .ok_or(format!("{kind}: no [bootstrap]"))?;
    if let Some(max) = t.timeouts {
        cut(&mut b, max);
    }
    if let Some(max) = t.waits {
        cut_waits(&mut b, max);
    }
    let tmp = std::env::temp_dir().join(format!(
        "lt-platforms-dialog-{kind}-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let _clean = RemoveOnDrop(tmp.clone());
    let sock = tmp.join("serial0.sock");
    let log = LogFile {
        path: tmp.join("console.log"),
        max_size: 0,
        keep: 1,
    };
    let (hub, _events) = console::start("dialog", &sock, &log, None, 0)
        .await
        .map_err(|e| e.to_string())?;
    let mut guest = UnixStream::connect(&sock)
        .await
        .map_err(|e| e.to_string())?;
    // Let the console accept the guest before the runner subscribes and writes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The launcher's own values for user-mode management (the platform's subnet), the hostname
    // fixed.
    let addrs = launcher::supervisor::MgmtAddrs::without_passthrough(&plan.management);
    let mut values = launcher::supervisor::template_values(plan, &addrs);
    values.insert("hostname", "router1".into());
    let mut keyboard = hub.key_presses();
    let runner =
        tokio::spawn(async move { bootstrap::run(&b, &hub, &values, startup.as_deref()).await });
    // The runner subscribes to the console when it starts: let it, before the guest prints.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pending = Vec::new();
    for (n, line) in t.lines.iter().enumerate() {
        let at = format!("{kind}/{name} step {}", n + 1);
        match line {
            Line::Print(s) => guest.write_all(s.as_bytes()).await.unwrap(),
            Line::Silent(d) => tokio::time::sleep(*d).await,
            Line::Keys(want) => {
                let press = tokio::time::timeout(Duration::from_secs(10), keyboard.recv()).await;
                let Ok(Some(press)) = press else {
                    return Err(format!(
                        "{at}: the launcher pressed no keys within 10 s, the transcript expects {want:?}"
                    ));
                };
                let got = press.keys.join("-");
                let _ = press.done.send(Ok(()));
                if &got != want {
                    return Err(format!(
                        "{at}: the launcher pressed {got:?}, the transcript expects {want:?}"
                    ));
                }
            }
            Line::Expect(want) => match sent_line(&mut guest, &mut pending).await {
                Some(got) if &got == want => {}
                Some(got) => {
                    return Err(format!(
                        "{at}: the launcher sent {got:?}, the transcript expects {want:?}"
                    ))
                }
                None => {
                    return Err(format!(
                    "{at}: the launcher sent nothing within 10 s, the transcript expects {want:?}"
                ))
                }
            },
        }
    }
    let result = tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .map_err(|_| format!("{kind}/{name}: the bootstrap did not end after the transcript"))?
        .unwrap();
    match (result, t.fails) {
        (Ok(()), false) | (Err(_), true) => {}
        (Ok(()), true) => {
            return Err(format!(
                "{kind}/{name}: the bootstrap succeeded, the transcript expects it to fail"
            ))
        }
        (Err(e), false) => return Err(format!("{kind}/{name}: the bootstrap failed: {e}")),
    }
    // Nothing more was sent after the last expected line.
    let extra = String::from_utf8_lossy(&pending).into_owned();
    let mut buf = [0u8; 1024];
    let more = match tokio::time::timeout(Duration::from_millis(300), guest.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    };
    if !(extra.trim().is_empty() && more.trim().is_empty()) {
        return Err(format!(
            "{kind}/{name}: the launcher sent more than the transcript: {:?}",
            extra + &more
        ));
    }
    Ok(())
}

/// Every transcript of every platform plays; each platform has at least a first-boot one and
/// a retry or error one.
#[test]
fn every_platform_dialog_plays_against_the_real_bootstrap_runner() {
    let mut failures = Vec::new();
    for kind in super::catalogue::kinds() {
        let dir = super::catalogue::root()
            .join("images")
            .join(&kind)
            .join("dialog");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".txt"))
            .collect();
        names.sort();
        assert!(
            names.len() >= 2,
            "{kind}: needs a first-boot and a retry/error transcript"
        );
        for n in names {
            if let Err(e) = play(&kind, &n) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_wrong_line_fails_the_transcript() {
    // The harness itself: a transcript expecting another line than the launcher sends fails.
    let dir = super::catalogue::root().join("images/arista_veos/dialog");
    let good = std::fs::read_to_string(dir.join("first-boot.txt")).unwrap();
    let bad = good.replacen("> admin", "> root", 1);
    assert_ne!(good, bad);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(run(
            &super::catalogue::config("arista_veos"),
            "arista_veos",
            "wrong",
            parse(&bad),
            None,
        ))
        .unwrap_err();
    assert!(
        err.contains("\"admin\"") && err.contains("\"root\""),
        "{err}"
    );
}

/// Conditional answers through the real runner: a fake NOS (tests/platforms/answers/, no
/// platform) asks first-boot questions before its login prompt, one of them twice; each gets
/// its answer once per appearance, and a question after which the login never comes fails.
#[test]
fn answers_reply_to_prompts_while_a_step_waits() {
    let dir = super::catalogue::root().join("tests/platforms/answers");
    let config = dir.join("launcher.toml");
    let mut failures = Vec::new();
    for name in ["yes-no.txt", "retry-twice.txt", "no-login.txt"] {
        if let Err(e) = play_in(&config, &dir, "answers", name) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
