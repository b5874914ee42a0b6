//! The platform catalogue (images/<kind>/) and every golden argv:
//! - [`golden_qemu`]: every golden argv starts in the real qemu, paused;
//! - [`build`]: each platform builds from a placeholder disk and reaches "booting" in Docker;
//! - [`catalogue`]: each images/<kind>/ folder: golden argvs (standard, sparse), check;
//! - [`dialog`]: each platform's console transcripts against the real bootstrap runner;
//! - [`vrnetlab_nics`]: dummy NICs and bridges where vrnetlab puts them;
//! - [`vrnetlab_machine`]: config CDs, the startup config's way in, the user network;
//! - [`sros`]: nokia_sros's distributed variant, licence and variant errors;
//! - [`install_dialog`]: the install phase's transcripts are there and not vacuous;

mod build;
mod catalogue;
mod dialog;
mod golden_qemu;
mod sros;
mod vrnetlab_machine;
mod vrnetlab_nics;
mod install_dialog;
