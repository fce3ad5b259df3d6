//! The HTTP/1.1 upgrade (RFC 6455 section 4): the request the client sends
//! and the checks on the server's response.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::error::{HandshakeError, RefusedResponse};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64-encoded.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::generate_key;
///
/// let key = generate_key();
/// assert_eq!(key.len(), 24); // 16 bytes in base64
/// assert!(key.ends_with("=="));
/// assert_ne!(key, generate_key());
/// ```
pub fn generate_key() -> String {
    let nonce: [u8; 16] = rand::random();
    BASE64.encode(nonce)
}

/// The `Sec-WebSocket-Accept` value a server must answer for `key`.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::accept_key;
///
/// // The example of RFC 6455 section 1.3.
/// assert_eq!(
///     accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    BASE64.encode(sha.digest().bytes())
}

/// What goes into the upgrade request.
///
/// # Examples
///
/// ```
/// use unisocket_proto::deflate::DeflateConfig;
/// use unisocket_proto::handshake::{generate_key, Request};
///
/// let key = generate_key();
/// let protocols = ["chat".to_owned(), "superchat".to_owned()];
/// let offer = DeflateConfig::default().offer();
/// let request = Request {
///     host: "example.com:8080",
///     target: "/chat?room=1",
///     key: &key,
///     protocols: &protocols,
///     extensions: Some(&offer),
///     headers: &[("Origin".to_owned(), "http://example.com".to_owned())],
/// };
/// let text = String::from_utf8(request.encode()).unwrap();
/// assert!(text.contains("\r\nSec-WebSocket-Protocol: chat, superchat\r\n"));
/// assert!(text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate"));
/// assert!(text.contains("\r\nOrigin: http://example.com\r\n"));
/// ```
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The `Host` header value (host, plus `:port` when not the default).
    pub host: &'a str,
    /// Path and query, starting with `/`.
    pub target: &'a str,
    /// The `Sec-WebSocket-Key`.
    pub key: &'a str,
    /// Offered subprotocols, in order of preference.
    pub protocols: &'a [String],
    /// The `Sec-WebSocket-Extensions` offer, if any.
    pub extensions: Option<&'a str>,
    /// Extra headers, already checked for illegal bytes.
    pub headers: &'a [(String, String)],
}

impl Request<'_> {
    /// The request bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::handshake::Request;
    ///
    /// let request = Request {
    ///     host: "example.com",
    ///     target: "/chat",
    ///     key: "dGhlIHNhbXBsZSBub25jZQ==",
    ///     protocols: &[],
    ///     extensions: None,
    ///     headers: &[],
    /// };
    /// assert_eq!(
    ///     String::from_utf8(request.encode()).unwrap(),
    ///     "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
    ///      Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    ///      Sec-WebSocket-Version: 13\r\n\r\n"
    /// );
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("GET ");
        out.push_str(self.target);
        out.push_str(" HTTP/1.1\r\nHost: ");
        out.push_str(self.host);
        out.push_str("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
        out.push_str(self.key);
        out.push_str("\r\nSec-WebSocket-Version: 13\r\n");
        if !self.protocols.is_empty() {
            out.push_str("Sec-WebSocket-Protocol: ");
            out.push_str(&self.protocols.join(", "));
            out.push_str("\r\n");
        }
        if let Some(ext) = self.extensions {
            out.push_str("Sec-WebSocket-Extensions: ");
            out.push_str(ext);
            out.push_str("\r\n");
        }
        for (name, value) in self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// A checked `101 Switching Protocols` response.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::{accept_key, parse_response};
///
/// let key = "dGhlIHNhbXBsZSBub25jZQ==";
/// let response = format!(
///     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///      Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: chat\r\nServer: demo\r\n\r\n",
///     accept_key(key)
/// );
/// let offered = ["chat".to_owned()];
/// let (resp, _) = parse_response(response.as_bytes(), key, &offered, 1024)?.unwrap();
/// assert_eq!(resp.protocol.as_deref(), Some("chat"));
/// assert_eq!(resp.extensions, None);
/// assert!(resp.headers.contains(&("Server".to_owned(), "demo".to_owned())));
/// # Ok::<(), unisocket_proto::HandshakeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Every response header, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The `Sec-WebSocket-Extensions` value, if any (checked by the caller
    /// against what it offered).
    pub extensions: Option<String>,
}

/// The most response headers accepted.
const MAX_HEADERS: usize = 128;

/// The most bytes of a refused response's body kept in
/// [`HandshakeError::Status`] (see [`RefusedResponse`]).
pub const MAX_REFUSED_BODY: usize = 512;

/// Parses and checks the server's response.
///
/// Returns `Ok(None)` while the response is incomplete and `buf` is within
/// `max_len`, and `Ok(Some((response, consumed)))` once it is complete; the
/// bytes after `consumed` are the first WebSocket frames.
///
/// # Errors
/// Any [`HandshakeError`] except [`HandshakeError::Incomplete`], which the
/// caller reports when the connection ends first.
///
/// # Examples
///
/// ```
/// use unisocket_proto::handshake::{accept_key, parse_response};
///
/// let key = "dGhlIHNhbXBsZSBub25jZQ==";
/// let mut buf = format!(
///     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
///      Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
///     accept_key(key)
/// )
/// .into_bytes();
/// let head_len = buf.len();
/// assert_eq!(parse_response(&buf[..20], key, &[], 1024)?, None); // wait for more
/// // The first frame may arrive in the same read as the response.
/// buf.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
/// let (_, consumed) = parse_response(&buf, key, &[], 1024)?.unwrap();
/// assert_eq!(consumed, head_len);
/// assert_eq!(buf[consumed..], [0x81, 0x02, b'h', b'i']);
/// # Ok::<(), unisocket_proto::HandshakeError>(())
/// ```
pub fn parse_response(
    buf: &[u8],
    key: &str,
    offered_protocols: &[String],
    max_len: usize,
) -> Result<Option<(Response, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let window = &buf[..buf.len().min(max_len)];
    let consumed = match resp.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= max_len {
                return Err(HandshakeError::ResponseTooLarge { max: max_len });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::Malformed(format!(
                "more than {MAX_HEADERS} headers"
            )))
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        // The body as far as it came with the head: no waiting for more.
        let body = &buf[consumed..];
        return Err(HandshakeError::Status {
            status,
            reason: resp.reason.unwrap_or("").to_owned(),
            response: Box::new(RefusedResponse {
                headers,
                body: body[..body.len().min(MAX_REFUSED_BODY)].to_vec(),
            }),
        });
    }
    let (protocol, extensions) = check_headers(&headers, key, offered_protocols)?;
    Ok(Some((
        Response {
            headers,
            protocol,
            extensions,
        },
        consumed,
    )))
}

/// Checks the headers of a 101 response; returns the chosen subprotocol and
/// the extensions.
fn check_headers(
    headers: &[(String, String)],
    key: &str,
    offered_protocols: &[String],
) -> Result<(Option<String>, Option<String>), HandshakeError> {
    let get = |name: &'static str| values(headers, name);
    if !get("upgrade").any(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !get("connection").any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(HandshakeError::MissingConnection);
    }
    let expected = accept_key(key);
    let mut accepts = get("sec-websocket-accept");
    if accepts.next().map(str::trim) != Some(expected.as_str()) || accepts.next().is_some() {
        return Err(HandshakeError::BadAccept);
    }
    let mut protocols = get("sec-websocket-protocol");
    let protocol = match (protocols.next(), protocols.next()) {
        (None, _) => None,
        (Some(p), None) => {
            let p = p.trim();
            if !offered_protocols.iter().any(|o| o == p) {
                return Err(HandshakeError::UnexpectedProtocol(p.to_owned()));
            }
            Some(p)
        }
        (Some(a), Some(b)) => return Err(HandshakeError::UnexpectedProtocol(format!("{a}, {b}"))),
    };
    let ext: Vec<&str> = get("sec-websocket-extensions").collect();
    let extensions = if ext.is_empty() {
        None
    } else {
        Some(ext.join(", "))
    };
    Ok((protocol.map(str::to_owned), extensions))
}

/// The values of every header named `name` (any case).
fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn ok_response(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_are_fresh_16_byte_nonces() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(BASE64.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn request_has_the_required_headers() {
        let protocols = vec!["chat".to_owned(), "superchat".to_owned()];
        let headers = vec![("Origin".to_owned(), "http://x".to_owned())];
        let req = Request {
            host: "example.com:8080",
            target: "/chat?x=1",
            key: KEY,
            protocols: &protocols,
            extensions: None,
            headers: &headers,
        };
        let text = String::from_utf8(req.encode()).unwrap();
        assert!(text.starts_with("GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        assert!(text.contains("\r\nConnection: Upgrade\r\n"));
        assert!(text.contains(&format!("\r\nSec-WebSocket-Key: {KEY}\r\n")));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: chat, superchat\r\n"));
        assert!(text.contains("\r\nOrigin: http://x\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn accepts_a_valid_response_at_every_split_and_keeps_trailing_bytes() {
        let mut full = ok_response("X-Extra: 1\r\n").into_bytes();
        let head_len = full.len();
        full.extend_from_slice(&[0x81, 0x00]);
        for cut in 0..head_len {
            assert_eq!(parse_response(&full[..cut], KEY, &[], 65536).unwrap(), None);
        }
        let (resp, n) = parse_response(&full, KEY, &[], 65536).unwrap().unwrap();
        assert_eq!(n, head_len);
        assert_eq!(resp.protocol, None);
        assert!(resp.headers.iter().any(|(n, v)| n == "X-Extra" && v == "1"));
    }

    #[test]
    fn reports_non_101_with_status() {
        let r = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
            KEY,
            &[],
            65536,
        );
        assert_eq!(
            r,
            Err(HandshakeError::Status {
                status: 403,
                reason: "Forbidden".into(),
                response: Box::new(RefusedResponse {
                    headers: vec![("Content-Length".into(), "0".into())],
                    body: Vec::new(),
                }),
            })
        );
        assert_eq!(
            r.unwrap_err().to_string(),
            "server answered HTTP 403 Forbidden instead of 101 Switching Protocols"
        );
    }

    #[test]
    fn a_refused_response_keeps_its_headers_and_the_body_that_came_with_it() {
        let head = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"x\"\r\n\
                    Set-Cookie: id=s3cret\r\n\r\n";
        let body = vec![b'b'; MAX_REFUSED_BODY + 100];
        for sent in [&b""[..], b"no token", &body] {
            let mut r = head.as_bytes().to_vec();
            r.extend_from_slice(sent);
            let Err(HandshakeError::Status {
                status, response, ..
            }) = parse_response(&r, KEY, &[], 1024)
            else {
                panic!("not refused")
            };
            assert_eq!(status, 401);
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"x\"")
            );
            assert_eq!(response.headers.len(), 2);
            // At most MAX_REFUSED_BODY bytes, even past the size limit of
            // the head.
            assert_eq!(response.body, sent[..sent.len().min(MAX_REFUSED_BODY)]);
            let debug = format!("{response:?}");
            assert!(!debug.contains("s3cret"), "{debug}");
            assert!(debug.contains("Bearer realm"), "{debug}");
        }
    }

    #[test]
    fn checks_upgrade_connection_and_accept() {
        let bad_upgrade = "HTTP/1.1 101 OK\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
                           Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            parse_response(bad_upgrade.as_bytes(), KEY, &[], 65536),
            Err(HandshakeError::MissingUpgrade)
        );
        let no_conn = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            parse_response(no_conn.as_bytes(), KEY, &[], 65536),
            Err(HandshakeError::MissingConnection)
        );
        let multi_conn =
            "HTTP/1.1 101 OK\r\nUpgrade: WebSocket\r\nConnection: keep-alive, upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(parse_response(multi_conn.as_bytes(), KEY, &[], 65536).is_ok());
        let bad_accept = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                          Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert_eq!(
            parse_response(bad_accept.as_bytes(), KEY, &[], 65536),
            Err(HandshakeError::BadAccept)
        );
        let no_accept = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(
            parse_response(no_accept.as_bytes(), KEY, &[], 65536),
            Err(HandshakeError::BadAccept)
        );
    }

    #[test]
    fn checks_protocol_against_offer() {
        let offered = vec!["a".to_owned(), "b".to_owned()];
        let r = ok_response("Sec-WebSocket-Protocol: b\r\n");
        let (resp, _) = parse_response(r.as_bytes(), KEY, &offered, 65536)
            .unwrap()
            .unwrap();
        assert_eq!(resp.protocol.as_deref(), Some("b"));
        let r = ok_response("Sec-WebSocket-Protocol: c\r\n");
        assert_eq!(
            parse_response(r.as_bytes(), KEY, &offered, 65536),
            Err(HandshakeError::UnexpectedProtocol("c".into()))
        );
        assert!(parse_response(r.as_bytes(), KEY, &[], 65536).is_err());
    }

    #[test]
    fn bounds_the_response_size() {
        let mut r = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        while r.len() < 2000 {
            r.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            parse_response(&r, KEY, &[], 1024),
            Err(HandshakeError::ResponseTooLarge { max: 1024 })
        );
        assert!(matches!(
            parse_response(b"garbage garbage\r\n\r\n", KEY, &[], 1024),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
