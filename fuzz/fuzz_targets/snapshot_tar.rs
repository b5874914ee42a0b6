#![no_main]
// See launcher::fuzzing::snapshot_tar for how the bytes are read and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| launcher::fuzzing::snapshot_tar(data));
