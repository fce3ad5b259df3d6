//! Proxies: HTTP `CONNECT` (RFC 9110 section 9.3.6) and SOCKS5 (RFC 1928,
//! with the username/password method of RFC 1929), chosen in code or by
//! the conventional `*_PROXY` / `NO_PROXY` environment variables.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Error;
use super::{authority, connect_tcp, resolve, Connected};
use crate::error::ErrorKind;
use crate::options::{ProxyChoice, ProxyInUse, ProxySource};
use crate::redact;

/// The largest `CONNECT` response head accepted from an HTTP proxy.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// The most header lines accepted in a `CONNECT` response.
const MAX_CONNECT_HEADERS: usize = 64;

/// A proxy to tunnel through, parsed from its URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Proxy {
    kind: Kind,
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5; `remote_dns` for `socks5h://`, where the proxy resolves the
    /// server's name.
    Socks5 { remote_dns: bool },
}

/// User name and password, percent-decoded.
#[derive(Clone, PartialEq, Eq)]
struct Credentials {
    user: String,
    password: String,
}

impl fmt::Debug for Proxy {
    // No credentials in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("kind", &self.kind)
            .field("address", &self.name())
            .field("auth", &self.credentials.is_some())
            .finish()
    }
}

/// An invalid proxy URL; the message shows it without its password.
fn invalid(raw: &str, from: &str, why: impl fmt::Display) -> Error {
    let shown = redact::url(raw);
    Error::new(
        ErrorKind::InvalidArgument,
        format_args!("invalid proxy URL {shown:?}{from}: {why}"),
    )
}

impl Proxy {
    /// Parses `http://`, `socks5://` or `socks5h://` URLs, with optional
    /// `user:password@`. A URL without a scheme (`proxy:3128`, as often
    /// found in `HTTP_PROXY`) is taken as `http://`. `from` names where the
    /// URL came from, for the error message.
    fn parse(raw: &str, from: &str) -> Result<Proxy, Error> {
        let parsed = match url::Url::parse(raw) {
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                url::Url::parse(&format!("http://{raw}"))
            }
            // `host:port` parses as scheme `host`; a bare `localhost:3128`
            // is much more likely than a made-up scheme.
            Ok(u) if !raw.contains("://") => url::Url::parse(&format!("http://{raw}")).or(Ok(u)),
            other => other,
        };
        let url = parsed.map_err(|e| invalid(raw, from, e))?;
        let (kind, default_port) = match url.scheme() {
            "http" => (Kind::Http, 80),
            "socks5" => (Kind::Socks5 { remote_dns: false }, 1080),
            "socks5h" => (Kind::Socks5 { remote_dns: true }, 1080),
            "https" => {
                return Err(invalid(
                    raw,
                    from,
                    "TLS to the proxy (https://) is not supported; use http://, socks5:// or socks5h://",
                ))
            }
            other => {
                return Err(invalid(
                    raw,
                    from,
                    format_args!(
                        "unsupported scheme {other:?}; use http://, socks5:// or socks5h://"
                    ),
                ))
            }
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(invalid(raw, from, "no host")),
        };
        let credentials = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| invalid(raw, from, "the credentials are not UTF-8"))
            };
            let c = Credentials {
                user: decode(url.username())?,
                password: decode(url.password().unwrap_or_default())?,
            };
            if matches!(kind, Kind::Socks5 { .. }) && (c.user.len() > 255 || c.password.len() > 255)
            {
                return Err(invalid(
                    raw,
                    from,
                    "SOCKS5 allows at most 255 bytes of user name and of password",
                ));
            }
            Some(c)
        };
        Ok(Proxy {
            kind,
            host,
            port: url.port().unwrap_or(default_port),
            credentials,
        })
    }

    /// The proxy for a connection to `host`, following `choice`; `secure`
    /// for `wss://`. `None`: connect directly.
    pub(crate) fn choose(
        choice: &ProxyChoice,
        host: &str,
        secure: bool,
    ) -> Result<Option<Proxy>, Error> {
        match choice {
            ProxyChoice::Direct => Ok(None),
            ProxyChoice::Url(url) => Proxy::parse(url, "").map(Some),
            ProxyChoice::FromEnv => from_env(&|name| std::env::var(name).ok(), host, secure),
        }
    }

    /// `host:port` of the proxy, as errors name it.
    fn name(&self) -> String {
        authority(&self.host, self.port)
    }

    /// Connects to the proxy and opens a tunnel to `host:port` through it.
    /// `dns` covers the proxy's name (and the server's with `socks5://`);
    /// `connect` the TCP connect and the tunnel set-up.
    pub(crate) async fn connect(
        &self,
        host: &str,
        port: u16,
        no_delay: bool,
    ) -> Result<Connected, Error> {
        let remote_dns = match self.kind {
            Kind::Http => {
                let mut tcp = self.reach(no_delay).await?;
                let start = Instant::now();
                self.http_connect(&mut tcp.stream, host, port).await?;
                tcp.connect += start.elapsed();
                return Ok(tcp);
            }
            Kind::Socks5 { remote_dns } => remote_dns,
        };
        if remote_dns || host.parse::<IpAddr>().is_ok() {
            let mut tcp = self.reach(no_delay).await?;
            let start = Instant::now();
            self.socks5(&mut tcp.stream, Target::Name(host), host, port)
                .await
                .map_err(Socks5Error::into_inner)?;
            tcp.connect += start.elapsed();
            return Ok(tcp);
        }
        // socks5://: resolve here, then ask the proxy for each address in
        // turn until one connects, as a direct connection would.
        let start = Instant::now();
        let addrs = resolve(host, port).await?;
        let target_dns = start.elapsed();
        let start = Instant::now();
        let mut proxy_dns = Duration::ZERO;
        let mut last = None;
        for addr in addrs {
            let mut tcp = self.reach(no_delay).await?;
            proxy_dns += tcp.dns;
            match self
                .socks5(&mut tcp.stream, Target::Addr(addr), host, port)
                .await
            {
                Ok(()) => {
                    // Every attempt counts, less its name resolution.
                    tcp.connect = start.elapsed().saturating_sub(proxy_dns);
                    tcp.dns = target_dns + proxy_dns;
                    return Ok(tcp);
                }
                Err(Socks5Error::Reply(e)) => last = Some(e),
                Err(Socks5Error::Other(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Dns,
                format_args!("host {host:?} has no addresses"),
            )
        }))
    }

    /// The TCP connection to the proxy itself.
    async fn reach(&self, no_delay: bool) -> Result<Connected, Error> {
        connect_tcp(&self.host, self.port, no_delay)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Proxy,
                    format_args!("cannot reach proxy {}: {}", self.name(), e.reason),
                )
                .with_source(e)
            })
    }

    fn refused(&self, reason: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Proxy, reason)
    }

    fn lost(&self, during: &str, e: std::io::Error) -> Error {
        let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "closed the connection".to_owned()
        } else {
            format!("failed: {e}")
        };
        self.refused(format_args!(
            "{} proxy {} {what} during {during}",
            self.label(),
            self.name()
        ))
        .with_source(e)
    }

    fn label(&self) -> &'static str {
        match self.kind {
            Kind::Http => "HTTP",
            Kind::Socks5 { .. } => "SOCKS5",
        }
    }

    async fn http_connect(&self, io: &mut TcpStream, host: &str, port: u16) -> Result<(), Error> {
        let target = authority(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(c) = &self.credentials {
            let token = STANDARD.encode(format!("{}:{}", c.user, c.password));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| self.lost("CONNECT", e))?;

        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        let (code, reason, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_CONNECT_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let code = response.code.unwrap_or_default();
                    let reason = response.reason.unwrap_or_default().trim().to_owned();
                    break (code, reason, n);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(self.refused(format_args!(
                        "proxy {} sent an invalid answer to CONNECT: {e}",
                        self.name()
                    )))
                }
            }
            if buf.len() >= MAX_CONNECT_RESPONSE {
                return Err(self.refused(format_args!(
                    "proxy {} sent a CONNECT response larger than {MAX_CONNECT_RESPONSE} bytes",
                    self.name()
                )));
            }
            // Never read past the limit.
            let room = (MAX_CONNECT_RESPONSE - buf.len()).min(chunk.len());
            let n = io
                .read(&mut chunk[..room])
                .await
                .map_err(|e| self.lost("CONNECT", e))?;
            if n == 0 {
                return Err(self.refused(format_args!(
                    "proxy {} closed the connection without answering CONNECT to {target}",
                    self.name()
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if !(200..300).contains(&code) {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" {reason}")
            };
            return Err(self
                .refused(format_args!(
                    "proxy {} refused CONNECT to {target}: HTTP {code}{reason}",
                    self.name()
                ))
                .with_status(code));
        }
        // Neither a WebSocket nor a TLS server speaks first, so nothing may
        // follow the response yet.
        if buf.len() > head_len {
            return Err(self.refused(format_args!(
                "proxy {} sent data after its answer to CONNECT to {target}",
                self.name()
            )));
        }
        Ok(())
    }

    async fn socks5(
        &self,
        io: &mut TcpStream,
        target: Target<'_>,
        host: &str,
        port: u16,
    ) -> Result<(), Socks5Error> {
        const NO_AUTH: u8 = 0x00;
        const USER_PASS: u8 = 0x02;
        const NO_ACCEPTABLE: u8 = 0xFF;
        let name = self.name();

        // Method selection: offer username/password only when we have some.
        let greeting: &[u8] = if self.credentials.is_some() {
            &[5, 2, NO_AUTH, USER_PASS]
        } else {
            &[5, 1, NO_AUTH]
        };
        io.write_all(greeting)
            .await
            .map_err(|e| self.lost("the greeting", e))?;
        let mut reply = [0u8; 2];
        io.read_exact(&mut reply)
            .await
            .map_err(|e| self.lost("the greeting", e))?;
        if reply[0] != 5 {
            return Err(self
                .refused(format_args!(
                    "proxy {name} is not a SOCKS5 proxy (it answered with version {})",
                    reply[0]
                ))
                .into());
        }
        match (reply[1], &self.credentials) {
            (NO_AUTH, _) => {}
            (USER_PASS, Some(c)) => {
                // RFC 1929: lengths were checked when the URL was parsed.
                let mut auth = Vec::with_capacity(3 + c.user.len() + c.password.len());
                auth.push(1);
                auth.push(c.user.len() as u8);
                auth.extend_from_slice(c.user.as_bytes());
                auth.push(c.password.len() as u8);
                auth.extend_from_slice(c.password.as_bytes());
                io.write_all(&auth)
                    .await
                    .map_err(|e| self.lost("authentication", e))?;
                let mut status = [0u8; 2];
                io.read_exact(&mut status)
                    .await
                    .map_err(|e| self.lost("authentication", e))?;
                if status[1] != 0 {
                    return Err(self
                        .refused(format_args!(
                            "SOCKS5 proxy {name} rejected the user name and password (status {})",
                            status[1]
                        ))
                        .into());
                }
            }
            (NO_ACCEPTABLE, None) => {
                return Err(self
                    .refused(format_args!(
                "SOCKS5 proxy {name} requires authentication; give user:password in the proxy URL"
            ))
                    .into())
            }
            (NO_ACCEPTABLE, Some(_)) => {
                return Err(self
                    .refused(format_args!(
                "SOCKS5 proxy {name} accepts neither no authentication nor user name and password"
            ))
                    .into())
            }
            (other, _) => {
                return Err(self
                    .refused(format_args!(
                    "SOCKS5 proxy {name} chose authentication method {other}, which was not offered"
                ))
                    .into())
            }
        }

        // CONNECT request.
        let mut request = vec![5, 1, 0];
        match target {
            Target::Addr(SocketAddr::V4(a)) => {
                request.push(1);
                request.extend_from_slice(&a.ip().octets());
            }
            Target::Addr(SocketAddr::V6(a)) => {
                request.push(4);
                request.extend_from_slice(&a.ip().octets());
            }
            Target::Name(n) => match n.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => {
                    request.push(1);
                    request.extend_from_slice(&ip.octets());
                }
                Ok(IpAddr::V6(ip)) => {
                    request.push(4);
                    request.extend_from_slice(&ip.octets());
                }
                Err(_) => {
                    let Ok(len) = u8::try_from(n.len()) else {
                        return Err(self
                            .refused(format_args!(
                                "host name {n:?} is too long for SOCKS5 (255 bytes at most)"
                            ))
                            .into());
                    };
                    request.push(3);
                    request.push(len);
                    request.extend_from_slice(n.as_bytes());
                }
            },
        }
        request.extend_from_slice(&port.to_be_bytes());
        io.write_all(&request)
            .await
            .map_err(|e| self.lost("CONNECT", e))?;

        // Reply: VER REP RSV ATYP BND.ADDR BND.PORT, read to its exact end.
        let mut head = [0u8; 4];
        io.read_exact(&mut head)
            .await
            .map_err(|e| self.lost("CONNECT", e))?;
        if head[0] != 5 {
            return Err(self
                .refused(format_args!(
                    "proxy {name} is not a SOCKS5 proxy (it answered with version {})",
                    head[0]
                ))
                .into());
        }
        if head[1] != 0 {
            return Err(Socks5Error::Reply(self.refused(format_args!(
                "SOCKS5 proxy {name} refused the connection to {}: {} (reply {})",
                authority(host, port),
                socks_reply(head[1]),
                head[1]
            ))));
        }
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                io.read_exact(&mut len)
                    .await
                    .map_err(|e| self.lost("CONNECT", e))?;
                usize::from(len[0]) + 2
            }
            other => {
                return Err(self
                    .refused(format_args!(
                        "SOCKS5 proxy {name} answered with an unknown address type {other}"
                    ))
                    .into())
            }
        };
        let mut bound = [0u8; 255 + 2];
        io.read_exact(&mut bound[..rest])
            .await
            .map_err(|e| self.lost("CONNECT", e))?;
        Ok(())
    }
}

/// How a SOCKS5 negotiation failed: the proxy's reply to CONNECT (worth
/// trying the next address), or anything else.
enum Socks5Error {
    Reply(Error),
    Other(Error),
}

impl Socks5Error {
    fn into_inner(self) -> Error {
        match self {
            Socks5Error::Reply(e) | Socks5Error::Other(e) => e,
        }
    }
}

impl From<Error> for Socks5Error {
    fn from(e: Error) -> Self {
        Socks5Error::Other(e)
    }
}

/// What the SOCKS5 request names: an address resolved here, or a name (or
/// IP literal) for the proxy.
enum Target<'a> {
    Addr(SocketAddr),
    Name(&'a str),
}

/// The meaning of a SOCKS5 reply code (RFC 1928 section 6).
fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused by destination host",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

/// The proxy of the environment for `host`: `HTTPS_PROXY` then `ALL_PROXY`
/// when `secure`, `HTTP_PROXY` then `ALL_PROXY` otherwise, upper case before
/// lower case; none when `NO_PROXY` matches `host`. Empty values count as
/// unset. As in other HTTP clients, `HTTP_PROXY` is ignored in a CGI
/// program (`REQUEST_METHOD` set), where a request's `Proxy:` header would
/// set it ("httpoxy").
fn from_env(
    get: &dyn Fn(&str) -> Option<String>,
    host: &str,
    secure: bool,
) -> Result<Option<Proxy>, Error> {
    match env_proxy(get, host, secure) {
        Some((name, value)) => Proxy::parse(value.trim(), &format!(" in {name}")).map(Some),
        None => Ok(None),
    }
}

/// The proxy variable that applies to `host`, and its value.
fn env_proxy(
    get: &dyn Fn(&str) -> Option<String>,
    host: &str,
    secure: bool,
) -> Option<(&'static str, String)> {
    let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let names: [&str; 4] = if secure {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    let cgi = var("REQUEST_METHOD").is_some();
    let (name, value) = names
        .iter()
        .filter(|n| !(cgi && **n == "HTTP_PROXY"))
        .find_map(|n| var(n).map(|v| (*n, v)))?;
    if let Some(list) = var("NO_PROXY").or_else(|| var("no_proxy")) {
        if no_proxy_matches(&list, host) {
            return None;
        }
    }
    Some((name, value))
}

/// The proxy that `choice` picks for `host`, as [`ProxyInUse`] tells it.
pub(crate) fn in_use(
    choice: &ProxyChoice,
    host: &str,
    secure: bool,
) -> Result<Option<ProxyInUse>, Error> {
    let (url, source) = match choice {
        ProxyChoice::Direct => return Ok(None),
        ProxyChoice::Url(url) => (url.clone(), ProxySource::Options),
        ProxyChoice::FromEnv => match env_proxy(&|name| std::env::var(name).ok(), host, secure) {
            Some((name, value)) => (value.trim().to_owned(), ProxySource::Env(name)),
            None => return Ok(None),
        },
    };
    // A proxy that would not be used (an invalid URL) fails as it would.
    Proxy::choose(choice, host, secure)?;
    Ok(Some(ProxyInUse {
        url: redact::url(&url).into_owned(),
        source,
    }))
}

/// Whether `host` (a name, or an IP address without brackets) matches the
/// `NO_PROXY` list: `*`; a name, which also matches its subdomains (a
/// leading `.` or `*.` changes nothing); an IP address; or a CIDR block.
/// Ports in the list are ignored. Names are not resolved.
fn no_proxy_matches(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(',').map(str::trim).any(|entry| {
        if entry.is_empty() {
            return false;
        }
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            return match (host_ip, strip_port(net).parse::<IpAddr>(), bits.parse()) {
                (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                _ => false,
            };
        }
        let entry = strip_port(entry);
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return host_ip == Some(ip);
        }
        let domain = entry
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        !domain.is_empty()
            && (host == domain
                || host
                    .strip_suffix(&domain)
                    .is_some_and(|rest| rest.ends_with('.')))
    })
}

/// `host` of `host:port`, `[v6]:port` or `[v6]`; a bare IPv6 address or a
/// name without port is returned as it is.
fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match entry.split_once(':') {
        Some((h, port)) if !port.contains(':') => h,
        _ => entry,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn proxy_urls() {
        let p = Proxy::parse("http://u%40x:p%3Aw@proxy.local:3128", "").unwrap();
        assert_eq!(p.kind, Kind::Http);
        assert_eq!(p.name(), "proxy.local:3128");
        let c = p.credentials.unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("u@x", "p:w"));

        let p = Proxy::parse("socks5h://[::1]", "").unwrap();
        assert_eq!(p.kind, Kind::Socks5 { remote_dns: true });
        assert_eq!(p.name(), "[::1]:1080");
        assert!(p.credentials.is_none());

        let p = Proxy::parse("socks5://127.0.0.1", "").unwrap();
        assert_eq!(p.kind, Kind::Socks5 { remote_dns: false });
        // No scheme: HTTP.
        for raw in ["proxy:3128", "localhost:3128", "10.0.0.1:8080"] {
            let p = Proxy::parse(raw, "").unwrap();
            assert_eq!(p.kind, Kind::Http, "{raw}");
            assert_eq!(p.name(), raw);
        }
        assert_eq!(Proxy::parse("http://p", "").unwrap().port, 80);

        let e = Proxy::parse("https://u:secret@p:1", "").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!e.reason.contains("secret"), "{}", e.reason);
        assert!(Proxy::parse("ftp://p", "").is_err());
        assert!(Proxy::parse("http://", "").is_err());
    }

    #[test]
    fn env_lookup_follows_the_scheme() {
        let vars = [
            ("HTTPS_PROXY", "http://secure:1"),
            ("http_proxy", "http://plain:2"),
            ("ALL_PROXY", "socks5://all:3"),
        ];
        let get = env(&vars);
        let p = from_env(&get, "example.com", true).unwrap().unwrap();
        assert_eq!(p.name(), "secure:1");
        let p = from_env(&get, "example.com", false).unwrap().unwrap();
        assert_eq!(p.name(), "plain:2");

        let vars = [("all_proxy", "socks5h://all:3"), ("HTTPS_PROXY", " ")];
        let p = from_env(&env(&vars), "example.com", true).unwrap().unwrap();
        assert_eq!(p.name(), "all:3");
        assert!(from_env(&env(&[]), "example.com", true).unwrap().is_none());

        // httpoxy: HTTP_PROXY is ignored in a CGI program.
        let vars = [("HTTP_PROXY", "http://evil:1"), ("REQUEST_METHOD", "GET")];
        assert!(from_env(&env(&vars), "example.com", false)
            .unwrap()
            .is_none());

        let vars = [("HTTP_PROXY", "http://p:1"), ("no_proxy", "example.com")];
        assert!(from_env(&env(&vars), "example.com", false)
            .unwrap()
            .is_none());
        assert!(from_env(&env(&vars), "example.org", false)
            .unwrap()
            .is_some());

        let vars = [("HTTP_PROXY", "ftp://p")];
        let e = from_env(&env(&vars), "example.com", false).unwrap_err();
        assert!(
            e.reason
                .starts_with("invalid proxy URL \"ftp://p\" in HTTP_PROXY"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn no_proxy_lists() {
        let list = "localhost, .internal.test,*.corp.test, example.com:8080, 10.1.2.3, [::1]:80, 192.168.0.0/16, fd00::/8";
        for host in [
            "localhost",
            "a.internal.test",
            "internal.test",
            "x.y.corp.test",
            "EXAMPLE.com",
            "www.example.com",
            "10.1.2.3",
            "::1",
            "192.168.44.5",
            "fd12::1",
        ] {
            assert!(no_proxy_matches(list, host), "{host}");
        }
        for host in [
            "example.org",
            "notexample.com",
            "internal.test.evil",
            "10.1.2.4",
            "192.169.0.1",
            "fe80::1",
            "127.0.0.1",
        ] {
            assert!(!no_proxy_matches(list, host), "{host}");
        }
        assert!(no_proxy_matches("*", "anything"));
        assert!(no_proxy_matches("::1", "::1"));
        assert!(no_proxy_matches("127.0.0.0/8", "127.0.0.1"));
        assert!(!no_proxy_matches("", "example.com"));
        assert!(!no_proxy_matches(" , ", "example.com"));
    }

    #[test]
    fn passwords_stay_out_of_errors() {
        let e = Proxy::parse("gopher://u:topsecret@h", " in ALL_PROXY").unwrap_err();
        assert!(!e.reason.contains("topsecret"), "{}", e.reason);
        assert!(e.reason.contains("in ALL_PROXY"), "{}", e.reason);
        assert_eq!(
            e.reason,
            "invalid proxy URL \"gopher://u:***@h\" in ALL_PROXY: \
             unsupported scheme \"gopher\"; use http://, socks5:// or socks5h://"
        );
        // Every kind of invalid proxy URL, with a password or a token alone.
        for raw in [
            "https://u:topsecret@p:1",
            "ftp://topsecret@p",
            "http://u:topsecret@",
            "http://u:topsecret@p:notaport",
            "u:topsecret@p:99999",
            "socks5://u:%FFtopsecret@p",
        ] {
            let e = Proxy::parse(raw, "").unwrap_err();
            assert!(!e.reason.contains("topsecret"), "{}", e.reason);
            assert!(!format!("{e:?}").contains("topsecret"), "{e:?}");
        }
        // Nor in `Debug` of a parsed proxy.
        let p = Proxy::parse("http://u:topsecret@p:1", "").unwrap();
        assert!(!format!("{p:?}").contains("topsecret"), "{p:?}");
    }

    #[test]
    fn socks_lengths_are_checked() {
        let long = "u".repeat(256);
        let e = Proxy::parse(&format!("socks5://{long}:p@h"), "").unwrap_err();
        assert!(e.reason.contains("255 bytes"), "{}", e.reason);
        assert!(Proxy::parse(&format!("http://{long}:p@h"), "").is_ok());
    }
}
