//! Server bytes into the client `Connection`: raw, or a valid stream that
//! must round-trip. See `unisocket_fuzz::frame_decoder`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| unisocket_fuzz::frame_decoder(data));
