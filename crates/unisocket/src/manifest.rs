//! `networkTimeout.connectSocket` from a uni-app `manifest.json`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The settings unisocket reads from a uni-app `manifest.json`.
///
/// uni-app's `manifest.json` may hold `//` and `/* */` comments; they are
/// skipped.
///
/// ```
/// use std::time::Duration;
/// use unisocket::Manifest;
///
/// let m = Manifest::from_json(r#"{
///     // uni-app allows comments here
///     "networkTimeout": { "connectSocket": 15000 }
/// }"#).unwrap();
/// assert_eq!(m.connect_socket_timeout(), Some(Duration::from_millis(15000)));
/// m.apply(); // later connect_socket calls default to 15 s
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    connect_socket: Option<Duration>,
}

/// Why a manifest could not be read.
///
/// ```
/// let err = unisocket::Manifest::from_json("{").unwrap_err();
/// assert!(err.to_string().starts_with("not valid JSON"));
/// ```
#[derive(Debug)]
pub struct ManifestError {
    reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Reads `manifest.json` from `path`.
    ///
    /// # Errors
    /// When the file cannot be read or is not a valid manifest.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::Manifest;
    ///
    /// let path = std::env::temp_dir().join(format!("manifest-{}.json", std::process::id()));
    /// std::fs::write(&path, r#"{ "networkTimeout": { "connectSocket": 8000 } }"#).unwrap();
    /// let manifest = Manifest::load(&path).unwrap();
    /// assert_eq!(manifest.connect_socket_timeout(), Some(Duration::from_secs(8)));
    /// # std::fs::remove_file(&path).unwrap();
    /// assert!(Manifest::load("/no/such/manifest.json").is_err());
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Manifest::from_json(&text).map_err(|e| ManifestError {
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// Parses the text of a `manifest.json`.
    ///
    /// # Errors
    /// When the text is not JSON (comments allowed), or
    /// `networkTimeout.connectSocket` is present but not a positive number of
    /// milliseconds.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket::Manifest;
    ///
    /// let manifest = Manifest::from_json(r#"{ "name": "demo", "versionName": "1.0.0" }"#).unwrap();
    /// assert_eq!(manifest, Manifest::default()); // no networkTimeout: nothing to apply
    ///
    /// let err = Manifest::from_json(r#"{ "networkTimeout": { "connectSocket": 0 } }"#).unwrap_err();
    /// assert!(err.to_string().contains("must be a positive number of ms"));
    /// ```
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_str(&strip_comments(text)).map_err(|e| ManifestError {
                reason: format!("not valid JSON: {e}"),
            })?;
        let timeout = value
            .get("networkTimeout")
            .and_then(|n| n.get("connectSocket"));
        let connect_socket = match timeout {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(ms) if ms > 0.0 && ms.is_finite() => {
                    Some(Duration::from_millis(ms as u64).max(Duration::from_millis(1)))
                }
                _ => {
                    return Err(ManifestError {
                        reason: format!(
                            "networkTimeout.connectSocket must be a positive number of ms, not {v}"
                        ),
                    })
                }
            },
        };
        Ok(Manifest { connect_socket })
    }

    /// `networkTimeout.connectSocket`, if the manifest sets it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::Manifest;
    ///
    /// let manifest = Manifest::from_json(r#"{
    ///     /* the same setting for every platform */
    ///     "networkTimeout": { "request": 10000, "connectSocket": 2500 }
    /// }"#).unwrap();
    /// assert_eq!(manifest.connect_socket_timeout(), Some(Duration::from_millis(2500)));
    /// ```
    pub fn connect_socket_timeout(&self) -> Option<Duration> {
        self.connect_socket
    }

    /// Makes the manifest's timeout the default of later `connect_socket`
    /// calls (as [`set_network_timeout`](crate::set_network_timeout)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use unisocket::Manifest;
    ///
    /// Manifest::from_json(r#"{ "networkTimeout": { "connectSocket": 20000 } }"#).unwrap().apply();
    /// assert_eq!(unisocket::network_timeout(), Duration::from_secs(20));
    ///
    /// // A manifest without the setting leaves the current default alone.
    /// Manifest::from_json("{}").unwrap().apply();
    /// assert_eq!(unisocket::network_timeout(), Duration::from_secs(20));
    /// ```
    pub fn apply(&self) {
        if let Some(t) = self.connect_socket {
            crate::set_network_timeout(t);
        }
    }
}

/// Removes `//` and `/* */` comments outside of strings.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_timeout_with_comments_and_urls_in_strings() {
        let m = Manifest::from_json(
            r#"{
                /* 5+App */ "name": "a//b", "url": "http://x/*y*/",
                "networkTimeout": { "request": 1000, "connectSocket": 2500 } // trailing
            }"#,
        )
        .unwrap();
        assert_eq!(
            m.connect_socket_timeout(),
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn absent_timeout_is_none_and_bad_values_fail() {
        assert_eq!(
            Manifest::from_json("{}").unwrap().connect_socket_timeout(),
            None
        );
        assert!(Manifest::from_json(r#"{"networkTimeout":{"connectSocket":"x"}}"#).is_err());
        assert!(Manifest::from_json(r#"{"networkTimeout":{"connectSocket":-1}}"#).is_err());
        assert!(Manifest::from_json("{").is_err());
        assert!(Manifest::load("/nonexistent/manifest.json").is_err());
    }
}
