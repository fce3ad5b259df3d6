//! RFC 7692 permessage-deflate: the offer, the checks on the server's
//! answer, and per-message compression with the negotiated parameters.

#[cfg(feature = "deflate")]
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::{HandshakeError, ProtocolError};

/// The tail that a sync flush ends with; stripped on send, added back on receive.
#[cfg(feature = "deflate")]
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// What the client asks for in its `Sec-WebSocket-Extensions` offer.
///
/// The default asks for nothing beyond compression itself and announces that
/// the client accepts a `client_max_window_bits` limit from the server.
///
/// # Examples
///
/// ```
/// use unisocket::proto::deflate::DeflateConfig;
///
/// let config = DeflateConfig::default();
/// // The offer goes into the upgrade request...
/// assert_eq!(config.offer(), "permessage-deflate; client_max_window_bits");
/// // ...and the server's answer is checked against it.
/// let params = config
///     .negotiate(Some("permessage-deflate; client_max_window_bits=10"))?
///     .unwrap();
/// assert_eq!(params.client_max_window_bits, 10);
/// # Ok::<(), unisocket::proto::HandshakeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
    /// The `Sec-WebSocket-Extensions` header value to send.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::proto::deflate::DeflateConfig;
    ///
    /// let config = DeflateConfig {
    ///     client_no_context_takeover: true,
    ///     server_max_window_bits: Some(10),
    ///     ..DeflateConfig::default()
    /// };
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
    /// use unisocket::proto::deflate::DeflateConfig;
    /// use unisocket::proto::HandshakeError;
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
/// use unisocket::proto::deflate::{DeflateConfig, DeflateParams};
/// use unisocket::proto::Config;
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
/// # Ok::<(), unisocket::proto::HandshakeError>(())
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
/// use unisocket::proto::deflate::{Deflate, DeflateConfig};
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
/// # Ok::<(), unisocket::proto::HandshakeError>(())
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
/// use unisocket::proto::deflate::Deflate;
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
    /// use unisocket::proto::deflate::Deflate;
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
    ///
    /// # Errors
    /// Never.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::proto::deflate::Deflate;
    /// use unisocket::proto::ProtocolError;
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
    /// use unisocket::proto::deflate::{Deflate, DeflateConfig};
    ///
    /// let config = DeflateConfig { client_no_context_takeover: true, ..DeflateConfig::default() };
    /// let params = config.negotiate(Some("permessage-deflate"))?.unwrap();
    /// let mut deflate = Deflate::new(params);
    /// // Without context takeover, each message is compressed on its own:
    /// // the same message gives the same bytes every time.
    /// let (mut first, mut second) = (Vec::new(), Vec::new());
    /// deflate.compress(b"Hello", &mut first);
    /// deflate.compress(b"Hello", &mut second);
    /// assert_eq!(first, second);
    /// # Ok::<(), unisocket::proto::HandshakeError>(())
    /// ```
    pub fn new(params: DeflateParams) -> Self {
        // zlib cannot make raw deflate streams with a 256-byte window; 512
        // bytes is the smallest, and the server inflates with at least 2^8.
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
    /// use unisocket::proto::deflate::{Deflate, DeflateConfig};
    ///
    /// let params = DeflateConfig::default()
    ///     .negotiate(Some("permessage-deflate; client_max_window_bits=8"))?
    ///     .unwrap();
    /// // The negotiated values are kept as they are, even where zlib needs a
    /// // larger window internally (9 bits rather than 8).
    /// assert_eq!(Deflate::new(params).params().client_max_window_bits, 8);
    /// # Ok::<(), unisocket::proto::HandshakeError>(())
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
    /// use unisocket::proto::deflate::{Deflate, DeflateConfig};
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
    /// # Ok::<(), unisocket::proto::HandshakeError>(())
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

    /// Inflates one frame's payload of a compressed message, appending to
    /// `out`. With `last`, the message ends here: the sync-flush tail is fed
    /// too. Fails with `MessageTooLarge` as soon as `out` would exceed `max`.
    ///
    /// # Errors
    /// [`ProtocolError::Compression`] for data that does not inflate,
    /// [`ProtocolError::MessageTooLarge`] past `max`.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::proto::deflate::{Deflate, DeflateConfig};
    /// use unisocket::proto::ProtocolError;
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
    /// # Ok::<(), unisocket::proto::HandshakeError>(())
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
        let start = self.decompress.total_in();
        loop {
            let consumed = (self.decompress.total_in() - start) as usize;
            if out.capacity() - out.len() < 1024 {
                // Grow geometrically, asking for at most one byte past the limit
                // (`reserve` may round up; the check below is what bounds it).
                let want = out
                    .capacity()
                    .max(4096)
                    .min(max.saturating_sub(out.len()).saturating_add(1));
                out.reserve(want.max(1));
            }
            let before_out = out.len();
            let status = self
                .decompress
                .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
                .map_err(|e| ProtocolError::Compression(e.to_string()))?;
            if out.len() > max {
                return Err(ProtocolError::MessageTooLarge {
                    size: out.len() as u64,
                    max,
                });
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
mod tests {
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
