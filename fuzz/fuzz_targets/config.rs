#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mostro_box::fuzzing::config(data));
