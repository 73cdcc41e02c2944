#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnpike_fuzz::redis_push::fuzz_read(data));
