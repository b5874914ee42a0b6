//! The platform catalogue (images/<kind>/) and every golden argv:
//! - [`golden_qemu`]: every golden argv starts in the real qemu, paused;

mod golden_qemu;
