//! The telnet side of a console: the listener (vrnetlab's port 5000 and the extra serial ports'
//! ports) and [`TelnetFilter`], which turns a telnet client's bytes into what a serial line
//! expects. It never talks to qemu: it hands clients to the [`Hub`], which owns the serial line.

use crate::console::Hub;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The most telnet clients one console serves at once; one more is told so in a line and closed.
pub const MAX_CLIENTS: usize = 16;

/// Telnet command bytes (RFC 854).
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DONT: u8 = 254;

/// Where the filter is in the telnet byte stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    /// Plain data.
    #[default]
    Data,
    /// After IAC: a command byte follows.
    Command,
    /// After IAC WILL/WONT/DO/DONT: the option byte follows.
    Option,
    /// Inside IAC SB ... IAC SE: skipped.
    Subnegotiation,
    /// IAC inside a subnegotiation: SE ends it.
    SubnegotiationCommand,
    /// After CR: a NUL or LF that follows is dropped (CR NUL and CR LF both mean CR).
    AfterCr,
}

/// Strips telnet negotiation from client input and turns CR NUL / CR LF into CR.
#[derive(Debug, Default)]
pub struct TelnetFilter {
    state: State,
}

impl TelnetFilter {
    /// The data bytes in `input`; negotiation split across calls is carried over.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            self.state = match (self.state, b) {
                (State::Data | State::AfterCr, IAC) => State::Command,
                (State::AfterCr, 0 | b'\n') => State::Data,
                (State::Data | State::AfterCr, b'\r') => {
                    out.push(b'\r');
                    State::AfterCr
                }
                (State::Data | State::AfterCr, b) => {
                    out.push(b);
                    State::Data
                }
                (State::Command, IAC) => {
                    out.push(IAC);
                    State::Data
                }
                (State::Command, WILL..=DONT) => State::Option,
                (State::Command, SB) => State::Subnegotiation,
                (State::Command | State::Option, _) => State::Data,
                (State::Subnegotiation, IAC) => State::SubnegotiationCommand,
                (State::Subnegotiation, _) => State::Subnegotiation,
                (State::SubnegotiationCommand, SE) => State::Data,
                (State::SubnegotiationCommand, _) => State::Subnegotiation,
            };
        }
        out
    }
}

/// How long an accept loop pauses after a failed accept (EMFILE and the like would otherwise
/// make it spin); doubled on each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The pause after `failures` failed accepts in a row (`failures` >= 1).
pub(crate) fn accept_backoff(failures: u32) -> Duration {
    ACCEPT_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(ACCEPT_BACKOFF_MAX)
}

/// Serves telnet clients on `listener` for the launcher's life, each attached to `hub`, at
/// most [`MAX_CLIENTS`] at once.
pub(crate) async fn serve(listener: TcpListener, hub: Hub) {
    let mut failures = 0;
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => {
                failures = 0;
                c
            }
            Err(error) => {
                failures += 1;
                let pause = accept_backoff(failures);
                tracing::warn!(%error, ?pause, "telnet console: accept failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let hub = hub.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_CLIENTS, "telnet console client refused");
            tokio::spawn(refuse(conn));
            continue;
        };
        tracing::info!(%peer, "telnet console client attached");
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            hub.attach(conn, true).await;
            drop(slot);
            tracing::info!(%peer, "telnet console client left");
        });
    }
}

/// Tells a client past the cap why, then closes. What it sent meanwhile is discarded for up to
/// a second first (closing with unread input resets the connection and the line would be lost).
async fn refuse(mut conn: tokio::net::TcpStream) {
    let line = format!("too many console clients ({MAX_CLIENTS} attached); try again later\r\n");
    let second = Duration::from_secs(1);
    let _ = tokio::time::timeout(second, conn.write_all(line.as_bytes())).await;
    let _ = conn.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(second, async {
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = TelnetFilter::default();
        chunks.iter().flat_map(|c| f.feed(c)).collect()
    }

    #[test]
    fn telnet_negotiation_is_stripped() {
        // IAC DO ECHO, "ls", CR NUL, IAC SB ... IAC SE, IAC IAC, "x", CR LF
        let input = [
            255, 253, 1, b'l', b's', b'\r', 0, 255, 250, 24, 1, 255, 240, 255, 255, b'x', b'\r',
            b'\n',
        ];
        assert_eq!(fed(&[&input]), vec![b'l', b's', b'\r', 255, b'x', b'\r']);
        // Split across reads.
        assert_eq!(
            fed(&[&[b'a', 255], &[251], &[3, b'b', b'\r'], &[0, b'c']]),
            b"ab\rc"
        );
    }

    #[test]
    fn every_state_is_left_the_documented_way() {
        // Data: bytes pass; IAC opens a command.
        assert_eq!(fed(&[b"abc"]), b"abc");
        // Command: IAC IAC is a literal 255; WILL..DONT take one option byte; SB opens a
        // subnegotiation; any other command (NOP 241, GA 249) is one byte and dropped.
        assert_eq!(fed(&[&[IAC, IAC]]), [255]);
        for verb in WILL..=DONT {
            assert_eq!(fed(&[&[IAC, verb, 1, b'z']]), b"z", "verb {verb}");
        }
        assert_eq!(fed(&[&[IAC, 241, b'n', IAC, 249, b'g']]), b"ng");
        // Option: the option byte is dropped even when it is IAC or CR.
        assert_eq!(fed(&[&[IAC, WILL, IAC, b'o']]), b"o");
        assert_eq!(fed(&[&[IAC, WILL, b'\r', b'o']]), b"o");
        // Subnegotiation: everything up to IAC SE is dropped, IAC x inside stays inside.
        assert_eq!(
            fed(&[&[IAC, SB, 24, b'x', IAC, 1, b'y', IAC, SE, b'k']]),
            b"k"
        );
        // An unterminated subnegotiation swallows the rest.
        assert_eq!(fed(&[&[IAC, SB, b'a', b'b']]), b"");
        // AfterCr: NUL and LF after CR are dropped once; CR CR is two CRs; IAC after CR is
        // a command; other bytes pass.
        assert_eq!(fed(&[b"a\r\0b\r\nc"]), b"a\rb\rc");
        assert_eq!(fed(&[b"\r\r\n"]), b"\r\r");
        assert_eq!(fed(&[b"\r\n\n"]), b"\r\n");
        assert_eq!(fed(&[&[b'\r', IAC, WILL, 1, b'd']]), b"\rd");
        assert_eq!(fed(&[b"\rx"]), b"\rx");
        // A lone NUL or LF in data passes.
        assert_eq!(fed(&[b"\0\n"]), b"\0\n");
    }

    #[test]
    fn accept_backoff_grows_and_is_capped() {
        assert_eq!(accept_backoff(1), ACCEPT_BACKOFF);
        assert_eq!(accept_backoff(2), ACCEPT_BACKOFF * 2);
        assert_eq!(accept_backoff(40), ACCEPT_BACKOFF_MAX);
    }

    /// Everything a client reads until the server closes (bounded wait).
    async fn read_all(mut conn: tokio::net::TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
            .await
            .expect("the server closes")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn past_the_cap_a_telnet_client_is_told_why_and_a_freed_slot_serves_again() {
        use tokio::net::TcpStream;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hub, _to_vm) = Hub::new();
        let server = tokio::spawn(serve(listener, hub));
        let mut held = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // Attached: the telnet negotiation arrives.
            let mut neg = [0u8; 6];
            c.read_exact(&mut neg).await.unwrap();
            assert_eq!(neg, [IAC, WILL, 1, IAC, WILL, 3]);
            held.push(c);
        }
        let mut refused = TcpStream::connect(addr).await.unwrap();
        // It negotiates first, as telnet clients do: the line still arrives.
        refused.write_all(&[IAC, 253, 1]).await.unwrap();
        assert_eq!(
            String::from_utf8(read_all(refused).await).unwrap(),
            format!("too many console clients ({MAX_CLIENTS} attached); try again later\r\n")
        );
        drop(held.pop());
        let mut again = None;
        for _ in 0..100 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut first = [0u8; 1];
            c.read_exact(&mut first).await.unwrap();
            if first[0] == IAC {
                again = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "a freed slot serves a new client");
        server.abort();
    }
}
