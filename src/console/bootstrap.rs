//! The bootstrap runner, the console's scripted user: a declarative sequence of steps (expect a
//! regex within a time-out, send a templated line, send the startup config line by line waiting
//! for the prompt, wait, press keys), and the answers an expect step types when other prompts
//! appear first. While it runs it holds the console's write side, so a human typing on
//! telnet cannot race it; readers still see everything. It retries from the first step when the
//! config says `retry`; it never touches qemu (key presses go through the hub to whoever
//! attached a keyboard, the supervisor): what a final failure leads to (restart qemu or give
//! up) is decided by the caller, with [`after_failure`].

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

/// Why a bootstrap run ended without finishing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// A step did not see what it waited for (on the last attempt).
    #[error("bootstrap step {step} ({what}) timed out after {timeout:?} on attempt {attempt}")]
    Timeout {
        step: usize,
        what: String,
        timeout: Duration,
        attempt: u32,
    },
    /// A `sendkey` step's keys could not be pressed.
    #[error("bootstrap step {step}: cannot press {keys}: {why}")]
    Key {
        step: usize,
        keys: String,
        why: String,
    },
    /// A step's pattern does not compile (config validates them, so this is a bug there).
    #[error("bootstrap step {step}: invalid pattern {pattern:?}")]
    Pattern {
        step: usize,
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// What becomes of qemu once the bootstrap has failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Kill qemu; the restart policy decides whether it comes back.
    RestartQemu,
    /// Kill qemu and do not restart it: the VM has failed.
    GiveUp,
}

/// The config's `bootstrap.on_timeout` applied to a failed run (retries are already spent
/// when a run fails, so `retry` ends like `fail`). A broken pattern never gets better by
/// restarting.
pub fn after_failure(e: &BootstrapError, on_timeout: BootAction) -> AfterFailure {
    match (e, on_timeout) {
        (BootstrapError::Timeout { .. }, BootAction::Restart) => AfterFailure::RestartQemu,
        (BootstrapError::Timeout { .. }, BootAction::Retry | BootAction::Fail)
        | (BootstrapError::Pattern { .. } | BootstrapError::Key { .. }, _) => AfterFailure::GiveUp,
    }
}

/// Whether a run that failed on `attempt` (from 1) starts again from the first step.
fn retries(e: &BootstrapError, on_timeout: BootAction, attempt: u32, attempts: u32) -> bool {
    matches!(e, BootstrapError::Timeout { .. })
        && on_timeout == BootAction::Retry
        && attempt < attempts
}

/// One step with its pattern compiled (once per run, not once per read).
enum Compiled<'a> {
    Expect {
        re: Regex,
        pattern: &'a str,
        timeout: Duration,
        /// Each answer's prompt and the template it types.
        answers: Vec<(Regex, &'a str)>,
    },
    Send(&'a str),
    SendConfig {
        re: Regex,
        prompt: &'a str,
        timeout: Duration,
    },
    Wait(Duration),
    SendKey(&'a [String]),
    /// A step whose `when` does not hold (a startup config there or not).
    Skip,
}

/// The steps ready to play; `has_config`: whether a startup config is there.
fn compile(steps: &[Step], has_config: bool) -> Result<Vec<Compiled<'_>>, BootstrapError> {
    let re = |step: usize, pattern: &str| {
        Regex::new(pattern).map_err(|source| BootstrapError::Pattern {
            step,
            pattern: pattern.into(),
            source,
        })
    };
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = match s {
                Step::When {
                    startup_config,
                    step,
                } if *startup_config == has_config => step,
                Step::When { .. } => return Ok(Compiled::Skip),
                s => s,
            };
            Ok(match s {
                Step::Expect {
                    pattern,
                    timeout,
                    answers,
                } => Compiled::Expect {
                    re: re(i, pattern)?,
                    pattern,
                    timeout: *timeout,
                    answers: answers
                        .iter()
                        .map(|a| Ok((re(i, &a.on)?, a.send.as_str())))
                        .collect::<Result<_, BootstrapError>>()?,
                },
                Step::Send(t) => Compiled::Send(t),
                Step::SendConfig { prompt, timeout } => Compiled::SendConfig {
                    re: re(i, prompt)?,
                    prompt,
                    timeout: *timeout,
                },
                Step::Wait(d) => Compiled::Wait(*d),
                Step::SendKey(k) => Compiled::SendKey(k),
                Step::When { .. } => Compiled::Skip,
            })
        })
        .collect()
}

/// The most console text a pattern is matched against: past it, the oldest half is dropped.
const WINDOW: usize = 16 * 1024;

/// Reads the console into a text buffer (at most [`WINDOW`] bytes) and matches regexes against
/// it. Everything that arrived is appended before the next search, so under a flood one search
/// covers many chunks: the cost per byte stays bounded however small the chunks are.
struct Reader {
    rx: broadcast::Receiver<std::sync::Arc<[u8]>>,
    buf: String,
    /// Searches so far (the tests count them).
    searches: usize,
}

impl Reader {
    fn new(rx: broadcast::Receiver<std::sync::Arc<[u8]>>) -> Self {
        Reader {
            rx,
            buf: String::new(),
            searches: 0,
        }
    }
    /// Waits until `re` matches what arrived since the last match; consumes up to the match.
    async fn expect(&mut self, re: &Regex, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.first_of(&[re], deadline).await.is_some()
    }
    /// Waits until one of `res` matches what arrived since the last match, and says which: the
    /// one whose match starts first (on a tie, the earlier in `res`). Consumes up to that match,
    /// so the same text never matches twice.
    async fn first_of(&mut self, res: &[&Regex], deadline: tokio::time::Instant) -> Option<usize> {
        loop {
            self.searches += 1;
            let first = res
                .iter()
                .enumerate()
                .filter_map(|(i, re)| re.find(&self.buf).map(|m| (m.start(), i, m.end())))
                .min();
            if let Some((_, i, end)) = first {
                self.buf.drain(..end);
                return Some(i);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(Ok(bytes)) => {
                    self.append(&bytes);
                    while let Ok(more) = self.rx.try_recv() {
                        self.append(&more);
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => return None,
            }
        }
    }
    fn append(&mut self, bytes: &[u8]) {
        self.buf
            .push_str(&strip_escapes(&String::from_utf8_lossy(bytes)));
        if self.buf.len() > WINDOW {
            let cut = self.buf.len() - WINDOW / 2;
            let cut = (cut..self.buf.len())
                .find(|&i| self.buf.is_char_boundary(i))
                .unwrap_or(0);
            self.buf.drain(..cut);
        }
    }
}

async fn send_line(hub: &Hub, line: &str) {
    let mut b = line.as_bytes().to_vec();
    b.push(b'\r');
    hub.write(&b).await;
}

/// Runs the bootstrap to the end, retrying per its policy. Holds the console while it runs.
pub async fn run(
    b: &Bootstrap,
    hub: &Hub,
    values: &Values,
    startup_config: Option<&str>,
) -> Result<(), BootstrapError> {
    let steps = compile(&b.steps, startup_config.is_some())?;
    let mut reader = Reader::new(hub.subscribe());
    let script = Script {
        steps: &steps,
        hub,
        values,
        startup_config,
    };
    hub.hold(true);
    let result = run_attempts(b, &script, &mut reader).await;
    hub.hold(false);
    result
}

/// One run's fixed inputs.
struct Script<'a> {
    steps: &'a [Compiled<'a>],
    hub: &'a Hub,
    values: &'a Values,
    startup_config: Option<&'a str>,
}

async fn run_attempts(
    b: &Bootstrap,
    script: &Script<'_>,
    reader: &mut Reader,
) -> Result<(), BootstrapError> {
    let mut attempt = 1;
    loop {
        match run_steps(script, reader, attempt).await {
            Ok(()) => return Ok(()),
            Err(e) if retries(&e, b.on_timeout, attempt, b.attempts) => {
                tracing::warn!(error = %e, "bootstrap: retrying from the first step");
                attempt += 1;
                // Provoke a fresh prompt.
                script.hub.write(b"\r").await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn run_steps(
    script: &Script<'_>,
    reader: &mut Reader,
    attempt: u32,
) -> Result<(), BootstrapError> {
    for (i, step) in script.steps.iter().enumerate() {
        script.hub.set_bootstrap_step(i);
        let fail = |what: String, timeout| BootstrapError::Timeout {
            step: i,
            what,
            timeout,
            attempt,
        };
        match step {
            Compiled::Expect {
                re,
                pattern,
                timeout,
                answers,
            } => {
                tracing::debug!(step = i, %pattern, "bootstrap: expect");
                if !expect_answering(script, reader, i, re, answers, *timeout).await {
                    return Err(fail(format!("expect {pattern:?}"), *timeout));
                }
            }
            Compiled::Send(t) => {
                let line = render(t, script.values);
                tracing::debug!(step = i, "bootstrap: send");
                send_line(script.hub, &line).await;
            }
            Compiled::SendConfig {
                re,
                prompt,
                timeout,
            } => {
                let Some(cfg) = script.startup_config else {
                    tracing::info!("bootstrap: no startup config to send");
                    continue;
                };
                let lines: Vec<&str> = cfg.lines().filter(|l| !l.trim().is_empty()).collect();
                tracing::info!(lines = lines.len(), "bootstrap: sending the startup config");
                for (n, l) in lines.iter().enumerate() {
                    send_line(script.hub, l).await;
                    if !reader.expect(re, *timeout).await {
                        return Err(fail(
                            format!("prompt {prompt:?} after startup config line {}", n + 1),
                            *timeout,
                        ));
                    }
                }
            }
            Compiled::Wait(d) => tokio::time::sleep(*d).await,
            Compiled::Skip => tracing::debug!(step = i, "bootstrap: skipped (its when)"),
            Compiled::SendKey(keys) => {
                tracing::info!(step = i, keys = %keys.join("-"), "bootstrap: sendkey");
                if let Err(why) = script.hub.press(keys).await {
                    return Err(BootstrapError::Key {
                        step: i,
                        keys: keys.join("-"),
                        why,
                    });
                }
            }
        }
    }
    tracing::info!(attempt, "bootstrap finished");
    Ok(())
}

/// Waits for `re` within `timeout`, typing an answer each time one of `answers` matches first.
async fn expect_answering(
    script: &Script<'_>,
    reader: &mut Reader,
    step: usize,
    re: &Regex,
    answers: &[(Regex, &str)],
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let res: Vec<&Regex> = std::iter::once(re)
        .chain(answers.iter().map(|(r, _)| r))
        .collect();
    loop {
        match reader.first_of(&res, deadline).await {
            None => return false,
            Some(0) => return true,
            Some(n) => {
                let (on, send) = &answers[n - 1];
                tracing::info!(step, answer = n - 1, on = %on, "bootstrap: answering a prompt");
                send_line(script.hub, &render(send, script.values)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> BootstrapError {
        BootstrapError::Timeout {
            step: 0,
            what: "expect \"x\"".into(),
            timeout: Duration::from_secs(2),
            attempt: 2,
        }
    }

    fn bad_pattern() -> BootstrapError {
        compile(
            &[Step::Expect {
                pattern: "(".into(),
                timeout: Duration::from_secs(1),
                answers: vec![],
            }],
            false,
        )
        .err()
        .unwrap()
    }

    #[test]
    fn a_timeout_names_the_step_the_wait_and_the_attempt() {
        assert_eq!(
            timeout().to_string(),
            "bootstrap step 0 (expect \"x\") timed out after 2s on attempt 2"
        );
        let e = bad_pattern();
        assert!(
            matches!(e, BootstrapError::Pattern { step: 0, .. }),
            "{e:?}"
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(!e.to_string().contains("regex parse error"), "{e}");
    }

    #[test]
    fn the_action_after_a_failure_follows_on_timeout() {
        use AfterFailure::*;
        use BootAction::*;
        let t = timeout();
        assert_eq!(after_failure(&t, Restart), RestartQemu);
        assert_eq!(after_failure(&t, Retry), GiveUp, "retries spent: like fail");
        assert_eq!(after_failure(&t, Fail), GiveUp);
        for a in [Retry, Restart, Fail] {
            assert_eq!(after_failure(&bad_pattern(), a), GiveUp);
        }
    }

    #[test]
    fn only_a_timeout_under_retry_with_attempts_left_retries() {
        let t = timeout();
        assert!(retries(&t, BootAction::Retry, 1, 2));
        assert!(!retries(&t, BootAction::Retry, 2, 2));
        assert!(!retries(&t, BootAction::Restart, 1, 5));
        assert!(!retries(&t, BootAction::Fail, 1, 5));
        assert!(!retries(&bad_pattern(), BootAction::Retry, 1, 5));
    }

    #[tokio::test]
    async fn expect_waits_for_the_pattern_and_consumes_up_to_it() {
        let (tx, rx) = broadcast::channel(16);
        let mut r = Reader::new(rx);
        let config = [
            Step::Expect {
                pattern: "login: $".into(),
                timeout: Duration::from_secs(1),
                answers: vec![],
            },
            Step::Expect {
                pattern: "# ".into(),
                timeout: Duration::from_secs(1),
                answers: vec![],
            },
        ];
        let steps = compile(&config, false).unwrap();
        let re = |i: usize| match &steps[i] {
            Compiled::Expect { re, .. } => re.clone(),
            _ => unreachable!(),
        };
        tx.send(std::sync::Arc::from(&b"boot\r\nr1 lo"[..]))
            .unwrap();
        tx.send(std::sync::Arc::from(&b"gin: \x1b[6n"[..])).unwrap();
        assert!(r.expect(&re(0), Duration::from_millis(200)).await);
        // The prompt before the match was consumed: "# " must be new.
        tx.send(std::sync::Arc::from(&b"r1# "[..])).unwrap();
        assert!(r.expect(&re(1), Duration::from_millis(200)).await);
        assert!(!r.expect(&re(1), Duration::from_millis(50)).await);
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("r1# \x1b[6n\r\n\x1b[1;32mok\x1b[0m"),
            "r1# \nok"
        );
    }

    #[tokio::test]
    async fn a_flood_of_small_chunks_is_searched_in_few_passes_within_a_bounded_buffer() {
        let (tx, rx) = broadcast::channel(1024);
        let mut r = Reader::new(rx);
        let re = Regex::new("login: $").unwrap();
        // 1000 chunks of 64 bytes without a newline, all arrived before the reader looks.
        for _ in 0..1000 {
            tx.send(std::sync::Arc::from(&[b'.'; 64][..])).unwrap();
        }
        assert!(!r.expect(&re, Duration::from_millis(50)).await);
        assert!(r.searches <= 3, "{} searches for 1000 chunks", r.searches);
        assert!(r.buf.len() <= WINDOW, "{}", r.buf.len());
        // The pattern after the flood is still found.
        tx.send(std::sync::Arc::from(&b"\nr1 login: "[..])).unwrap();
        assert!(r.expect(&re, Duration::from_millis(200)).await);
    }

    fn answering(answers: &[(&str, &str)]) -> Bootstrap {
        Bootstrap {
            steps: vec![
                Step::Expect {
                    pattern: "login: ".into(),
                    timeout: Duration::from_secs(5),
                    answers: answers
                        .iter()
                        .map(|(on, send)| crate::config::Answer {
                            on: (*on).into(),
                            send: (*send).into(),
                        })
                        .collect(),
                },
                Step::Send("{username}".into()),
            ],
            on_timeout: BootAction::Fail,
            attempts: 1,
        }
    }

    /// Plays `chunks` (each after a pause) as the guest against the runner; returns what the
    /// runner typed and how it ended.
    async fn play(b: Bootstrap, chunks: &[&str]) -> (String, Result<(), BootstrapError>) {
        play_with(b, chunks, None).await
    }

    async fn play_with(
        b: Bootstrap,
        chunks: &[&str],
        startup: Option<&'static str>,
    ) -> (String, Result<(), BootstrapError>) {
        let (hub, mut to_vm) = Hub::new();
        let mut values = Values::new();
        values.insert("username", "clab".to_string());
        values.insert("hostname", "r1".to_string());
        let h = hub.clone();
        let runner = tokio::spawn(async move { run(&b, &h, &values, startup).await });
        tokio::task::yield_now().await;
        for c in chunks {
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = hub.from_vm.send(std::sync::Arc::from(c.as_bytes()));
        }
        let result = tokio::time::timeout(Duration::from_secs(10), runner)
            .await
            .unwrap()
            .unwrap();
        let mut typed = Vec::new();
        while let Ok(b) = to_vm.try_recv() {
            typed.extend(b);
        }
        (String::from_utf8(typed).unwrap(), result)
    }

    #[tokio::test]
    async fn an_answer_is_typed_each_time_its_prompt_appears_and_the_wait_goes_on() {
        let b = answering(&[
            (r"\[yes/no\]:", "no"),
            ("Retry connection attempts", "yes {hostname}"),
        ]);
        let (typed, r) = play(
            b,
            &[
                "Would you like to enter the initial configuration dialog? [yes/no]: ",
                "\nRetry connection attempts? ",
                "\nfailed\nRetry connection attempts? ",
                "\nr1 login: ",
            ],
        )
        .await;
        r.unwrap();
        assert_eq!(typed, "no\ryes r1\ryes r1\rclab\r");
    }

    #[tokio::test]
    async fn an_answer_never_fires_twice_on_the_same_text_nor_after_the_expect() {
        // One prompt, then silence: one answer, then the step times out.
        let mut b = answering(&[(r"\[y/N/q\]", "q")]);
        if let Step::Expect { timeout, .. } = &mut b.steps[0] {
            *timeout = Duration::from_millis(400);
        }
        let (typed, r) = play(b, &["Run the wizard? [y/N/q] "]).await;
        assert_eq!(typed, "q\r");
        assert!(
            matches!(r, Err(BootstrapError::Timeout { step: 0, .. })),
            "{r:?}"
        );
        // The expect's match starts first: the prompt after it is the next step's business.
        let b = answering(&[(r"\[y/N/q\]", "q")]);
        let (typed, r) = play(b, &["r1 login: [y/N/q]"]).await;
        r.unwrap();
        assert_eq!(typed, "clab\r");
    }

    #[test]
    fn a_bad_answer_pattern_names_its_step() {
        let e = compile(&answering(&[("ok", "x"), ("(", "y")]).steps, false)
            .err()
            .unwrap();
        assert!(
            matches!(&e, BootstrapError::Pattern { step: 0, pattern, .. } if pattern == "("),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_sendkey_step_presses_through_the_keyboard_or_fails_without_one() {
        let b = Bootstrap {
            steps: vec![Step::SendKey(vec![
                "ctrl".into(),
                "alt".into(),
                "f2".into(),
            ])],
            on_timeout: BootAction::Fail,
            attempts: 1,
        };
        let (hub, _to_vm) = Hub::new();
        let e = run(&b, &hub, &Values::new(), None).await.unwrap_err();
        assert!(
            matches!(&e, BootstrapError::Key { step: 0, keys, .. } if keys == "ctrl-alt-f2"),
            "{e}"
        );
        assert_eq!(after_failure(&e, BootAction::Restart), AfterFailure::GiveUp);
        let mut presses = hub.key_presses();
        let keyboard = tokio::spawn(async move {
            let k = presses.recv().await.unwrap();
            let _ = k.done.send(Ok(()));
            k.keys
        });
        run(&b, &hub, &Values::new(), None).await.unwrap();
        assert_eq!(keyboard.await.unwrap(), ["ctrl", "alt", "f2"]);
    }

    #[tokio::test]
    async fn a_when_step_runs_only_with_or_only_without_a_startup_config() {
        let when = |startup_config, line: &str| Step::When {
            startup_config,
            step: Box::new(Step::Send(line.into())),
        };
        let b = Bootstrap {
            steps: vec![
                when(true, "with"),
                when(false, "without"),
                Step::Send("{hostname}".into()),
            ],
            on_timeout: BootAction::Fail,
            attempts: 1,
        };
        let (typed, r) = play_with(b.clone(), &[], Some("cfg")).await;
        assert_eq!((typed.as_str(), r.is_ok()), ("with\rr1\r", true));
        let (typed, r) = play_with(b, &[], None).await;
        assert_eq!((typed.as_str(), r.is_ok()), ("without\rr1\r", true));
    }
}
