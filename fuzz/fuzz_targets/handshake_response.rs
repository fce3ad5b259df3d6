//! Bytes into `proto::handshake::parse_response` (and the extension
//! negotiation). See `unisocket_fuzz::handshake_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| unisocket_fuzz::handshake_response(data));
