//! Keeping secrets out of output: the one place that decides what of a URL
//! or a header may be shown in an error message, a `Debug` output or a log
//! line.
//!
//! - In a URL, the password of `user:password@` becomes `***`
//!   (`wss://user:***@host/`); a user name given without a password becomes
//!   `***` as a whole (`wss://***@host/`), since that is where tokens are
//!   usually put.
//! - The values of the `Authorization`, `Proxy-Authorization`, `Cookie` and
//!   `Set-Cookie` headers (any case) become `***`; the authentication scheme
//!   of an `Authorization` value stays (`Bearer ***`).
//!
//! Every error message, `Debug` output and line of the `unisocket` command
//! that shows a URL or a header goes through these functions (`unisocket`
//! re-exports this module as `unisocket::redact`).
//!
//! ```
//! use unisocket_proto::redact;
//!
//! assert_eq!(redact::url("wss://alice:s3cret@example.com/chat"), "wss://alice:***@example.com/chat");
//! assert_eq!(redact::header_value("authorization", "Bearer abc.def"), "Bearer ***");
//! assert_eq!(redact::header_value("X-Trace", "42"), "42");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// The headers whose values are secret (compared case-insensitively).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// `raw` with the password of its user info replaced by `***`, or the whole
/// user info when it has no password. Works on any text, including URLs
/// that do not parse, and finds the user info where a URL parser would (also
/// in `ws:user:pw@host` and `user:pw@host:port`), hiding too much rather than
/// too little; text without user info comes back unchanged (borrowed).
///
/// ```
/// use unisocket_proto::redact;
///
/// assert_eq!(redact::url("ws://u:pw@127.0.0.1:9001/x?y=1"), "ws://u:***@127.0.0.1:9001/x?y=1");
/// assert_eq!(redact::url("wss://t0ken@example.com/"), "wss://***@example.com/");
/// assert_eq!(redact::url("socks5h://u:p%40ss@proxy:1080"), "socks5h://u:***@proxy:1080");
/// assert_eq!(redact::url("ws://example.com/users/@me"), "ws://example.com/users/@me");
/// ```
pub fn url(raw: &str) -> Cow<'_, str> {
    let Some(span) = userinfo(raw) else {
        return Cow::Borrowed(raw);
    };
    let info = &raw[span.clone()];
    let shown = match info.find(':') {
        Some(colon) => format!("{}:{MASK}", &info[..colon]),
        None => MASK.to_owned(),
    };
    Cow::Owned(format!("{}{shown}{}", &raw[..span.start], &raw[span.end..]))
}

/// Where the user info of `raw` is (without its `@`), if it has some.
///
/// As in the WHATWG URL parser: leading spaces and control characters are
/// skipped, then a scheme (`letter (letter | digit | + | - | .)* :`), then
/// any slashes and backslashes; the authority ends at the first `/`, `?` or
/// `#`, and the user info at its last `@`. A backslash does not end the
/// authority here (it does for `ws:` and `http:` URLs), so that a
/// backslash in a password cannot uncover its start.
fn userinfo(raw: &str) -> Option<Range<usize>> {
    let mut start = raw.len() - raw.trim_start_matches(|c: char| c <= ' ').len();
    if let Some(colon) = raw[start..].find(':') {
        let scheme = &raw[start..start + colon];
        let mut chars = scheme.chars();
        if chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            start += colon + 1;
        }
    }
    start += raw[start..]
        .bytes()
        .take_while(|b| *b == b'/' || *b == b'\\')
        .count();
    let rest = &raw[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(0) | None => None,
        Some(at) => Some(start..start + at),
    }
}

/// Whether the value of header `name` is a secret: `Authorization`,
/// `Proxy-Authorization`, `Cookie` or `Set-Cookie`, in any case.
///
/// ```
/// assert!(unisocket_proto::redact::is_secret_header("COOKIE"));
/// assert!(!unisocket_proto::redact::is_secret_header("Origin"));
/// ```
pub fn is_secret_header(name: &str) -> bool {
    let name = name.trim();
    SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// The value of header `name` as it may be shown: `***` for a secret header
/// (keeping the authentication scheme of `Authorization` and
/// `Proxy-Authorization`, as in `Basic ***`), else `value` unchanged.
///
/// ```
/// use unisocket_proto::redact::header_value;
///
/// assert_eq!(header_value("Proxy-Authorization", "Basic dTpwdw=="), "Basic ***");
/// assert_eq!(header_value("Authorization", "s3cret"), "***");
/// assert_eq!(header_value("Cookie", "session=abc; theme=dark"), "***");
/// assert_eq!(header_value("User-Agent", "demo/1.0"), "demo/1.0");
/// ```
pub fn header_value<'a>(name: &str, value: &'a str) -> Cow<'a, str> {
    if !is_secret_header(name) {
        return Cow::Borrowed(value);
    }
    let name = name.trim();
    let credentials = name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization");
    match value.trim().split_once(' ') {
        Some((scheme, _)) if credentials && is_auth_scheme(scheme) => {
            Cow::Owned(format!("{scheme} {MASK}"))
        }
        _ => Cow::Borrowed(MASK),
    }
}

/// Whether `word` looks like an authentication scheme (`Basic`, `Bearer`,
/// `AWS4-HMAC-SHA256`, ...) rather than part of a credential.
fn is_auth_scheme(word: &str) -> bool {
    let mut chars = word.chars();
    word.len() <= 24
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// A list of request headers, printed by `Debug` as `[("Name", "value"), ..]`
/// with the values of secret headers redacted.
///
/// ```
/// use unisocket_proto::redact::HeaderList;
///
/// let headers = [("Cookie".to_string(), "id=1".to_string())];
/// assert_eq!(format!("{:?}", HeaderList(&headers)), r#"[("Cookie", "***")]"#);
/// ```
pub struct HeaderList<'a>(pub &'a [(String, String)]);

impl fmt::Debug for HeaderList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, v)| (n.as_str(), header_value(n, v))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_and_user_names_kept() {
        for (raw, shown) in [
            ("ws://u:pw@h/", "ws://u:***@h/"),
            ("wss://u:pw@h:443/a?b=c#d", "wss://u:***@h:443/a?b=c#d"),
            ("http://u:pw@h:1/x", "http://u:***@h:1/x"),
            (
                "socks5://u%40x:p%3Aw@[::1]:1080",
                "socks5://u%40x:***@[::1]:1080",
            ),
            ("ws://u:@h/", "ws://u:***@h/"),
            ("ws://:pw@h/", "ws://:***@h/"),
            // The last `@` of the authority ends the user info.
            ("ws://u:p@ss@h/", "ws://u:***@h/"),
            ("ws://u:p:w@h/", "ws://u:***@h/"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn a_user_name_alone_is_hidden() {
        assert_eq!(url("wss://t0ken@h/x"), "wss://***@h/x");
        assert_eq!(url("t0ken@h:1"), "***@h:1");
    }

    #[test]
    fn urls_without_user_info_are_unchanged_and_borrowed() {
        for raw in [
            "ws://h/",
            "ws://127.0.0.1:9001",
            "ws://[::1]:8080/x",
            "ws://h/users/@me",
            "ws://h?who=a@b",
            "ws://h#a@b",
            "ws://@h/",
            "localhost:3128",
            "not a url",
            "",
            "htp://x",
        ] {
            assert!(matches!(url(raw), Cow::Borrowed(s) if s == raw), "{raw}");
        }
    }

    #[test]
    fn odd_forms_that_a_url_parser_accepts_are_redacted() {
        for (raw, shown) in [
            // No slashes after a special scheme, or other slashes.
            ("ws:u:pw@h/", "ws:u:***@h/"),
            ("ws:/u:pw@h/", "ws:/u:***@h/"),
            ("ws:\\\\u:pw@h/", "ws:\\\\u:***@h/"),
            // Leading spaces, which a parser skips.
            ("  ws://u:pw@h/", "  ws://u:***@h/"),
            // No scheme (a proxy variable): `u` looks like one, and the
            // password is hidden all the same.
            ("u:pw@h:1", "u:***@h:1"),
            // Unparsable: a backslash or a space in the password.
            ("ws://u:p\\w@h/", "ws://u:***@h/"),
            ("ws://u:p w@h/", "ws://u:***@h/"),
            ("ws://u:pw@h:notaport/", "ws://u:***@h:notaport/"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn secret_header_values_are_hidden_in_any_case() {
        for name in [
            "Authorization",
            "authorization",
            "AUTHORIZATION",
            "Proxy-Authorization",
            "proxy-authorization",
            "Cookie",
            "cookie",
            "Set-Cookie",
            " SET-COOKIE ",
        ] {
            assert!(is_secret_header(name), "{name}");
            let shown = header_value(name, "s3cret");
            assert_eq!(shown, MASK, "{name}");
        }
        assert_eq!(header_value("Authorization", "Bearer s3cret"), "Bearer ***");
        assert_eq!(
            header_value("authorization", " Basic dTpwdw== "),
            "Basic ***"
        );
        assert_eq!(
            header_value(
                "Proxy-Authorization",
                "AWS4-HMAC-SHA256 Credential=x, Signature=y"
            ),
            "AWS4-HMAC-SHA256 ***"
        );
        // A first word that does not look like a scheme is part of the secret.
        assert_eq!(header_value("Authorization", "s3cr3t=+/ more"), MASK);
        assert_eq!(header_value("Cookie", "a=s3cret; b=2"), MASK);
        assert_eq!(header_value("Cookie", "Bearer s3cret"), MASK);
        assert_eq!(header_value("Authorization", ""), MASK);
    }

    #[test]
    fn other_headers_are_shown_as_they_are() {
        for name in ["Origin", "X-Token-Id", "Authorization-Hint", "Cookies", ""] {
            assert!(!is_secret_header(name), "{name}");
            assert!(matches!(header_value(name, "v"), Cow::Borrowed("v")));
        }
    }

    #[test]
    fn header_lists_redact_values_in_debug() {
        let list = [
            ("Authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("cookie".to_owned(), "c=s3cret".to_owned()),
            ("X-Trace".to_owned(), "42".to_owned()),
        ];
        assert_eq!(
            format!("{:?}", HeaderList(&list)),
            r#"[("Authorization", "Bearer ***"), ("cookie", "***"), ("X-Trace", "42")]"#
        );
    }
}
