//! RFC 7692 permessage-deflate: the offer, the checks on the server's
//! answer, and per-message compression with the negotiated parameters.

#[cfg(feature = "deflate")]
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::{HandshakeError, ProtocolError};

/// The tail that a sync flush ends with; stripped on send, added back on receive.
#[cfg(feature = "deflate")]
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// How far past the message limit inflating may go before it sees that a
/// message is too large: the output buffer never holds (or reserves) more
/// than the limit plus this. A little room past the limit is what shows
/// that the message goes over it; 64 KiB is the most one read of small
/// traffic brings (`MAX_READ` in the driver), so a deflate bomb costs at
/// most a read's worth beyond what a legitimate message may.
pub const INFLATE_CHUNK: usize = 64 * 1024;

/// What the client asks for in its `Sec-WebSocket-Extensions` offer.
///
/// The default asks for nothing beyond compression itself and announces that
/// the client accepts a `client_max_window_bits` limit from the server.
///
/// # Examples
///
/// ```
/// use unisocket_proto::deflate::DeflateConfig;
///
/// let config = DeflateConfig::default();
/// // The offer goes into the upgrade request...
/// assert_eq!(config.offer(), "permessage-deflate; client_max_window_bits");
/// // ...and the server's answer is checked against it.
/// let params = config
///     .negotiate(Some("permessage-deflate; client_max_window_bits=10"))?
///     .unwrap();
/// assert_eq!(params.client_max_window_bits, 10);
/// # Ok::<(), unisocket_proto::HandshakeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Ask the server to reset its compression context after each message.
    pub server_no_context_takeover: bool,
    /// Reset our compression context after each message (less memory, worse ratio).
    pub client_no_context_takeover: bool,
    /// Ask the server to use a window of at most 2^N bytes (8-15).
    pub server_max_window_bits: Option<u8>,
    /// Use a window of at most 2^N bytes ourselves (8-15); `None` offers the
    /// parameter without a value, letting the server choose.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateConfig {
    /// Asks the server to reset its compression context after each message
    /// (`server_no_context_takeover`).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::DeflateConfig;
    ///
    /// let config = DeflateConfig::default().server_no_context_takeover(true);
    /// assert!(config.offer().contains("; server_no_context_takeover"));
    /// ```
    #[must_use]
    pub fn server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Resets our own compression context after each message
    /// (`client_no_context_takeover`: less memory, a worse ratio).
    #[must_use]
    pub fn client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Asks the server for a window of at most 2^`bits` bytes (8-15), or
    /// leaves it to the server (`None`).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::DeflateConfig;
    ///
    /// let config = DeflateConfig::default().server_max_window_bits(10);
    /// assert!(config.offer().contains("; server_max_window_bits=10"));
    /// ```
    #[must_use]
    pub fn server_max_window_bits(mut self, bits: impl Into<Option<u8>>) -> Self {
        self.server_max_window_bits = bits.into();
        self
    }

    /// Uses a window of at most 2^`bits` bytes ourselves (8-15); `None`
    /// offers the parameter without a value, letting the server choose.
    #[must_use]
    pub fn client_max_window_bits(mut self, bits: impl Into<Option<u8>>) -> Self {
        self.client_max_window_bits = bits.into();
        self
    }

    /// The `Sec-WebSocket-Extensions` header value to send.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::DeflateConfig;
    ///
    /// let config = DeflateConfig::default()
    ///     .client_no_context_takeover(true)
    ///     .server_max_window_bits(10);
    /// assert_eq!(
    ///     config.offer(),
    ///     "permessage-deflate; client_no_context_takeover; \
    ///      server_max_window_bits=10; client_max_window_bits"
    /// );
    /// ```
    pub fn offer(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={bits}"));
        }
        match self.client_max_window_bits {
            Some(bits) => s.push_str(&format!("; client_max_window_bits={bits}")),
            None => s.push_str("; client_max_window_bits"),
        }
        s
    }

    /// Checks the server's `Sec-WebSocket-Extensions` answer against this
    /// offer and returns the parameters in force. `None` means the server
    /// declined compression.
    ///
    /// # Errors
    /// [`HandshakeError::UnexpectedExtension`] when the answer names another
    /// extension, repeats one, or has a parameter that is unknown, repeated,
    /// out of range or outside the offer.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::DeflateConfig;
    /// use unisocket_proto::HandshakeError;
    ///
    /// let config = DeflateConfig::default();
    /// // No header in the response: the server declined.
    /// assert_eq!(config.negotiate(None)?, None);
    /// let params = config
    ///     .negotiate(Some("permessage-deflate; server_no_context_takeover"))?
    ///     .unwrap();
    /// assert!(params.server_no_context_takeover);
    /// // 16 is no valid window size.
    /// assert!(matches!(
    ///     config.negotiate(Some("permessage-deflate; server_max_window_bits=16")),
    ///     Err(HandshakeError::UnexpectedExtension(_))
    /// ));
    /// # Ok::<(), HandshakeError>(())
    /// ```
    pub fn negotiate(&self, answer: Option<&str>) -> Result<Option<DeflateParams>, HandshakeError> {
        let Some(answer) = answer else {
            return Ok(None);
        };
        let bad = |why: &str| HandshakeError::UnexpectedExtension(format!("{answer} ({why})"));
        let mut extensions = answer.split(',').map(str::trim).filter(|e| !e.is_empty());
        let Some(ext) = extensions.next() else {
            return Ok(None);
        };
        if extensions.next().is_some() {
            return Err(bad("more than one extension"));
        }
        let mut parts = ext.split(';').map(str::trim);
        if parts.next() != Some("permessage-deflate") {
            return Err(bad("only permessage-deflate was offered"));
        }
        let mut params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: self.client_no_context_takeover,
            server_max_window_bits: 15,
            client_max_window_bits: self.client_max_window_bits.unwrap_or(15),
        };
        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            if seen.contains(&name) {
                return Err(bad("a parameter is repeated"));
            }
            seen.push(name);
            let bits = |v: Option<&str>| -> Result<u8, HandshakeError> {
                match v.and_then(|v| v.parse::<u8>().ok()) {
                    Some(b @ 8..=15)
                        if !v.is_some_and(|v| v.starts_with('0') || v.starts_with('+')) =>
                    {
                        Ok(b)
                    }
                    _ => Err(bad("window bits must be 8 to 15")),
                }
            };
            match name {
                "server_no_context_takeover" if value.is_none() => {
                    params.server_no_context_takeover = true
                }
                "client_no_context_takeover" if value.is_none() => {
                    params.client_no_context_takeover = true
                }
                "server_max_window_bits" => {
                    let b = bits(value)?;
                    if self
                        .server_max_window_bits
                        .is_some_and(|offered| b > offered)
                    {
                        return Err(bad("server_max_window_bits above the offer"));
                    }
                    params.server_max_window_bits = b;
                }
                "client_max_window_bits" => {
                    let b = bits(value)?;
                    if self
                        .client_max_window_bits
                        .is_some_and(|offered| b > offered)
                    {
                        return Err(bad("client_max_window_bits above the offer"));
                    }
                    params.client_max_window_bits = b;
                }
                _ => return Err(bad("unknown or malformed parameter")),
            }
        }
        if self.server_max_window_bits.is_some() && !seen.contains(&"server_max_window_bits") {
            // The server may ignore our request for a smaller window only by
            // declining the extension (RFC 7692 section 7.1.2.1).
            return Err(bad(
                "server_max_window_bits was requested but not acknowledged",
            ));
        }
        if self.server_no_context_takeover && !params.server_no_context_takeover {
            return Err(bad(
                "server_no_context_takeover was requested but not acknowledged",
            ));
        }
        Ok(Some(params))
    }
}

/// The parameters in force after negotiation.
///
/// # Examples
///
/// ```
/// use unisocket_proto::deflate::{DeflateConfig, DeflateParams};
/// use unisocket_proto::Config;
///
/// let params = DeflateConfig::default()
///     .negotiate(Some("permessage-deflate; client_no_context_takeover"))?
///     .unwrap();
/// // Window sizes the answer leaves out default to the largest, 2^15.
/// let expected = DeflateParams {
///     server_no_context_takeover: false,
///     client_no_context_takeover: true,
///     server_max_window_bits: 15,
///     client_max_window_bits: 15,
/// };
/// assert_eq!(params, expected);
/// // They take effect through the connection's settings.
/// let config = Config { deflate: Some(params), ..Config::default() };
/// # Ok::<(), unisocket_proto::HandshakeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its context after each message.
    pub server_no_context_takeover: bool,
    /// We reset our context after each message.
    pub client_no_context_takeover: bool,
    /// The server's window, 2^N bytes.
    pub server_max_window_bits: u8,
    /// Our window, 2^N bytes.
    pub client_max_window_bits: u8,
}

/// The compression state of one connection.
///
/// # Examples
///
/// ```
/// use unisocket_proto::deflate::{Deflate, DeflateConfig};
///
/// let params = DeflateConfig::default()
///     .negotiate(Some("permessage-deflate"))?
///     .unwrap();
/// // One side compresses, the other inflates what it receives.
/// let (mut sender, mut receiver) = (Deflate::new(params), Deflate::new(params));
/// let mut packed = Vec::new();
/// sender.compress(b"hello hello hello hello", &mut packed);
/// let mut out = Vec::new();
/// receiver.decompress(&packed, true, &mut out, 1 << 20).unwrap();
/// assert_eq!(out, b"hello hello hello hello");
/// # Ok::<(), unisocket_proto::HandshakeError>(())
/// ```
#[cfg(feature = "deflate")]
pub struct Deflate {
    params: DeflateParams,
    compress: Compress,
    decompress: Decompress,
}

/// Built without the `deflate` feature, compression cannot be negotiated, so
/// no `Deflate` value can exist.
///
/// # Examples
///
/// ```
/// use unisocket_proto::deflate::Deflate;
///
/// // With no variants, code that holds a `Deflate` is unreachable.
/// fn never(deflate: Deflate) -> ! {
///     match deflate {}
/// }
/// ```
#[cfg(not(feature = "deflate"))]
#[derive(Debug)]
pub enum Deflate {}

#[cfg(not(feature = "deflate"))]
impl Deflate {
    /// Unreachable without the `deflate` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::Deflate;
    ///
    /// // Compiles as with the feature, but can never be called.
    /// fn pack(deflate: &mut Deflate, message: &[u8]) -> Vec<u8> {
    ///     let mut out = Vec::new();
    ///     deflate.compress(message, &mut out);
    ///     out
    /// }
    /// ```
    pub fn compress(&mut self, _input: &[u8], _out: &mut Vec<u8>) {
        match *self {}
    }

    /// Unreachable without the `deflate` feature.
    pub fn reset_compressor(&mut self) {
        match *self {}
    }

    /// Unreachable without the `deflate` feature.
    ///
    /// # Errors
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::Deflate;
    /// use unisocket_proto::ProtocolError;
    ///
    /// // Compiles as with the feature, but can never be called.
    /// fn unpack(deflate: &mut Deflate, frame: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    ///     let mut out = Vec::new();
    ///     deflate.decompress(frame, true, &mut out, 1 << 20)?;
    ///     Ok(out)
    /// }
    /// ```
    pub fn decompress(
        &mut self,
        _input: &[u8],
        _last: bool,
        _out: &mut Vec<u8>,
        _max: usize,
    ) -> Result<(), ProtocolError> {
        match *self {}
    }
}

#[cfg(feature = "deflate")]
impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "deflate")]
impl Deflate {
    /// Compression state for the negotiated `params`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::{Deflate, DeflateConfig};
    ///
    /// let config = DeflateConfig::default().client_no_context_takeover(true);
    /// let params = config.negotiate(Some("permessage-deflate"))?.unwrap();
    /// let mut deflate = Deflate::new(params);
    /// // Without context takeover, each message is compressed on its own:
    /// // the same message gives the same bytes every time.
    /// let (mut first, mut second) = (Vec::new(), Vec::new());
    /// deflate.compress(b"Hello", &mut first);
    /// deflate.compress(b"Hello", &mut second);
    /// assert_eq!(first, second);
    /// # Ok::<(), unisocket_proto::HandshakeError>(())
    /// ```
    pub fn new(params: DeflateParams) -> Self {
        // `client_max_window_bits=8` is honoured with zlib's 9-bit window.
        // zlib makes no raw deflate stream with 8 bits (zlib-rs refuses it,
        // flate2 asserts 9 to 15), but what the agreement limits is how far
        // back the stream refers, so that the server can inflate it with a
        // 256-byte window (RFC 7692 section 7.1.2.2), and zlib never refers
        // further back than its window less 262 bytes (`MIN_LOOKAHEAD`, in
        // every strategy): 250 bytes with 9 bits, within the 256 agreed.
        // So the answer is neither refused nor answered by sending
        // uncompressed blocks. `deflate_tests.rs` checks it by inflating
        // the client's output with a decoder that refuses any distance over
        // 256 (and that the same check catches a 10-bit window).
        let client_bits = params.client_max_window_bits.max(9);
        Deflate {
            params,
            compress: Compress::new_with_window_bits(Compression::fast(), false, client_bits),
            // Inflating with the largest window accepts any smaller one.
            decompress: Decompress::new_with_window_bits(false, 15),
        }
    }

    /// The parameters in force.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::{Deflate, DeflateConfig};
    ///
    /// let params = DeflateConfig::default()
    ///     .negotiate(Some("permessage-deflate; client_max_window_bits=8"))?
    ///     .unwrap();
    /// // The negotiated values are kept as they are, even where zlib needs a
    /// // larger window internally (9 bits rather than 8; its stream still
    /// // never refers more than 256 bytes back).
    /// assert_eq!(Deflate::new(params).params().client_max_window_bits, 8);
    /// # Ok::<(), unisocket_proto::HandshakeError>(())
    /// ```
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Compresses one whole message into `out` (cleared first), without the
    /// sync-flush tail.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::{Deflate, DeflateConfig};
    ///
    /// # let params = DeflateConfig::default().negotiate(Some("permessage-deflate"))?.unwrap();
    /// let mut deflate = Deflate::new(params);
    /// let mut out = Vec::new();
    /// deflate.compress(&[b'a'; 1000], &mut out);
    /// assert!(out.len() < 100);
    /// assert!(!out.ends_with(&[0x00, 0x00, 0xFF, 0xFF])); // no sync-flush tail
    /// // With context takeover, a repeated message refers back to the last one.
    /// let first = out.clone();
    /// deflate.compress(&[b'a'; 1000], &mut out);
    /// assert!(out.len() < first.len());
    /// # Ok::<(), unisocket_proto::HandshakeError>(())
    /// ```
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(input.len() / 2 + 64);
        let start = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            // Compressing to memory only fails on misuse of the stream.
            let _ = self
                .compress
                .compress_vec(&input[consumed..], out, FlushCompress::Sync);
            let consumed = (self.compress.total_in() - start) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else if out.is_empty() {
            // Nothing was pending (an empty message right after a flush):
            // send the empty stored block of RFC 7692 section 7.2.3.6.
            out.push(0x00);
        }
        if self.params.client_no_context_takeover {
            self.compress.reset();
        }
    }

    /// Starts the compressor afresh, with nothing in its window: the last
    /// message it compressed is sent uncompressed after all, so later ones
    /// must not refer back to it (the server never inflates it). Earlier
    /// messages stay in the server's window, where nothing refers to them
    /// any more; a compressor may always leave its window unused.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::{Deflate, DeflateConfig};
    ///
    /// let params = DeflateConfig::default().negotiate(Some("permessage-deflate")).unwrap().unwrap();
    /// let mut deflate = Deflate::new(params);
    /// let (mut first, mut again) = (Vec::new(), Vec::new());
    /// deflate.compress(b"hello hello", &mut first);
    /// deflate.reset_compressor();
    /// deflate.compress(b"hello hello", &mut again);
    /// assert_eq!(first, again); // no reference to the forgotten message
    /// ```
    pub fn reset_compressor(&mut self) {
        self.compress.reset();
    }

    /// Inflates one frame's payload of a compressed message, appending to
    /// `out`. With `last`, the message ends here: the sync-flush tail is fed
    /// too. Fails with `MessageTooLarge` as soon as `out` holds more than
    /// `max` bytes, having reserved no more than `max` +
    /// [`INFLATE_CHUNK`] bytes for `out` (from an empty `Vec`, its capacity
    /// never exceeds that); the error's `size` is how many bytes inflated
    /// by then, more than `max` and at most that bound.
    ///
    /// # Errors
    /// [`ProtocolError::Compression`] for data that does not inflate,
    /// [`ProtocolError::MessageTooLarge`] past `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::deflate::{Deflate, DeflateConfig};
    /// use unisocket_proto::ProtocolError;
    ///
    /// # let params = DeflateConfig::default().negotiate(Some("permessage-deflate"))?.unwrap();
    /// // "Hello" as compressed in RFC 7692 section 7.2.3.1.
    /// let payload = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    /// let mut out = Vec::new();
    /// Deflate::new(params).decompress(&payload, true, &mut out, 1024).unwrap();
    /// assert_eq!(out, b"Hello");
    /// // A limit of 3 bytes stops it.
    /// let mut out = Vec::new();
    /// let err = Deflate::new(params).decompress(&payload, true, &mut out, 3).unwrap_err();
    /// assert!(matches!(err, ProtocolError::MessageTooLarge { max: 3, .. }));
    /// # Ok::<(), unisocket_proto::HandshakeError>(())
    /// ```
    pub fn decompress(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        self.inflate(input, out, max)?;
        if last {
            self.inflate(&TAIL, out, max)?;
            if self.params.server_no_context_takeover {
                self.decompress.reset(false);
            }
        }
        Ok(())
    }

    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let too_large = |out: &Vec<u8>| ProtocolError::MessageTooLarge {
            size: out.len() as u64,
            max,
        };
        if out.len() > max {
            return Err(too_large(out));
        }
        // The most `out` may hold: the limit, and one chunk past it to see
        // a message go over.
        let bound = max.saturating_add(INFLATE_CHUNK);
        let start = self.decompress.total_in();
        loop {
            let consumed = (self.decompress.total_in() - start) as usize;
            if out.capacity() - out.len() < 1024 {
                // Double, as `reserve` would, but never past `bound`:
                // `reserve` would double past the limit (a 64 MiB limit
                // once gave a 128 MiB buffer, filled before the check).
                // `out.len() <= max` here, so there is room to grow.
                let want = out
                    .capacity()
                    .max(4096)
                    .min(bound.saturating_sub(out.len()));
                out.reserve_exact(want);
            }
            let before_out = out.len();
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|e| ProtocolError::Compression(e.to_string()))?;
            if out.len() > max {
                return Err(too_large(out));
            }
            let consumed_now = (self.decompress.total_in() - start) as usize;
            if status == Status::StreamEnd {
                return Err(ProtocolError::Compression(
                    "unexpected end of the deflate stream".into(),
                ));
            }
            let full = out.len() == out.capacity();
            if consumed_now == input.len() && !full {
                return Ok(());
            }
            if consumed_now == consumed && out.len() == before_out && !full {
                return Err(ProtocolError::Compression(
                    "the deflate stream makes no progress".into(),
                ));
            }
        }
    }
}

#[cfg(all(test, feature = "deflate"))]
pub(super) mod tests {
    use super::*;

    fn params() -> DeflateParams {
        DeflateConfig::default()
            .negotiate(Some("permessage-deflate"))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn offer_strings() {
        assert_eq!(
            DeflateConfig::default().offer(),
            "permessage-deflate; client_max_window_bits"
        );
        let c = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(12),
        };
        assert_eq!(
            c.offer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn negotiation_accepts_valid_answers() {
        let c = DeflateConfig::default();
        assert_eq!(c.negotiate(None).unwrap(), None);
        let p = c
            .negotiate(Some(
                "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
            ))
            .unwrap()
            .unwrap();
        assert!(p.server_no_context_takeover);
        assert_eq!(p.client_max_window_bits, 10);
        let p = c
            .negotiate(Some("permessage-deflate; client_no_context_takeover"))
            .unwrap()
            .unwrap();
        assert!(p.client_no_context_takeover);
        let p = c
            .negotiate(Some("permessage-deflate; server_max_window_bits=9"))
            .unwrap()
            .unwrap();
        assert_eq!(p.server_max_window_bits, 9);
    }

    #[test]
    fn negotiation_rejects_answers_outside_the_offer() {
        let c = DeflateConfig::default();
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; foo",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
        ] {
            assert!(c.negotiate(Some(bad)).is_err(), "{bad}");
        }
        let asked = DeflateConfig {
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(10),
            ..DeflateConfig::default()
        };
        assert!(asked.negotiate(Some("permessage-deflate")).is_err());
        assert!(asked
            .negotiate(Some("permessage-deflate; server_max_window_bits=11"))
            .is_err());
        assert!(asked
            .negotiate(Some(
                "permessage-deflate; server_max_window_bits=10; client_max_window_bits=11"
            ))
            .is_err());
        let no_ctx = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert!(no_ctx.negotiate(Some("permessage-deflate")).is_err());
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for (client_nct, server_nct) in [(false, false), (true, true)] {
            let p = DeflateParams {
                client_no_context_takeover: client_nct,
                server_no_context_takeover: server_nct,
                ..params()
            };
            // The client compresses; a peer with mirrored parameters inflates.
            let mut tx = Deflate::new(p);
            let mut rx = Deflate::new(DeflateParams {
                server_no_context_takeover: client_nct,
                ..p
            });
            for msg in [
                &b""[..],
                b"hello hello hello hello",
                &vec![7u8; 100_000],
                b"hello hello",
            ] {
                let mut packed = Vec::new();
                tx.compress(msg, &mut packed);
                let mut out = Vec::new();
                rx.decompress(&packed, true, &mut out, usize::MAX).unwrap();
                assert_eq!(out, msg);
            }
        }
    }

    #[test]
    fn zip_bomb_stops_at_the_limit() {
        let mut tx = Deflate::new(params());
        let mut packed = Vec::new();
        tx.compress(&vec![0u8; 50 << 20], &mut packed);
        assert!(packed.len() < (50 << 20) / 100, "{}", packed.len());
        let mut rx = Deflate::new(params());
        let mut out = Vec::new();
        let err = rx.decompress(&packed, true, &mut out, 1 << 20).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { .. }));
        assert!(out.capacity() <= 2 << 20, "capacity {}", out.capacity());
    }

    /// A raw deflate stream written bit by bit (RFC 1951 section 3.1.1).
    #[derive(Default)]
    struct Bits {
        out: Vec<u8>,
        acc: u32,
        n: u32,
    }

    impl Bits {
        /// `len` bits of `value`, least significant first (header fields).
        fn put(&mut self, value: u32, len: u32) {
            for i in 0..len {
                self.acc |= ((value >> i) & 1) << self.n;
                self.n += 1;
                if self.n == 8 {
                    self.out.push(self.acc as u8);
                    (self.acc, self.n) = (0, 0);
                }
            }
        }

        /// A Huffman code of `len` bits, most significant first.
        fn code(&mut self, code: u32, len: u32) {
            for i in (0..len).rev() {
                self.put(code >> i, 1);
            }
        }
    }

    /// `n` zero bytes as one permessage-deflate message: a block with the
    /// fixed codes holding a literal 0, then copies of 258 bytes from 1
    /// byte back (13 bits each), then the sync flush's empty stored block
    /// without its last four bytes (RFC 7692 section 7.2.1).
    pub(crate) fn zeros_bomb(n: usize) -> Vec<u8> {
        let mut b = Bits::default();
        b.put(0, 1); // not the last block
        b.put(1, 2); // fixed Huffman codes
        b.code(0x30, 8); // literal 0
        for _ in 0..(n - 1) / 258 {
            b.code(0b1100_0101, 8); // length code 285: 258 bytes
            b.code(0, 5); // distance code 0: 1 byte back
        }
        for _ in 0..(n - 1) % 258 {
            b.code(0x30, 8);
        }
        b.code(0, 7); // end of block
        b.put(0, 3); // an empty stored block, not the last, padded
        b.put(0, (8 - b.n) % 8);
        b.out
    }

    #[test]
    fn the_hand_made_bomb_inflates_to_its_zeros() {
        let packed = zeros_bomb(100_000);
        let mut out = Vec::new();
        Deflate::new(params())
            .decompress(&packed, true, &mut out, usize::MAX)
            .unwrap();
        assert!(out.len() == 100_000 && out.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_200_mib_bomb_against_a_1_mib_limit_stops_within_one_chunk_past_it() {
        const LIMIT: usize = 1 << 20;
        let packed = zeros_bomb(200 << 20);
        assert!(packed.len() < 2 << 20, "{} bytes compressed", packed.len());
        // In one frame, and in frames of 1 KiB (the bytes of each frame are
        // inflated into the same buffer).
        for frame in [packed.len(), 1024] {
            let mut rx = Deflate::new(params());
            let mut out = Vec::new();
            let mut result = Ok(());
            let mut pieces = packed.chunks(frame).peekable();
            while let Some(piece) = pieces.next() {
                result = rx.decompress(piece, pieces.peek().is_none(), &mut out, LIMIT);
                assert!(
                    out.capacity() <= LIMIT + INFLATE_CHUNK,
                    "{}",
                    out.capacity()
                );
                if result.is_err() {
                    break;
                }
            }
            let err = result.unwrap_err();
            assert_eq!(err.close_code(), 1009);
            let ProtocolError::MessageTooLarge { size, max } = err else {
                panic!("{err:?}");
            };
            // The true size inflated when it stopped, over the limit by at
            // most a chunk.
            assert_eq!((size, max), (out.len() as u64, LIMIT), "frames of {frame}");
            assert!(size > LIMIT as u64 && size <= (LIMIT + INFLATE_CHUNK) as u64);
            assert!(err.to_string().contains("over the limit of 1048576 bytes"));
        }
    }

    #[test]
    fn a_message_of_exactly_the_limit_inflates_and_one_byte_more_reports_its_size() {
        const LIMIT: usize = 100_000;
        let message: Vec<u8> = (0..LIMIT + 1).map(|i| (i % 251) as u8).collect();
        for (len, ok) in [(LIMIT, true), (LIMIT + 1, false)] {
            let mut packed = Vec::new();
            Deflate::new(params()).compress(&message[..len], &mut packed);
            let mut out = Vec::new();
            let result = Deflate::new(params()).decompress(&packed, true, &mut out, LIMIT);
            assert!(
                out.capacity() <= LIMIT + INFLATE_CHUNK,
                "{}",
                out.capacity()
            );
            if ok {
                result.unwrap();
                assert_eq!(out, &message[..len]);
            } else {
                let err = result.unwrap_err();
                assert_eq!(
                    err,
                    ProtocolError::MessageTooLarge {
                        size: len as u64,
                        max: LIMIT
                    }
                );
            }
        }
    }

    #[test]
    fn garbage_does_not_inflate() {
        let mut rx = Deflate::new(params());
        let mut out = Vec::new();
        assert!(matches!(
            rx.decompress(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00], true, &mut out, 1 << 20),
            Err(ProtocolError::Compression(_))
        ));
    }
}
