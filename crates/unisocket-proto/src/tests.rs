//! The client codec ([`Connection`] and [`handshake`]) driven against the
//! in-memory server codec of `test_server.rs`.
//!
//! [`Pair`] plays the transport: it moves the client's `write_buf()` into a
//! [`ServerCodec`] and server-encoded bytes into the client's `read_buf()`,
//! a configurable number of bytes at a time, polling the client after each
//! piece (like quinn-proto's test `Pair` or rustls' `transfer`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::handshake;
use super::test_server::*;
use super::{Config, Connection, Event, HandshakeError, Limits, ProtocolError, SendError, State};
use crate::data::{Data, Text};

// ---------------------------------------------------------------------------
// The in-memory pair
// ---------------------------------------------------------------------------

/// What the client reported for the bytes delivered: events and the error
/// that ended the connection, in order.
type Events = Vec<Result<Event, ProtocolError>>;

/// A client [`Connection`] wired to a server-side [`ServerCodec`].
///
/// Like the driver once the application has taken every message, the pair
/// fails the connection ([`Connection::fail`]) as soon as `poll_event`
/// reports an error, and stops polling after that.
struct Pair {
    client: Connection,
    server: ServerCodec,
    /// How many bytes move per step, in both directions.
    chunk: usize,
    /// The error that failed the connection.
    error: Option<ProtocolError>,
}

impl Pair {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        Pair {
            client: Connection::new(config),
            server: ServerCodec::new(),
            chunk: usize::MAX,
            error: None,
        }
    }

    /// Moves at most `n` bytes per step.
    fn chunked(mut self, n: usize) -> Self {
        assert!(n > 0);
        self.chunk = n;
        self
    }

    /// Moves everything the client has written into the server codec,
    /// `chunk` bytes at a time. Returns how many bytes moved.
    fn flush_client(&mut self) -> usize {
        let buf = self.client.write_buf();
        let total = buf.len();
        while !buf.is_empty() {
            let piece = buf.split_to(buf.len().min(self.chunk));
            self.server.feed(&piece);
        }
        total
    }

    /// Flushes the client and returns every message the server codec
    /// decodes. Panics when the server codec rejects the client's bytes
    /// (an unmasked frame, a non-minimal length, a bad close code, ...).
    fn server_messages(&mut self) -> Vec<Message> {
        self.flush_client();
        let mut out = Vec::new();
        loop {
            match self.server.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => panic!("server codec rejected the client's bytes: {e} (after {out:?})"),
            }
        }
        assert_eq!(
            self.server.buffered(),
            0,
            "partial frame left from the client"
        );
        out
    }

    /// Feeds server bytes to the client, `chunk` bytes at a time, polling
    /// after each piece until the client has nothing more to report.
    fn deliver(&mut self, bytes: &[u8]) -> Events {
        let mut out = Vec::new();
        for piece in bytes.chunks(self.chunk) {
            self.client.read_buf().extend_from_slice(piece);
            if self.error.is_some() {
                continue;
            }
            loop {
                match self.client.poll_event() {
                    Ok(Some(ev)) => out.push(Ok(ev)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.clone()));
                        self.client.fail(&e);
                        self.error = Some(e);
                        break;
                    }
                }
            }
        }
        out
    }

    /// Asserts that the connection has ended for good: closed, later input
    /// not decoded (`poll_event` gives `Ok(None)` after a close, the same
    /// error after a failure), nothing more written, sending refused.
    fn assert_dead(&mut self) {
        assert_eq!(self.client.state(), State::Closed);
        let expected = match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        };
        for bytes in [
            server_text("late"),
            server_ping(b"late"),
            server_close(Some(1000), ""),
        ] {
            self.client.read_buf().extend_from_slice(&bytes);
            assert_eq!(self.client.poll_event(), expected);
            assert_eq!(self.client.poll_event(), expected);
        }
        assert_eq!(self.client.state(), State::Closed);
        assert_eq!(self.client.send_text("x"), Err(SendError::Closing));
        assert_eq!(self.client.send_binary(b"x"), Err(SendError::Closing));
        assert_eq!(self.client.ping(b"x"), Err(SendError::Closing));
        assert_eq!(
            self.client.close(1000, "", Instant::now()),
            Err(SendError::Closing)
        );
        assert_eq!(self.server_messages(), Vec::<Message>::new());
    }
}

fn no_events() -> Events {
    Vec::new()
}

fn text(s: &str) -> Result<Event, ProtocolError> {
    Ok(Event::Message(Data::Text(Text::from(s))))
}

fn binary(b: &[u8]) -> Result<Event, ProtocolError> {
    Ok(Event::Message(Data::Binary(Bytes::copy_from_slice(b))))
}

fn ping(b: &[u8]) -> Result<Event, ProtocolError> {
    Ok(Event::Ping(Bytes::copy_from_slice(b)))
}

fn pong(b: &[u8]) -> Result<Event, ProtocolError> {
    Ok(Event::Pong(Bytes::copy_from_slice(b)))
}

fn closed(code: u16, reason: &str) -> Result<Event, ProtocolError> {
    Ok(Event::Close {
        code,
        reason: reason.to_owned(),
    })
}

/// The close frame the client sends when it fails the connection.
fn close_code(code: u16) -> Message {
    Message::Close(Some(code), String::new())
}

/// A string of exactly `n` UTF-8 bytes mixing 1- to 4-byte characters.
fn text_of_len(n: usize) -> String {
    let mut s = String::with_capacity(n);
    for c in ['a', 'é', '€', '😀', ' ', 'Z'].iter().cycle() {
        if s.len() + c.len_utf8() > n {
            break;
        }
        s.push(*c);
    }
    while s.len() < n {
        s.push('x');
    }
    s
}

fn bytes_of_len(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// The frame header length (without mask) for a payload of `n` bytes.
fn header_len(n: usize) -> usize {
    match n {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// The 7-bit length field for a payload of `n` bytes.
fn len7(n: usize) -> u8 {
    match n {
        0..=125 => n as u8,
        126..=65535 => 126,
        _ => 127,
    }
}

fn frag(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, payload, None)
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Asserts that `bytes` make the client fail with `err` (and nothing else),
/// that it sent exactly one close frame with `code`, and that it is dead.
fn assert_fails_with(config: Config, chunk: usize, bytes: &[u8], err: ProtocolError, code: u16) {
    let mut p = Pair::with_config(config).chunked(chunk);
    assert_eq!(p.deliver(bytes), vec![Err(err.clone())], "chunk {chunk}");
    assert_eq!(err.close_code(), code);
    assert_eq!(p.server_messages(), vec![close_code(code)], "chunk {chunk}");
    p.assert_dead();
}

// ---------------------------------------------------------------------------
// 1. Handshake
// ---------------------------------------------------------------------------

#[test]
fn handshake_request_parses_on_the_server() {
    let key = handshake::generate_key();
    let protocols = vec!["chat".to_owned(), "superchat".to_owned()];
    let headers = vec![
        ("Origin".to_owned(), "https://example.com".to_owned()),
        ("X-Token".to_owned(), "abc def".to_owned()),
    ];
    let req = handshake::Request {
        host: "example.com:8080",
        target: "/ws?room=1&x=%20",
        key: &key,
        protocols: &protocols,
        extensions: Some("permessage-deflate; client_max_window_bits"),
        headers: &headers,
    };
    let bytes = req.encode();
    for cut in 0..bytes.len() {
        assert_eq!(parse_request(&bytes[..cut]), Ok(None), "cut {cut}");
    }
    let (r, consumed) = parse_request(&bytes).unwrap().unwrap();
    assert_eq!(consumed, bytes.len());
    assert_eq!(r.path, "/ws?room=1&x=%20");
    assert_eq!(r.key, key);
    assert_eq!(r.protocols, ["chat", "superchat"]);
    assert_eq!(r.header("Host"), Some("example.com:8080"));
    assert_eq!(r.header("Origin"), Some("https://example.com"));
    assert_eq!(r.header("x-token"), Some("abc def"));
    assert_eq!(
        r.header("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(r.header_all("Sec-WebSocket-Key"), [key.as_str()]);
    assert_eq!(r.header_all("Sec-WebSocket-Version"), ["13"]);

    // Without protocols, extensions or extra headers: none of those headers.
    let key2 = handshake::generate_key();
    assert_ne!(key, key2);
    let bare = handshake::Request {
        host: "h",
        target: "/",
        key: &key2,
        protocols: &[],
        extensions: None,
        headers: &[],
    }
    .encode();
    let (r, consumed) = parse_request(&bare).unwrap().unwrap();
    assert_eq!(consumed, bare.len());
    assert_eq!(r.key, key2);
    assert_eq!(r.protocols, Vec::<String>::new());
    assert_eq!(r.header("Sec-WebSocket-Protocol"), None);
    assert_eq!(r.header("Sec-WebSocket-Extensions"), None);
    assert_eq!(r.headers.len(), 5, "{:?}", r.headers);
}

#[test]
fn handshake_response_101_is_accepted() {
    let key = handshake::generate_key();
    let offered = vec!["chat".to_owned(), "superchat".to_owned()];
    let resp = response_101(&key, Some("superchat"), &[("X-Server", "test")]);
    let (r, consumed) = handshake::parse_response(&resp, &key, &offered, 65536)
        .unwrap()
        .unwrap();
    assert_eq!(consumed, resp.len());
    assert_eq!(r.protocol.as_deref(), Some("superchat"));
    assert_eq!(r.extensions, None);
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "X-Server" && v == "test"));

    // No protocol offered and none chosen.
    let resp = response_101(&key, None, &[]);
    let (r, consumed) = handshake::parse_response(&resp, &key, &[], 65536)
        .unwrap()
        .unwrap();
    assert_eq!((r.protocol, consumed), (None, resp.len()));
}

#[test]
fn handshake_rejects_bad_responses() {
    let key = handshake::generate_key();
    let other = handshake::generate_key();
    let offered = vec!["superchat".to_owned()];
    let parse =
        |bytes: &[u8], offered: &[String]| handshake::parse_response(bytes, &key, offered, 65536);

    // Accept computed for another key.
    assert_eq!(
        parse(&response_101(&other, None, &[]), &[]),
        Err(HandshakeError::BadAccept)
    );
    // The accept of the key itself, not of key + GUID.
    let raw_key = String::from_utf8(response_101(&key, None, &[]))
        .unwrap()
        .replace(&accept_key(&key), &key);
    assert_eq!(
        parse(raw_key.as_bytes(), &[]),
        Err(HandshakeError::BadAccept)
    );

    // The right accept, and a second, wrong one.
    let twice = response_101(&key, None, &[("Sec-WebSocket-Accept", &accept_key(&other))]);
    assert_eq!(parse(&twice, &[]), Err(HandshakeError::BadAccept));

    // Missing Upgrade header.
    let no_upgrade = String::from_utf8(response_101(&key, None, &[]))
        .unwrap()
        .replace("Upgrade: websocket\r\n", "");
    assert!(!no_upgrade.contains("Upgrade: websocket"));
    assert_eq!(
        parse(no_upgrade.as_bytes(), &[]),
        Err(HandshakeError::MissingUpgrade)
    );

    // 403, with its body.
    match parse(&response_status(403, &[], b"denied"), &[]) {
        Err(HandshakeError::Status {
            status: 403,
            reason,
            response,
        }) => {
            assert_eq!(reason, "Forbidden");
            assert_eq!(response.body, b"denied");
        }
        other => panic!("{other:?}"),
    }

    // A subprotocol that was not offered, or one when none was offered.
    let chat = response_101(&key, Some("chat"), &[]);
    assert_eq!(
        parse(&chat, &offered),
        Err(HandshakeError::UnexpectedProtocol("chat".into()))
    );
    assert_eq!(
        parse(&chat, &[]),
        Err(HandshakeError::UnexpectedProtocol("chat".into()))
    );
}

#[test]
fn handshake_response_split_at_every_byte() {
    let key = handshake::generate_key();
    let offered = vec!["chat".to_owned()];
    let resp = response_101(&key, Some("chat"), &[("X-A", "1")]);
    let frames = concat(&[&server_text("first"), &server_binary(&[1, 2, 3])]);
    let full = concat(&[&resp, &frames]);

    for cut in 0..=full.len() {
        // The transport delivers `full[..cut]`, then the rest.
        let mut received = full[..cut].to_vec();
        let mut outcome = handshake::parse_response(&received, &key, &offered, 65536).unwrap();
        if cut < resp.len() {
            assert_eq!(outcome, None, "cut {cut}");
            received.extend_from_slice(&full[cut..]);
            outcome = handshake::parse_response(&received, &key, &offered, 65536).unwrap();
        }
        let (r, consumed) = outcome.unwrap_or_else(|| panic!("cut {cut}: incomplete"));
        assert_eq!(consumed, resp.len(), "cut {cut}");
        assert_eq!(r.protocol.as_deref(), Some("chat"));

        // The bytes after the response are the first frames.
        let mut p = Pair::new();
        let mut events = p.deliver(&received[consumed..]);
        if received.len() < full.len() {
            events.extend(p.deliver(&full[received.len()..]));
        }
        assert_eq!(events, vec![text("first"), binary(&[1, 2, 3])], "cut {cut}");
    }
}

#[test]
fn handshake_then_messages_both_ways() {
    for chunk in [1, 3, 64, usize::MAX] {
        let key = handshake::generate_key();
        let protocols = vec!["v1".to_owned()];
        let request = handshake::Request {
            host: "localhost:9001",
            target: "/",
            key: &key,
            protocols: &protocols,
            extensions: None,
            headers: &[],
        }
        .encode();

        // Server side: read the request a chunk at a time.
        let mut server_in = Vec::new();
        let mut parsed = None;
        for piece in request.chunks(chunk) {
            server_in.extend_from_slice(piece);
            if let Some(r) = parse_request(&server_in).unwrap() {
                parsed = Some(r);
            }
        }
        let (req, n) = parsed.expect("request never completed");
        assert_eq!(n, request.len());

        // The response and the first message arrive in one write.
        let mut out = response_101(&req.key, Some("v1"), &[]);
        out.extend_from_slice(&server_text("welcome"));

        let mut client_in = Vec::new();
        let mut done = None;
        for piece in out.chunks(chunk) {
            client_in.extend_from_slice(piece);
            if let Some(r) = handshake::parse_response(&client_in, &key, &protocols, 65536).unwrap()
            {
                done = Some(r);
                break;
            }
        }
        let (resp, consumed) = done.expect("response never completed");
        assert_eq!(resp.protocol.as_deref(), Some("v1"));

        let mut p = Pair::new().chunked(chunk);
        let mut events = p.deliver(&client_in[consumed..]);
        events.extend(p.deliver(&out[client_in.len()..]));
        assert_eq!(events, vec![text("welcome")], "chunk {chunk}");

        p.client.send_text("hello").unwrap();
        assert_eq!(p.server_messages(), vec![Message::Text("hello".into())]);
    }
}

// ---------------------------------------------------------------------------
// 2. Frame lengths
// ---------------------------------------------------------------------------

const SIZES: [usize; 8] = [0, 1, 125, 126, 127, 65535, 65536, 65537];

#[test]
fn client_sends_every_length_form() {
    for n in SIZES {
        let s = text_of_len(n);
        assert_eq!(s.len(), n);
        let mut p = Pair::new();
        p.client.send_text(&s).unwrap();
        let raw = p.client.write_buf().to_vec();
        assert_eq!(raw.len(), header_len(n) + 4 + n, "text {n}");
        assert_eq!(raw[0], 0x81, "text {n}");
        assert_eq!(raw[1], 0x80 | len7(n), "text {n}");
        assert_eq!(p.server_messages(), vec![Message::Text(s)], "text {n}");
        assert_eq!(p.server.last_message_frames(), 1);

        let b = bytes_of_len(n);
        p.client.send_binary(&b).unwrap();
        let raw = p.client.write_buf().to_vec();
        assert_eq!(raw.len(), header_len(n) + 4 + n, "binary {n}");
        assert_eq!(raw[0], 0x82, "binary {n}");
        assert_eq!(raw[1], 0x80 | len7(n), "binary {n}");
        match n {
            126..=65535 => assert_eq!(&raw[2..4], &(n as u16).to_be_bytes()),
            65536.. => assert_eq!(&raw[2..10], &(n as u64).to_be_bytes()),
            _ => {}
        }
        assert_eq!(p.server_messages(), vec![Message::Binary(b)], "binary {n}");
        assert_eq!(p.server.last_message_frames(), 1);
    }
}

#[test]
fn client_receives_every_length_form() {
    for n in SIZES {
        let s = text_of_len(n);
        let b = bytes_of_len(n);
        let t_frame = server_text(&s);
        let b_frame = server_binary(&b);
        assert_eq!(t_frame.len(), header_len(n) + n);
        assert_eq!(t_frame[1], len7(n));
        for chunk in [usize::MAX, 4096, 125] {
            let mut p = Pair::new().chunked(chunk);
            assert_eq!(
                p.deliver(&t_frame),
                vec![text(&s)],
                "text {n} chunk {chunk}"
            );
            assert_eq!(
                p.deliver(&b_frame),
                vec![binary(&b)],
                "binary {n} chunk {chunk}"
            );
            // Both together in one read.
            let both = concat(&[&b_frame, &t_frame]);
            assert_eq!(p.deliver(&both), vec![binary(&b), text(&s)]);
            assert_eq!(p.client.state(), State::Open);
            assert!(p.client.write_buf().is_empty());
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Masking
// ---------------------------------------------------------------------------

#[test]
fn every_client_frame_is_masked_with_a_fresh_key() {
    let mut p = Pair::new();
    let mut expected = Vec::new();
    // What the client wrote, taken after each step as a transport would
    // (a pong still waiting in the buffer would answer the next ping).
    let mut raw = Vec::new();
    for i in 0..200u32 {
        match i % 4 {
            0 => {
                p.client.send_text(&format!("message {i}")).unwrap();
                expected.push(Message::Text(format!("message {i}")));
            }
            1 => {
                p.client.send_binary(&[i as u8; 7]).unwrap();
                expected.push(Message::Binary(vec![i as u8; 7]));
            }
            2 => {
                p.client.ping(&i.to_be_bytes()).unwrap();
                expected.push(Message::Ping(i.to_be_bytes().to_vec()));
            }
            _ => {
                // The automatic pong is masked too.
                assert_eq!(p.deliver(&server_ping(b"pp")), vec![ping(b"pp")]);
                expected.push(Message::Pong(b"pp".to_vec()));
            }
        }
        raw.extend_from_slice(&p.client.write_buf().split());
    }
    p.client.close(1000, "done", Instant::now()).unwrap();
    expected.push(Message::Close(Some(1000), "done".into()));
    raw.extend_from_slice(&p.client.write_buf().split());

    // Walk the raw bytes: MASK bit set, key on the wire, payload masked with it.
    let mut keys = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        assert_ne!(raw[pos + 1] & 0x80, 0, "unmasked frame at byte {pos}");
        let len = usize::from(raw[pos + 1] & 0x7F);
        assert!(len <= 125);
        let key: [u8; 4] = raw[pos + 2..pos + 6].try_into().unwrap();
        keys.push(key);
        pos += 6 + len;
    }
    assert_eq!(pos, raw.len());
    assert_eq!(keys.len(), 201);

    p.server.feed(&raw);
    assert_eq!(p.server_messages(), expected);
    assert_eq!(p.server.masks_seen(), &keys[..]);
    let distinct: HashSet<[u8; 4]> = keys.iter().copied().collect();
    assert!(
        distinct.len() > 190,
        "only {} distinct mask keys in 201 frames",
        distinct.len()
    );
}

#[test]
fn server_codec_would_catch_an_unmasked_client_frame() {
    // The harness check behind every other test: unmasked bytes are rejected...
    let mut codec = ServerCodec::new();
    codec.feed(&encode_frame(true, 0, OP_TEXT, b"hello", None));
    assert!(codec.next_message().is_err());
    // ... while the client's own frame for the same message is accepted, and
    // its payload is not sent in the clear.
    let mut p = Pair::new();
    p.client.send_text("hello hello hello hello").unwrap();
    let raw = p.client.write_buf().to_vec();
    assert_ne!(&raw[6..], b"hello hello hello hello");
    assert_eq!(
        p.server_messages(),
        vec![Message::Text("hello hello hello hello".into())]
    );
}

// ---------------------------------------------------------------------------
// 4. Messages split at every byte boundary
// ---------------------------------------------------------------------------

/// A fragmented text message of multi-byte UTF-8 in 3 frames (with code
/// points cut between frames, one frame over 125 bytes) with a ping between
/// the first two, then a binary message; and the events it must produce.
fn fragmented_stream() -> (Vec<u8>, Events, String) {
    let mut s = String::from("κόσμε ");
    for _ in 0..10 {
        s.push_str("€ 😀 ñ ");
    }
    s.push_str("end 😀");
    let b = s.as_bytes();
    let cut1 = 3; // inside 'ό'
    let cut2 = s.rfind('😀').unwrap() + 2; // inside the last emoji
    assert!(!s.is_char_boundary(cut1) && !s.is_char_boundary(cut2));
    assert!(cut2 - cut1 > 125);
    let bin = [0u8, 0xFF, 0x80, 0xC3, 0x28, 1, 2, 3];
    let stream = concat(&[
        &frag(false, OP_TEXT, &b[..cut1]),
        &server_ping(b"ping!"),
        &frag(false, OP_CONTINUATION, &b[cut1..cut2]),
        &frag(true, OP_CONTINUATION, &b[cut2..]),
        &server_binary(&bin),
    ]);
    let events = vec![ping(b"ping!"), text(&s), binary(&bin)];
    (stream, events, s)
}

#[test]
fn stream_split_in_two_at_every_byte_gives_the_same_events() {
    let (stream, expected, _) = fragmented_stream();
    for i in 0..=stream.len() {
        let mut p = Pair::new();
        let mut events = p.deliver(&stream[..i]);
        events.extend(p.deliver(&stream[i..]));
        assert_eq!(events, expected, "split at {i}");
        assert_eq!(
            p.server_messages(),
            vec![Message::Pong(b"ping!".to_vec())],
            "split at {i}"
        );
        assert_eq!(p.client.state(), State::Open);
    }
}

#[test]
fn stream_in_every_chunk_size_gives_the_same_events() {
    let (stream, expected, _) = fragmented_stream();
    for chunk in 1..=stream.len() {
        let mut p = Pair::new().chunked(chunk);
        assert_eq!(p.deliver(&stream), expected, "chunk {chunk}");
        assert_eq!(p.server_messages(), vec![Message::Pong(b"ping!".to_vec())]);
    }
}

#[test]
fn stream_one_byte_at_a_time_reports_each_event_at_its_last_byte() {
    let (stream, expected, _) = fragmented_stream();
    let mut p = Pair::new();
    let mut events = Vec::new();
    let mut at = Vec::new();
    for (i, b) in stream.iter().enumerate() {
        let got = p.deliver(&[*b]);
        if !got.is_empty() {
            at.push(i);
        }
        events.extend(got);
    }
    assert_eq!(events, expected);
    // The ping ends at the end of its frame, the text with the last fragment,
    // the binary with the last byte.
    let ping_end = frag(false, OP_TEXT, &[0; 3]).len() + server_ping(b"ping!").len() - 1;
    assert_eq!(at.len(), 3);
    assert_eq!(at[0], ping_end);
    assert_eq!(at[2], stream.len() - 1);
}

// ---------------------------------------------------------------------------
// 5. Fragmentation both ways
// ---------------------------------------------------------------------------

#[test]
fn client_reassembles_server_fragments() {
    let mut p = Pair::new();
    // Text in 4 fragments (one empty), a ping and a pong in between.
    let stream = concat(&[
        &frag(false, OP_TEXT, "Hel".as_bytes()),
        &server_ping(b"are you there"),
        &frag(false, OP_CONTINUATION, b""),
        &frag(false, OP_CONTINUATION, "lo, wör".as_bytes()),
        &server_pong(b"unsolicited"),
        &frag(true, OP_CONTINUATION, b"ld"),
    ]);
    assert_eq!(
        p.deliver(&stream),
        vec![
            ping(b"are you there"),
            pong(b"unsolicited"),
            text("Hello, wörld")
        ]
    );
    assert_eq!(
        p.server_messages(),
        vec![Message::Pong(b"are you there".to_vec())]
    );

    // Binary in 3 fragments with a ping between, starting with an empty one.
    let stream = concat(&[
        &frag(false, OP_BINARY, b""),
        &frag(false, OP_CONTINUATION, &[1, 2, 3]),
        &server_ping(b""),
        &frag(true, OP_CONTINUATION, &[0xFF; 200]),
    ]);
    let mut whole = vec![1, 2, 3];
    whole.extend_from_slice(&[0xFF; 200]);
    assert_eq!(p.deliver(&stream), vec![ping(b""), binary(&whole)]);
    assert_eq!(p.server_messages(), vec![Message::Pong(Vec::new())]);

    // An empty message in two empty fragments; then an unfragmented one.
    let stream = concat(&[
        &frag(false, OP_TEXT, b""),
        &frag(true, OP_CONTINUATION, b""),
        &server_text("after"),
    ]);
    assert_eq!(p.deliver(&stream), vec![text(""), text("after")]);
    assert_eq!(p.client.state(), State::Open);
}

#[test]
fn client_fragments_by_max_send_frame_size() {
    for (len, max) in [
        (10usize, 3usize),
        (100, 100),
        (101, 100),
        (300, 100),
        (301, 100),
        (1000, 1),
        (65537, 4096),
        (200_000, 125),
    ] {
        let config = Config {
            max_send_frame_size: Some(max),
            ..Config::default()
        };
        let mut p = Pair::with_config(config);
        let frames = len.div_ceil(max);

        let b = bytes_of_len(len);
        p.client.send_binary(&b).unwrap();
        // Frame by frame: Binary then continuations, FIN only on the last,
        // none over `max`.
        let raw = p.client.write_buf().to_vec();
        let mut codec = ServerCodec::new();
        codec.feed(&raw);
        let mut got = Vec::new();
        while let Some(f) = codec.next_frame().unwrap() {
            got.push(f);
        }
        assert_eq!(got.len(), frames, "binary {len}/{max}");
        for (i, f) in got.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == frames;
            assert_eq!(f.opcode, if first { OP_BINARY } else { OP_CONTINUATION });
            assert_eq!(f.fin, last);
            assert_eq!(f.rsv, 0);
            assert!(f.payload.len() <= max);
            if !last {
                assert_eq!(f.payload.len(), max);
            }
        }
        assert_eq!(p.server_messages(), vec![Message::Binary(b)]);
        assert_eq!(p.server.last_message_frames(), frames, "binary {len}/{max}");

        // Text: the cuts fall inside code points; only the whole is UTF-8.
        let s = text_of_len(len);
        p.client.send_text(&s).unwrap();
        assert_eq!(p.server_messages(), vec![Message::Text(s)]);
        assert_eq!(p.server.last_message_frames(), frames, "text {len}/{max}");

        // A control frame between two fragmented messages is not fragmented.
        p.client.ping(b"p").unwrap();
        assert_eq!(p.server_messages(), vec![Message::Ping(b"p".to_vec())]);
        assert_eq!(p.server.last_message_frames(), 1);
    }
}

// ---------------------------------------------------------------------------
// 6. UTF-8
// ---------------------------------------------------------------------------

#[test]
fn invalid_utf8_in_a_single_frame_fails_with_1007() {
    for bad in [
        &[b'a', 0xC3, 0x28][..],
        &[0xFF],
        &[0xC0, 0xAF],
        &[0xED, 0xA0, 0x80],
        &[0xF4, 0x90, 0x80, 0x80],
        b"valid \xE2\x82\xAC then \x80",
    ] {
        for chunk in [1, usize::MAX] {
            assert_fails_with(
                Config::default(),
                chunk,
                &frag(true, OP_TEXT, bad),
                ProtocolError::InvalidUtf8,
                1007,
            );
        }
    }
}

#[test]
fn invalid_utf8_in_a_continuation_fails_with_1007() {
    let stream = concat(&[
        &frag(false, OP_TEXT, "héllo".as_bytes()),
        &server_ping(b"x"),
        &frag(false, OP_CONTINUATION, " wörld".as_bytes()),
        &frag(true, OP_CONTINUATION, &[b'!', 0xFF]),
    ]);
    for chunk in [1, 5, usize::MAX] {
        let mut p = Pair::new().chunked(chunk);
        assert_eq!(
            p.deliver(&stream),
            vec![ping(b"x"), Err(ProtocolError::InvalidUtf8)],
            "chunk {chunk}"
        );
        assert_eq!(
            p.server_messages(),
            vec![Message::Pong(b"x".to_vec()), close_code(1007)]
        );
        p.assert_dead();
    }
}

#[test]
fn invalid_utf8_is_reported_before_the_rest_of_the_frame() {
    // A text frame announcing 100 bytes, of which only the first arrive.
    let mut p = Pair::new();
    let header = encode_header_raw(true, 0, OP_TEXT, 100, 0, None);
    assert_eq!(p.deliver(&header), no_events());
    assert_eq!(
        p.deliver(&[0xF4]),
        no_events(),
        "0xF4 alone may still be valid"
    );
    assert_eq!(
        p.deliver(&[0x90, 0x80]),
        vec![Err(ProtocolError::InvalidUtf8)]
    );
    assert_eq!(p.server_messages(), vec![close_code(1007)]);
    p.assert_dead();

    // Autobahn 6.4.1-like: valid text, then the invalid sequence, in one read.
    let mut p = Pair::new();
    let mut bytes = encode_header_raw(true, 0, OP_TEXT, 100, 0, None);
    bytes.extend_from_slice("κόσμε".as_bytes());
    bytes.extend_from_slice(&[0xF4, 0x90]);
    assert_eq!(p.deliver(&bytes), vec![Err(ProtocolError::InvalidUtf8)]);
    assert_eq!(p.server_messages(), vec![close_code(1007)]);

    // In a continuation: the code point starts at the end of the first
    // fragment and turns invalid at the start of a 100-byte continuation.
    let mut p = Pair::new();
    let bytes = concat(&[
        &frag(false, OP_TEXT, &[b'o', b'k', 0xF4]),
        &encode_header_raw(true, 0, OP_CONTINUATION, 100, 0, None),
    ]);
    assert_eq!(p.deliver(&bytes), no_events());
    assert_eq!(p.deliver(&[0x90]), vec![Err(ProtocolError::InvalidUtf8)]);
    assert_eq!(p.server_messages(), vec![close_code(1007)]);

    // Same with a 16-bit length form (300 bytes announced).
    let mut p = Pair::new();
    let mut bytes = encode_header_raw(false, 0, OP_TEXT, 300, 1, None);
    bytes.extend_from_slice(&[b'a'; 50]);
    bytes.extend_from_slice(&[0xED, 0xA0]); // a surrogate
    assert_eq!(p.deliver(&bytes), vec![Err(ProtocolError::InvalidUtf8)]);
    assert_eq!(p.server_messages(), vec![close_code(1007)]);
}

#[test]
fn code_point_split_across_fragments_is_accepted() {
    for s in ["€", "😀", "a😀b", "ñ"] {
        let b = s.as_bytes();
        // Every way of cutting it into two and three fragments.
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let stream = concat(&[
                    &frag(false, OP_TEXT, &b[..i]),
                    &server_ping(b"-"),
                    &frag(false, OP_CONTINUATION, &b[i..j]),
                    &frag(true, OP_CONTINUATION, &b[j..]),
                ]);
                for chunk in [1, usize::MAX] {
                    let mut p = Pair::new().chunked(chunk);
                    assert_eq!(
                        p.deliver(&stream),
                        vec![ping(b"-"), text(s)],
                        "{s:?} cut at {i},{j} chunk {chunk}"
                    );
                }
            }
        }
    }
}

#[test]
fn incomplete_code_point_at_the_end_of_a_message_fails_with_1007() {
    let cases: Vec<Vec<u8>> = vec![
        // One frame ending inside '€'.
        frag(true, OP_TEXT, &[b'a', 0xE2, 0x82]),
        // A lone lead byte.
        frag(true, OP_TEXT, &[0xF0]),
        // Fragments ending inside '€'.
        concat(&[
            &frag(false, OP_TEXT, b"ab"),
            &frag(true, OP_CONTINUATION, &[0xE2, 0x82]),
        ]),
        // The emoji is cut over three fragments, the last one empty.
        concat(&[
            &frag(false, OP_TEXT, &[0xF0, 0x9F]),
            &frag(false, OP_CONTINUATION, &[0x98]),
            &frag(true, OP_CONTINUATION, b""),
        ]),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        for chunk in [1, usize::MAX] {
            let mut p = Pair::new().chunked(chunk);
            assert_eq!(
                p.deliver(bytes),
                vec![Err(ProtocolError::InvalidUtf8)],
                "case {i} chunk {chunk}"
            );
            assert_eq!(p.server_messages(), vec![close_code(1007)], "case {i}");
            p.assert_dead();
        }
    }
}

#[test]
fn utf8_state_does_not_leak_between_messages() {
    // A binary message with bytes that would be invalid text does not upset
    // the validator, and a text message ending exactly at a boundary leaves
    // nothing behind for the next.
    let mut p = Pair::new();
    let stream = concat(&[
        &server_binary(&[0xF0, 0x9F]),
        &server_text("€"),
        &frag(false, OP_BINARY, &[0xE2]),
        &frag(true, OP_CONTINUATION, &[0xFF]),
        &server_text("ok"),
    ]);
    assert_eq!(
        p.deliver(&stream),
        vec![
            binary(&[0xF0, 0x9F]),
            text("€"),
            binary(&[0xE2, 0xFF]),
            text("ok")
        ]
    );
}

// ---------------------------------------------------------------------------
// 7. Ping / pong
// ---------------------------------------------------------------------------

#[test]
fn server_ping_is_reported_and_answered_with_the_same_payload() {
    for payload in [&b""[..], b"hello", &[0xFF, 0x00, 0x80], &[7u8; 125]] {
        for chunk in [1, usize::MAX] {
            let mut p = Pair::new().chunked(chunk);
            assert_eq!(p.deliver(&server_ping(payload)), vec![ping(payload)]);
            assert_eq!(
                p.server_messages(),
                vec![Message::Pong(payload.to_vec())],
                "payload {} chunk {chunk}",
                payload.len()
            );
        }
    }
    // Two pings in one read: both are reported and answered, in order (a
    // burst gets every pong; only a flood past `WAITING_PONGS` is cut
    // short, see `pong_tests`).
    let mut p = Pair::new();
    let both = concat(&[&server_ping(b"1"), &server_ping(b"2")]);
    assert_eq!(p.deliver(&both), vec![ping(b"1"), ping(b"2")]);
    assert_eq!(
        p.server_messages(),
        vec![Message::Pong(b"1".to_vec()), Message::Pong(b"2".to_vec())]
    );
    // Written out in between: a pong each, in order.
    assert_eq!(p.deliver(&server_ping(b"3")), vec![ping(b"3")]);
    p.flush_client();
    assert_eq!(p.deliver(&server_ping(b"4")), vec![ping(b"4")]);
    assert_eq!(
        p.server_messages(),
        vec![Message::Pong(b"3".to_vec()), Message::Pong(b"4".to_vec())]
    );
}

#[test]
fn server_pong_is_reported_and_not_answered() {
    let mut p = Pair::new();
    assert_eq!(p.deliver(&server_pong(b"ack")), vec![pong(b"ack")]);
    assert_eq!(p.deliver(&server_pong(b"")), vec![pong(b"")]);
    assert!(p.client.write_buf().is_empty());
    assert_eq!(p.client.state(), State::Open);
}

#[test]
fn client_ping() {
    let mut p = Pair::new();
    p.client.ping(b"are you there").unwrap();
    p.client.ping(b"").unwrap();
    assert_eq!(
        p.server_messages(),
        vec![
            Message::Ping(b"are you there".to_vec()),
            Message::Ping(Vec::new())
        ]
    );
    // Over 125 bytes: refused, nothing queued (a control frame carries at
    // most 125); 125 bytes go whole.
    let long = bytes_of_len(200);
    assert_eq!(p.client.ping(&long), Err(SendError::PingTooLong(200)));
    p.client.ping(&long[..125]).unwrap();
    assert_eq!(
        p.server_messages(),
        vec![Message::Ping(long[..125].to_vec())]
    );
    // The server's pong comes back as an event.
    assert_eq!(
        p.deliver(&server_pong(b"are you there")),
        vec![pong(b"are you there")]
    );
}

// ---------------------------------------------------------------------------
// 8. Close handshake
// ---------------------------------------------------------------------------

#[test]
fn server_initiated_close_is_echoed() {
    for chunk in [1, usize::MAX] {
        let mut p = Pair::new().chunked(chunk);
        assert_eq!(
            p.deliver(&server_close(Some(1001), "going away")),
            vec![closed(1001, "going away")]
        );
        assert_eq!(p.client.state(), State::Closed);
        assert!(!p.client.timed_out());
        assert_eq!(p.client.poll_timeout(), None);
        assert_eq!(p.server_messages(), vec![close_code(1001)]);
        assert_eq!(p.client.send_text("x"), Err(SendError::Closing));
        // Exactly one echo, nothing after.
        p.assert_dead();
    }
}

#[test]
fn server_close_in_the_middle_of_a_fragmented_message() {
    let mut p = Pair::new();
    let stream = concat(&[
        &frag(false, OP_TEXT, b"part"),
        &server_close(Some(4000), "app"),
    ]);
    assert_eq!(p.deliver(&stream), vec![closed(4000, "app")]);
    assert_eq!(p.server_messages(), vec![close_code(4000)]);
    p.assert_dead();
}

#[test]
fn client_initiated_close() {
    let now = Instant::now();
    let mut p = Pair::new();
    p.client.close(1000, "bye", now).unwrap();
    assert_eq!(p.client.state(), State::CloseSent);
    assert_eq!(p.client.poll_timeout(), Some(now + Duration::from_secs(5)));
    assert_eq!(
        p.server_messages(),
        vec![Message::Close(Some(1000), "bye".into())]
    );
    assert_eq!(p.client.send_text("x"), Err(SendError::Closing));
    assert_eq!(p.client.ping(b""), Err(SendError::Closing));
    assert_eq!(p.client.close(1000, "", now), Err(SendError::Closing));

    assert_eq!(
        p.deliver(&server_close(Some(1000), "ok")),
        vec![closed(1000, "ok")]
    );
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.client.poll_timeout(), None);
    // No second close frame in reply to the reply.
    assert_eq!(p.server_messages(), Vec::<Message>::new());
    // The deadline passing afterwards changes nothing.
    p.client.handle_timeout(now + Duration::from_secs(60));
    assert!(!p.client.timed_out());
    p.assert_dead();
}

#[test]
fn empty_close_payload_is_1005_and_echoed_empty() {
    let mut p = Pair::new();
    assert_eq!(p.deliver(&server_close(None, "")), vec![closed(1005, "")]);
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(
        p.server_messages(),
        vec![Message::Close(None, String::new())]
    );
    p.assert_dead();

    // As a reply to our close.
    let mut p = Pair::new();
    p.client.close(3000, "", Instant::now()).unwrap();
    assert_eq!(p.deliver(&server_close(None, "")), vec![closed(1005, "")]);
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(p.server_messages(), vec![close_code(3000)]);
}

#[test]
fn invalid_received_close_codes_fail_with_1002() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        for chunk in [1, usize::MAX] {
            assert_fails_with(
                Config::default(),
                chunk,
                &server_close(Some(code), "reason"),
                ProtocolError::InvalidCloseCode(code),
                1002,
            );
        }
    }
}

#[test]
fn valid_received_close_codes_are_accepted_and_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        let mut p = Pair::new();
        assert_eq!(
            p.deliver(&server_close(Some(code), "r")),
            vec![closed(code, "r")],
            "code {code}"
        );
        assert_eq!(p.server_messages(), vec![close_code(code)], "code {code}");
        assert_eq!(p.client.state(), State::Closed);
    }
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    for chunk in [1, usize::MAX] {
        assert_fails_with(
            Config::default(),
            chunk,
            &encode_frame(true, 0, OP_CLOSE, &[0x03], None),
            ProtocolError::InvalidClosePayload,
            1002,
        );
    }
}

#[test]
fn close_reason_not_utf8_fails_with_1007() {
    for reason in [&[0xFF][..], &[b'o', b'k', 0xC3], &[0xED, 0xA0, 0x80]] {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        assert_fails_with(
            Config::default(),
            usize::MAX,
            &encode_frame(true, 0, OP_CLOSE, &payload, None),
            ProtocolError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn sent_close_codes_and_reasons_are_checked() {
    let now = Instant::now();
    let mut p = Pair::new();
    for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2000, 2999, 5000] {
        assert_eq!(
            p.client.close(code, "", now),
            Err(SendError::InvalidCloseCode(code)),
            "code {code}"
        );
    }
    for code in [
        1001u16, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        let mut other = Pair::new();
        assert_eq!(other.client.close(code, "", now), Ok(()), "code {code}");
        assert_eq!(
            other.server_messages(),
            vec![Message::Close(Some(code), String::new())]
        );
    }
    assert_eq!(
        p.client.close(1000, &"r".repeat(124), now),
        Err(SendError::ReasonTooLong(124))
    );
    // 62 two-byte characters: 124 bytes, though only 62 chars.
    assert_eq!(
        p.client.close(1000, &"é".repeat(62), now),
        Err(SendError::ReasonTooLong(124))
    );
    // Nothing was sent and the connection is still open.
    assert!(p.client.write_buf().is_empty());
    assert_eq!(p.client.state(), State::Open);
    assert_eq!(p.client.poll_timeout(), None);

    let reason = "r".repeat(123);
    p.client.close(1000, &reason, now).unwrap();
    assert_eq!(
        p.server_messages(),
        vec![Message::Close(Some(1000), reason)]
    );
    assert_eq!(p.client.state(), State::CloseSent);

    for code in [3000u16, 4999] {
        let mut p = Pair::new();
        p.client.close(code, "é", now).unwrap();
        assert_eq!(
            p.server_messages(),
            vec![Message::Close(Some(code), "é".into())]
        );
    }
}

#[test]
fn close_handshake_times_out_at_the_deadline() {
    let timeout = Duration::from_millis(250);
    let config = Config {
        close_timeout: timeout,
        ..Config::default()
    };
    let now = Instant::now();
    let mut p = Pair::with_config(config);

    // Nothing to time out before a close was sent.
    assert_eq!(p.client.poll_timeout(), None);
    p.client.handle_timeout(now + Duration::from_secs(3600));
    assert_eq!(p.client.state(), State::Open);
    assert!(!p.client.timed_out());

    p.client.close(4000, "", now).unwrap();
    let deadline = now + timeout;
    assert_eq!(p.client.poll_timeout(), Some(deadline));
    p.client.handle_timeout(now);
    p.client.handle_timeout(deadline - Duration::from_nanos(1));
    assert_eq!(p.client.state(), State::CloseSent);
    assert!(!p.client.timed_out());
    assert_eq!(p.client.poll_timeout(), Some(deadline));

    p.client.handle_timeout(deadline);
    assert_eq!(p.client.state(), State::Closed);
    assert!(p.client.timed_out());
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server_messages(), vec![close_code(4000)]);
    // A late reply is ignored.
    assert_eq!(p.deliver(&server_close(Some(1000), "")), no_events());
}

// ---------------------------------------------------------------------------
// 9. Peer errors
// ---------------------------------------------------------------------------

fn peer_error_cases() -> Vec<(&'static str, Vec<u8>, ProtocolError)> {
    use ProtocolError as E;
    vec![
        (
            "rsv1",
            encode_frame(true, 4, OP_TEXT, b"x", None),
            E::ReservedBits(0x40),
        ),
        (
            "rsv2",
            encode_frame(true, 2, OP_BINARY, b"x", None),
            E::ReservedBits(0x20),
        ),
        (
            "rsv3",
            encode_frame(true, 1, OP_TEXT, b"x", None),
            E::ReservedBits(0x10),
        ),
        (
            "all rsv",
            encode_frame(true, 7, OP_TEXT, b"x", None),
            E::ReservedBits(0x70),
        ),
        (
            "rsv1 ping",
            encode_frame(true, 4, OP_PING, b"", None),
            E::ReservedBits(0x40),
        ),
        ("opcode 3", frag(true, 3, b""), E::ReservedOpCode(3)),
        ("opcode 7", frag(true, 7, b"abc"), E::ReservedOpCode(7)),
        ("opcode 11", frag(true, 11, b""), E::ReservedOpCode(11)),
        ("opcode 15", frag(true, 15, b"abc"), E::ReservedOpCode(15)),
        (
            "fragmented ping",
            frag(false, OP_PING, b"p"),
            E::FragmentedControlFrame,
        ),
        (
            "fragmented pong",
            frag(false, OP_PONG, b""),
            E::FragmentedControlFrame,
        ),
        (
            "fragmented close",
            frag(false, OP_CLOSE, &[3, 0xE8]),
            E::FragmentedControlFrame,
        ),
        ("ping 126", server_ping(&[0; 126]), E::ControlFrameTooLong),
        ("pong 200", server_pong(&[0; 200]), E::ControlFrameTooLong),
        (
            "close 126",
            frag(true, OP_CLOSE, &[b'a'; 126]),
            E::ControlFrameTooLong,
        ),
        (
            "ping 64-bit length",
            encode_header_raw(true, 0, OP_PING, 70000, 2, None),
            E::ControlFrameTooLong,
        ),
        (
            "masked text",
            encode_frame(true, 0, OP_TEXT, b"hi", Some([1, 2, 3, 4])),
            E::MaskedServerFrame,
        ),
        (
            "masked close",
            encode_frame(true, 0, OP_CLOSE, &[3, 0xE8], Some([9, 9, 9, 9])),
            E::MaskedServerFrame,
        ),
        (
            "64-bit length top bit",
            encode_header_raw(true, 0, OP_BINARY, 1 << 63, 2, None),
            E::InvalidLength,
        ),
        (
            "64-bit length all ones",
            encode_header_raw(true, 0, OP_TEXT, u64::MAX, 2, None),
            E::InvalidLength,
        ),
        (
            "bare continuation",
            frag(true, OP_CONTINUATION, b"x"),
            E::UnexpectedContinuation,
        ),
        (
            "bare non-final continuation",
            frag(false, OP_CONTINUATION, b""),
            E::UnexpectedContinuation,
        ),
        (
            "continuation after a finished message",
            concat(&[
                &frag(false, OP_TEXT, b"a"),
                &frag(true, OP_CONTINUATION, b"b"),
                &frag(true, OP_CONTINUATION, b"c"),
            ]),
            E::UnexpectedContinuation,
        ),
        (
            "text during fragmented text",
            concat(&[&frag(false, OP_TEXT, b"a"), &frag(true, OP_TEXT, b"b")]),
            E::ExpectedContinuation,
        ),
        (
            "binary during fragmented text",
            concat(&[&frag(false, OP_TEXT, b"a"), &frag(true, OP_BINARY, b"b")]),
            E::ExpectedContinuation,
        ),
        (
            "text during fragmented binary, after a ping",
            concat(&[
                &frag(false, OP_BINARY, b"a"),
                &server_ping(b""),
                &frag(false, OP_TEXT, b"b"),
            ]),
            E::ExpectedContinuation,
        ),
    ]
}

#[test]
fn peer_errors_fail_with_the_matching_error_and_close_code() {
    for (name, bytes, err) in peer_error_cases() {
        for chunk in [1, 2, usize::MAX] {
            let mut p = Pair::new().chunked(chunk);
            let events = p.deliver(&bytes);
            // What the good frames before the bad one produce.
            let before: Events = match name {
                "continuation after a finished message" => vec![text("ab")],
                "text during fragmented binary, after a ping" => vec![ping(b"")],
                _ => Vec::new(),
            };
            let mut expected_events = before.clone();
            expected_events.push(Err(err.clone()));
            assert_eq!(events, expected_events, "{name} chunk {chunk}");
            let pings = before
                .iter()
                .filter(|e| matches!(e, Ok(Event::Ping(_))))
                .count();
            let mut expected = vec![Message::Pong(Vec::new()); pings];
            expected.push(close_code(1002));
            assert_eq!(err.close_code(), 1002, "{name}");
            assert_eq!(p.server_messages(), expected, "{name} chunk {chunk}");
            p.assert_dead();
        }
    }
}

#[test]
fn peer_error_after_good_messages() {
    let mut p = Pair::new();
    let stream = concat(&[
        &server_text("one"),
        &server_binary(b"two"),
        &frag(true, 3, b""),
        &server_text("never seen"),
    ]);
    assert_eq!(
        p.deliver(&stream),
        vec![
            text("one"),
            binary(b"two"),
            Err(ProtocolError::ReservedOpCode(3))
        ]
    );
    assert_eq!(p.server_messages(), vec![close_code(1002)]);
    p.assert_dead();
}

#[test]
fn error_is_held_until_fail_queues_the_close_frame() {
    // poll_event reports the error but leaves the close to `fail`, so that
    // the application can still answer the messages before it.
    let mut client = Connection::new(Config::default());
    let mut server = ServerCodec::new();
    client.read_buf().extend_from_slice(&concat(&[
        &server_text("question"),
        &frag(true, OP_CONTINUATION, b"x"),
        &server_ping(b"after"),
    ]));
    assert_eq!(client.poll_event(), text("question").map(Some));
    let err = ProtocolError::UnexpectedContinuation;
    assert_eq!(client.poll_event(), Err(err.clone()));
    assert_eq!(client.state(), State::Open);
    assert!(client.write_buf().is_empty(), "close sent before fail");
    // Sticky, and nothing after the bad frame is decoded (no pong).
    client.read_buf().extend_from_slice(&server_ping(b"more"));
    assert_eq!(client.poll_event(), Err(err.clone()));
    assert!(client.write_buf().is_empty());
    // The answer to the held message still goes out, then the close.
    client.send_text("answer").unwrap();
    client.fail(&err);
    assert_eq!(client.state(), State::Closed);
    assert_eq!(client.poll_event(), Err(err));
    server.feed(client.write_buf());
    assert_eq!(
        server.next_message(),
        Ok(Some(Message::Text("answer".into())))
    );
    assert_eq!(server.next_message(), Ok(Some(close_code(1002))));
    assert_eq!(server.next_message(), Ok(None));
}

#[test]
fn peer_error_after_our_close_sends_no_second_close_frame() {
    let mut p = Pair::new();
    p.client.close(1000, "bye", Instant::now()).unwrap();
    assert_eq!(
        p.deliver(&frag(true, 11, b"")),
        vec![Err(ProtocolError::ReservedOpCode(11))]
    );
    assert_eq!(p.client.state(), State::Closed);
    assert_eq!(
        p.server_messages(),
        vec![Message::Close(Some(1000), "bye".into())]
    );
    p.assert_dead();
}

#[test]
fn messages_after_our_close_are_dropped_unless_receive_while_closing() {
    // A message begun before our close and ended after it, a whole one, a
    // binary one, a text one split inside a character, then the close.
    let stream = concat(&[
        &frag(false, OP_TEXT, b"be"),
        &frag(true, OP_CONTINUATION, b"fore"),
        &server_text("after"),
        &frag(true, OP_BINARY, b"\x01\x02"),
        &frag(false, OP_TEXT, &"€".as_bytes()[..1]),
        &frag(true, OP_CONTINUATION, &"€".as_bytes()[1..]),
        &server_close(Some(1000), ""),
    ]);
    let split = frag(false, OP_TEXT, b"be").len();
    for (receive, expected) in [
        (false, vec![closed(1000, "")]),
        (
            true,
            vec![
                text("before"),
                text("after"),
                binary(b"\x01\x02"),
                text("€"),
                closed(1000, ""),
            ],
        ),
    ] {
        let mut p = Pair::with_config(Config {
            receive_while_closing: receive,
            ..Config::default()
        })
        .chunked(3);
        assert_eq!(p.deliver(&stream[..split]), no_events());
        p.client.close(1000, "", Instant::now()).unwrap();
        assert_eq!(
            p.server_messages(),
            vec![Message::Close(Some(1000), String::new())]
        );
        assert_eq!(p.deliver(&stream[split..]), expected, "{receive}");
        p.assert_dead();
    }
    // Text that is not UTF-8 after our close still fails the connection.
    let mut p = Pair::with_config(Config {
        receive_while_closing: true,
        ..Config::default()
    });
    p.client.close(1000, "", Instant::now()).unwrap();
    assert_eq!(
        p.deliver(&frag(true, OP_TEXT, b"\xc3\x28")),
        vec![Err(ProtocolError::InvalidUtf8)]
    );
}

// ---------------------------------------------------------------------------
// 10. Limits
// ---------------------------------------------------------------------------

fn limited(max_frame_size: usize, max_message_size: usize) -> Config {
    Config {
        limits: Limits {
            max_frame_size,
            max_message_size,
            ..Limits::default()
        },
        ..Config::default()
    }
}

#[test]
fn frame_over_max_frame_size_fails_from_the_header_alone() {
    // Only the header is sent: no payload byte ever arrives.
    for (opcode, len, form) in [
        (OP_BINARY, 1001u64, 1u8),
        (OP_TEXT, 1001, 1),
        (OP_BINARY, 70000, 2),
    ] {
        let header = encode_header_raw(true, 0, opcode, len, form, None);
        for chunk in [1, usize::MAX] {
            assert_fails_with(
                limited(1000, 1 << 20),
                chunk,
                &header,
                ProtocolError::FrameTooLarge {
                    size: len,
                    max: 1000,
                },
                1009,
            );
        }
    }
    // The error comes with the last header byte, not before.
    let mut p = Pair::with_config(limited(1000, 1 << 20));
    let header = encode_header_raw(true, 0, OP_BINARY, 1001, 1, None);
    assert_eq!(p.deliver(&header[..3]), no_events());
    assert_eq!(
        p.deliver(&header[3..]),
        vec![Err(ProtocolError::FrameTooLarge {
            size: 1001,
            max: 1000
        })]
    );

    // Exactly at the limit is fine.
    let mut p = Pair::with_config(limited(1000, 1 << 20));
    let b = bytes_of_len(1000);
    assert_eq!(p.deliver(&server_binary(&b)), vec![binary(&b)]);
}

#[test]
fn fragmented_message_over_max_message_size_fails_with_1009() {
    let config = limited(600, 1000);
    // 600 + 400 = 1000: fine.
    let mut p = Pair::with_config(config.clone());
    let ok = concat(&[
        &frag(false, OP_BINARY, &[1; 600]),
        &server_ping(b"x"),
        &frag(true, OP_CONTINUATION, &[2; 400]),
    ]);
    let mut whole = vec![1; 600];
    whole.extend_from_slice(&[2; 400]);
    assert_eq!(p.deliver(&ok), vec![ping(b"x"), binary(&whole)]);

    // 600 + 401: detected from the second header, before its payload.
    let over = concat(&[
        &frag(false, OP_TEXT, &[b'a'; 600]),
        &encode_header_raw(true, 0, OP_CONTINUATION, 401, 1, None),
    ]);
    for chunk in [1, usize::MAX] {
        assert_fails_with(
            config.clone(),
            chunk,
            &over,
            ProtocolError::MessageTooLarge {
                size: 1001,
                max: 1000,
            },
            1009,
        );
    }

    // Many small fragments adding up.
    let mut many = frag(false, OP_BINARY, &[0; 300]);
    for _ in 0..2 {
        many.extend(frag(false, OP_CONTINUATION, &[0; 300]));
    }
    many.extend(frag(true, OP_CONTINUATION, &[0; 300]));
    assert_fails_with(
        config.clone(),
        usize::MAX,
        &many,
        ProtocolError::MessageTooLarge {
            size: 1200,
            max: 1000,
        },
        1009,
    );

    // One unfragmented frame under max_frame_size but over max_message_size.
    assert_fails_with(
        limited(2000, 1000),
        usize::MAX,
        &encode_header_raw(true, 0, OP_BINARY, 1500, 1, None),
        ProtocolError::MessageTooLarge {
            size: 1500,
            max: 1000,
        },
        1009,
    );
}

#[test]
fn huge_length_with_default_limits_fails_without_allocating() {
    let limits = Limits::default();
    for opcode in [OP_BINARY, OP_TEXT] {
        let header = encode_header_raw(true, 0, opcode, (1 << 63) - 1, 2, None);
        let mut p = Pair::new();
        assert_eq!(
            p.deliver(&header),
            vec![Err(ProtocolError::MessageTooLarge {
                size: (1 << 63) - 1,
                max: limits.max_message_size,
            })]
        );
        assert!(
            p.client.read_buf().capacity() < 1 << 20,
            "read buffer grew to {}",
            p.client.read_buf().capacity()
        );
        assert_eq!(p.server_messages(), vec![close_code(1009)]);
        p.assert_dead();
    }
}

#[test]
fn handshake_response_over_max_len() {
    let key = handshake::generate_key();
    let resp = response_101(&key, None, &[("X-Pad", &"p".repeat(2000))]);
    let len = resp.len();
    // Exactly max_len: accepted.
    let (_, consumed) = handshake::parse_response(&resp, &key, &[], len)
        .unwrap()
        .unwrap();
    assert_eq!(consumed, len);
    // One byte under: refused once max_len bytes are buffered, not before.
    let max = len - 1;
    for cut in 0..max {
        assert_eq!(
            handshake::parse_response(&resp[..cut], &key, &[], max),
            Ok(None),
            "cut {cut}"
        );
    }
    for cut in [max, len] {
        assert_eq!(
            handshake::parse_response(&resp[..cut], &key, &[], max),
            Err(HandshakeError::ResponseTooLarge { max }),
            "cut {cut}"
        );
    }
    // A server that never ends its headers.
    let line = format!("X-Pad: {}\r\n", "y".repeat(100));
    let endless = "HTTP/1.1 101 Switching Protocols\r\n".to_owned() + &line.repeat(20);
    assert_eq!(
        handshake::parse_response(endless.as_bytes(), &key, &[], 1024),
        Err(HandshakeError::ResponseTooLarge { max: 1024 })
    );
}

// ---------------------------------------------------------------------------
// Buffers of large frames
// ---------------------------------------------------------------------------

/// The bytes of a binary message event.
fn binary_bytes(ev: &Result<Event, ProtocolError>) -> Bytes {
    match ev {
        Ok(Event::Message(Data::Binary(b))) => b.clone(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

#[test]
fn a_large_message_buffer_is_reused_once_the_message_is_dropped() {
    let mut p = Pair::new().chunked(1000);
    let first = bytes_of_len(40_000);
    let events = p.deliver(&frag(true, 2, &first));
    assert_eq!(events.len(), 1);
    let message = binary_bytes(&events[0]);
    assert_eq!(message, first);
    let at = message.as_ptr();
    assert_eq!(p.client.pooled_buffers(), 0, "held by the message");
    drop((message, events));
    assert_eq!(p.client.pooled_buffers(), 1, "back once dropped");

    let second: Vec<u8> = bytes_of_len(40_000).iter().map(|b| !b).collect();
    let events = p.deliver(&frag(true, 2, &second));
    let message = binary_bytes(&events[0]);
    assert_eq!(message, second);
    assert_eq!(message.as_ptr(), at, "the same buffer, reused");
}

#[test]
fn after_a_large_frame_the_next_read_goes_into_a_buffer_that_becomes_the_next_message() {
    let mut p = Pair::new();
    let events = p.deliver(&frag(true, 2, &bytes_of_len(40_000)));
    let first = binary_bytes(&events[0]).as_ptr();
    drop(events);
    // The buffer offered for the next read has room for a frame of the same
    // size, header included: the first message's, back from the pool, with
    // the room of its header at the front reclaimed.
    let second: Vec<u8> = bytes_of_len(40_000).iter().map(|b| !b).collect();
    let wire = frag(true, 2, &second);
    let buf = p.client.read_buf();
    assert!(buf.is_empty());
    assert!(buf.capacity() >= wire.len(), "room for {}", wire.len());
    let at = buf.as_ptr();
    assert_eq!(at, first.wrapping_sub(4), "the pooled buffer");
    // One read brings the whole frame: its payload is the message, where it
    // was read (no copy); the header (4 bytes) was before it.
    buf.extend_from_slice(&wire);
    let event = p.client.poll_event().transpose().expect("an event");
    let message = binary_bytes(&event);
    assert_eq!(message, second);
    assert_eq!(message.as_ptr(), at.wrapping_add(4));
    // The same when the frame comes in pieces: the piece with the header
    // stays where it was read, and the rest is read after it.
    drop((message, event));
    let buf = p.client.read_buf();
    let at = buf.as_ptr();
    let events = p.deliver(&wire[..1000]);
    assert!(events.is_empty());
    assert!(p.client.receiving_large_frame());
    let events = p.deliver(&wire[1000..]);
    let message = binary_bytes(&events[0]);
    assert_eq!(message, second);
    assert_eq!(message.as_ptr(), at.wrapping_add(4));
    // A small frame next: the prepared buffer serves it like any read.
    assert_eq!(p.deliver(&frag(true, 1, b"small")), vec![text("small")]);
}

#[test]
fn a_read_buffer_prepared_for_a_large_frame_is_not_much_larger() {
    let mut p = Pair::new().chunked(1000);
    // The pool keeps the buffer of a 600 KB message...
    drop(p.deliver(&frag(true, 2, &bytes_of_len(600_000))));
    // ...which is too large to be prepared for frames of 40 KB: a small
    // message cut from it would keep it alive.
    drop(p.deliver(&frag(true, 2, &bytes_of_len(40_000))));
    let room = p.client.read_buf().capacity();
    assert!(room >= 40_004, "room for a frame: {room}");
    assert!(
        room <= 2 * 40_004,
        "read buffer of {room} bytes for 40 KB frames"
    );
    assert_eq!(p.deliver(&frag(true, 1, b"hi")), vec![text("hi")]);
}

#[test]
fn no_read_buffer_is_prepared_after_frames_above_128_kib() {
    let mut p = Pair::new();
    drop(p.deliver(&frag(true, 2, &bytes_of_len(200_000))));
    let room = p.client.read_buf().capacity();
    assert!(room < 200_000, "read buffer of {room} bytes");
}

#[test]
fn a_large_frame_does_not_keep_a_much_larger_read_buffer() {
    let mut p = Pair::new().chunked(1000);
    let buf = p.client.read_buf();
    buf.reserve(1 << 20);
    let (start, room) = (buf.as_ptr() as usize, buf.capacity());
    let events = p.deliver(&frag(true, 2, &bytes_of_len(40_000)));
    let message = binary_bytes(&events[0]);
    assert_eq!(message, bytes_of_len(40_000));
    // The frame got a buffer of its own size rather than the 1 MiB one.
    let at = message.as_ptr() as usize;
    assert!(
        !(start..start + room).contains(&at),
        "a 40 KB message holds the 1 MiB read buffer"
    );
}

#[test]
fn a_quiet_connection_stops_preparing_reads_for_large_frames() {
    let mut p = Pair::new();
    drop(p.deliver(&frag(true, 2, &bytes_of_len(40_000))));
    assert!(p.client.read_buf().capacity() >= 40_004, "prepared");
    // The driver frees the read buffer of a connection gone quiet: no other
    // buffer of a large frame's size takes its place.
    p.client.stop_preparing_reads();
    *p.client.read_buf() = BytesMut::new();
    assert_eq!(p.client.read_buf().capacity(), 0);
    // Until the next large frame.
    drop(p.deliver(&frag(true, 2, &bytes_of_len(40_000))));
    assert!(p.client.read_buf().capacity() >= 40_004, "prepared again");
}

#[test]
fn held_large_messages_keep_their_bytes_while_more_arrive() {
    let mut p = Pair::new().chunked(4096);
    let payloads: Vec<Vec<u8>> = (0..12u8)
        .map(|i| vec![i; 33_000 + usize::from(i) * 1000])
        .collect();
    let mut held = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let events = p.deliver(&frag(true, 2, payload));
        held.push(binary_bytes(&events[0]));
        if i % 3 == 2 {
            // Some go back to the pool while others are still held.
            held.remove(0);
        }
    }
    for message in &held {
        let first = message[0];
        assert!(
            message.iter().all(|&b| b == first),
            "message {first} was overwritten"
        );
        assert_eq!(message.len(), 33_000 + usize::from(first) * 1000);
    }
}

#[test]
fn bytes_past_a_large_frame_in_a_reused_buffer_start_the_next_frame() {
    // Chunks of 7000 bytes cross every frame boundary, so reads into a
    // frame's own buffer (reused, and larger than the frame) take bytes of
    // the next frames too.
    let mut p = Pair::new().chunked(7000);
    drop(p.deliver(&frag(true, 2, &bytes_of_len(90_000))));
    let stream = concat(&[
        &frag(true, 2, &bytes_of_len(40_000)),
        &frag(true, 1, b"after"),
        &frag(true, 2, &bytes_of_len(50_000)),
        &frag(true, 1, b"end"),
    ]);
    let events = p.deliver(&stream);
    assert_eq!(
        events,
        vec![
            binary(&bytes_of_len(40_000)),
            text("after"),
            binary(&bytes_of_len(50_000)),
            text("end"),
        ]
    );
}

#[test]
fn kept_buffers_are_freed_once_traffic_turns_small() {
    let mut p = Pair::new().chunked(1000);
    let stream = concat(&[
        &frag(true, 2, &bytes_of_len(40_000)),
        &frag(true, 2, &bytes_of_len(40_000)),
    ]);
    drop(p.deliver(&stream));
    assert_eq!(p.client.pooled_buffers(), 2);
    // The next read goes into one of them, ready for another large frame.
    assert_eq!(p.deliver(&frag(true, 1, b"small")), vec![text("small")]);
    assert_eq!(p.client.pooled_buffers(), 1);
    for _ in 0..63 {
        assert_eq!(p.deliver(&frag(true, 1, b"small")), vec![text("small")]);
    }
    assert_eq!(
        p.client.pooled_buffers(),
        1,
        "kept through a few small frames"
    );
    assert_eq!(p.deliver(&frag(true, 1, b"small")), vec![text("small")]);
    assert_eq!(p.client.pooled_buffers(), 0, "freed after many");
}

#[test]
fn a_large_first_fragment_becomes_the_message_and_the_next_goes_back() {
    let mut p = Pair::new().chunked(1000);
    let (a, b) = (bytes_of_len(40_000), bytes_of_len(50_000));
    let events = p.deliver(&concat(&[&frag(false, 2, &a), &frag(true, 0, &b)]));
    assert_eq!(events, vec![binary(&[a, b].concat())]);
    // The first fragment's buffer became the message's; the second's was
    // copied into it and is kept for reuse.
    assert_eq!(p.client.pooled_buffers(), 1);
}

/// With the default limits, a message larger than 16 MiB sent as one frame
/// (as most servers send it) arrives: frames are bounded by the message
/// limit, not by a smaller limit of their own.
#[test]
fn a_message_of_20_mib_in_one_frame_arrives_with_the_default_limits() {
    let mut c = Connection::new(Config::default());
    let payload = vec![b'x'; 20 << 20];
    c.read_buf()
        .extend_from_slice(&encode_frame(true, 0, OP_BINARY, &payload, None));
    match c.poll_event() {
        Ok(Some(Event::Message(Data::Binary(b)))) => assert_eq!(b.len(), 20 << 20),
        other => panic!("{other:?}"),
    }
    // Past the message limit, the header alone is refused.
    let max = Limits::default().max_message_size;
    c.read_buf()
        .extend_from_slice(&[0x82, 127, 0, 0, 0, 0, 0x04, 0, 0, 1]);
    assert_eq!(
        c.poll_event(),
        Err(ProtocolError::MessageTooLarge {
            size: (64 << 20) + 1,
            max
        })
    );
}

/// With both size limits lifted, a frame that declares 2^63 - 1 bytes
/// waits for its bytes with a buffer a step ahead of them, rather than
/// asking the allocator for the declared size (which would abort).
#[test]
fn a_huge_declared_frame_with_the_limits_lifted_allocates_a_step_at_a_time() {
    let limits = Limits {
        max_message_size: usize::MAX,
        max_frame_size: usize::MAX,
        ..Limits::default()
    };
    let mut c = Connection::new(Config {
        limits,
        ..Config::default()
    });
    c.read_buf().extend_from_slice(&encode_header_raw(
        true,
        0,
        OP_BINARY,
        (1 << 63) - 1,
        2,
        None,
    ));
    c.read_buf().extend_from_slice(b"abc");
    assert_eq!(c.poll_event(), Ok(None));
    let room = c.read_buf().capacity();
    assert!(room <= (64 << 20) + 1024, "{room} bytes of room");
}
