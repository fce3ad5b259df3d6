//! Connection failures as sentences, with a hint at the likely cause: a
//! certificate refused, a TLS alert, `ws://` to a TLS port or `wss://` to
//! a plain one. The library's typed errors (its `HandshakeError`, rustls's
//! `Error` behind an I/O error) are read from the error's source chain.

use std::error::Error as _;

use rustls::{AlertDescription, CertificateError};
use unisocket::{ErrorKind, SocketError};
use unisocket_proto::HandshakeError;

/// What the user gave that a hint depends on.
pub struct Given {
    /// The URL as given.
    pub url: String,
    /// Whether --cert was given.
    pub client_cert: bool,
}

/// The errMsg of a failed connection, its TLS part made a sentence and a
/// hint added where the cause is likely.
pub fn connect_failure(e: &SocketError, given: &Given) -> String {
    let msg = e.err_msg().to_owned();
    let wss = given
        .url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"));
    if let Some(tls) = rustls_error(e) {
        let plain = tls.to_string();
        let sentence = tls_sentence(tls, given);
        return match msg.find(&plain) {
            Some(at) => format!("{}{sentence}{}", &msg[..at], &msg[at + plain.len()..]),
            None => format!("{msg}: {sentence}"),
        };
    }
    if let (ErrorKind::Handshake, Some(300..=399)) = (e.kind(), e.http_status()) {
        let location = e.response_headers().and_then(|h| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("location"))
                .map(|(_, v)| v.trim())
        });
        return match location {
            None => format!("{msg}: a redirect without a Location header"),
            Some(location) => match crate::redirect::resolve(&given.url, location) {
                Ok(url) if crate::redirect::STATUSES.contains(&e.http_status().unwrap_or(0)) => {
                    format!(
                        "{msg}: a redirect to {}; -L follows redirects",
                        unisocket::redact::url(url.as_str())
                    )
                }
                Ok(url) => format!("{msg}: Location {}", unisocket::redact::url(url.as_str())),
                Err(why) => format!("{msg}: {why}"),
            },
        };
    }
    match (e.kind(), handshake_error(e)) {
        // A TLS server sends an alert, or closes, on a plain HTTP request.
        (ErrorKind::Handshake, Some(HandshakeError::Malformed(_) | HandshakeError::Incomplete))
            if !wss =>
        {
            format!(
                "{msg} (the server did not answer in HTTP: if it expects TLS, use a wss:// URL)"
            )
        }
        // A plain server closes on a TLS ClientHello (rustls's own errors,
        // such as an HTTP answer where TLS records should be, are above).
        (ErrorKind::Tls, _)
            if wss && msg.ends_with("closed the connection during the handshake") =>
        {
            format!("{msg} (if it is a plain WebSocket server, use a ws:// URL)")
        }
        _ => msg,
    }
}

/// `-v` on a failed upgrade: the response that refused it, as lines to show
/// after `< ` (status line, headers with secret values hidden) and `* `
/// (what of the body came with them, escaped); empty when the failure had
/// no response.
pub fn refused_response(e: &SocketError) -> Vec<String> {
    let (Some(status), Some(headers), Some(body)) =
        (e.http_status(), e.response_headers(), e.response_body())
    else {
        return Vec::new();
    };
    let reason = match handshake_error(e) {
        Some(HandshakeError::Status { reason, .. }) if !reason.is_empty() => format!(" {reason}"),
        _ => String::new(),
    };
    let mut lines = vec![format!("< HTTP {status}{reason}")];
    for (n, v) in headers {
        lines.push(format!("< {n}: {}", unisocket::redact::header_value(n, v)));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok());
    match (body.len(), length) {
        (0, None | Some(0)) => {}
        (0, Some(_)) => lines.push("* no byte of the body came with the headers".to_owned()),
        (n, Some(len)) if (n as u64) < len => lines.push(format!(
            "* body, its first {n} of {len} bytes: {}",
            escape_bytes(body)
        )),
        (n, _) => lines.push(format!("* body, {n} bytes: {}", escape_bytes(body))),
    }
    lines
}

/// Bytes as text that is safe on a terminal and on one line: UTF-8 kept
/// except control characters (`\n`, `\r`, `\t`, `\x1b`, `\u{9b}`), a
/// backslash doubled, other bytes as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && u32::from(c) <= 0x7f => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn handshake_error(e: &SocketError) -> Option<&HandshakeError> {
    e.source()?.downcast_ref::<HandshakeError>()
}

/// The rustls error of a failed TLS handshake: behind the I/O error of
/// tokio-rustls (whose `source` skips it), or as it is.
fn rustls_error(e: &SocketError) -> Option<&rustls::Error> {
    let mut next = e.source();
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

const GIVE_CA: &str =
    "give its CA certificate (or, if it is self-signed, the certificate itself) with --ca FILE";

fn tls_sentence(e: &rustls::Error, given: &Given) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => certificate_sentence(c),
        rustls::Error::AlertReceived(alert) => alert_sentence(*alert, given),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the server did not answer in TLS (if it is a plain WebSocket server, use a ws:// URL)"
                .to_owned()
        }
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_owned(),
        other => other.to_string(),
    }
}

fn certificate_sentence(c: &CertificateError) -> String {
    let day = 24 * 60 * 60;
    match c {
        CertificateError::UnknownIssuer => format!(
            "the server's certificate is not signed by a certificate authority we trust: {GIVE_CA}"
        ),
        CertificateError::Other(other) if other.0.to_string() == "CaUsedAsEndEntity" => {
            "the server's certificate is a CA certificate (CA:TRUE, as `openssl req -x509` makes \
             them) and not one we trust: give that very certificate with --ca FILE"
                .to_owned()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().map(|n| presented_name(n)).collect();
            let valid = match names.as_slice() {
                [] => "it names no host (no subjectAltName)".to_owned(),
                names => format!("it is for {}", names.join(", ")),
            };
            format!(
                "the server's certificate is not valid for {}: {valid}; connect with a name it has",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => {
            "the server's certificate is not valid for this host name".to_owned()
        }
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired {} days ago",
            time.as_secs().saturating_sub(not_after.as_secs()) / day
        ),
        CertificateError::Expired => "the server's certificate has expired".to_owned(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid yet (for {} more days): check this machine's clock",
            not_before.as_secs().saturating_sub(time.as_secs()) / day
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet".to_owned(),
        CertificateError::Revoked => "the server's certificate has been revoked".to_owned(),
        CertificateError::BadSignature => {
            "the server's certificate has a signature that does not verify".to_owned()
        }
        CertificateError::BadEncoding => "the server's certificate is malformed".to_owned(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for a TLS server (its extended key usage)"
                .to_owned()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "the server's certificate is signed with an algorithm that is not supported".to_owned()
        }
        other => format!("the server's certificate was refused: {other}"),
    }
}

/// `DnsName("localhost")` as `localhost`.
fn presented_name(n: &str) -> String {
    for prefix in ["DnsName(\"", "IpAddress(\""] {
        if let Some(inner) = n.strip_prefix(prefix).and_then(|r| r.strip_suffix("\")")) {
            return inner.to_owned();
        }
    }
    n.to_owned()
}

fn alert_sentence(alert: AlertDescription, given: &Given) -> String {
    match alert {
        AlertDescription::CertificateRequired => {
            "the server requires a client certificate: give one with --cert FILE --key FILE"
                .to_owned()
        }
        AlertDescription::HandshakeFailure if !given.client_cert => format!(
            "the server refused the TLS handshake ({alert:?}): it may want a client certificate \
             (--cert FILE --key FILE), or share no cipher or version with us"
        ),
        AlertDescription::BadCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::AccessDenied
            if given.client_cert =>
        {
            format!("the server refused our client certificate (TLS alert {alert:?})")
        }
        AlertDescription::ProtocolVersion => {
            "the server shares no TLS version with us (we speak TLS 1.2 and 1.3)".to_owned()
        }
        _ => format!("the server ended the TLS handshake with the alert {alert:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_bytes_are_escaped_onto_one_line() {
        assert_eq!(escape_bytes(b"plain text"), "plain text");
        assert_eq!(
            escape_bytes("line 1\r\nline 2\t\x1b[31m\\ é".as_bytes()),
            "line 1\\r\\nline 2\\t\\x1b[31m\\\\ é"
        );
        assert_eq!(escape_bytes(b"\xff\xfe ok \xc3"), "\\xff\\xfe ok \\xc3");
        assert_eq!(escape_bytes("\u{9b}2J".as_bytes()), "\\u{9b}2J");
    }

    #[test]
    fn presented_names_lose_their_debug_wrapping() {
        assert_eq!(presented_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(presented_name("IpAddress(\"127.0.0.1\")"), "127.0.0.1");
        assert_eq!(presented_name("odd"), "odd");
    }

    #[test]
    fn certificate_errors_are_sentences_without_debug_text() {
        for c in [
            CertificateError::UnknownIssuer,
            CertificateError::Expired,
            CertificateError::BadSignature,
            CertificateError::InvalidPurpose,
            CertificateError::Revoked,
        ] {
            let s = certificate_sentence(&c);
            assert!(s.starts_with("the server's certificate "), "{s}");
            assert!(!s.contains(&format!("{c:?}")), "{s}");
        }
    }
}
