#![no_main]
// See launcher::fuzzing::console_lines for how the bytes are read and what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| launcher::fuzzing::console_lines(data));
