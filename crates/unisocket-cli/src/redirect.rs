//! `-L`/`--location`: following the redirects (301, 302, 303, 307, 308)
//! that answer the upgrade, to their `Location` (absolute or relative;
//! `http://` and `https://` taken as `ws://` and `wss://`), at most
//! `--max-redirs` of them and never in a loop. The user name and password
//! of the URL, and the credential headers of `-H` and `--auth`, go to the
//! origin (scheme, host and port) they were given for only.

use unisocket::{redact, ErrorKind, SocketError};
use url::Url;

/// The statuses that are followed.
pub const STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The status and `Location` of a redirect that answered the upgrade;
/// `None` for any other failure (a 3xx without a `Location` included).
pub fn location(e: &SocketError) -> Option<(u16, &str)> {
    let status = e.http_status().filter(|s| STATUSES.contains(s))?;
    if e.kind() != ErrorKind::Handshake {
        return None;
    }
    let (_, value) = e
        .response_headers()?
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("location"))?;
    Some((status, value.trim()))
}

/// `location` resolved against `current`, as a WebSocket URL. `Err` says
/// why it cannot be followed.
pub fn resolve(current: &str, location: &str) -> Result<Url, String> {
    let bad = |why: &str| {
        format!(
            "the redirect's Location {:?} {why}",
            redact::url(location).as_ref()
        )
    };
    let base = Url::parse(current).map_err(|e| format!("{current:?} is not a URL: {e}"))?;
    let mut url = base
        .join(location)
        .map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let scheme = match url.scheme() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad("is not a ws://, wss://, http:// or https:// URL")),
    };
    if url.scheme() != scheme {
        // Between special schemes with the same default port: cannot fail.
        url.set_scheme(scheme)
            .map_err(|()| bad("cannot be made a WebSocket URL"))?;
    }
    url.set_fragment(None);
    Ok(url)
}

/// Scheme, host and port: where credentials may go.
fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    )
}

/// The next URL to connect to.
#[derive(Debug, PartialEq, Eq)]
pub struct Next {
    /// The URL, with the user info of the first one when on its origin.
    pub url: String,
    /// The HTTP status of the redirect.
    pub status: u16,
    /// The URL is on another origin than the first one: credentials given
    /// for the first one are not sent there.
    pub other_origin: bool,
}

/// The redirects followed so far.
pub struct Follow {
    first: Url,
    /// Every URL connected to, the first one included.
    seen: Vec<Url>,
    max: u32,
}

impl Follow {
    /// Starts at `url` (the URL as given), following at most `max` redirects.
    pub fn new(url: &str, max: u32) -> Option<Follow> {
        let first = Url::parse(url).ok()?;
        Some(Follow {
            seen: vec![first.clone()],
            first,
            max,
        })
    }

    /// Where the redirect `e` (from the last URL) leads, or why it is not
    /// followed: a loop, more than `max`, or a Location that is not a
    /// WebSocket URL.
    pub fn next(&mut self, status: u16, location: &str) -> Result<Next, String> {
        let current = self.seen.last().unwrap_or(&self.first).to_string();
        let mut url = resolve(&current, location)?;
        let other_origin = origin(&url) != origin(&self.first);
        if other_origin {
            // A relative Location carries the user info over: not to
            // another origin.
            if url.username() == self.first.username() && url.password() == self.first.password() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
        } else if url.username().is_empty() && url.password().is_none() {
            let _ = url.set_username(self.first.username());
            let _ = url.set_password(self.first.password());
        }
        let shown = redact::url(url.as_str()).into_owned();
        if self.seen.contains(&url) {
            return Err(format!(
                "redirect loop: HTTP {status} from {} back to {shown}, where we have been",
                redact::url(&current)
            ));
        }
        let followed = self.seen.len() - 1;
        if followed >= self.max as usize {
            return Err(format!(
                "too many redirects: {followed} followed, and HTTP {status} to {shown} would be \
                 one more than --max-redirs {}",
                self.max
            ));
        }
        self.seen.push(url.clone());
        Ok(Next {
            url: url.into(),
            status,
            other_origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_and_http_becomes_ws() {
        for (current, location, expected) in [
            ("ws://h:1/a/b", "/c", "ws://h:1/c"),
            ("ws://h:1/a/b", "c?x=1", "ws://h:1/a/c?x=1"),
            ("ws://h:1/a", "//other:2/d", "ws://other:2/d"),
            ("ws://h/a", "http://o/p", "ws://o/p"),
            ("ws://h/a", "https://o:8443/p#frag", "wss://o:8443/p"),
            ("wss://h/a", "wss://o/p", "wss://o/p"),
            ("wss://h/a", "/p", "wss://h/p"),
        ] {
            assert_eq!(
                resolve(current, location).map(String::from).as_deref(),
                Ok(expected),
                "{current} + {location}"
            );
        }
        assert!(resolve("ws://h/", "ftp://h/x")
            .unwrap_err()
            .contains("not a ws://"));
        assert!(resolve("ws://h/", "http://[::1").is_err());
    }

    #[test]
    fn user_info_stays_on_its_origin() {
        let mut f = Follow::new("ws://u:pw@h:1/a", 5).unwrap();
        let same = f.next(302, "/b").unwrap();
        assert_eq!(same.url, "ws://u:pw@h:1/b");
        assert!(!same.other_origin);
        // Absolute, same origin: still sent.
        let again = f.next(301, "ws://h:1/c").unwrap();
        assert_eq!(again.url, "ws://u:pw@h:1/c");
        // Another host, port or scheme: not sent.
        for location in ["//h:2/d", "ws://other:1/e", "wss://h:1/f"] {
            let mut f = Follow::new("ws://u:pw@h:1/a", 5).unwrap();
            let next = f.next(307, location).unwrap();
            assert!(!next.url.contains("pw"), "{location}: {next:?}");
            assert!(!next.url.contains("u@"), "{location}: {next:?}");
            assert!(next.other_origin, "{location}");
        }
    }

    #[test]
    fn loops_and_more_than_max_stop() {
        let mut f = Follow::new("ws://h/a", 5).unwrap();
        let e = f.next(302, "/a").unwrap_err();
        assert!(
            e.starts_with("redirect loop: HTTP 302 from ws://h/a back to ws://h/a"),
            "{e}"
        );
        let mut f = Follow::new("ws://h/a", 5).unwrap();
        f.next(302, "/b").unwrap();
        assert!(f.next(302, "/a").unwrap_err().starts_with("redirect loop"));
        let mut f = Follow::new("ws://h/0", 2).unwrap();
        f.next(302, "/1").unwrap();
        f.next(302, "/2").unwrap();
        let e = f.next(302, "/3").unwrap_err();
        assert!(e.starts_with("too many redirects: 2 followed"), "{e}");
        assert!(e.ends_with("--max-redirs 2"), "{e}");
        let mut none = Follow::new("ws://h/0", 0).unwrap();
        assert!(none.next(301, "/1").is_err());
    }
}
