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

// ---------------------------------------------------------------------------
// client_max_window_bits=8: the client's stream fits a 256-byte window
// ---------------------------------------------------------------------------

/// A raw deflate stream (RFC 1951), read a bit at a time, least significant
/// bit of each byte first.
struct BitReader<'a> {
    data: &'a [u8],
    bit: usize,
}

impl BitReader<'_> {
    fn at_end(&self) -> bool {
        self.bit >= self.data.len() * 8
    }

    /// `n` bits as a number, the first read as its least significant bit.
    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut value = 0;
        for i in 0..n {
            let byte = *self.data.get(self.bit / 8).ok_or("the stream ends early")?;
            value |= u32::from((byte >> (self.bit % 8)) & 1) << i;
            self.bit += 1;
        }
        Ok(value)
    }

    fn align(&mut self) {
        self.bit = self.bit.div_ceil(8) * 8;
    }
}

/// A canonical Huffman code given by its code lengths (RFC 1951 section
/// 3.2.2), decoded a bit at a time.
struct Huffman {
    /// How many codes have each length (index 0 unused).
    counts: [i32; 16],
    /// The symbols in code order: by length, then by symbol.
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut counts = [0; 16];
        let mut symbols = Vec::new();
        for (len, count) in counts.iter_mut().enumerate().skip(1) {
            for (symbol, &l) in lengths.iter().enumerate() {
                if usize::from(l) == len {
                    *count += 1;
                    symbols.push(symbol as u16);
                }
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, String> {
        // `code` is the bits read so far; the codes of each length are
        // consecutive numbers, starting at `first`.
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for &count in &self.counts[1..] {
            code |= r.bits(1)? as i32;
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("not a code of the table".into())
    }
}

/// A code's base value and how many extra bits follow it.
type Base = (u32, u32);

/// Base and extra bits of the 29 length codes (257..=285) and the 30
/// distance codes (RFC 1951 section 3.2.5).
fn length_and_distance_tables() -> ([Base; 29], [Base; 30]) {
    let mut lengths = [(0, 0); 29];
    let mut base = 3;
    for (i, entry) in lengths.iter_mut().enumerate().take(28) {
        let extra = if i < 8 { 0 } else { (i as u32 - 4) / 4 };
        *entry = (base, extra);
        base += 1 << extra;
    }
    lengths[28] = (258, 0);
    let mut distances = [(0, 0); 30];
    let mut base = 1;
    for (i, entry) in distances.iter_mut().enumerate() {
        let extra = if i < 4 { 0 } else { (i as u32 - 2) / 2 };
        *entry = (base, extra);
        base += 1 << extra;
    }
    (lengths, distances)
}

/// Inflates one message's stream (the sync-flush tail included) onto
/// `out`, which holds what came before it (the sliding window), refusing
/// any back-reference more than `window` bytes back. Returns the farthest
/// distance used.
fn inflate_in_window(data: &[u8], window: usize, out: &mut Vec<u8>) -> Result<usize, String> {
    let (length_table, distance_table) = length_and_distance_tables();
    let mut r = BitReader { data, bit: 0 };
    let mut farthest = 0;
    while !r.at_end() {
        let last = r.bits(1)? == 1;
        let (literals, distances) = match r.bits(2)? {
            0 => {
                r.align();
                let len = r.bits(16)?;
                if r.bits(16)? != !len & 0xFFFF {
                    return Err("stored block length mismatch".into());
                }
                for _ in 0..len {
                    out.push(r.bits(8)? as u8);
                }
                if last {
                    break;
                }
                continue;
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                (Huffman::new(&lengths), Huffman::new(&[5; 30]))
            }
            2 => {
                let literal_count = r.bits(5)? as usize + 257;
                let distance_count = r.bits(5)? as usize + 1;
                let length_count = r.bits(4)? as usize + 4;
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let mut code_lengths = [0u8; 19];
                for &i in &ORDER[..length_count] {
                    code_lengths[i] = r.bits(3)? as u8;
                }
                let lengths_code = Huffman::new(&code_lengths);
                let mut lengths = Vec::new();
                while lengths.len() < literal_count + distance_count {
                    let (value, repeat) = match lengths_code.decode(&mut r)? {
                        n @ 0..=15 => (n as u8, 1),
                        16 => {
                            let previous = *lengths.last().ok_or("repeat with nothing before")?;
                            (previous, 3 + r.bits(2)?)
                        }
                        17 => (0, 3 + r.bits(3)?),
                        _ => (0, 11 + r.bits(7)?),
                    };
                    lengths.extend(std::iter::repeat_n(value, repeat as usize));
                }
                let (lit, dist) = lengths.split_at(literal_count);
                (Huffman::new(lit), Huffman::new(dist))
            }
            _ => return Err("reserved block type".into()),
        };
        loop {
            let symbol = usize::from(literals.decode(&mut r)?);
            if symbol < 256 {
                out.push(symbol as u8);
                continue;
            }
            if symbol == 256 {
                break;
            }
            let (base, extra) = *length_table.get(symbol - 257).ok_or("bad length code")?;
            let len = (base + r.bits(extra)?) as usize;
            let code = usize::from(distances.decode(&mut r)?);
            let (base, extra) = *distance_table.get(code).ok_or("bad distance code")?;
            let distance = (base + r.bits(extra)?) as usize;
            if distance > window {
                return Err(format!(
                    "distance {distance} is beyond the {window}-byte window"
                ));
            }
            if distance > out.len() {
                return Err(format!("distance {distance} before the start"));
            }
            farthest = farthest.max(distance);
            for _ in 0..len {
                out.push(out[out.len() - distance]);
            }
        }
        if last {
            break;
        }
    }
    Ok(farthest)
}

/// Messages that tempt a compressor to refer 200 to 1 000 bytes back:
/// random blocks repeated at those periods, repeated text, a mix.
fn far_matching_messages() -> Vec<Vec<u8>> {
    let mut seed = 0x2545_F491_u32;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect()
    };
    let mut messages = Vec::new();
    for period in [
        100, 200, 250, 251, 255, 256, 257, 300, 400, 511, 512, 700, 1000,
    ] {
        let block = random(period);
        messages.push(block.iter().copied().cycle().take(6 * period).collect());
    }
    let text = "A client talks to servers it does not control; every buffer is bounded. ";
    messages.push(text.repeat(40).into_bytes());
    // The same message again: with context takeover it may refer to the last.
    messages.push(messages[7].clone());
    let mut mixed = random(3000);
    mixed.extend_from_slice(&mixed.clone()[..2000]);
    mixed.extend_from_slice(text.as_bytes());
    messages.push(mixed);
    messages
}

/// The client's payloads for `messages` under `answer`, as the server sees
/// them: a compressed one with the sync-flush tail back on (`Some`), or
/// `None` for a message sent as it is (it did not shrink).
fn client_streams(answer: &str, messages: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let mut c = client(params(answer), Limits::default());
    let mut server = ServerCodec::new();
    messages
        .iter()
        .map(|m| {
            c.send_binary(m).unwrap();
            server.feed(&c.write_buf().split());
            let frame = server.next_frame().unwrap().unwrap();
            assert_eq!((frame.fin, frame.opcode), (true, OP_BINARY));
            if frame.rsv == 0 {
                assert_eq!(&frame.payload, m);
                return None;
            }
            assert_eq!(frame.rsv, 4);
            let mut payload = frame.payload;
            payload.extend_from_slice(&[0x00, 0x00, 0xFF, 0xFF]);
            Some(payload)
        })
        .collect()
}

/// Inflates `streams` in a window of `window_size` bytes, as a server with
/// that window would; a message sent as it is empties the window (the
/// client's compressor forgot everything then, so nothing after it may
/// refer further back). Returns the farthest reference.
fn inflate_streams(
    streams: &[Option<Vec<u8>>],
    messages: &[Vec<u8>],
    window_size: usize,
    takeover: bool,
) -> Result<usize, String> {
    let mut window = Vec::new();
    let mut farthest = 0;
    for (stream, message) in streams.iter().zip(messages) {
        if !takeover {
            window.clear();
        }
        let Some(stream) = stream else {
            window.clear();
            continue;
        };
        let start = window.len();
        let far = inflate_in_window(stream, window_size, &mut window)?;
        assert_eq!(&window[start..], &message[..]);
        farthest = farthest.max(far);
    }
    Ok(farthest)
}

#[test]
fn with_client_max_window_bits_8_the_client_never_refers_more_than_256_bytes_back() {
    let messages = far_matching_messages();
    for answer in [
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=8; client_no_context_takeover",
    ] {
        let takeover = !answer.contains("client_no_context_takeover");
        let streams = client_streams(answer, &messages);
        let farthest = inflate_streams(&streams, &messages, 256, takeover)
            .unwrap_or_else(|e| panic!("{answer}: {e}"));
        assert!((1..=256).contains(&farthest), "{farthest}");
        // Still compressed where 256 bytes of history allow it: random
        // blocks repeating every 100, 200 or 250 bytes, and the text
        // (random bytes repeating further back cannot shrink).
        for i in [0, 1, 2, 13] {
            let packed = streams[i].as_ref().map_or(usize::MAX, Vec::len);
            let plain = messages[i].len();
            assert!(
                packed * 4 < plain * 3,
                "{answer}: {packed} of {plain} bytes"
            );
        }
    }
    // The decoder does catch a wider window: with 10 bits the client refers
    // further back than 256 bytes.
    let wide = client_streams("permessage-deflate; client_max_window_bits=10", &messages);
    let refused = inflate_streams(&wide, &messages, 256, true);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("beyond the 256-byte window")),
        "{refused:?}"
    );
}

/// A message of exactly `max_message_size` that does not compress arrives
/// as one compressed frame, a little larger on the wire than the message.
#[test]
fn an_incompressible_message_of_the_limit_in_one_frame_arrives() {
    const MAX: usize = 1 << 20;
    let p = params("permessage-deflate");
    let limits = Limits {
        max_message_size: MAX,
        ..Limits::default()
    };
    let mut c = client(p, limits);
    let mut server = server_deflate(p);
    // Bytes no compressor can shrink (a simple generator, the same each run).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let message: Vec<u8> = (0..MAX)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut packed = Vec::new();
    server.compress(&message, &mut packed);
    assert!(packed.len() > MAX, "{} bytes compressed", packed.len());
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_BINARY, &packed, None));
    match events(&mut c).as_slice() {
        [Event::Message(Data::Binary(b))] => assert_eq!(&b[..], &message[..]),
        other => panic!("{other:?}"),
    }
    // One byte more is refused, as too large a message.
    let mut packed = Vec::new();
    let mut longer = message.clone();
    longer.push(1);
    server.compress(&longer, &mut packed);
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 4, OP_BINARY, &packed, None));
    assert!(matches!(
        c.poll_event(),
        Err(ProtocolError::MessageTooLarge { max: MAX, .. })
    ));
}

/// A message that does not shrink is sent uncompressed (RSV1 clear), never
/// larger than it is; the messages after it still inflate on the server.
#[test]
fn a_message_that_does_not_shrink_is_sent_as_it_is() {
    let p = params("permessage-deflate");
    let mut c = client(p, Limits::default());
    let mut server = ServerCodec::new();
    let mut server_inflate = server_deflate(p);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let text = "compressible text, compressible text, compressible text";
    for message in [text.as_bytes(), &random[..], text.as_bytes(), &random[..]] {
        c.send_binary(message).unwrap();
        server.feed(&c.write_buf().split());
        let frame = server.next_frame().unwrap().unwrap();
        let compressed = frame.rsv == 4;
        let got = if compressed {
            let mut out = Vec::new();
            server_inflate
                .decompress(&frame.payload, true, &mut out, usize::MAX)
                .unwrap();
            out
        } else {
            frame.payload.clone()
        };
        assert_eq!(got, message);
        // Random bytes go as they are; text shrinks.
        assert_eq!(compressed, message.len() < 1000, "{} bytes", message.len());
        assert!(frame.payload.len() <= message.len());
    }
}
