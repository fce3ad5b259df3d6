//! Incremental UTF-8 validation: bytes are checked as they arrive, so an
//! invalid sequence is reported at the first byte that makes it invalid,
//! even in the middle of a frame or of a fragmented message.

/// Validates a stream of UTF-8 fed in arbitrary chunks.
///
/// # Examples
///
/// ```
/// use unisocket_proto::utf8::Utf8Validator;
///
/// // "é" is two bytes; a chunk may end between them.
/// let mut v = Utf8Validator::new();
/// assert!(v.feed(&[b'c', b'a', b'f', 0xC3]).is_ok());
/// assert!(v.feed(&[0xA9]).is_ok());
/// assert!(v.finish().is_ok());
/// ```
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    /// The start of a code point cut off at the end of the last chunk.
    carry: [u8; 4],
    carry_len: u8,
}

/// The input is not valid UTF-8.
///
/// # Examples
///
/// ```
/// use unisocket_proto::utf8::{InvalidUtf8, Utf8Validator};
///
/// // 0xFF can never appear in UTF-8.
/// assert_eq!(Utf8Validator::new().feed(&[b'a', 0xFF]), Err(InvalidUtf8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

fn char_width(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// How many bytes at the end of `input` begin a code point that the input
/// cuts off (0 to 3). Bytes that cannot begin one count as complete, so that
/// the validation of the rest reports them.
fn cut_off_tail(input: &[u8]) -> usize {
    let n = input.len();
    for back in 1..=n.min(3) {
        let byte = input[n - back];
        if byte & 0xC0 != 0x80 {
            return if char_width(byte) > back { back } else { 0 };
        }
    }
    0
}

/// Whether `bytes`, the start of one code point, can still become valid.
fn may_begin_valid(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(bytes), Err(e) if e.error_len().is_none())
}

/// Whether `bytes` is valid UTF-8: simdutf (AVX-512, AVX2 or SSE, chosen at
/// run time) with the `simdutf` feature, simdutf8 without it (and in the
/// browser, where simdutf is not built), and std under
/// Miri, which runs neither foreign code nor every SIMD intrinsic.
#[cfg(all(feature = "simdutf", not(target_arch = "wasm32"), not(miri)))]
pub(crate) fn is_valid(bytes: &[u8]) -> bool {
    simdutf::validate_utf8(bytes)
}

#[cfg(all(any(not(feature = "simdutf"), target_arch = "wasm32"), not(miri)))]
pub(crate) fn is_valid(bytes: &[u8]) -> bool {
    simdutf8::basic::from_utf8(bytes).is_ok()
}

#[cfg(miri)]
pub(crate) fn is_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

impl Utf8Validator {
    /// A validator at the start of a text.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::utf8::Utf8Validator;
    ///
    /// let mut v = Utf8Validator::new();
    /// assert!(v.feed("κόσμε".as_bytes()).is_ok());
    /// assert!(v.finish().is_ok());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next chunk. Fails as soon as the bytes seen so far cannot be
    /// the start of valid UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::utf8::{InvalidUtf8, Utf8Validator};
    ///
    /// let mut v = Utf8Validator::new();
    /// // 0xF4 may start a code point up to U+10FFFF...
    /// assert_eq!(v.feed(&[0xF4]), Ok(()));
    /// // ...but 0xF4 0x90 would be above it: the error comes at once.
    /// assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    /// ```
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let width = char_width(self.carry[0]);
            let take = (width - have).min(input.len());
            self.carry[have..have + take].copy_from_slice(&input[..take]);
            let now = have + take;
            input = &input[take..];
            if now < width {
                if !may_begin_valid(&self.carry[..now]) {
                    return Err(InvalidUtf8);
                }
                self.carry_len = now as u8;
                return Ok(());
            }
            if std::str::from_utf8(&self.carry[..now]).is_err() {
                return Err(InvalidUtf8);
            }
            self.carry_len = 0;
        }
        let (body, tail) = input.split_at(input.len() - cut_off_tail(input));
        if !is_valid(body) {
            return Err(InvalidUtf8);
        }
        if !tail.is_empty() {
            if !may_begin_valid(tail) {
                return Err(InvalidUtf8);
            }
            self.carry[..tail.len()].copy_from_slice(tail);
            self.carry_len = tail.len() as u8;
        }
        Ok(())
    }

    /// Checks that the text does not end inside a code point, and resets the
    /// validator for the next text.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::utf8::{InvalidUtf8, Utf8Validator};
    ///
    /// let mut v = Utf8Validator::new();
    /// assert_eq!(v.feed(&[0xE2, 0x82]), Ok(())); // the start of "€"
    /// assert_eq!(v.finish(), Err(InvalidUtf8)); // the text ends inside it
    /// // The validator is ready for the next text.
    /// assert_eq!(v.feed("€".as_bytes()), Ok(()));
    /// assert_eq!(v.finish(), Ok(()));
    /// ```
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.carry_len == 0;
        *self = Self::default();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all_splits(bytes: &[u8]) {
        let expected_ok = std::str::from_utf8(bytes).is_ok();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&bytes[..a]).is_ok()
                    && v.feed(&bytes[a..b]).is_ok()
                    && v.feed(&bytes[b..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, expected_ok, "{bytes:x?} split at {a},{b}");
            }
        }
    }

    #[test]
    fn agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "κόσμε".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{7FF}\u{80}".as_bytes(),
            &[
                0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80,
                0x65,
            ],
            &[0xF4, 0x90, 0x80, 0x80],
            &[0xC0, 0xAF],
            &[0xE0, 0x80, 0xAF],
            &[0xF0, 0x9F, 0x98],
            &[0xFF],
            &[0xED, 0xBF, 0xBF],
        ];
        for s in samples {
            check_all_splits(s);
        }
    }

    /// Texts longer than the SIMD blocks agree with std, fed in chunks of
    /// each of several sizes, whole and with one byte replaced (every 7th
    /// position, by six kinds of byte).
    #[test]
    fn long_texts_agree_with_std_in_any_chunks() {
        let text = "héllo wörld ✓ 日本語のテキスト κόσμε 🚀🦀 ünïcødé – ".repeat(9);
        let bytes = text.as_bytes();
        let check = |bytes: &[u8]| {
            let expected_ok = std::str::from_utf8(bytes).is_ok();
            for chunk in [1, 2, 3, 5, 63, 64, 65, 200, bytes.len()] {
                let mut v = Utf8Validator::new();
                let ok = bytes.chunks(chunk).all(|c| v.feed(c).is_ok()) && v.finish().is_ok();
                assert_eq!(ok, expected_ok, "chunks of {chunk}");
            }
        };
        check(bytes);
        let mut corrupt = bytes.to_vec();
        for at in (0..bytes.len()).step_by(7) {
            for bad in [0xFF, 0x80, 0xC0, 0xED, 0xF4, b'a'] {
                let was = corrupt[at];
                corrupt[at] = bad;
                check(&corrupt);
                corrupt[at] = was;
            }
        }
    }

    #[test]
    fn an_invalid_byte_fails_in_the_chunk_that_brings_it() {
        let mut v = Utf8Validator::new();
        let mut text = "κόσμε".repeat(40).into_bytes();
        assert!(v.feed(&text).is_ok());
        text[150] = 0xFF;
        assert_eq!(v.feed(&text), Err(InvalidUtf8));
    }

    #[test]
    fn fails_at_the_first_invalid_byte() {
        // 6.4.3 of the Autobahn suite: the invalid byte arrives in the second chunk.
        let mut v = Utf8Validator::new();
        assert!(v.feed("κόσμε".as_bytes()).is_ok());
        assert!(v.feed(&[0xF4]).is_ok());
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn incomplete_tail_is_an_error_at_finish() {
        let mut v = Utf8Validator::new();
        assert!(v.feed(&[0xE2, 0x82]).is_ok());
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // finish resets
        assert!(v.feed(b"ok").is_ok());
        assert!(v.finish().is_ok());
    }
}
