//! Terminal colours (only on a terminal, never with `NO_COLOR`), escaping of
//! server text for a terminal, and the names of close codes.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--no-color`: no colours anywhere.
static NO_COLOR_FLAG: AtomicBool = AtomicBool::new(false);

/// Turns colours off for the rest of the process (`--no-color`).
pub fn disable_color() {
    NO_COLOR_FLAG.store(true, Ordering::Relaxed);
}

/// Whether to colour output written to `stream`: it must be a terminal,
/// `--no-color` not given, and `NO_COLOR` unset or empty
/// (<https://no-color.org>).
pub fn color_for(stream: &impl IsTerminal) -> bool {
    stream.is_terminal()
        && !NO_COLOR_FLAG.load(Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

/// `s` as it may be written to a terminal: control characters that a
/// terminal would act on are shown as escapes instead, so that a server
/// cannot move the cursor, change the title, clear the screen or answer
/// for the user. C0 controls (except `\n` and `\t`) and DEL become `\x1b`,
/// `\x0d`, `\x7f`; C1 controls (U+0080 to U+009F, e.g. the one-character
/// CSI U+009B) become `\u{9b}`. Text without them comes back unchanged,
/// without a copy. Only for a terminal: piped output stays byte-exact.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    let shown = |c: char| !c.is_control() || c == '\n' || c == '\t';
    if s.chars().all(shown) {
        return Cow::Borrowed(s);
    }
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if shown(c) {
            out.push(c);
        } else if u32::from(c) <= 0x7f {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(
            escape_controls("\x1b[31mred\x1b[0m"),
            "\\x1b[31mred\\x1b[0m"
        );
        // A title change (OSC ... BEL), a carriage return over the line, a
        // backspace, NUL, DEL.
        assert_eq!(escape_controls("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(escape_controls("ok\rfake"), "ok\\x0dfake");
        assert_eq!(escape_controls("a\x08\x00\x7f"), "a\\x08\\x00\\x7f");
        assert_eq!(escape_controls("\x01\x1f"), "\\x01\\x1f");
        // C1 controls, including the one-character CSI.
        assert_eq!(
            escape_controls("\u{9b}2J\u{85}\u{80}"),
            "\\u{9b}2J\\u{85}\\u{80}"
        );
    }

    #[test]
    fn keeps_newlines_tabs_and_printable_text_as_they_are() {
        for s in [
            "",
            "plain text",
            "two\nlines\tand a tab",
            "héllo wörld ✓ 日本語 🎉",
            "\u{a0}no-break space and \u{a0}, just above C1",
            // A backslash is text, not an escape.
            "a\\x1b",
        ] {
            assert!(
                matches!(escape_controls(s), Cow::Borrowed(b) if b == s),
                "{s:?}"
            );
        }
        // Around the escapes, the text is kept.
        assert_eq!(escape_controls("é\x1bé\n"), "é\\x1bé\n");
    }
}
