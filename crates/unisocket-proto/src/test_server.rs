#![allow(dead_code)]
//! Sans-io, server-side RFC 6455 codec used only by tests to check the client.
//!
//! The file is self-contained (no `crate::` imports) so that it can be included
//! both from `src/` under `cfg(test)` and from integration tests with
//! `#[path = "../../../unisocket-proto/src/test_server.rs"] mod test_server;`.
//!
//! It is deliberately strict about what a client must do (mask every frame,
//! use minimal length encodings, valid UTF-8, valid close codes) and
//! deliberately permissive about what it can *produce*: [`encode_frame`] and
//! [`encode_header_raw`] can write any bit pattern, so that tests can send
//! malformed frames to the client.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The GUID that RFC 6455 section 1.3 appends to the client key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Maximum number of header lines [`parse_request`] accepts.
const MAX_HEADERS: usize = 64;

/// Largest payload a control frame may carry (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Computes `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`:
/// `base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// A parsed client opening handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request target exactly as sent (path and query), e.g. `/chat?x=1`.
    pub path: String,
    /// Every header line in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The `Sec-WebSocket-Key` value (trimmed).
    pub key: String,
    /// All offered subprotocols, from every `Sec-WebSocket-Protocol` header,
    /// split on commas and trimmed, in the order offered.
    pub protocols: Vec<String>,
}

impl Request {
    /// The value of the first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of every header called `name` (compared case-insensitively).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether any header called `name` holds `token` in its comma-separated
    /// list (both compared case-insensitively).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Parses a client opening handshake (RFC 6455 section 4.2.1).
///
/// Returns `Ok(None)` while more bytes are needed, `Ok(Some((request,
/// consumed)))` once the head is complete (`consumed` is the length of the
/// head including the blank line; any bytes after it are not part of the
/// handshake), and `Err` for a malformed request or one that is not a valid
/// WebSocket upgrade: a method other than `GET`, a version other than
/// HTTP/1.1, a missing `Host`, an `Upgrade` without `websocket`, a
/// `Connection` without `Upgrade`, a `Sec-WebSocket-Key` that is missing or
/// not the base64 of 16 bytes, or a `Sec-WebSocket-Version` other than `13`.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, String> {
    let mut raw_headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw_headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP request: {e}")),
    };

    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return Err(format!("method must be GET, got {method:?}"));
    }
    if req.version != Some(1) {
        return Err(format!("version must be HTTP/1.1, got {:?}", req.version));
    }
    let path = req.path.unwrap_or_default().to_string();

    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| format!("header {:?} is not UTF-8", h.name))?;
        headers.push((h.name.to_string(), value.trim().to_string()));
    }

    let mut request = Request {
        path,
        headers,
        key: String::new(),
        protocols: Vec::new(),
    };

    if request.header("Host").is_none() {
        return Err("missing Host header".into());
    }
    if !request.has_token("Upgrade", "websocket") {
        return Err("missing or wrong Upgrade header (want websocket)".into());
    }
    if !request.has_token("Connection", "Upgrade") {
        return Err("missing or wrong Connection header (want Upgrade)".into());
    }
    match request.header("Sec-WebSocket-Version") {
        Some("13") => {}
        Some(v) => return Err(format!("Sec-WebSocket-Version must be 13, got {v:?}")),
        None => return Err("missing Sec-WebSocket-Version header".into()),
    }
    let key = request
        .header("Sec-WebSocket-Key")
        .ok_or("missing Sec-WebSocket-Key header")?
        .to_string();
    match STANDARD.decode(&key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => {
            return Err(format!(
                "Sec-WebSocket-Key {key:?} is not base64 of 16 bytes"
            ))
        }
    }
    request.key = key;
    request.protocols = request
        .header_all("Sec-WebSocket-Protocol")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();

    Ok(Some((request, consumed)))
}

/// Builds a `101 Switching Protocols` answer for the client key `key`, with
/// `Upgrade`, `Connection` and `Sec-WebSocket-Accept`, then
/// `Sec-WebSocket-Protocol` if `protocol` is `Some`, then the `extra` headers.
pub fn response_101(key: &str, protocol: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    out.push_str("Upgrade: websocket\r\n");
    out.push_str("Connection: Upgrade\r\n");
    out.push_str(&format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key)));
    if let Some(p) = protocol {
        out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The usual reason phrase of an HTTP status code (`"Unknown"` if not known).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Builds a plain HTTP/1.1 response (e.g. a refused handshake) with the given
/// status, `extra` headers, `Content-Length`, `Connection: close` and `body`.
pub fn response_status(status: u16, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Builds a client opening handshake by hand (for tests that play the client
/// against the test server). `protocols`, if not empty, are sent in one
/// `Sec-WebSocket-Protocol` header.
pub fn client_request(host: &str, path: &str, key: &str, protocols: &[&str]) -> Vec<u8> {
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        out.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// XORs `data` in place with the 4-byte masking key (RFC 6455 section 5.3).
/// Applying it twice gives back the original bytes.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// First header byte: FIN bit, the 3 RSV bits and the opcode (low bits only).
fn first_byte(fin: bool, rsv: u8, opcode: u8) -> u8 {
    (u8::from(fin) << 7) | ((rsv & 0x7) << 4) | (opcode & 0xF)
}

/// Encodes one frame with any bits the caller likes: `rsv` is the three RSV
/// bits (`0..=7`, RSV1 is `4`), `opcode` any `0..=15`, and `mask: Some(key)`
/// sets the MASK bit and masks the payload with `key`. The length uses the
/// minimal form. Nothing is validated (a control frame may be too long, etc.).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let len = payload.len() as u64;
    let form = if len <= 125 {
        0
    } else if len <= 0xFFFF {
        1
    } else {
        2
    };
    let mut out = encode_header_raw(fin, rsv, opcode, len, form, mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
    out
}

/// Encodes only a frame header, with a forced length form and a length that
/// may be a lie: `form` 0 writes the low 7 bits of `declared_len` in the
/// 7-bit field, 1 writes `126` and the low 16 bits, 2 writes `127` and all 64
/// bits (so the most significant bit can be set too). `mask: Some(key)` sets
/// the MASK bit and appends `key`; the caller appends the payload (masked
/// with [`apply_mask`] if it wants). Panics if `form > 2`.
pub fn encode_header_raw(
    fin: bool,
    rsv: u8,
    opcode: u8,
    declared_len: u64,
    form: u8,
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = Vec::with_capacity(14);
    out.push(first_byte(fin, rsv, opcode));
    match form {
        0 => out.push(mask_bit | (declared_len & 0x7F) as u8),
        1 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(declared_len as u16).to_be_bytes());
        }
        2 => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&declared_len.to_be_bytes());
        }
        _ => panic!("encode_header_raw: form must be 0, 1 or 2, got {form}"),
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// One frame as received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The FIN bit.
    pub fin: bool,
    /// The three RSV bits (`0..=7`, RSV1 is `4`).
    pub rsv: u8,
    /// The opcode (`0..=15`).
    pub opcode: u8,
    /// Whether the MASK bit was set (always true for frames the codec returns).
    pub masked: bool,
    /// The payload, already unmasked.
    pub payload: Vec<u8>,
}

/// One complete message (or control frame) as received from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete text message (valid UTF-8).
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: the status code (if any) and the reason (empty if none).
    Close(Option<u16>, String),
}

/// Whether `code` may appear in a close frame on the wire: 1000-1003,
/// 1007-1014 (IANA registered) and 3000-4999 (RFC 6455 section 7.4).
pub fn close_code_is_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A data message whose frames have not all arrived yet.
#[derive(Debug)]
struct Partial {
    /// `OP_TEXT` or `OP_BINARY`, from the first frame.
    opcode: u8,
    /// The payload gathered so far.
    data: Vec<u8>,
    /// How many frames have been gathered.
    frames: usize,
}

/// A sans-io decoder of the frames a client sends to a server.
///
/// Feed it bytes with [`ServerCodec::feed`], then take frames with
/// [`ServerCodec::next_frame`] or whole messages with
/// [`ServerCodec::next_message`] (use one or the other on a stream of
/// frames: `next_frame` does not assemble fragments). After the first error
/// every later call returns that same error.
#[derive(Debug, Default)]
pub struct ServerCodec {
    /// Bytes fed but not yet consumed.
    buf: Vec<u8>,
    /// Masking keys of every client frame decoded so far.
    masks: Vec<[u8; 4]>,
    /// Frame count of the last message returned by `next_message`.
    last_frames: usize,
    /// A fragmented data message in progress.
    partial: Option<Partial>,
    /// The first error seen; sticky.
    error: Option<String>,
}

impl ServerCodec {
    /// A codec with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many fed bytes are not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The first error seen, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Records `reason` as the sticky error and returns it.
    fn fail<T>(&mut self, reason: String) -> Result<T, String> {
        self.error = Some(reason.clone());
        Err(reason)
    }

    /// The next complete frame, or `Ok(None)` if more bytes are needed.
    ///
    /// `Err` if the frame is not masked (clients MUST mask), if its length
    /// does not use the minimal form, or if a 64-bit length has its most
    /// significant bit set. RSV bits and opcodes are not checked here; see
    /// [`ServerCodec::next_message`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let buf = &self.buf;
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let rsv = (buf[0] >> 4) & 0x7;
        let opcode = buf[0] & 0xF;
        let masked = buf[1] & 0x80 != 0;
        let len7 = buf[1] & 0x7F;
        if !masked {
            return self.fail(format!("client frame (opcode {opcode:#x}) is not masked"));
        }
        let (len, mut pos) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                let len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
                if len < 126 {
                    return self.fail(format!("non-minimal 16-bit length {len}"));
                }
                (len, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut raw = [0u8; 8];
                raw.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(raw);
                if len >> 63 != 0 {
                    return self.fail(format!("64-bit length {len:#x} has its top bit set"));
                }
                if len <= 0xFFFF {
                    return self.fail(format!("non-minimal 64-bit length {len}"));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let key = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        let Ok(len) = usize::try_from(len) else {
            return self.fail(format!("frame length {len} does not fit in memory"));
        };
        if (buf.len() - pos) < len {
            return Ok(None);
        }
        let mut payload = buf[pos..pos + len].to_vec();
        apply_mask(&mut payload, key);
        self.buf.drain(..pos + len);
        self.masks.push(key);
        Ok(Some(Frame {
            fin,
            rsv,
            opcode,
            masked,
            payload,
        }))
    }

    /// The next complete message, or `Ok(None)` if more bytes are needed.
    ///
    /// Fragmented data messages are assembled; control frames may come
    /// between their fragments and are returned at once. `Err` on any
    /// protocol violation: everything [`ServerCodec::next_frame`] rejects,
    /// RSV bits set, a reserved opcode, a continuation with nothing to
    /// continue, a new data frame inside a fragmented message, a control
    /// frame without FIN or with more than 125 bytes, a close payload of one
    /// byte, an invalid close code, or invalid UTF-8 in a text message or a
    /// close reason.
    pub fn next_message(&mut self) -> Result<Option<Message>, String> {
        loop {
            let Some(frame) = self.next_frame()? else {
                return Ok(None);
            };
            if frame.rsv != 0 {
                return self.fail(format!(
                    "RSV bits {:#05b} set without an extension",
                    frame.rsv
                ));
            }
            match frame.opcode {
                OP_CLOSE | OP_PING | OP_PONG => {
                    if !frame.fin {
                        return self.fail(format!("control frame {:#x} without FIN", frame.opcode));
                    }
                    if frame.payload.len() > MAX_CONTROL_PAYLOAD {
                        return self.fail(format!(
                            "control frame {:#x} payload of {} bytes (max 125)",
                            frame.opcode,
                            frame.payload.len()
                        ));
                    }
                    self.last_frames = 1;
                    let msg = match frame.opcode {
                        OP_PING => Message::Ping(frame.payload),
                        OP_PONG => Message::Pong(frame.payload),
                        _ => self.parse_close(&frame.payload)?,
                    };
                    return Ok(Some(msg));
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return self.fail(format!(
                            "data frame {:#x} while a fragmented message is in progress",
                            frame.opcode
                        ));
                    }
                    let partial = Partial {
                        opcode: frame.opcode,
                        data: frame.payload,
                        frames: 1,
                    };
                    if frame.fin {
                        return self.finish(partial).map(Some);
                    }
                    self.partial = Some(partial);
                }
                OP_CONTINUATION => {
                    let Some(mut partial) = self.partial.take() else {
                        return self.fail("continuation frame with no message to continue".into());
                    };
                    partial.data.extend_from_slice(&frame.payload);
                    partial.frames += 1;
                    if frame.fin {
                        return self.finish(partial).map(Some);
                    }
                    self.partial = Some(partial);
                }
                op => return self.fail(format!("reserved opcode {op:#x}")),
            }
        }
    }

    /// Turns a completed data message into a [`Message`].
    fn finish(&mut self, partial: Partial) -> Result<Message, String> {
        self.last_frames = partial.frames;
        if partial.opcode == OP_BINARY {
            return Ok(Message::Binary(partial.data));
        }
        match simdutf8::basic::from_utf8(&partial.data) {
            Ok(s) => Ok(Message::Text(s.to_string())),
            Err(_) => self.fail("text message is not valid UTF-8".into()),
        }
    }

    /// Parses and validates a close payload.
    fn parse_close(&mut self, payload: &[u8]) -> Result<Message, String> {
        match payload.len() {
            0 => Ok(Message::Close(None, String::new())),
            1 => self.fail("close payload of 1 byte".into()),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !close_code_is_valid(code) {
                    return self.fail(format!("invalid close code {code}"));
                }
                match simdutf8::basic::from_utf8(&payload[2..]) {
                    Ok(reason) => Ok(Message::Close(Some(code), reason.to_string())),
                    Err(_) => self.fail("close reason is not valid UTF-8".into()),
                }
            }
        }
    }

    /// How many data frames made up the last message returned by
    /// [`ServerCodec::next_message`] (1 for a control message, 0 before any).
    pub fn last_message_frames(&self) -> usize {
        self.last_frames
    }

    /// The masking keys of all client frames decoded so far, in order.
    pub fn masks_seen(&self) -> &[[u8; 4]] {
        &self.masks
    }
}

/// An unmasked, final text frame from the server.
pub fn server_text(s: &str) -> Vec<u8> {
    encode_frame(true, 0, OP_TEXT, s.as_bytes(), None)
}

/// An unmasked, final binary frame from the server.
pub fn server_binary(b: &[u8]) -> Vec<u8> {
    encode_frame(true, 0, OP_BINARY, b, None)
}

/// An unmasked ping from the server (length not checked).
pub fn server_ping(b: &[u8]) -> Vec<u8> {
    encode_frame(true, 0, OP_PING, b, None)
}

/// An unmasked pong from the server (length not checked).
pub fn server_pong(b: &[u8]) -> Vec<u8> {
    encode_frame(true, 0, OP_PONG, b, None)
}

/// An unmasked close frame from the server: the code (big-endian) then the
/// reason if `code` is `Some`, an empty payload if it is `None` (then
/// `reason` is ignored). Neither the code nor the length is checked.
pub fn server_close(code: Option<u16>, reason: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
    }
    encode_frame(true, 0, OP_CLOSE, &payload, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Feeds all of `bytes` and returns the messages or the first error.
    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, String> {
        let mut codec = ServerCodec::new();
        codec.feed(bytes);
        let mut out = Vec::new();
        while let Some(m) = codec.next_message()? {
            out.push(m);
        }
        assert_eq!(codec.buffered(), 0, "bytes left over");
        Ok(out)
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parse_request_ok_and_partial() {
        let req = b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\nupgrade: WebSocket\r\n\
            Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: v3\r\n\
            Sec-WebSocket-Version: 13\r\nX-Custom: a\r\n\r\nEXTRA";
        for cut in 0..req.len() - 5 {
            assert_eq!(parse_request(&req[..cut]), Ok(None), "cut at {cut}");
        }
        let (r, n) = parse_request(req).unwrap().unwrap();
        assert_eq!(n, req.len() - 5);
        assert_eq!(r.path, "/chat?x=1");
        assert_eq!(r.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(r.protocols, ["chat", "superchat", "v3"]);
        assert_eq!(r.header("x-custom"), Some("a"));
        assert_eq!(r.header("HOST"), Some("example.com"));
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn parse_request_client_request_round_trip() {
        let bytes = client_request("127.0.0.1:1", "/", "dGhlIHNhbXBsZSBub25jZQ==", &["a", "b"]);
        let (r, n) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(r.protocols, ["a", "b"]);
    }

    #[test]
    fn parse_request_errors() {
        let good = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        assert!(parse_request(good.as_bytes()).unwrap().is_some());
        let cases = [
            good.replace("GET", "POST"),
            good.replace("HTTP/1.1", "HTTP/1.0"),
            good.replace("Host: h\r\n", ""),
            good.replace("Upgrade: websocket\r\n", ""),
            good.replace("Upgrade: websocket", "Upgrade: h2c"),
            good.replace("Connection: Upgrade\r\n", ""),
            good.replace("Connection: Upgrade", "Connection: close"),
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            good.replace("Version: 13", "Version: 8"),
            "GARBAGE\0\r\n\r\n".to_string(),
        ];
        for c in &cases {
            assert!(parse_request(c.as_bytes()).is_err(), "accepted {c:?}");
        }
    }

    #[test]
    fn response_101_shape() {
        let r = response_101("dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), &[("X-A", "1")]);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(s.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(s.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
        assert!(s.contains("\r\nX-A: 1\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
        let s = String::from_utf8(response_101("k", None, &[])).unwrap();
        assert!(!s.contains("Sec-WebSocket-Protocol"));
        let s = String::from_utf8(response_status(403, &[], b"no")).unwrap();
        assert_eq!(
            s,
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
        );
    }

    #[test]
    fn round_trip_every_length_form() {
        for (len, header_len) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65535, 4),
            (65536, 10),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let bytes = encode_frame(true, 0, OP_BINARY, &payload, Some(KEY));
            assert_eq!(bytes.len(), header_len + 4 + len, "len {len}");
            if len > 0 {
                assert_ne!(&bytes[header_len + 4..], &payload[..], "payload not masked");
            }
            let mut codec = ServerCodec::new();
            // Byte by byte for the header, then the rest.
            let split = header_len + 4;
            for b in &bytes[..split] {
                assert_eq!(codec.next_frame(), Ok(None));
                codec.feed(&[*b]);
            }
            codec.feed(&bytes[split..]);
            let f = codec.next_frame().unwrap().unwrap();
            assert_eq!(
                f,
                Frame {
                    fin: true,
                    rsv: 0,
                    opcode: OP_BINARY,
                    masked: true,
                    payload: payload.clone()
                }
            );
            assert_eq!(codec.masks_seen(), &[KEY]);
            assert_eq!(codec.next_frame(), Ok(None));
        }
    }

    #[test]
    fn masked_decode_rfc_example() {
        // RFC 6455 section 5.7: a masked "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(encode_frame(true, 0, OP_TEXT, b"Hello", Some(KEY)), bytes);
        assert_eq!(decode_all(&bytes), Ok(vec![Message::Text("Hello".into())]));
        // The unmasked server form.
        assert_eq!(
            server_text("Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
    }

    #[test]
    fn header_raw_forms() {
        assert_eq!(encode_header_raw(true, 0, 1, 5, 0, None), [0x81, 5]);
        assert_eq!(
            encode_header_raw(false, 7, 0xF, 5, 1, None),
            [0x7F, 126, 0, 5]
        );
        assert_eq!(
            encode_header_raw(true, 0, 2, 1 << 63, 2, Some(KEY)),
            [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x37, 0xfa, 0x21, 0x3d]
        );
    }

    #[test]
    fn fragments_with_interleaved_control() {
        let mut bytes = encode_frame(false, 0, OP_TEXT, "héllo ".as_bytes(), Some(KEY));
        bytes.extend(encode_frame(true, 0, OP_PING, b"p", Some([1, 2, 3, 4])));
        // Split a multi-byte character across fragments: only the whole must be valid.
        let snow = "☃".as_bytes();
        bytes.extend(encode_frame(
            false,
            0,
            OP_CONTINUATION,
            &snow[..1],
            Some([5, 6, 7, 8]),
        ));
        bytes.extend(encode_frame(
            true,
            0,
            OP_CONTINUATION,
            &snow[1..],
            Some([9, 9, 9, 9]),
        ));
        bytes.extend(encode_frame(true, 0, OP_BINARY, &[1, 2], Some(KEY)));

        let mut codec = ServerCodec::new();
        codec.feed(&bytes);
        assert_eq!(codec.next_message(), Ok(Some(Message::Ping(b"p".to_vec()))));
        assert_eq!(codec.last_message_frames(), 1);
        assert_eq!(
            codec.next_message(),
            Ok(Some(Message::Text("héllo ☃".into())))
        );
        assert_eq!(codec.last_message_frames(), 3);
        assert_eq!(codec.next_message(), Ok(Some(Message::Binary(vec![1, 2]))));
        assert_eq!(codec.last_message_frames(), 1);
        assert_eq!(codec.next_message(), Ok(None));
        assert_eq!(
            codec.masks_seen(),
            &[KEY, [1, 2, 3, 4], [5, 6, 7, 8], [9, 9, 9, 9], KEY]
        );
    }

    #[test]
    fn close_payloads() {
        let close = |p: &[u8]| decode_all(&encode_frame(true, 0, OP_CLOSE, p, Some(KEY)));
        assert_eq!(close(b""), Ok(vec![Message::Close(None, String::new())]));
        assert_eq!(
            close(&[0x03, 0xE8]),
            Ok(vec![Message::Close(Some(1000), String::new())])
        );
        assert_eq!(
            close(b"\x0f\xa0bye"),
            Ok(vec![Message::Close(Some(4000), "bye".into())])
        );
        assert!(close(&[0x03]).is_err());
        assert!(close(&[0x03, 0xED]).is_err()); // 1005
        assert!(close(&[0x03, 0xE7]).is_err()); // 999
        assert!(close(&[0x13, 0x88]).is_err()); // 5000
        assert!(close(b"\x03\xe8\xff").is_err());
        let s = server_close(Some(1001), "away");
        assert_eq!(s, [0x88, 6, 0x03, 0xE9, b'a', b'w', b'a', b'y']);
        assert_eq!(server_close(None, "ignored"), [0x88, 0]);
    }

    #[test]
    fn protocol_errors() {
        let m = Some(KEY);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", encode_frame(true, 0, OP_TEXT, b"x", None)),
            ("rsv1", encode_frame(true, 4, OP_TEXT, b"x", m)),
            ("rsv3", encode_frame(true, 1, OP_BINARY, b"x", m)),
            ("reserved data opcode", encode_frame(true, 0, 3, b"", m)),
            (
                "reserved control opcode",
                encode_frame(true, 0, 0xB, b"", m),
            ),
            (
                "bare continuation",
                encode_frame(true, 0, OP_CONTINUATION, b"x", m),
            ),
            ("non-fin ping", encode_frame(false, 0, OP_PING, b"", m)),
            ("long ping", encode_frame(true, 0, OP_PING, &[0; 126], m)),
            ("bad utf8", encode_frame(true, 0, OP_TEXT, &[0xC3, 0x28], m)),
            ("non-minimal 16", {
                let mut v = encode_header_raw(true, 0, OP_BINARY, 5, 1, m);
                v.extend([0; 5]);
                v
            }),
            (
                "non-minimal 64",
                encode_header_raw(true, 0, OP_BINARY, 200, 2, m),
            ),
            (
                "top bit 64",
                encode_header_raw(true, 0, OP_BINARY, 1 << 63, 2, m),
            ),
            ("new data in fragmented", {
                let mut v = encode_frame(false, 0, OP_TEXT, b"a", m);
                v.extend(encode_frame(true, 0, OP_TEXT, b"b", m));
                v
            }),
        ];
        for (name, bytes) in cases {
            let mut codec = ServerCodec::new();
            codec.feed(&bytes);
            let err = codec.next_message();
            assert!(err.is_err(), "{name}: {err:?}");
            // Sticky.
            assert_eq!(codec.next_message(), err, "{name}");
            assert_eq!(codec.error(), err.as_ref().err().map(String::as_str));
        }
    }

    #[test]
    fn next_frame_passes_rsv_and_opcode_through() {
        let mut codec = ServerCodec::new();
        codec.feed(&encode_frame(false, 5, 0xC, b"raw", Some(KEY)));
        let f = codec.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.fin, f.rsv, f.opcode, &f.payload[..]),
            (false, 5, 0xC, &b"raw"[..])
        );
    }
}
