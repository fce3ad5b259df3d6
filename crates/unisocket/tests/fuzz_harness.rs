//! A deterministic randomized harness on the stable toolchain, run by
//! `cargo test`: the bodies of the cargo-fuzz targets (`fuzz/src/lib.rs`,
//! included below) driven by a seeded generator instead of libFuzzer.
//!
//! - random bytes, and valid frame streams mutated at random, fed to the
//!   client `Connection` in random chunk sizes; valid streams must round-trip;
//! - random and mutated handshake responses, and extension answers;
//! - random, well-formed and mutated permessage-deflate streams, and round
//!   trips through the compressor and the inflater;
//! - every input kept under `tests/regressions/<target>/` (crashes found by
//!   `scripts/fuzz.sh` land there) is replayed.
//!
//! Every case asserts no panic, that the read buffer never holds more than
//! `max_frame_size` plus a header, that errors are sticky and map to their
//! close code, and that `fail` queues exactly one close frame.
//!
//! `UNISOCKET_FUZZ_ITERS` (default 400 per test) and `UNISOCKET_FUZZ_SEED`
//! change the amount and the seed; a failing case prints its seed, its index
//! and its input in hex.

#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use targets::{Chunker, Input};
use unisocket_proto::frame::MAX_HEADER_LEN;
use unisocket_proto::{Config, Connection, Limits, ProtocolError, State};

/// SplitMix64: small, seedable, good enough to pick inputs.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// Random bytes, often of the kinds that frame headers and UTF-8 are
    /// made of.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const INTERESTING: &[u8] = &[
            0x00, 0x01, 0x02, 0x08, 0x09, 0x0A, 0x40, 0x7D, 0x7E, 0x7F, 0x80, 0x81, 0x82, 0x88,
            0x89, 0x8A, 0xC1, 0xC2, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, b'\r', b'\n', b':',
            b' ',
        ];
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| {
                if self.chance(30) {
                    INTERESTING[self.below(INTERESTING.len())]
                } else {
                    self.byte()
                }
            })
            .collect()
    }

    /// Applies one to four random mutations to `data`.
    fn mutate(&mut self, data: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            let len = data.len();
            match self.below(7) {
                0 if len > 0 => {
                    let i = self.below(len);
                    data[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    data[i] = [0x00, 0x7E, 0x7F, 0x80, 0xFF, 0x88, 0xC1, 0x3F][self.below(8)];
                }
                2 => {
                    let i = self.below(len + 1);
                    let extra = self.bytes(8);
                    data.splice(i..i, extra);
                }
                3 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(16)).min(len);
                    data.drain(a..b);
                }
                4 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(32)).min(len);
                    let copy = data[a..b].to_vec();
                    let at = self.below(len + 1);
                    data.splice(at..at, copy);
                }
                5 if len > 0 => {
                    let n = self.below(len);
                    data.truncate(n);
                }
                _ => {
                    let extra = self.bytes(4);
                    data.extend_from_slice(&extra);
                }
            }
        }
    }
}

fn iterations() -> usize {
    std::env::var("UNISOCKET_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn seed(test: &str) -> u64 {
    let base: u64 = std::env::var("UNISOCKET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x756E_6973_6F63_6B74);
    // A different stream per test, stable across runs.
    test.bytes().fold(base, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `target(input)`; on a panic, fails the test naming the case and
/// printing the input, to be kept in `tests/regressions/<target>/`.
fn case(test: &str, target: &str, i: usize, input: &[u8], f: impl FnOnce(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        panic!(
            "{test}: case {i} (seed {}) crashed the `{target}` target; keep the input with\n  \
             echo {} | xxd -r -p > crates/unisocket/tests/regressions/{target}/<name>",
            seed(test),
            hex(input)
        );
    }
}

/// The input of a fuzz target: its configuration bytes, then `body`.
fn with_header(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(body);
    v
}

// ---------------------------------------------------------------------------
// frame_decoder
// ---------------------------------------------------------------------------

#[test]
fn frame_decoder_random_bytes() {
    let test = "frame_decoder_random_bytes";
    let mut rng = Rng::new(seed(test));
    for i in 0..iterations() * 4 {
        // Raw mode (flag bit 0 clear), random limits, chunks and close.
        let header = [rng.byte() & !1, rng.byte(), rng.byte(), rng.byte()];
        let body = rng.bytes(200);
        case(
            test,
            "frame_decoder",
            i,
            &with_header(&header, &body),
            targets::frame_decoder,
        );
    }
}

#[test]
fn frame_decoder_valid_streams_round_trip_and_survive_mutation() {
    let test = "frame_decoder_valid_streams";
    let mut rng = Rng::new(seed(test));
    for i in 0..iterations() {
        // Round-trip mode: the body is read as a list of messages.
        let header = [1 | (rng.byte() & !1), rng.byte(), rng.byte(), rng.byte()];
        let body = rng.bytes(300);
        let input = with_header(&header, &body);
        case(test, "frame_decoder", i, &input, targets::frame_decoder);

        // The same stream, mutated, as raw bytes.
        let (mut stream, _) = targets::valid_stream(&mut Input::new(&body));
        rng.mutate(&mut stream);
        let header = [rng.byte() & !1 & !4, rng.byte(), rng.byte(), rng.byte()];
        case(
            test,
            "frame_decoder",
            i,
            &with_header(&header, &stream),
            targets::frame_decoder,
        );
    }
}

#[test]
fn utf8_validator_agrees_with_std() {
    let test = "utf8_validator_agrees_with_std";
    let mut rng = Rng::new(seed(test));
    let samples = [
        "héllo wörld",
        "日本語テキスト",
        "🦀🦀 crab",
        "\u{10FFFF}\u{FFFD}",
    ];
    for i in 0..iterations() * 4 {
        let mut bytes = if rng.chance(50) {
            // Up to about 1 KB: past the SIMD validators' 64-byte blocks.
            let repeat = if rng.chance(50) { 3 } else { 60 };
            samples[rng.below(samples.len())]
                .as_bytes()
                .repeat(1 + rng.below(repeat))
        } else {
            rng.bytes(40)
        };
        if rng.chance(70) {
            rng.mutate(&mut bytes);
        }
        let chunk_seed = rng.byte();
        case(test, "frame_decoder", i, &bytes, |b| {
            targets::utf8_agrees_with_std(b, chunk_seed)
        });
    }
}

/// A frame that announces more than `max_frame_size` is refused from its
/// header alone, without buffering its payload.
#[test]
fn oversized_frames_are_refused_before_buffering() {
    for (max, len) in [(0usize, 1u64), (125, 126), (65535, 65536), (1000, 1 << 40)] {
        let mut conn = Connection::new(Config {
            limits: Limits {
                max_frame_size: max,
                ..Limits::default()
            },
            ..Config::default()
        });
        let mut head = vec![0x82u8];
        match len {
            0..=125 => head.push(len as u8),
            126..=0xFFFF => {
                head.push(126);
                head.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                head.push(127);
                head.extend_from_slice(&len.to_be_bytes());
            }
        }
        conn.read_buf().extend_from_slice(&head);
        assert_eq!(
            conn.poll_event(),
            Err(ProtocolError::FrameTooLarge { size: len, max })
        );
        assert!(conn.read_buf().is_empty());
    }
}

/// A frame at the limit, dripped in byte by byte: the read buffer never
/// holds more than the frame (plus a header).
#[test]
fn read_buffer_stays_within_one_frame_when_dripped() {
    let max = 4096;
    let mut stream = Vec::new();
    for n in [max, 1, max, 0, 125] {
        targets::push_frame(&mut stream, true, false, 0x2, &vec![7u8; n]);
    }
    let mut run = targets::Run::new(Config {
        limits: Limits {
            max_frame_size: max,
            ..Limits::default()
        },
        ..Config::default()
    });
    run.feed(&stream, &mut Chunker::new(0), None); // 1-byte chunks
    assert_eq!(run.error, None);
    assert_eq!(run.events.len(), 5);
    assert!(run.conn.read_buf().len() <= max + MAX_HEADER_LEN);
    run.finish();
}

/// The 2^63 length (most significant bit set) is refused with 1002.
#[test]
fn length_with_the_top_bit_set_is_refused() {
    let mut stream = vec![0x82, 127];
    stream.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let run = targets::frame_decoder_raw(Limits::default(), 7, None, &stream);
    assert_eq!(run.error, Some(ProtocolError::InvalidLength));
    assert_eq!(run.conn.state(), State::Closed);
    let close = run.sent.last().expect("a close frame");
    assert_eq!(close.payload[..2], 1002u16.to_be_bytes());
}

// ---------------------------------------------------------------------------
// handshake_response
// ---------------------------------------------------------------------------

#[test]
fn handshake_random_built_and_mutated_responses() {
    let test = "handshake_responses";
    let mut rng = Rng::new(seed(test));
    for i in 0..iterations() * 2 {
        // Mode 0 (raw), 1-2 (built), 3 (extension answer).
        let header = [rng.byte(), rng.byte()];
        let body = rng.bytes(200);
        let input = with_header(&header, &body);
        case(
            test,
            "handshake_response",
            i,
            &input,
            targets::handshake_response,
        );

        // A built response, mutated, as raw bytes.
        let offered: Vec<String> = if rng.chance(50) {
            vec!["chat".into(), "superchat".into()]
        } else {
            Vec::new()
        };
        let (mut bytes, _) = targets::build_response(&mut Input::new(&body), &offered);
        rng.mutate(&mut bytes);
        let header = [
            (rng.byte() & !3) | u8::from(!offered.is_empty()) << 2,
            rng.byte(),
        ];
        case(
            test,
            "handshake_response",
            i,
            &with_header(&header, &bytes),
            targets::handshake_response,
        );
    }
}

#[test]
fn handshake_valid_responses_are_accepted_at_every_size_limit() {
    let key = targets::KEY;
    let accept = unisocket_proto::handshake::accept_key(key);
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    for max in [0, 1, head.len() - 1, head.len(), head.len() + 1, 65536] {
        let r = targets::check_response(head.as_bytes(), &[], max);
        if max >= head.len() {
            assert!(
                matches!(r, Ok(Some((_, n))) if n == head.len()),
                "{max}: {r:?}"
            );
        } else {
            assert!(r.is_err(), "{max}: {r:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// deflate
// ---------------------------------------------------------------------------

#[cfg(feature = "deflate")]
#[test]
fn deflate_streams() {
    let test = "deflate_streams";
    let mut rng = Rng::new(seed(test));
    for i in 0..iterations() * 2 {
        let mode = rng.byte();
        // Mostly small messages: the harness runs unoptimized.
        let body: Vec<u8> = rng
            .bytes(160)
            .into_iter()
            .enumerate()
            .map(|(j, b)| if j % 3 == 0 { b & 0x3F } else { b })
            .collect();
        let header = [mode, rng.byte(), rng.byte(), rng.byte()];
        case(
            test,
            "deflate",
            i,
            &with_header(&header, &body),
            targets::deflate,
        );
    }
}

/// Compressed frames made by a real compressor, then mutated: the client
/// must refuse or accept them without panicking, within its limits.
#[cfg(feature = "deflate")]
#[test]
fn deflate_mutated_compressed_frames() {
    use unisocket_proto::deflate::Deflate;

    let test = "deflate_mutated_compressed_frames";
    let mut rng = Rng::new(seed(test));
    for i in 0..iterations() {
        let params = targets::deflate_params(rng.byte());
        let mut server = Deflate::new(unisocket_proto::deflate::DeflateParams {
            client_no_context_takeover: params.server_no_context_takeover,
            client_max_window_bits: params.server_max_window_bits,
            ..params
        });
        let mut stream = Vec::new();
        let mut packed = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let msg = rng.bytes(64).repeat(1 + rng.below(50));
            server.compress(&msg, &mut packed);
            let opcode = if rng.chance(50) { 0x1 } else { 0x2 };
            targets::push_frame(&mut stream, true, true, opcode, &packed);
        }
        rng.mutate(&mut stream);
        // Mode 0 of the target: raw frames with RSV1 allowed; the params
        // byte is rebuilt from `params`.
        let params_byte = u8::from(params.server_no_context_takeover)
            | u8::from(params.client_no_context_takeover) << 1
            | (params.server_max_window_bits - 8) << 2
            | (params.client_max_window_bits - 8) << 5;
        let header = [0, params_byte, rng.byte(), rng.byte()];
        case(
            test,
            "deflate",
            i,
            &with_header(&header, &stream),
            targets::deflate,
        );
    }
}

/// A compressed message that inflates past `max_message_size` fails with
/// 1009 and never allocates far beyond the limit.
#[cfg(feature = "deflate")]
#[test]
fn deflate_bomb_hits_the_message_limit() {
    use unisocket_proto::deflate::{Deflate, DeflateConfig};

    let params = DeflateConfig::default()
        .negotiate(Some("permessage-deflate"))
        .expect("negotiates")
        .expect("params");
    let mut packed = Vec::new();
    Deflate::new(params).compress(&vec![0u8; 8 << 20], &mut packed);
    let mut stream = Vec::new();
    targets::push_frame(&mut stream, true, true, 0x2, &packed);
    let mut run = targets::Run::new(Config {
        limits: Limits {
            max_message_size: 100_000,
            ..Limits::default()
        },
        deflate: Some(params),
        ..Config::default()
    });
    run.feed(&stream, &mut Chunker::new(6), None);
    assert!(
        matches!(
            run.error,
            Some(ProtocolError::MessageTooLarge { max: 100_000, .. })
        ),
        "{:?}",
        run.error
    );
    assert!(run.events.is_empty());
    run.finish();
    assert_eq!(
        run.sent.last().map(|f| f.payload[..2].to_vec()),
        Some(1009u16.to_be_bytes().to_vec())
    );
}

// ---------------------------------------------------------------------------
// Kept inputs
// ---------------------------------------------------------------------------

/// Replays every input under `tests/regressions/<target>/` (crashes that
/// `scripts/fuzz.sh` found, kept after the fix) and the fuzzers' seeds
/// (`fuzz/seeds/<target>/`) through its target.
#[test]
fn replays_kept_regressions() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let roots = [
        manifest.join("tests/regressions"),
        manifest.join("../../fuzz/seeds"),
    ];
    let targets: [(&str, Target); 3] = [
        ("frame_decoder", targets::frame_decoder),
        ("handshake_response", targets::handshake_response),
        ("deflate", deflate_target),
    ];
    let mut replayed = 0;
    for (root, (name, target)) in roots
        .iter()
        .flat_map(|r| targets.iter().map(move |t| (r, t)))
    {
        let Ok(dir) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            if path.extension().is_some_and(|e| e == "md") || !path.is_file() {
                continue;
            }
            let input = std::fs::read(&path).expect("read a kept input");
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                panic!("the kept input {} crashes `{name}` again", path.display());
            }
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} kept inputs");
}

/// The entry point of a fuzz target.
type Target = fn(&[u8]);

#[cfg(feature = "deflate")]
fn deflate_target(data: &[u8]) {
    targets::deflate(data);
}

#[cfg(not(feature = "deflate"))]
fn deflate_target(_: &[u8]) {}
