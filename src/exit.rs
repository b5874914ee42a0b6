//! The launcher's exit codes, in one enum, and the one way an error is printed (its whole
//! `source()` chain, once). A leaf: it imports only `config` (a leaf too) for the config
//! error's table. The table for an error type of a higher room sits beside that error type
//! (`impl From<&SupervisorError> for Code` in the supervisor), so no room imports upwards.
//! Never decides anything at run time; never prints on its own.

use crate::config::ConfigError;

/// How the launcher ends. The documented numbers: 0 success or clean shutdown; 1 a runtime
/// failure (or `health`: not healthy); 2 bad input (usage, config, environment); 3 data
/// interfaces still missing after the wait; otherwise qemu's own exit code, or 128 + the
/// signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    Failure,
    BadInput,
    LinksMissing,
    /// The code a VM's qemu ended with (its exit code, or 128 + the signal).
    Guest(i32),
}

impl Code {
    /// The number the process exits with.
    pub fn as_i32(self) -> i32 {
        match self {
            Code::Ok => 0,
            Code::Failure => 1,
            Code::BadInput => 2,
            Code::LinksMissing => 3,
            Code::Guest(c) => c,
        }
    }

    /// A qemu process that ended on its own terms when the launcher did not want it to: its
    /// code, except that an unclean end with code 0 is still a failure (exits 1). The one place
    /// this rule is written.
    pub fn unclean(code: i32) -> Code {
        if code == 0 {
            Code::Failure
        } else {
            Code::Guest(code)
        }
    }

    pub fn is_ok(self) -> bool {
        self.as_i32() == 0
    }
}

impl From<Code> for std::process::ExitCode {
    fn from(c: Code) -> Self {
        std::process::ExitCode::from(c.as_i32().clamp(0, 255) as u8)
    }
}

/// Every config error is the user's input.
impl From<&ConfigError> for Code {
    fn from(_: &ConfigError) -> Self {
        Code::BadInput
    }
}

/// An error and its causes on one line, `: ` between them. Each error's Display says only its
/// own context (its cause is its `source()`), so nothing is repeated and nothing is filtered.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(Code::Ok.as_i32(), 0);
        assert_eq!(Code::Failure.as_i32(), 1);
        assert_eq!(Code::BadInput.as_i32(), 2);
        assert_eq!(Code::LinksMissing.as_i32(), 3);
        assert_eq!(Code::Guest(137).as_i32(), 137);
        assert_eq!(Code::unclean(0), Code::Failure);
        assert_eq!(Code::unclean(137), Code::Guest(137));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer {0}")]
    struct Outer(&'static str, #[source] std::io::Error);

    #[test]
    fn the_chain_is_printed_once_each() {
        let e = Outer("ctx", std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer ctx: inner");
    }
}
