#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnpike_fuzz::nat::fuzz_binding(data));
