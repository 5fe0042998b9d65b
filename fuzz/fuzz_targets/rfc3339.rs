#![no_main]
//! libFuzzer entry for `convoy::fuzz_targets::rfc3339`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz_targets::rfc3339(data));
