//! Terminal colours (only on a terminal, never with `NO_COLOR`) and the
//! names of close codes.

use std::io::IsTerminal;

/// Whether to colour output written to `stream`: it must be a terminal, and
/// `NO_COLOR` must be unset or empty (<https://no-color.org>).
pub fn color_for(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Wraps text in ANSI colours when enabled.
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    /// Paint for stdout.
    pub fn stdout() -> Paint {
        Paint(color_for(&std::io::stdout()))
    }

    /// Paint for stderr.
    pub fn stderr() -> Paint {
        Paint(color_for(&std::io::stderr()))
    }

    fn sgr(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// Dim (grey) text.
    pub fn dim(self, s: &str) -> String {
        self.sgr("2", s)
    }

    /// Bold text.
    pub fn bold(self, s: &str) -> String {
        self.sgr("1", s)
    }

    /// Green text.
    pub fn green(self, s: &str) -> String {
        self.sgr("32", s)
    }

    /// Yellow text.
    pub fn yellow(self, s: &str) -> String {
        self.sgr("33", s)
    }

    /// Red text.
    pub fn red(self, s: &str) -> String {
        self.sgr("31", s)
    }

    /// Cyan text.
    pub fn cyan(self, s: &str) -> String {
        self.sgr("36", s)
    }
}

/// The RFC 6455 / IANA name of a close code, if it has one.
pub fn close_code_name(code: u16) -> Option<&'static str> {
    Some(match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1005 => "no status code",
        1006 => "abnormal closure",
        1007 => "invalid payload data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "mandatory extension",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        1015 => "TLS handshake failure",
        _ => return None,
    })
}

/// `1000 (normal closure)`, or just the number for codes without a name.
pub fn describe_close_code(code: u16) -> String {
    match close_code_name(code) {
        Some(name) => format!("{code} ({name})"),
        None => code.to_string(),
    }
}

/// A duration in milliseconds with two decimals: `0.42 ms`.
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
