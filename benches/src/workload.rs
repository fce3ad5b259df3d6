//! The workloads: what each client does against the echo server, and the
//! payloads it sends.

use bytes::Bytes;

/// One workload, run the same way by every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One connection, one message in flight: send, wait for the echo, repeat.
    Rtt { size: usize },
    /// One connection, `window` messages in flight: a writer task sends
    /// whenever the window has room, a reader task takes the echoes. Over
    /// TLS (`wss://`) with `tls`.
    Stream {
        size: usize,
        window: usize,
        text: bool,
        tls: bool,
    },
    /// `conns` connections opened at once, each doing `rtts` round trips of
    /// 32 B; all stay open until every one is done, then peak RSS is read.
    /// Over TLS with `tls`.
    Conns {
        conns: usize,
        rtts: usize,
        tls: bool,
    },
    /// Connection setup: `concurrency` loops, each opening a connection
    /// (TCP, TLS with `tls`, the upgrade), closing it (a close frame, the
    /// server's answer) and starting again. Counts handshakes per second.
    Setup { tls: bool, concurrency: usize },
}

/// The workloads of a full run, in run order.
pub fn all(quick: bool) -> Vec<Workload> {
    let mut v = vec![Workload::Rtt { size: 32 }];
    for (size, window) in [(32, 64), (1024, 64), (64 << 10, 16), (1 << 20, 4)] {
        for text in [false, true] {
            v.push(Workload::Stream {
                size,
                window,
                text,
                tls: false,
            });
        }
    }
    let (conns, rtts) = if quick { (100, 20) } else { (1000, 100) };
    v.push(Workload::Conns {
        conns,
        rtts,
        tls: false,
    });
    for (size, window) in [(1024, 64), (64 << 10, 16)] {
        v.push(Workload::Stream {
            size,
            window,
            text: false,
            tls: true,
        });
    }
    v.push(Workload::Conns {
        conns,
        rtts,
        tls: true,
    });
    for tls in [false, true] {
        for concurrency in [1, 100] {
            v.push(Workload::Setup { tls, concurrency });
        }
    }
    v
}

fn size_name(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{}m", size >> 20)
    } else if size >= 1024 && size.is_multiple_of(1024) {
        format!("{}k", size >> 10)
    } else {
        size.to_string()
    }
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.to_ascii_lowercase();
    if let Some(n) = s.strip_suffix('m') {
        n.parse::<usize>().ok().map(|n| n << 20)
    } else if let Some(n) = s.strip_suffix('k') {
        n.parse::<usize>().ok().map(|n| n << 10)
    } else {
        s.parse().ok()
    }
}

impl Workload {
    /// The name used on the command line and in the report:
    /// `rtt-32`, `stream-1k-text`, `conns-1000x100`, `wss-stream-64k-bin`,
    /// `wss-conns-1000x100`, `setup-ws-1`, `setup-wss-100`.
    pub fn name(&self) -> String {
        let wss = if self.tls() { "wss-" } else { "" };
        match *self {
            Workload::Rtt { size } => format!("rtt-{}", size_name(size)),
            Workload::Stream { size, text, .. } => format!(
                "{wss}stream-{}-{}",
                size_name(size),
                if text { "text" } else { "bin" }
            ),
            Workload::Conns { conns, rtts, .. } => format!("{wss}conns-{conns}x{rtts}"),
            Workload::Setup { tls, concurrency } => {
                format!("setup-{}-{concurrency}", if tls { "wss" } else { "ws" })
            }
        }
    }

    /// Parses a name made by [`Workload::name`]. Streams get the window of
    /// the standard set for their size (64 up to 1 KiB, 16 up to 64 KiB,
    /// then 4).
    pub fn parse(name: &str) -> Option<Workload> {
        if let Some(rest) = name.strip_prefix("wss-") {
            return match Workload::parse(rest)? {
                Workload::Stream {
                    size, window, text, ..
                } => Some(Workload::Stream {
                    size,
                    window,
                    text,
                    tls: true,
                }),
                Workload::Conns { conns, rtts, .. } => Some(Workload::Conns {
                    conns,
                    rtts,
                    tls: true,
                }),
                _ => None,
            };
        }
        let mut parts = name.split('-');
        match (parts.next()?, parts.next(), parts.next(), parts.next()) {
            ("rtt", Some(size), None, None) => Some(Workload::Rtt {
                size: parse_size(size)?,
            }),
            ("setup", Some(scheme), Some(n), None) => Some(Workload::Setup {
                tls: match scheme {
                    "ws" => false,
                    "wss" => true,
                    _ => return None,
                },
                concurrency: n.parse().ok().filter(|&n| n > 0)?,
            }),
            ("stream", Some(size), Some(kind), None) => {
                let size = parse_size(size)?;
                let text = match kind {
                    "text" => true,
                    "bin" => false,
                    _ => return None,
                };
                let window = match size {
                    0..=1024 => 64,
                    1025..=65536 => 16,
                    _ => 4,
                };
                Some(Workload::Stream {
                    size,
                    window,
                    text,
                    tls: false,
                })
            }
            ("conns", Some(spec), None, None) => {
                let (c, r) = spec.split_once('x')?;
                Some(Workload::Conns {
                    conns: c.parse().ok()?,
                    rtts: r.parse().ok()?,
                    tls: false,
                })
            }
            _ => None,
        }
    }

    /// A one-line description for the report.
    pub fn describe(&self) -> String {
        let over = if self.tls() { " over TLS (wss://)" } else { "" };
        match *self {
            Workload::Rtt { size } => {
                format!("1 connection, 1 message of {size} B binary in flight (send, await echo, repeat)")
            }
            Workload::Stream {
                size, window, text, ..
            } => format!(
                "1 connection{over}, {window} messages of {} {} in flight (writer and reader tasks)",
                human_bytes(size),
                if text { "text (multi-byte UTF-8)" } else { "binary" }
            ),
            Workload::Conns { conns, rtts, .. } => format!(
                "{conns} connections{over} opened at once, {rtts} round trips of 32 B each; wall time from the first connect to the last echo"
            ),
            Workload::Setup { concurrency, .. } => format!(
                "connection setup{over}, {}: open (TCP{}, upgrade), close (a close frame and the server's answer), again; handshakes per second",
                if concurrency == 1 {
                    "one at a time".to_owned()
                } else {
                    format!("{concurrency} at a time")
                },
                if self.tls() { ", TLS" } else { "" },
            ),
        }
    }

    /// Payload bytes of one message.
    pub fn size(&self) -> usize {
        match *self {
            Workload::Rtt { size } | Workload::Stream { size, .. } => size,
            Workload::Conns { .. } => 32,
            Workload::Setup { .. } => 0,
        }
    }

    /// Whether the workload runs over TLS (`wss://`).
    pub fn tls(&self) -> bool {
        matches!(
            *self,
            Workload::Stream { tls: true, .. }
                | Workload::Conns { tls: true, .. }
                | Workload::Setup { tls: true, .. }
        )
    }

    /// Whether messages are text frames.
    pub fn text(&self) -> bool {
        matches!(self, Workload::Stream { text: true, .. })
    }

    /// Whether the headline number is MB/s (large messages) rather than msgs/s.
    pub fn bandwidth_bound(&self) -> bool {
        matches!(self, Workload::Stream { size, .. } if *size >= 1024)
    }
}

/// `1 KiB`, `64 KiB`, `1 MiB`, `32 B`.
pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The payload of one message: pseudo-random bytes, or text of exactly
/// `size` bytes mixing 1-, 2-, 3- and 4-byte UTF-8 characters (padded with
/// ASCII at the end to hit the size exactly).
pub fn payload(size: usize, text: bool) -> Bytes {
    if !text {
        return (0..size)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
            .collect::<Vec<u8>>()
            .into();
    }
    const PATTERN: &str = "héllo wörld ✓ 日本語のテキスト κόσμε 🚀🦀 ünïcødé – ";
    let mut s = String::with_capacity(size + 8);
    'fill: loop {
        for c in PATTERN.chars() {
            if s.len() + c.len_utf8() > size {
                break 'fill;
            }
            s.push(c);
        }
    }
    while s.len() < size {
        s.push('x');
    }
    debug_assert_eq!(s.len(), size);
    Bytes::from(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in all(false).into_iter().chain(all(true)) {
            assert_eq!(Workload::parse(&w.name()), Some(w), "{}", w.name());
        }
        assert_eq!(
            Workload::parse("wss-stream-64k-bin"),
            Some(Workload::Stream {
                size: 64 << 10,
                window: 16,
                text: false,
                tls: true
            })
        );
        assert_eq!(
            Workload::parse("setup-wss-100"),
            Some(Workload::Setup {
                tls: true,
                concurrency: 100
            })
        );
        assert_eq!(Workload::parse("wss-rtt-32"), None);
        assert_eq!(Workload::parse("setup-ws-0"), None);
    }

    #[test]
    fn text_payloads_are_exact_and_multibyte() {
        for size in [32, 1024, 65536, 1 << 20] {
            let p = payload(size, true);
            assert_eq!(p.len(), size);
            let s = std::str::from_utf8(&p).unwrap();
            assert!(s.chars().any(|c| c.len_utf8() > 1));
        }
    }
}
