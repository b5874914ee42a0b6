//! The platform catalogue (images/<kind>/) and every golden argv:
//! - [`golden_qemu`]: every golden argv starts in the real qemu, paused;
//! - [`build`]: each platform builds from a placeholder disk and reaches "booting" in Docker;
//! - [`cat9kv`]: cisco_cat9kv's optional vswitch.xml on its day-0 CD (Docker);
//! - [`catalogue`]: each images/<kind>/ folder: golden argvs (standard, sparse), check;
//! - [`dialog`]: each platform's console transcripts against the real bootstrap runner;
//! - [`vrnetlab_nics`]: dummy NICs and bridges where vrnetlab puts them;
//! - [`vrnetlab_machine`]: config CDs, the startup config's way in, the user network;
//! - [`sros`]: nokia_sros's distributed variant, licence and variant errors;
//! - [`install_dialog`]: the install phase's transcripts are there and not vacuous;
//! - [`flags`]: containerlab's extra flags of f5_bigip_ve and cisco_sdwan;
//! - [`pci`]: no two devices on one PCI address (the padding-NIC rule of issue 13);

mod build;
mod cat9kv;
mod catalogue;
mod dialog;
mod flags;
mod golden_qemu;
mod install_dialog;
mod pci;
mod sros;
mod vrnetlab_machine;
mod vrnetlab_nics;
