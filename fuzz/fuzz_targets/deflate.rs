//! Compressed frames into a `Connection` with permessage-deflate, and round
//! trips through `proto::deflate::Deflate`. See `unisocket_fuzz::deflate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| unisocket_fuzz::deflate(data));
