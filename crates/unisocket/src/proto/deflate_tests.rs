//! permessage-deflate on a whole connection, against the in-memory server codec.

use super::deflate::{Deflate, DeflateConfig, DeflateParams};
use super::test_server::{encode_frame, ServerCodec, OP_BINARY, OP_CONTINUATION, OP_TEXT};
use super::{Config, Connection, Event, Limits, ProtocolError, State};
use crate::data::Data;

fn params(answer: &str) -> DeflateParams {
    DeflateConfig::default()
        .negotiate(Some(answer))
        .unwrap()
        .unwrap()
}

fn client(p: DeflateParams, limits: Limits) -> Connection {
    Connection::new(Config {
        deflate: Some(p),
        limits,
        ..Config::default()
    })
}

/// The server's compressor mirrors the client's parameters.
fn server_deflate(p: DeflateParams) -> Deflate {
    Deflate::new(DeflateParams {
        client_no_context_takeover: p.server_no_context_takeover,
        client_max_window_bits: p.server_max_window_bits,
        server_no_context_takeover: p.client_no_context_takeover,
        server_max_window_bits: p.client_max_window_bits,
    })
}

fn events(c: &mut Connection) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(ev) = c.poll_event().unwrap() {
        out.push(ev);
    }
    out
}

#[test]
fn compressed_messages_from_the_server_with_every_negotiation_variant() {
    for answer in [
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=11",
    ] {
        let p = params(answer);
        let mut c = client(p, Limits::default());
        let mut server = server_deflate(p);
        let text = "héllo wörld ".repeat(50);
        for _ in 0..3 {
            let mut packed = Vec::new();
            server.compress(text.as_bytes(), &mut packed);
            c.read_buf()
                .extend_from_slice(&encode_frame(true, 4, OP_TEXT, &packed, None));
            // The same message again, fragmented into three frames.
            let mut packed = Vec::new();
            server.compress(text.as_bytes(), &mut packed);
            let third = packed.len() / 3;
            c.read_buf().extend_from_slice(&encode_frame(
                false,
                4,
                OP_TEXT,
                &packed[..third],
                None,
            ));
            c.read_buf().extend_from_slice(&encode_frame(
                false,
                0,
                OP_CONTINUATION,
                &packed[third..2 * third],
                None,
            ));
            c.read_buf().extend_from_slice(&encode_frame(
                true,
                0,
                OP_CONTINUATION,
                &packed[2 * third..],
                None,
            ));
            // And an uncompressed message in between: RSV1 clear.
            c.read_buf()
                .extend_from_slice(&encode_frame(true, 0, OP_BINARY, b"raw", None));
            let expected = vec![
                Event::Message(Data::from(text.as_str())),
                Event::Message(Data::from(text.as_str())),
                Event::Message(Data::from(&b"raw"[..])),
            ];
            assert_eq!(events(&mut c), expected, "{answer}");
        }
    }
}

#[test]
fn compressed_messages_from_the_client_inflate_on_the_server() {
    for answer in [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
    ] {
        let p = params(answer);
        let mut c = client(p, Limits::default());
        let mut server = Deflate::new(DeflateParams {
            server_no_context_takeover: p.client_no_context_takeover,
            ..p
        });
        let mut codec = ServerCodec::new();
        for msg in ["first message, first message", "", "second second second"] {
            c.send_text(msg).unwrap();
            codec.feed(&c.write_buf().split());
            let frame = codec.next_frame().unwrap().unwrap();
            assert_eq!(frame.rsv, 4, "RSV1 marks the compressed message");
            let mut out = Vec::new();
            server
                .decompress(&frame.payload, true, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(out, msg.as_bytes(), "{answer}");
        }
    }
}

#[test]
fn client_fragments_set_rsv1_on_the_first_frame_only() {
    let p = params("permessage-deflate");
    let mut c = Connection::new(Config {
        deflate: Some(p),
        max_send_frame_size: Some(8),
        ..Config::default()
    });
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    c.send_binary(&data).unwrap();
    let mut codec = ServerCodec::new();
    codec.feed(&c.write_buf().split());
    let mut packed = Vec::new();
    let mut first = true;
    loop {
        let f = codec.next_frame().unwrap().unwrap();
        assert_eq!(f.rsv, if first { 4 } else { 0 });
        assert_eq!(f.opcode, if first { OP_BINARY } else { OP_CONTINUATION });
        first = false;
        packed.extend_from_slice(&f.payload);
        if f.fin {
            break;
        }
    }
    let mut server = Deflate::new(p);
    let mut out = Vec::new();
    server
        .decompress(&packed, true, &mut out, usize::MAX)
        .unwrap();
    assert_eq!(out, data);
}

#[test]
fn rsv1_is_an_error_without_negotiation_and_on_continuations() {
    let mut c = Connection::new(Config::default());
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_TEXT, b"x", None));
    assert_eq!(c.poll_event(), Err(ProtocolError::ReservedBits(0x40)));

    let mut c = client(params("permessage-deflate"), Limits::default());
    c.read_buf()
        .extend_from_slice(&encode_frame(false, 0, OP_TEXT, b"a", None));
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_CONTINUATION, b"b", None));
    assert_eq!(c.poll_event(), Err(ProtocolError::ReservedBits(0x40)));
    let e = ProtocolError::ReservedBits(0x40);
    c.fail(&e);
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn a_zip_bomb_ends_with_1009_and_bounded_memory() {
    let p = params("permessage-deflate");
    let limits = Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    };
    let mut c = client(p, limits);
    let mut server = server_deflate(p);
    let mut packed = Vec::new();
    server.compress(&vec![b'a'; 64 << 20], &mut packed);
    assert!(packed.len() < 1 << 20, "the bomb fits in the frame limit");
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_TEXT, &packed, None));
    let err = c.poll_event().unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(err.close_code(), 1009);
}

#[test]
fn a_bomb_against_the_default_limit_stops_within_one_chunk_past_it() {
    // Before, the inflater doubled its buffer past the limit and filled it
    // before checking (134 217 728 bytes reported against 64 MiB).
    let limit = Limits::default().max_message_size;
    let mut c = client(params("permessage-deflate"), Limits::default());
    let packed = super::deflate::tests::zeros_bomb(limit + (1 << 20));
    assert!(packed.len() < Limits::default().max_frame_size);
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_BINARY, &packed, None));
    let err = c.poll_event().unwrap_err();
    assert_eq!(err.close_code(), 1009);
    let ProtocolError::MessageTooLarge { size, max } = err else {
        panic!("{err:?}");
    };
    assert_eq!(max, limit);
    let bound = limit + super::deflate::INFLATE_CHUNK;
    assert!(size > limit as u64 && size <= bound as u64, "{size}");
}

#[test]
fn invalid_utf8_inside_compressed_text_is_1007() {
    let p = params("permessage-deflate");
    let mut c = client(p, Limits::default());
    let mut server = server_deflate(p);
    let mut packed = Vec::new();
    server.compress(&[b'o', b'k', 0xFF, b'!'], &mut packed);
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_TEXT, &packed, None));
    let err = c.poll_event().unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
    assert_eq!(err.close_code(), 1007);
}
