#![no_main]
//! libFuzzer entry for `convoy::fuzz_targets::telemetry_line`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz_targets::telemetry_line(data));
