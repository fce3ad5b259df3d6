//! Micro-benchmarks of the codec's hot paths, each reported in bytes/s:
//! masking, UTF-8 validation, frame encode (`Connection::send_*` into the
//! write buffer) and decode (server frames through `read_buf` and
//! `poll_event`), and permessage-deflate.
//!
//! `cargo bench -p unisocket --bench codec` (add `-- --quick` for a short
//! run, or a filter such as `-- mask`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use unisocket_proto::frame::{apply_mask, FrameHeader, OpCode, MAX_HEADER_LEN};
use unisocket_proto::utf8::Utf8Validator;
use unisocket_proto::{Config, Connection, Event};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn label(size: usize) -> String {
    match size {
        s if s >= MIB => format!("{}MiB", s / MIB),
        s if s >= KIB => format!("{}KiB", s / KIB),
        s => format!("{s}B"),
    }
}

fn binary(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

fn ascii(size: usize) -> String {
    let line = "The quick brown fox jumps over the lazy dog 0123456789; ";
    line.chars().cycle().take(size).collect()
}

/// Text of exactly `size` bytes mixing 1- to 4-byte characters.
fn multibyte(size: usize) -> String {
    let pattern = "héllo wörld ✓ 日本語のテキスト κόσμε 🚀🦀 ünïcødé – ";
    let mut s = String::with_capacity(size);
    for c in pattern.chars().cycle() {
        if s.len() + c.len_utf8() > size {
            break;
        }
        s.push(c);
    }
    while s.len() < size {
        s.push('x');
    }
    s
}

/// JSON-ish text, the kind of payload permessage-deflate is used for.
#[cfg(feature = "deflate")]
fn json_like(size: usize) -> String {
    let mut s = String::with_capacity(size + 128);
    let mut i = 0u64;
    while s.len() < size {
        s.push_str(&format!(
            r#"{{"id":{i},"user":"user{}","event":"message","room":"general","text":"hello number {}","ts":{}}}"#,
            i % 97,
            i * 7,
            1_700_000_000 + i * 13
        ));
        i += 1;
    }
    s.truncate(size);
    s
}

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for size in [64, 4 * KIB, MIB] {
        let mut data = binary(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(label(size)), |b| {
            b.iter(|| apply_mask(black_box(&mut data), black_box([0x12, 0x34, 0x56, 0x78]), 0))
        });
    }
    g.finish();
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for size in [KIB, 64 * KIB] {
        for (kind, text) in [("ascii", ascii(size)), ("multibyte", multibyte(size))] {
            let bytes = text.into_bytes();
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function(format!("{kind}/{}", label(size)), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(&bytes)).unwrap();
                    v.finish().unwrap();
                })
            });
            // The same text arriving in 1400-byte pieces (TCP segments), so
            // that code points are cut between pieces.
            g.bench_function(format!("{kind}-chunked/{}", label(size)), |b| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(&bytes).chunks(1400) {
                        v.feed(piece).unwrap();
                    }
                    v.finish().unwrap();
                })
            });
        }
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for size in [32, KIB, 64 * KIB] {
        let bin = binary(size);
        let text = multibyte(size);
        let mut conn = Connection::new(Config::default());
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("binary/{}", label(size)), |b| {
            b.iter(|| {
                conn.send_binary(black_box(&bin)).unwrap();
                conn.write_buf().clear();
            })
        });
        g.bench_function(format!("text/{}", label(size)), |b| {
            b.iter(|| {
                conn.send_text(black_box(&text)).unwrap();
                conn.write_buf().clear();
            })
        });
    }
    g.finish();
}

/// Unmasked server frames carrying `payload`, repeated to about 256 KiB
/// (at least one frame); returns the wire bytes and the frame count.
fn server_frames(opcode: OpCode, payload: &[u8]) -> (Vec<u8>, usize) {
    let count = (256 * KIB / payload.len().max(1)).max(1);
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut wire = Vec::with_capacity(count * (n + payload.len()));
    for _ in 0..count {
        wire.extend_from_slice(&head[..n]);
        wire.extend_from_slice(payload);
    }
    (wire, count)
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for size in [32, KIB, 64 * KIB] {
        let bin = binary(size);
        let text = multibyte(size).into_bytes();
        for (kind, opcode, payload) in [
            ("binary", OpCode::Binary, &bin),
            ("text", OpCode::Text, &text),
        ] {
            let (wire, count) = server_frames(opcode, payload);
            let mut conn = Connection::new(Config::default());
            g.throughput(Throughput::Bytes((count * size) as u64));
            g.bench_function(format!("{kind}/{}", label(size)), |b| {
                b.iter(|| {
                    conn.read_buf().extend_from_slice(black_box(&wire));
                    let mut got = 0;
                    while let Some(ev) = conn.poll_event().unwrap() {
                        debug_assert!(matches!(ev, Event::Message(_)));
                        black_box(ev);
                        got += 1;
                    }
                    assert_eq!(got, count);
                })
            });
        }
    }
    g.finish();
}

#[cfg(feature = "deflate")]
fn deflate(c: &mut Criterion) {
    use unisocket_proto::deflate::{Deflate, DeflateParams};

    // No context takeover either way: every message stands alone, so the
    // same compressed message can be inflated again and again.
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    let mut g = c.benchmark_group("deflate");
    for size in [4 * KIB, 64 * KIB] {
        let input = json_like(size).into_bytes();
        let mut d = Deflate::new(params);
        let mut compressed = Vec::new();
        d.compress(&input, &mut compressed);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("compress-json/{}", label(size)), |b| {
            let mut out = Vec::new();
            b.iter(|| d.compress(black_box(&input), &mut out))
        });
        let mut inflater = Deflate::new(params);
        g.bench_function(format!("inflate-json/{}", label(size)), |b| {
            let mut out = Vec::with_capacity(size);
            b.iter(|| {
                out.clear();
                inflater
                    .decompress(black_box(&compressed), true, &mut out, 64 * MIB)
                    .unwrap();
                assert_eq!(out.len(), size);
            })
        });
    }
    g.finish();
}

/// The group of every benchmark above. In a module of its own:
/// `criterion_group!` makes a `pub fn` without docs, which the workspace's
/// `missing_docs` lint would flag at the crate's root.
mod group {
    use super::*;

    #[cfg(feature = "deflate")]
    criterion_group!(benches, mask, utf8, encode, decode, deflate);
    #[cfg(not(feature = "deflate"))]
    criterion_group!(benches, mask, utf8, encode, decode);
}
criterion_main!(group::benches);
