#![no_main]
// See launcher::fuzzing::tgz for how the bytes are read and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| launcher::fuzzing::tgz(data));
