#![no_main]
//! libFuzzer entry for `convoy::fuzz_targets::fleet_csv`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz_targets::fleet_csv(data));
