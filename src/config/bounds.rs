//! The bounds of every number of the schema and the environment that becomes a time, a delay
//! or a count the launcher multiplies: written once here, so no `Instant + Duration` of the
//! supervisor, the link wait or the bootstrap can overflow, and every error says the bound.
//! Never decides which key a bound applies to (the section builders do).

use super::{ConfigError, Key};
use std::time::Duration;

/// vm.boot_timeout, nics.wait_timeout and a bootstrap step's timeout: a day. The slowest
/// routers boot in well under that (XRv9k takes 20-25 minutes; under TCG several times more).
pub const MAX_TIMEOUT_S: u64 = 86_400;
/// vm.shutdown_timeout: an hour.
pub const MAX_SHUTDOWN_TIMEOUT_S: u64 = 3600;
/// vm.boot_delay, BOOT_DELAY and a bootstrap step's wait: an hour.
pub const MAX_DELAY_S: u64 = 3600;
/// restart.backoff: ten minutes, doubled per failure up to 64 times that.
pub const MAX_BACKOFF_S: u64 = 600;
/// restart.max: restarts after failures.
pub const MAX_RESTARTS: u32 = 1000;
/// bootstrap.attempts.
pub const MAX_ATTEMPTS: u32 = 100;
/// The highest data port number a `[[vm]]` entry's `data` may name (nics.count and CLAB_INTFS
/// allow as many data interfaces).
pub const MAX_DATA_PORT: u32 = 512;

/// console.log_max_size by default: 10 MiB per log file before it rotates.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 << 20;
/// console.log_max_size: at least 4 KiB (a few screens of boot output), at most 1 TiB; 0 means
/// never rotate.
pub const MIN_LOG_MAX_SIZE: u64 = 4096;
pub const MAX_LOG_MAX_SIZE: u64 = 1 << 40;
/// console.log_keep: rotated files kept (console.log.1 ... console.log.N).
pub const MAX_LOG_KEEP: u32 = 100;

/// `value` seconds under `key`, between `min` and `max`; the error names both bounds.
pub(super) fn seconds(key: &Key, value: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(Duration::from_secs(value));
    }
    Err(key.invalid(
        value,
        if min == 0 {
            format!("at most {max} seconds")
        } else {
            format!("must be between {min} and {max} seconds")
        },
    ))
}

/// A count under `key`, between `min` and `max`.
pub(super) fn count(key: &Key, value: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if (min..=max).contains(&value) {
        return Ok(value);
    }
    Err(key.invalid(
        value,
        if min == 0 {
            format!("at most {max}")
        } else {
            format!("must be between {min} and {max}")
        },
    ))
}
