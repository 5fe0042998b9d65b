#![no_main]
//! libFuzzer entry for `convoy::fuzz_targets::ddi_body`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy::fuzz_targets::ddi_body(data));
