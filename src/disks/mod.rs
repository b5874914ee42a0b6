//! The VM's disks as files: the ISO 9660 writer for CD images.

pub mod iso;
