//! The bodies of the fuzz targets and the invariants they check.
//!
//! This file is shared: the cargo-fuzz binaries in `fuzz/fuzz_targets/` call
//! [`frame_decoder`], [`handshake_response`] and [`deflate`] with libFuzzer's
//! inputs, and the stable harness `crates/unisocket/tests/fuzz_harness.rs`
//! includes this file with `#[path]` and calls the same functions with
//! inputs from a seeded generator (and replays the inputs kept under
//! `crates/unisocket/tests/regressions/`). An invariant is written once.
//!
//! Every entry point takes arbitrary bytes: the first few bytes choose the
//! configuration and the mode, the rest is the input proper. "Raw" modes
//! feed the bytes as they are; "round trip" modes read them as a list of
//! messages, encode them as a valid server would, and check that the client
//! decodes exactly those messages.
//!
//! A failed invariant panics (which libFuzzer reports as a crash).

#![allow(dead_code)]

use std::time::{Duration, Instant};

#[cfg(feature = "deflate")]
use unisocket_proto::deflate::Deflate;
use unisocket_proto::deflate::{DeflateConfig, DeflateParams};
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::handshake::{accept_key, parse_response};
use unisocket_proto::utf8::Utf8Validator;
use unisocket_proto::Data;
use unisocket_proto::{Config, Connection, Event, HandshakeError, Limits, ProtocolError, State};

/// The `Sec-WebSocket-Key` of every handshake input (the RFC 6455 example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

// ---------------------------------------------------------------------------
// Reading the input
// ---------------------------------------------------------------------------

/// A cursor over the fuzz input; reads past the end give zeros / empty slices.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// The next byte, or 0 at the end.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next two bytes as a big-endian number.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A tiny deterministic generator (xorshift64*) for chunk sizes.
pub struct Chunker {
    state: u64,
    max: usize,
}

impl Chunker {
    /// Chunk sizes chosen by `seed`: its low 3 bits pick the largest chunk
    /// (1, 2, 3, 7, 64, 1000, 65536 bytes or everything at once), the rest
    /// seed the sizes.
    pub fn new(seed: u8) -> Self {
        let max = [1, 2, 3, 7, 64, 1000, 65536, usize::MAX][usize::from(seed & 7)];
        Chunker {
            state: 0x9E37_79B9_7F4A_7C15 ^ u64::from(seed),
            max,
        }
    }

    /// The next chunk size, at least 1.
    pub fn next_size(&mut self) -> usize {
        if self.max == usize::MAX {
            return usize::MAX;
        }
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        1 + (r % self.max as u64) as usize
    }
}

/// Limits chosen by one byte: small ones so that the fuzzer reaches them,
/// and the defaults.
pub fn pick_limits(b: u8) -> Limits {
    const FRAME: [usize; 8] = [0, 1, 125, 126, 1000, 65535, 65536, 16 << 20];
    const MESSAGE: [usize; 8] = [0, 1, 125, 200, 1000, 4096, 65536, 64 << 20];
    if b & 0x80 != 0 {
        return Limits::default();
    }
    Limits {
        max_frame_size: FRAME[usize::from(b & 7)],
        max_message_size: MESSAGE[usize::from((b >> 3) & 7)],
        ..Limits::default()
    }
}

// ---------------------------------------------------------------------------
// Encoding what a server sends, decoding what the client sends
// ---------------------------------------------------------------------------

/// Appends a server frame (unmasked) with the given first-byte bits.
pub fn push_frame(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
    out.push((u8::from(fin) << 7) | (u8::from(rsv1) << 6) | (opcode & 0x0F));
    let len = payload.len();
    if len <= 125 {
        out.push(len as u8);
    } else if len <= 0xFFFF {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Appends a close frame with `code` and `reason` (no payload for `None`).
pub fn push_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str) {
    let mut payload = Vec::new();
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
    }
    push_frame(out, true, false, 0x8, &payload);
}

/// One frame the client wrote, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1.
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

/// Takes every frame out of the connection's write buffer, checking that
/// each is well formed and masked (RFC 6455 section 5.3).
pub fn drain_written(conn: &mut Connection) -> Vec<Sent> {
    let buf = conn.write_buf();
    let mut frames = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let (h, n) = match FrameHeader::decode(&buf[at..], true) {
            Ok(Some(x)) => x,
            other => panic!("the client wrote a bad frame header: {other:?}"),
        };
        let key = h
            .mask
            .unwrap_or_else(|| panic!("the client wrote an unmasked frame: {h:?}"));
        let len = usize::try_from(h.payload_len).expect("payload length fits in usize");
        let start = at + n;
        assert!(
            start + len <= buf.len(),
            "the client wrote a truncated frame"
        );
        let mut payload = buf[start..start + len].to_vec();
        apply_mask(&mut payload, key, 0);
        if h.opcode.is_control() {
            assert!(h.fin && len <= 125, "bad control frame from the client");
        }
        frames.push(Sent {
            fin: h.fin,
            rsv1: h.rsv1,
            opcode: h.opcode,
            payload,
        });
        at = start + len;
    }
    buf.clear();
    frames
}

/// The close code in a close frame's payload, or `None` for an empty payload.
fn close_code_of(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Driving a Connection and checking its invariants
// ---------------------------------------------------------------------------

/// A [`Connection`] under test: bytes go in by chunks, every event and every
/// frame the client writes is checked.
pub struct Run {
    /// The connection.
    pub conn: Connection,
    /// The events, in order.
    pub events: Vec<Event>,
    /// The first protocol error, if any.
    pub error: Option<ProtocolError>,
    /// Every frame the client wrote.
    pub sent: Vec<Sent>,
    closes_sent: usize,
    limits: Limits,
}

impl Run {
    /// A connection with `config`.
    pub fn new(config: Config) -> Self {
        let limits = config.limits;
        Run {
            conn: Connection::new(config),
            events: Vec::new(),
            error: None,
            sent: Vec::new(),
            closes_sent: 0,
            limits,
        }
    }

    /// Feeds `bytes` in chunks chosen by `chunks`, polling after each, until
    /// the end, an error, or the close. `close_after` makes the client start
    /// the close handshake after that many chunks.
    pub fn feed(&mut self, bytes: &[u8], chunks: &mut Chunker, close_after: Option<usize>) {
        let mut at = 0;
        let mut n = 0;
        while at < bytes.len() {
            if close_after == Some(n) {
                self.client_close();
            }
            let size = chunks.next_size().min(bytes.len() - at);
            if self.conn.state() == State::Closed || self.error.is_some() {
                // The driver stops reading here.
                break;
            }
            self.conn
                .read_buf()
                .extend_from_slice(&bytes[at..at + size]);
            at += size;
            n += 1;
            self.poll_all();
        }
        if close_after.is_some_and(|c| c >= n) {
            self.client_close();
        }
    }

    /// Starts the close handshake from the client, with code 1000.
    pub fn client_close(&mut self) {
        let was_open = self.conn.state() == State::Open;
        let r = self.conn.close(1000, "bye", Instant::now());
        assert_eq!(r.is_ok(), was_open, "close() in state {was_open}: {r:?}");
        if was_open {
            assert_eq!(self.conn.state(), State::CloseSent);
            let sent = self.collect_written();
            let last = sent.last().expect("close() wrote a close frame");
            assert_eq!(last.opcode, OpCode::Close);
            assert_eq!(last.payload, b"\x03\xe8bye");
            // No data after our close.
            assert!(self.conn.send_text("late").is_err());
            assert!(self.conn.ping(b"late").is_err());
        }
    }

    fn collect_written(&mut self) -> Vec<Sent> {
        if self.conn.write_buf().is_empty() {
            return Vec::new();
        }
        let frames = drain_written(&mut self.conn);
        self.closes_sent += frames.iter().filter(|f| f.opcode == OpCode::Close).count();
        assert!(
            self.closes_sent <= 1,
            "the client sent {} close frames",
            self.closes_sent
        );
        self.sent.extend(frames.iter().cloned());
        frames
    }

    /// Polls every event out of the read buffer.
    pub fn poll_all(&mut self) {
        loop {
            let before = self.conn.state();
            match self.conn.poll_event() {
                Ok(Some(ev)) => {
                    self.check_event(&ev, before);
                    self.events.push(ev);
                }
                Ok(None) => {
                    let _ = self.collect_written();
                    if self.conn.state() != State::Closed {
                        // Bounded memory: at most one frame's payload (or
                        // the start of a header) waits in the read buffer.
                        let held = self.conn.read_buf().len();
                        // Frames are bounded by the message limit too
                        // (a compressed one up to an eighth more).
                        let m = self.limits.max_message_size;
                        let frame = self
                            .limits
                            .max_frame_size
                            .min(m.saturating_add(m / 8).saturating_add(1024));
                        let max = frame.saturating_add(MAX_HEADER_LEN);
                        assert!(held <= max, "read buffer holds {held} bytes, over {max}");
                    }
                    return;
                }
                Err(e) => {
                    assert!(
                        matches!(e.close_code(), 1002 | 1007 | 1009),
                        "{e:?} maps to close code {}",
                        e.close_code()
                    );
                    assert!(!e.to_string().is_empty());
                    if let ProtocolError::FrameTooLarge { size, max } = e {
                        assert!(size > max as u64);
                        assert_eq!(max, self.limits.max_frame_size);
                    }
                    if let ProtocolError::MessageTooLarge { size, max } = e {
                        assert!(size > max as u64);
                        assert_eq!(max, self.limits.max_message_size);
                    }
                    // The error is sticky and nothing more is decoded.
                    assert_eq!(self.conn.poll_event(), Err(e.clone()));
                    assert!(self.conn.read_buf().is_empty());
                    let _ = self.collect_written();
                    self.error = Some(e);
                    return;
                }
            }
        }
    }

    fn check_event(&mut self, ev: &Event, before: State) {
        assert_ne!(before, State::Closed, "an event after the close: {ev:?}");
        let written = self.collect_written();
        match ev {
            Event::Message(data) => {
                assert_eq!(before, State::Open, "a message while closing");
                assert!(data.len() <= self.limits.max_message_size);
                if let Data::Text(t) = data {
                    assert!(
                        std::str::from_utf8(t.as_bytes()).is_ok(),
                        "a text message that is not UTF-8"
                    );
                }
                assert!(written.is_empty());
            }
            Event::Ping(p) => {
                assert_eq!(before, State::Open, "a ping while closing");
                assert!(p.len() <= 125);
                // The pong is queued at once with the same payload.
                assert_eq!(written.len(), 1, "{written:?}");
                assert_eq!(written[0].opcode, OpCode::Pong);
                assert_eq!(written[0].payload, &p[..]);
            }
            Event::Pong(p) => {
                assert_eq!(before, State::Open, "a pong while closing");
                assert!(p.len() <= 125);
                assert!(written.is_empty());
            }
            Event::Close { code, reason } => {
                assert!(
                    *code == 1005 || unisocket_proto::connection::is_valid_received_code(*code),
                    "close code {code} accepted"
                );
                assert!(reason.len() <= 123);
                assert_eq!(self.conn.state(), State::Closed);
                if before == State::Open {
                    // The echo.
                    assert_eq!(written.len(), 1, "{written:?}");
                    assert_eq!(written[0].opcode, OpCode::Close);
                    let echoed = close_code_of(&written[0].payload);
                    assert_eq!(echoed, (*code != 1005).then_some(*code));
                } else {
                    assert!(written.is_empty(), "{written:?}");
                }
                assert_eq!(self.conn.poll_event(), Ok(None));
                assert!(self.conn.send_text("x").is_err());
            }
        }
    }

    /// Ends the run: after an error, `fail` must queue exactly one close
    /// frame with the error's code (unless ours was sent already) and close.
    pub fn finish(&mut self) {
        let Some(e) = self.error.clone() else {
            if self.conn.state() == State::CloseSent {
                // The close deadline passes.
                self.conn
                    .handle_timeout(Instant::now() + Duration::from_secs(3600));
                assert_eq!(self.conn.state(), State::Closed);
                assert!(self.conn.timed_out());
            }
            return;
        };
        let before = self.conn.state();
        self.conn.fail(&e);
        assert_eq!(self.conn.state(), State::Closed);
        let written = self.collect_written();
        if before == State::Open {
            assert_eq!(written.len(), 1, "{written:?}");
            assert_eq!(written[0].opcode, OpCode::Close);
            assert_eq!(close_code_of(&written[0].payload), Some(e.close_code()));
        } else {
            assert!(written.is_empty(), "{written:?}");
        }
        assert_eq!(self.conn.poll_event(), Err(e));
        assert!(self.conn.send_text("x").is_err());
        assert_eq!(self.conn.poll_timeout(), None);
    }
}

// ---------------------------------------------------------------------------
// Target: frame_decoder
// ---------------------------------------------------------------------------

/// The `frame_decoder` target. Byte 0 is flags (bit 0: round-trip mode;
/// bit 1: the client closes part-way; bit 2: also run the UTF-8 validator
/// against `std` on the raw bytes), byte 1 picks the limits, byte 2 the
/// chunk sizes, byte 3 when the client closes; the rest is the input.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let limits = pick_limits(input.byte());
    let chunk_seed = input.byte();
    let close_at = input.byte();
    let close_after = (flags & 2 != 0).then_some(usize::from(close_at % 8));
    let rest = input.rest();
    if flags & 1 == 0 {
        if flags & 4 != 0 {
            utf8_agrees_with_std(rest, chunk_seed);
        }
        frame_decoder_raw(limits, chunk_seed, close_after, rest);
    } else {
        let (stream, expected) = valid_stream(&mut Input::new(rest));
        frame_decoder_round_trip(chunk_seed, &stream, &expected);
    }
}

/// Feeds arbitrary bytes as the server's frames; checks every invariant.
pub fn frame_decoder_raw(
    limits: Limits,
    chunk_seed: u8,
    close_after: Option<usize>,
    bytes: &[u8],
) -> Run {
    let mut run = Run::new(Config {
        limits,
        ..Config::default()
    });
    run.feed(bytes, &mut Chunker::new(chunk_seed), close_after);
    run.finish();
    run
}

/// Feeds a valid stream; the events must be exactly `expected`, with no error.
pub fn frame_decoder_round_trip(chunk_seed: u8, stream: &[u8], expected: &[Event]) {
    let mut run = Run::new(Config::default());
    run.feed(stream, &mut Chunker::new(chunk_seed), None);
    assert_eq!(run.error, None, "a valid stream was refused");
    assert_eq!(run.events, expected);
    run.finish();
}

/// The incremental UTF-8 validator agrees with `std::str::from_utf8` for any
/// bytes cut into any chunks.
pub fn utf8_agrees_with_std(bytes: &[u8], chunk_seed: u8) {
    let mut v = Utf8Validator::new();
    let mut chunks = Chunker::new(chunk_seed);
    let mut at = 0;
    let mut ok = true;
    while at < bytes.len() {
        let size = chunks.next_size().min(bytes.len() - at);
        if v.feed(&bytes[at..at + size]).is_err() {
            ok = false;
            // It fails fast: the bytes so far are not a valid prefix.
            let upto = at + size;
            assert!(
                std::str::from_utf8(&bytes[..upto]).is_err(),
                "the validator refused a valid prefix"
            );
            break;
        }
        at += size;
    }
    if ok {
        ok = v.finish().is_ok();
    }
    assert_eq!(ok, std::str::from_utf8(bytes).is_ok(), "{bytes:02x?}");
}

/// Reads a list of messages from `input` and encodes them as a valid server
/// would: text and binary messages (some fragmented, with pings and pongs
/// between the fragments), and at the end maybe a close frame. Returns the
/// bytes and the events the client must report.
pub fn valid_stream(input: &mut Input<'_>) -> (Vec<u8>, Vec<Event>) {
    let mut out = Vec::new();
    let mut events = Vec::new();
    while !input.is_empty() {
        let op = input.byte();
        match op % 8 {
            0..=2 => {
                // A message: length from the next byte, scaled by op bits.
                let scale = [1usize, 1, 16, 300][usize::from((op >> 3) & 3)];
                let len = usize::from(input.byte()) * scale;
                let raw = input.take(len);
                let text = op % 8 != 2;
                let payload: Vec<u8> = if text {
                    String::from_utf8_lossy(raw).into_owned().into_bytes()
                } else {
                    raw.to_vec()
                };
                let pieces = 1 + usize::from((op >> 5) & 3);
                let cuts = cut_points(input, payload.len(), pieces);
                let mut start = 0;
                for (i, end) in cuts.iter().copied().enumerate() {
                    let opcode = match (i, text) {
                        (0, true) => 0x1,
                        (0, false) => 0x2,
                        _ => 0x0,
                    };
                    push_frame(
                        &mut out,
                        i + 1 == cuts.len(),
                        false,
                        opcode,
                        &payload[start..end],
                    );
                    start = end;
                    if i + 1 < cuts.len() && input.byte() & 1 == 1 {
                        // A control frame between fragments.
                        let n = input_byte_mod(input, 126);
                        let p = input.take(usize::from(n));
                        push_frame(&mut out, true, false, 0x9, p);
                        events.push(Event::Ping(bytes::Bytes::copy_from_slice(p)));
                    }
                }
                let data = if text {
                    Data::from(String::from_utf8(payload).expect("lossy text is UTF-8"))
                } else {
                    Data::from(payload)
                };
                events.push(Event::Message(data));
            }
            3 | 4 => {
                let n = input_byte_mod(input, 126);
                let p = input.take(usize::from(n));
                let (opcode, ev) = if op % 8 == 3 {
                    (0x9, Event::Ping(bytes::Bytes::copy_from_slice(p)))
                } else {
                    (0xA, Event::Pong(bytes::Bytes::copy_from_slice(p)))
                };
                push_frame(&mut out, true, false, opcode, p);
                events.push(ev);
            }
            5 => {
                // The close, which ends the stream.
                let code = [1000, 1001, 1003, 1011, 3000, 4999][usize::from(input.byte() % 6)];
                let reason: String = String::from_utf8_lossy(input.take(40))
                    .chars()
                    .take(30)
                    .collect();
                let empty = op & 0x80 != 0;
                if empty {
                    push_close(&mut out, None, "");
                    events.push(Event::Close {
                        code: 1005,
                        reason: String::new(),
                    });
                } else {
                    push_close(&mut out, Some(code), &reason);
                    events.push(Event::Close { code, reason });
                }
                break;
            }
            _ => {
                // An empty message.
                push_frame(&mut out, true, false, 0x2, b"");
                events.push(Event::Message(Data::from(Vec::new())));
            }
        }
    }
    (out, events)
}

fn input_byte_mod(input: &mut Input<'_>, m: u8) -> u8 {
    input.byte() % m
}

/// `pieces` increasing cut points ending at `len` (the ends of the fragments).
fn cut_points(input: &mut Input<'_>, len: usize, pieces: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (1..pieces)
        .map(|_| usize::from(input.u16()) % (len + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(len);
    cuts
}

// ---------------------------------------------------------------------------
// Target: handshake_response
// ---------------------------------------------------------------------------

/// The `handshake_response` target. Byte 0 is flags (bits 0-1: mode — raw
/// bytes, a response built from the input, or a `Sec-WebSocket-Extensions`
/// answer to negotiate; bit 2: offer subprotocols), byte 1 picks `max_len`;
/// the rest is the input.
pub fn handshake_response(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let max_len = [0, 1, 16, 64, 200, 1024, 4096, 65536][usize::from(input.byte() & 7)];
    let offered: Vec<String> = if flags & 4 != 0 {
        vec!["chat".into(), "superchat".into()]
    } else {
        Vec::new()
    };
    match flags & 3 {
        0 => {
            let _ = check_response(input.rest(), &offered, max_len);
        }
        1 | 2 => {
            let (bytes, valid) = build_response(&mut input, &offered);
            let r = check_response(&bytes, &offered, 65536);
            if valid {
                assert!(
                    matches!(r, Ok(Some(_))),
                    "a valid response was refused: {r:?}\n{}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let _ = check_response(&bytes, &offered, max_len);
        }
        _ => {
            let config = deflate_config(input.byte());
            let answer = String::from_utf8_lossy(input.rest()).into_owned();
            check_negotiation(&config, &answer);
        }
    }
}

type ParseResult = Result<Option<(unisocket_proto::handshake::Response, usize)>, HandshakeError>;

/// Parses `buf` and checks what is promised of the result.
pub fn check_response(buf: &[u8], offered: &[String], max_len: usize) -> ParseResult {
    let r = parse_response(buf, KEY, offered, max_len);
    match &r {
        Ok(None) => assert!(buf.len() < max_len, "incomplete past max_len"),
        Ok(Some((resp, n))) => {
            let n = *n;
            assert!(
                n <= max_len && n <= buf.len(),
                "consumed {n} of {}",
                buf.len()
            );
            assert!(buf[..n].ends_with(b"\n"), "the head does not end a line");
            // The same answer on exactly the head, and "incomplete" just before.
            assert_eq!(
                parse_response(&buf[..n], KEY, offered, max_len),
                Ok(Some((resp.clone(), n)))
            );
            assert_eq!(
                parse_response(&buf[..n - 1], KEY, offered, max_len),
                Ok(None)
            );
            if let Some(p) = &resp.protocol {
                assert!(offered.contains(p), "protocol {p:?} was not offered");
            }
            let accept = accept_key(KEY);
            let accepts: Vec<&str> = resp
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"))
                .map(|(_, v)| v.trim())
                .collect();
            assert_eq!(accepts, [accept.as_str()]);
            if let Some(ext) = &resp.extensions {
                for b in [0u8, 0x0F, 0xF0, 0xFF] {
                    check_negotiation(&deflate_config(b), ext);
                }
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let HandshakeError::ResponseTooLarge { max } = e {
                assert_eq!(*max, max_len);
                assert!(buf.len() >= max_len);
            }
            assert_ne!(*e, HandshakeError::Incomplete);
        }
    }
    r
}

/// A permessage-deflate offer chosen by one byte.
pub fn deflate_config(b: u8) -> DeflateConfig {
    let bits = |x: u8| match x & 15 {
        0..=7 => None,
        n => Some(n),
    };
    DeflateConfig::default()
        .server_no_context_takeover(b & 1 != 0)
        .client_no_context_takeover(b & 2 != 0)
        .server_max_window_bits(bits(b >> 2).filter(|_| b & 0x40 != 0))
        .client_max_window_bits(bits(b >> 4))
}

/// `negotiate` never accepts parameters outside the offer.
pub fn check_negotiation(config: &DeflateConfig, answer: &str) {
    match config.negotiate(Some(answer)) {
        Ok(None) => assert!(answer.split(',').all(|e| e.trim().is_empty())),
        Ok(Some(p)) => {
            assert!((8..=15).contains(&p.server_max_window_bits), "{p:?}");
            assert!((8..=15).contains(&p.client_max_window_bits), "{p:?}");
            if let Some(b) = config.server_max_window_bits {
                assert!(p.server_max_window_bits <= b, "{p:?} for {config:?}");
            }
            if let Some(b) = config.client_max_window_bits {
                assert!(p.client_max_window_bits <= b, "{p:?} for {config:?}");
            }
            if config.server_no_context_takeover {
                assert!(p.server_no_context_takeover);
            }
            if config.client_no_context_takeover {
                assert!(p.client_no_context_takeover);
            }
            #[cfg(feature = "deflate")]
            {
                let _ = Deflate::new(p);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// Builds a 101 response from the input: headers in any case and order, with
/// optional whitespace, extra headers, and sometimes a broken part. Returns
/// the bytes and whether the response is valid.
pub fn build_response(input: &mut Input<'_>, offered: &[String]) -> (Vec<u8>, bool) {
    let mut valid = true;
    let mut head = String::new();
    let shape = input.byte();
    match shape % 8 {
        0 => {
            head.push_str("HTTP/1.1 101 ");
            head.push_str(&token(input, 20));
        }
        1 => head.push_str("HTTP/1.1 101 Switching Protocols"),
        2 => {
            let status = 100 + input.u16() % 500;
            valid &= status == 101;
            head.push_str(&format!("HTTP/1.1 {status} Whatever"));
        }
        3 => {
            valid = false;
            head.push_str(&String::from_utf8_lossy(input.take(30)));
        }
        _ => head.push_str("HTTP/1.1 101 Switching Protocols"),
    }
    head.push_str("\r\n");
    let mut lines: Vec<String> = Vec::new();
    let ws = |input: &mut Input<'_>| [" ", "", "  ", "\t"][usize::from(input.byte() % 4)];
    let upgrade = input.byte();
    match upgrade % 5 {
        0 => valid = false,
        1 => lines.push(format!("upgrade:{}WebSocket", ws(input))),
        _ => lines.push(format!("Upgrade: {}websocket", ws(input))),
    }
    let conn = input.byte();
    match conn % 5 {
        0 => valid = false,
        1 => lines.push("connection: keep-alive, Upgrade".into()),
        _ => lines.push(format!("Connection:{}Upgrade", ws(input))),
    }
    let acc = input.byte();
    let accept = accept_key(KEY);
    match acc % 6 {
        0 => valid = false,
        1 => {
            valid = false;
            let mut bad = accept.clone().into_bytes();
            let i = usize::from(input.byte()) % bad.len();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            lines.push(format!(
                "Sec-WebSocket-Accept: {}",
                String::from_utf8(bad).expect("ascii")
            ));
        }
        2 => {
            valid = false;
            lines.push(format!("Sec-WebSocket-Accept: {accept}"));
            lines.push(format!("Sec-WebSocket-Accept: {accept}"));
        }
        _ => lines.push(format!("SEC-WEBSOCKET-ACCEPT:{}{accept}", ws(input))),
    }
    let proto = input.byte();
    match proto % 4 {
        0 => {}
        1 if !offered.is_empty() => {
            let p = &offered[usize::from(input.byte()) % offered.len()];
            lines.push(format!("Sec-WebSocket-Protocol: {p}"));
        }
        _ => {
            let p = token(input, 12);
            // (An empty value is a protocol nobody offered either.)
            valid &= offered.contains(&p);
            lines.push(format!("Sec-WebSocket-Protocol: {p}"));
        }
    }
    if input.byte() % 2 == 1 {
        lines.push(format!(
            "Sec-WebSocket-Extensions: {}",
            extension_answer(input)
        ));
    }
    let extra = input.byte() % 8;
    for _ in 0..extra {
        let name = token(input, 10);
        let len = input_byte_mod(input, 30);
        let value =
            String::from_utf8_lossy(input.take(usize::from(len))).replace(['\r', '\n'], " ");
        if name.is_empty() || name.eq_ignore_ascii_case("sec-websocket-accept") {
            continue;
        }
        if name.eq_ignore_ascii_case("sec-websocket-protocol")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("connection")
            || value.bytes().any(|b| b.is_ascii_control() && b != b'\t')
            || !value.is_ascii()
        {
            valid = false;
        }
        let at = usize::from(input.byte()) % (lines.len() + 1);
        lines.insert(at, format!("{name}: {value}"));
    }
    for line in &lines {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    // The first frames may follow in the same read.
    bytes.extend_from_slice(input.rest());
    (bytes, valid)
}

/// A `Sec-WebSocket-Extensions` answer: permessage-deflate parameters,
/// known or not, well formed or not, in printable ASCII.
fn extension_answer(input: &mut Input<'_>) -> String {
    const PARTS: [&str; 16] = [
        "permessage-deflate",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "=",
        "8",
        "15",
        "16",
        "010",
        "\"10\"",
        "; ",
        ";",
        ", ",
        " ",
        "x-webkit-deflate-frame",
    ];
    let n = input.byte() % 12;
    let mut s = String::new();
    if input.byte() & 3 != 0 {
        s.push_str("permessage-deflate");
    }
    for _ in 0..n {
        s.push_str(PARTS[usize::from(input.byte() % 16)]);
    }
    s
}

/// An HTTP token of at most `max` letters, digits and dashes.
fn token(input: &mut Input<'_>, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
    let n = usize::from(input.byte()) % (max + 1);
    input
        .take(n)
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

// ---------------------------------------------------------------------------
// Target: deflate
// ---------------------------------------------------------------------------

/// The negotiated parameters chosen by one byte.
pub fn deflate_params(b: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: b & 1 != 0,
        client_no_context_takeover: b & 2 != 0,
        server_max_window_bits: 8 + ((b >> 2) & 7),
        client_max_window_bits: 8 + ((b >> 5) & 7),
    }
}

/// The `deflate` target. Byte 0 is the mode (raw frames with RSV1 allowed;
/// arbitrary payloads in compressed frames; a round trip through the
/// client's inflater; a round trip through the client's compressor), byte 1
/// the negotiated parameters, byte 2 the limits, byte 3 the chunk sizes.
#[cfg(feature = "deflate")]
pub fn deflate(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let params = deflate_params(input.byte());
    let limits = pick_limits(input.byte());
    let chunk_seed = input.byte();
    let config = Config {
        limits,
        deflate: Some(params),
        ..Config::default()
    };
    match mode % 4 {
        0 => {
            let mut run = Run::new(config);
            let close_after = (mode & 0x10 != 0).then_some(usize::from(mode >> 5));
            run.feed(input.rest(), &mut Chunker::new(chunk_seed), close_after);
            run.finish();
        }
        1 => deflate_garbage(config, chunk_seed, &mut input),
        2 => deflate_inflate_round_trip(config, chunk_seed, &mut input),
        _ => deflate_compress_round_trip(params, &mut input),
    }
}

/// Arbitrary bytes as the payloads of well-formed compressed frames: only
/// `Compression`, `InvalidUtf8` or a size limit may come out of it.
#[cfg(feature = "deflate")]
fn deflate_garbage(config: Config, chunk_seed: u8, input: &mut Input<'_>) {
    let mut stream = Vec::new();
    while !input.is_empty() {
        let op = input.byte();
        let len = usize::from(input.byte()) * if op & 0x80 != 0 { 8 } else { 1 };
        let payload = input.take(len);
        let pieces = 1 + usize::from((op >> 4) & 3);
        let cuts = cut_points(input, payload.len(), pieces);
        let text = op & 1 != 0;
        let mut start = 0;
        for (i, end) in cuts.iter().copied().enumerate() {
            let opcode = match (i, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            push_frame(
                &mut stream,
                i + 1 == cuts.len(),
                i == 0,
                opcode,
                &payload[start..end],
            );
            start = end;
        }
    }
    let mut run = Run::new(config);
    run.feed(&stream, &mut Chunker::new(chunk_seed), None);
    if let Some(e) = &run.error {
        assert!(
            matches!(
                e,
                ProtocolError::Compression(_)
                    | ProtocolError::MessageTooLarge { .. }
                    | ProtocolError::FrameTooLarge { .. }
                    | ProtocolError::InvalidUtf8
            ),
            "well-formed compressed frames gave {e:?}"
        );
    }
    run.finish();
}

/// The mirror of `params` for the server's compressor: it compresses with
/// the server's window and context takeover.
#[cfg(feature = "deflate")]
fn server_side(params: DeflateParams) -> DeflateParams {
    DeflateParams {
        client_no_context_takeover: params.server_no_context_takeover,
        client_max_window_bits: params.server_max_window_bits,
        server_no_context_takeover: params.client_no_context_takeover,
        server_max_window_bits: params.client_max_window_bits,
    }
}

/// Messages compressed as the server would (some not compressed, some
/// fragmented) must come out of the client unchanged; with a small message
/// limit, a message over it must fail with `MessageTooLarge` and never be
/// delivered.
#[cfg(feature = "deflate")]
fn deflate_inflate_round_trip(config: Config, chunk_seed: u8, input: &mut Input<'_>) {
    let params = config.deflate.expect("deflate params");
    // Frames stay under the frame limit: only the message limit is varied.
    let mut config = config;
    config.limits.max_frame_size = Limits::default().max_frame_size;
    let max = config.limits.max_message_size;
    let strict = config.limits == Limits::default();
    let mut server = Deflate::new(server_side(params));
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    let mut packed = Vec::new();
    while !input.is_empty() {
        let op = input.byte();
        let len = usize::from(input.byte()) * [1, 3, 50, 200][usize::from(op >> 6)];
        let raw = input.take(len);
        // Repetitive payloads compress (and inflate far beyond their wire size).
        let repeat = 1 + usize::from((op >> 3) & 7) * 20;
        let mut payload: Vec<u8> = raw.repeat(repeat);
        payload.truncate(1 << 20);
        let text = op & 1 != 0;
        if text {
            payload = String::from_utf8_lossy(&payload).into_owned().into_bytes();
        }
        let compressed = op & 2 == 0;
        let wire: &[u8] = if compressed {
            server.compress(&payload, &mut packed);
            &packed
        } else {
            &payload
        };
        let wire_len = wire.len();
        let pieces = 1 + usize::from((op >> 2) & 1) * 2;
        let cuts = cut_points(input, wire_len, pieces);
        let mut start = 0;
        for (i, end) in cuts.iter().copied().enumerate() {
            let opcode = match (i, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            push_frame(
                &mut stream,
                i + 1 == cuts.len(),
                compressed && i == 0,
                opcode,
                &wire[start..end],
            );
            start = end;
        }
        let data = if text {
            Data::from(String::from_utf8(payload).expect("lossy text is UTF-8"))
        } else {
            Data::from(payload)
        };
        expected.push((Event::Message(data), compressed, wire_len));
    }
    let mut run = Run::new(config);
    run.feed(&stream, &mut Chunker::new(chunk_seed), None);
    let got = run.events.len();
    assert!(got <= expected.len());
    for (ev, (want, _, _)) in run.events.iter().zip(&expected) {
        assert_eq!(ev, want);
    }
    match &run.error {
        None => assert_eq!(got, expected.len(), "messages went missing"),
        Some(e) => {
            assert!(!strict, "a valid compressed stream was refused: {e:?}");
            assert!(
                matches!(e, ProtocolError::MessageTooLarge { .. }),
                "unexpected {e:?}"
            );
            // The message that failed is over the limit. The check adds the
            // bytes inflated so far to the next frame's compressed length,
            // so inflated plus wire bytes is the bound.
            let (Event::Message(data), _, wire) = &expected[got] else {
                unreachable!()
            };
            assert!(
                data.len() + wire > max,
                "a message of {} bytes ({wire} on the wire) hit the limit of {max}",
                data.len()
            );
        }
    }
    run.finish();
}

/// What the client compresses (`send_*` on a connection with deflate) must
/// inflate, with the client's parameters, to the same messages.
#[cfg(feature = "deflate")]
fn deflate_compress_round_trip(params: DeflateParams, input: &mut Input<'_>) {
    let mut conn = Connection::new(Config {
        deflate: Some(params),
        max_send_frame_size: match input.byte() % 4 {
            0 => Some(7),
            1 => Some(100),
            _ => None,
        },
        ..Config::default()
    });
    // The server inflates what the client compressed.
    let mut server = Deflate::new(server_side(params));
    while !input.is_empty() {
        let op = input.byte();
        let len = usize::from(input.byte()) * [1, 4, 64, 256][usize::from(op & 3)];
        let msg = input.take(len).repeat(1 + usize::from(op >> 5));
        conn.send_binary(&msg).expect("open connection sends");
        let frames = drain_written(&mut conn);
        let first = frames.first().expect("a frame");
        assert_eq!(first.opcode, OpCode::Binary);
        assert!(frames.last().is_some_and(|f| f.fin));
        if !first.rsv1 {
            // A message that compressing would not shrink goes as it is
            // (and the client's compressor starts afresh, so the next
            // messages still inflate here).
            assert!(frames.iter().all(|f| !f.rsv1), "{frames:?}");
            let sent: Vec<u8> = frames.iter().flat_map(|f| f.payload.clone()).collect();
            assert_eq!(sent, msg);
            assert!(!msg.is_empty(), "an empty message is sent compressed");
            continue;
        }
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if i > 0 {
                assert!(!f.rsv1 && f.opcode == OpCode::Continuation, "{f:?}");
            }
            server
                .decompress(&f.payload, f.fin, &mut out, usize::MAX)
                .expect("what the client compressed inflates");
        }
        assert_eq!(out, msg);
    }
    let _ = server.params();
}
