#![no_main]
//! libFuzzer entry for `convoy::fuzz_targets::strict_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz_targets::strict_json(data));
