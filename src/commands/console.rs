//! `launcher console [VM]`: attaches this terminal to a VM's console through the control
//! socket until Ctrl-] (or EOF): raw terminal while attached, stdin read on its own thread.
//! Never talks to the serial socket directly; the running launcher owns it.

use crate::control::{self, ControlError};
use crate::exit::Code;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Telnet's escape: Ctrl-] detaches.
const DETACH: u8 = 0x1d;

/// Runs the command: 0 after a session, 2 for a VM that is not there, 1 for any other failure.
pub fn run(rt: &tokio::runtime::Runtime, vm: Option<&str>) -> Code {
    match rt.block_on(session(&control::socket_path(), vm)) {
        Ok(()) => Code::Ok,
        Err(e) => {
            super::report(&e);
            // Asking for a VM that is not there is bad input.
            if matches!(e, ControlError::Refused(_)) {
                Code::BadInput
            } else {
                Code::Failure
            }
        }
    }
}

/// One console session, until Ctrl-], stdin's end, or the launcher's.
pub async fn session(path: &Path, vm: Option<&str>) -> Result<(), ControlError> {
    let c = control::attach(path, vm).await?;
    let io = |source: std::io::Error| ControlError::Exchange {
        path: path.into(),
        source,
    };
    let (mut r, mut w) = c.into_split();
    let raw = RawTerminal::enter();
    eprint!("launcher: attached to the router console; Ctrl-] detaches\r\n");
    let mut rx = stdin_reader();
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    std::io::Write::write_all(&mut out, &buf[..n]).map_err(io)?;
                    std::io::Write::flush(&mut out).map_err(io)?;
                }
            },
            input = rx.recv() => match input {
                Some(bytes) => match bytes.iter().position(|&b| b == DETACH) {
                    Some(i) => { w.write_all(&bytes[..i]).await.map_err(io)?; break; }
                    None => w.write_all(&bytes).await.map_err(io)?,
                },
                // stdin closed (a pipe): keep showing output briefly, then leave.
                None => { tokio::time::sleep(std::time::Duration::from_millis(500)).await; break; }
            },
        }
    }
    drop(raw);
    eprintln!("\r\nlauncher: detached");
    Ok(())
}

/// stdin, read on a blocking thread; its bytes arrive on the channel, which closes at EOF.
fn stdin_reader() -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Puts the terminal in raw mode while alive (only when stdin is a terminal).
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enter() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(&stdin) else {
            return RawTerminal(None);
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawTerminal(Some(orig))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}
