//! Configuration: the TOML file, the containerlab/vrnetlab environment and the CLI overrides,
//! validated into one immutable [`Node`]. Owns loading and parsing, the one error type
//! ([`ConfigError`]), the [`Key`] an error names and the [`choice`] helper for string enums.
//! Everything here is pure: the caller reads the environment and hands it over as a map; apart
//! from reading the config file in [`load`], nothing on the system is touched. Imports only
//! `crate::template`.
//!
//! The rooms: `schema` (the serde sections as the file is), `env` (the environment parsed once),
//! `blocks` (named lists of bootstrap steps), `include` (shared files merged under the main one), `variant` (the file of the variant the
//! lab tool chose, merged over it), `hardware` and `sections` (one builder
//! per section), `bounds` (the bound of every number),
//! `qemu_args` (the extra qemu arguments refused), `vm` (one VM: its sections in order, then the
//! checks across them), `node` (`[vm]` or `[[vm]]`, the data-port split, internal networks, what
//! two VMs cannot share), `plan` (the validated types).

mod blocks;
mod bounds;
mod disk;
mod env;
mod hardware;
mod include;
mod node;
mod plan;
mod ports;
mod qemu_args;
mod schema;
mod sections;
mod subnet;
mod variant;
mod vm;

pub use plan::*;
pub use schema::DEFAULT_FORWARDS;
pub use subnet::UserSubnet;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration error: which key (or environment variable), which value, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key} = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// The environment as seen by the launcher (a plain map so tests need no process env).
pub type Env = BTreeMap<String, String>;

/// CLI values that take precedence over file and environment (vrnetlab's flags).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub credentials: Credentials,
    /// --connection-mode (over CONNECTION_MODE).
    pub connection_mode: Option<String>,
    /// --variant (SR OS).
    pub variant: Option<String>,
}

/// Internal networks per VM (their tap fds sit at fixed numbers below the data taps).
pub const MAX_INTERNAL: usize = 6;

/// The path of a key as an error names it (`vm[1].disk[0].path`), or an environment variable.
/// Built as the code descends, so no key is ever rewritten afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// The file's top level: `root().child("nics")` is `nics`.
    pub fn root() -> Key {
        Key(String::new())
    }
    /// A key given whole: a top-level key or an environment variable.
    pub fn new(name: &str) -> Key {
        Key(name.to_string())
    }
    /// `a.b` (or `b` at the top level).
    pub fn child(&self, name: &str) -> Key {
        if self.0.is_empty() {
            Key::new(name)
        } else {
            Key(format!("{}.{name}", self.0))
        }
    }
    /// `a[i]`.
    pub fn index(&self, i: usize) -> Key {
        Key(format!("{}[{i}]", self.0))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The error for a bad `value` of this key.
    pub fn invalid(&self, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: self.0.clone(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes a string enum: `value` must be one of `options`, else the error says
/// "expected a, b or c". An option's name may list spellings ("true|1|yes": the first is shown)
/// and end in a note for the error only ("fat (a folder as a read-only FAT disk)").
pub fn choice<T: Copy>(key: &Key, value: &str, options: &[(&str, T)]) -> Result<T, ConfigError> {
    pick(value, options).ok_or_else(|| key.invalid(value, expected(options)))
}

/// The option `value` names, if any (see [`choice`] for the option syntax).
fn pick<T: Copy>(value: &str, options: &[(&str, T)]) -> Option<T> {
    options.iter().find_map(|(name, v)| {
        let spellings = name.split(" (").next().unwrap_or(name);
        spellings.split('|').any(|s| s == value).then_some(*v)
    })
}

/// "expected a, b or c": each option's first spelling, with its note.
fn expected<T>(options: &[(&str, T)]) -> String {
    let shown: Vec<String> = options
        .iter()
        .map(|(name, _)| match name.split_once(" (") {
            Some((spellings, note)) => {
                format!(
                    "{} ({note}",
                    spellings.split('|').next().unwrap_or(spellings)
                )
            }
            None => name.split('|').next().unwrap_or(name).to_string(),
        })
        .collect();
    match shown.split_last() {
        None => "expected nothing".into(),
        Some((last, [])) => format!("expected {last}"),
        Some((last, rest)) => format!("expected {} or {last}", rest.join(", ")),
    }
}

/// Why `name` cannot be a Linux interface name, if it cannot: 1-15 characters, no '/', ':',
/// space or NUL, and not "." or "..".
pub fn ifname_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        Some("an interface name has 1-15 characters")
    } else if name.contains(['/', ' ', ':', '\0']) {
        Some("an interface name has no '/', ':', space or NUL")
    } else if name == "." || name == ".." {
        Some("an interface name is not . or ..")
    } else {
        None
    }
}

/// `name` as an interface name, or the error naming `key`.
fn valid_ifname(key: &Key, name: &str) -> Result<(), ConfigError> {
    match ifname_problem(name) {
        None => Ok(()),
        Some(_) => Err(key.invalid(
            name,
            "not a valid interface name (1-15 characters, no '/', ':' or spaces)",
        )),
    }
}

/// Reads the config file and its `include`s ([`include`]), merges the chosen `[variant]`'s file
/// over it ([`variant`]; `{variant}` is then its name), then [`parse`]s it. A missing file
/// is an error naming the path.
pub fn load(path: &Path, env: &Env, over: &Overrides) -> Result<Node, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = include::expand(&text, path)?;
    let (text, variant) = variant::apply(&text, path, over.variant.as_deref())?;
    let over = &Overrides {
        variant: variant.or_else(|| over.variant.clone()),
        ..over.clone()
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    parse(&text, path, base, env, over)
}

/// Pure: parse the TOML text, apply environment overrides, validate, resolve relative paths
/// against `base`.
pub fn parse(
    text: &str,
    origin: &Path,
    base: &Path,
    env: &Env,
    over: &Overrides,
) -> Result<Node, ConfigError> {
    let f: schema::File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })?;
    node::build(f, origin, base, &env::EnvSettings::read(env), over)
}

/// Decodes one part of the file that serde could not decode with the rest (a `[vm]` table, the
/// sections of a `[[vm]]` entry), so a syntax error names that part.
fn decode<T: serde::de::DeserializeOwned>(
    v: toml::Value,
    origin: &Path,
    key: &str,
) -> Result<T, ConfigError> {
    v.try_into()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_path_buf(),
            message: format!("{key}: {}", e.to_string().trim().replace('\n', " ")),
        })
}

/// `p` as given when absolute, else below `base` (the config file's folder).
fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Parses `tcp:22` or `tcp:2022:22` (host:guest).
pub fn parse_forward(key: &str, s: &str) -> Result<Forward, ConfigError> {
    let key = Key::new(key);
    let shape = || key.invalid(s, "expected tcp:PORT or udp:PORT[:GUEST_PORT]");
    let parts: Vec<&str> = s.split(':').collect();
    let proto = match parts.first().copied() {
        Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        _ => return Err(shape()),
    };
    let port = |p: &str| -> Result<u16, ConfigError> {
        p.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| key.invalid(s, format!("{p:?} is not a port number (1-65535)")))
    };
    let (host_port, guest_port) = match parts.len() {
        2 => (port(parts[1])?, port(parts[1])?),
        3 => (port(parts[1])?, port(parts[2])?),
        _ => return Err(shape()),
    };
    Ok(Forward {
        proto,
        host_port,
        guest_port,
    })
}

/// A template (a bootstrap line, the kernel command line) may only use known placeholders.
fn check_template(key: &Key, t: &str) -> Result<(), ConfigError> {
    match crate::template::unknown_placeholders(t).first() {
        None => Ok(()),
        Some(u) => Err(key.invalid(
            t,
            format!(
                "unknown placeholder {{{u}}}; known: {}",
                crate::template::PLACEHOLDERS.join(", ")
            ),
        )),
    }
}

/// Tests (here and in other rooms): `parse` with the environment given as pairs, the file at
/// /cfg/launcher.toml.
#[cfg(test)]
pub(crate) fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<Node, ConfigError> {
    let env: Env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(
        text,
        Path::new("/cfg/launcher.toml"),
        Path::new("/cfg"),
        &env,
        &Overrides::default(),
    )
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bounds;
#[cfg(test)]
mod tests_broken;
#[cfg(test)]
mod tests_env;
#[cfg(test)]
mod tests_hardware;
#[cfg(test)]
mod tests_install;
#[cfg(test)]
mod tests_links;
#[cfg(test)]
mod tests_node;
