#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnpike_fuzz::fleet::fuzz_parse(data));
