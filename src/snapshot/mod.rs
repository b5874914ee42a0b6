//! Fast start, as data: what a snapshot of a node is ([`Manifest`]: per VM the compressed
//! migration stream (the devices), its RAM and its disk overlays of the same stopped instant,
//! and the [`Key`] that must
//! match at restore), the tar it travels in ([`archive`]), and the options that say when to
//! save and restore ([`Options`]). containerlab's protocol names live here too. Never talks to
//! qemu and never starts a process (the supervisor does both).

pub mod archive;
pub mod key;

pub use key::{fingerprint, Key};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// containerlab: `docker exec touch` of this file asks for a save...
pub const SAVE_TRIGGER: &str = "/snapshot-save";
/// ...written here...
pub const SAVE_OUTPUT: &str = "/snapshot-output.tar";
/// ...and a container started with `RESTORE_SNAPSHOT=1` restores from this mounted file.
pub const RESTORE_INPUT: &str = "/snapshot.tar";
/// The manifest's name inside the tar.
pub const MANIFEST: &str = "manifest.json";
/// The version of the layout below (2: the RAM apart from the stream; 3: only its data; 4:
/// its parts LZ4 frames, not zstd streams).
pub const FORMAT: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a snapshot: {why}")]
    Format { path: PathBuf, why: String },
    #[error("{name} = {value:?}: {expected}")]
    Option {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// What one VM's part of a snapshot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEntry {
    pub name: String,
    pub key: Key,
    /// The tar member holding the zstd-compressed migration stream: every device's state,
    /// without the guest RAM (`x-ignore-shared`).
    pub stream: String,
    /// The uncompressed stream's size in bytes.
    pub stream_bytes: u64,
    /// The guest RAM: its contiguous parts in order, each its data, compressed.
    pub ram: Vec<RamPart>,
    /// Per overlay disk, in the plan's order: the tar member holding that overlay.
    pub disks: Vec<String>,
}

/// One part of a VM's RAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamPart {
    /// The tar member holding it: one LZ4 frame of its extents' data.
    pub member: String,
    /// Where it starts in the RAM, and its length, in bytes.
    pub offset: u64,
    pub bytes: u64,
    /// The runs of data in it, `[offset in the RAM, length]`, in order: the member holds them
    /// one after the other; the rest of the part is zeros.
    pub extents: Vec<(u64, u64)>,
}

/// The node's snapshot: its VMs, stopped at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Seconds since the epoch when the guests were stopped.
    pub saved_unix: u64,
    pub vms: Vec<VmEntry>,
}

impl Manifest {
    /// The entry of VM `name`.
    pub fn vm(&self, name: &str) -> Option<&VmEntry> {
        self.vms.iter().find(|v| v.name == name)
    }
}

/// The tar member names of VM `vm`'s stream, of its RAM and of its overlay number `i`.
pub fn stream_member(vm: &str) -> String {
    format!("{vm}/devices.zst")
}
pub fn ram_member(vm: &str, i: usize) -> String {
    format!("{vm}/ram.{i}.lz4")
}
pub fn disk_member(vm: &str, i: usize) -> String {
    format!("{vm}/disk{i}.qcow2")
}

/// What a snapshot that does not fit this node leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMismatch {
    /// Log why and boot cold (the default).
    #[default]
    Boot,
    /// Log why and fail.
    Fail,
}

/// When the launcher restores and saves by itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Restore from this file instead of booting (`run --restore FILE`, or containerlab's
    /// `RESTORE_SNAPSHOT=1` with [`RESTORE_INPUT`]).
    pub restore: Option<PathBuf>,
    /// LAUNCHER_SNAPSHOT_MISMATCH: boot (default) or fail.
    pub on_mismatch: OnMismatch,
    /// LAUNCHER_SUSPEND=1: `docker stop` saves the node to [`Options::suspend_file`] and the
    /// next start resumes from it.
    pub suspend: bool,
    /// Where a suspended node is kept (the container's own filesystem survives stop/start).
    pub suspend_file: PathBuf,
}

/// The default [`Options::suspend_file`].
pub const SUSPEND_FILE: &str = "/var/lib/launcher/suspended.tar";

fn truthy(name: &'static str, v: &str) -> Result<bool, SnapshotError> {
    match v.to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err(SnapshotError::Option {
            name,
            value: v.into(),
            expected: "expected 1/true/yes/on or 0/false/no/off",
        }),
    }
}

impl Options {
    /// From `--restore` and the environment (`get` looks a variable up). A bad value is an
    /// error naming the variable.
    pub fn read(
        restore: Option<PathBuf>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, SnapshotError> {
        let env_restore = truthy(
            "RESTORE_SNAPSHOT",
            &get("RESTORE_SNAPSHOT").unwrap_or_default(),
        )?;
        let on_mismatch = match get("LAUNCHER_SNAPSHOT_MISMATCH").as_deref() {
            None | Some("") | Some("boot") => OnMismatch::Boot,
            Some("fail") => OnMismatch::Fail,
            Some(v) => {
                return Err(SnapshotError::Option {
                    name: "LAUNCHER_SNAPSHOT_MISMATCH",
                    value: v.into(),
                    expected: "expected boot or fail",
                })
            }
        };
        let suspend = truthy(
            "LAUNCHER_SUSPEND",
            &get("LAUNCHER_SUSPEND").unwrap_or_default(),
        )?;
        Ok(Options {
            restore: restore.or_else(|| env_restore.then(|| PathBuf::from(RESTORE_INPUT))),
            on_mismatch,
            suspend,
            suspend_file: PathBuf::from(SUSPEND_FILE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)], restore: Option<&str>) -> Result<Options, SnapshotError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Options::read(restore.map(PathBuf::from), |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn containerlab_restore_and_the_options_are_read_from_the_environment() {
        let o = read(&[], None).unwrap();
        assert_eq!(
            (o.restore, o.on_mismatch, o.suspend),
            (None, OnMismatch::Boot, false)
        );
        let o = read(&[("RESTORE_SNAPSHOT", "1")], None).unwrap();
        assert_eq!(o.restore, Some(PathBuf::from("/snapshot.tar")));
        let o = read(&[("RESTORE_SNAPSHOT", "1")], Some("/x.tar")).unwrap();
        assert_eq!(o.restore, Some(PathBuf::from("/x.tar")), "--restore wins");
        let o = read(
            &[
                ("LAUNCHER_SNAPSHOT_MISMATCH", "fail"),
                ("LAUNCHER_SUSPEND", "yes"),
            ],
            None,
        )
        .unwrap();
        assert_eq!((o.on_mismatch, o.suspend), (OnMismatch::Fail, true));
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let e = read(&[("RESTORE_SNAPSHOT", "maybe")], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RESTORE_SNAPSHOT = \"maybe\": expected 1/true/yes/on or 0/false/no/off"
        );
        let e = read(&[("LAUNCHER_SNAPSHOT_MISMATCH", "ignore")], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LAUNCHER_SNAPSHOT_MISMATCH = \"ignore\": expected boot or fail"
        );
    }

    #[test]
    fn a_manifest_round_trips_through_json() {
        let m = Manifest {
            format: FORMAT,
            saved_unix: 1,
            vms: vec![VmEntry {
                name: "r1".into(),
                key: Key::default(),
                stream: stream_member("r1"),
                stream_bytes: 9,
                ram: vec![RamPart {
                    member: ram_member("r1", 0),
                    offset: 0,
                    bytes: 1 << 20,
                    extents: vec![(4096, 8192)],
                }],
                disks: vec![disk_member("r1", 0)],
            }],
        };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&j).unwrap(), m);
        assert!(j.contains(r#""extents":[[4096,8192]]"#), "{j}");
        assert_eq!(m.vm("r1").unwrap().disks, ["r1/disk0.qcow2"]);
        assert!(m.vm("r2").is_none());
    }
}
