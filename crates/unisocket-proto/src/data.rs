//! Message payloads: [`Data`] and the UTF-8-checked [`Text`].

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// A UTF-8 string backed by [`Bytes`]: it derefs to `str`, clones without
/// copying, and converts from and into `String`.
///
/// Received text messages arrive as `Text` without being copied, and a `Text`
/// sent many times is never re-allocated.
///
/// ```
/// use unisocket_proto::Text;
///
/// let t = Text::from("héllo");
/// assert_eq!(&*t, "héllo");
/// assert_eq!(t.len(), 6);
/// let s: String = t.clone().into();
/// assert_eq!(s, "héllo");
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Bytes);

impl Text {
    /// A `Text` from a static string, without allocating.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Text;
    ///
    /// static GREETING: Text = Text::from_static("hello");
    /// assert_eq!(GREETING, "hello");
    /// assert_eq!(GREETING.len(), 5);
    /// ```
    pub const fn from_static(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// Checks that `bytes` is UTF-8 and wraps it without copying.
    ///
    /// # Errors
    /// Returns the bytes back, with the UTF-8 error, when they are not UTF-8.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use unisocket_proto::Text;
    ///
    /// let text = Text::try_from_bytes(Bytes::from_static(b"caf\xC3\xA9")).unwrap();
    /// assert_eq!(text, "café");
    ///
    /// // Not UTF-8: the bytes come back, with the error.
    /// let (bytes, err) = Text::try_from_bytes(Bytes::from_static(b"ok\xFF")).unwrap_err();
    /// assert_eq!(&bytes[..], b"ok\xFF");
    /// assert_eq!(err.valid_up_to(), 2);
    /// ```
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, (Bytes, std::str::Utf8Error)> {
        // The fast validator says yes or no; std explains a no.
        if crate::utf8::is_valid(&bytes) {
            return Ok(Text(bytes));
        }
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Text(bytes)),
            Err(e) => Err((bytes, e)),
        }
    }

    /// Wraps bytes that the codec has already validated as UTF-8, without
    /// checking them again (received text is validated as it arrives, across
    /// fragments; a second pass would cost as much again).
    ///
    /// # Safety
    ///
    /// `bytes` must be valid UTF-8. [`Text::as_str`] and everything built on
    /// it (`Deref<Target = str>`, `Display`, conversions into `String`)
    /// treat the bytes as a `str` without checking: anything else is
    /// undefined behaviour. Debug builds check it.
    #[allow(
        unsafe_code,
        reason = "the codec's incremental UTF-8 check makes a second pass over each text message needless"
    )]
    pub(crate) unsafe fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Text(bytes)
    }

    /// The text as a string slice.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Text;
    ///
    /// let text = Text::from("Héllo");
    /// assert_eq!(text.as_str().to_lowercase(), "héllo");
    /// assert!(text.as_str().starts_with('H'));
    /// ```
    pub fn as_str(&self) -> &str {
        // Unsafe because re-validating on every access
        // would cost a full pass over each received message.
        #[allow(
            unsafe_code,
            reason = "re-validating on every access would cost a pass over the text"
        )]
        // SAFETY: every constructor of `Text` either takes a `str`/`String`,
        // checks the bytes with `std::str::from_utf8`, or is the unsafe
        // `from_validated`, whose contract is that its bytes are UTF-8;
        // `Bytes` is immutable, so the contents stay UTF-8.
        unsafe {
            std::str::from_utf8_unchecked(&self.0)
        }
    }

    /// The UTF-8 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Text;
    ///
    /// let text = Text::from("é");
    /// assert_eq!(text.as_bytes(), &[0xC3, 0xA9]); // one character, two bytes of UTF-8
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The underlying `Bytes`, without copying.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use unisocket_proto::Text;
    ///
    /// let text = Text::from(String::from("ping"));
    /// let bytes: Bytes = text.into_bytes();
    /// assert_eq!(bytes, Bytes::from_static(b"ping"));
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        // Bytes -> Vec<u8> reuses the allocation when the Bytes is unique.
        let v: Vec<u8> = t.0.into();
        String::from_utf8(v).unwrap_or_default()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// The payload of a message: `String` or `ArrayBuffer` in uni-app.
///
/// `&str`, `String`, [`Text`], `Vec<u8>`, `&[u8]` and [`Bytes`] convert into it:
///
/// ```
/// use unisocket_proto::Data;
///
/// let a: Data = "hello".into();
/// let b: Data = vec![1u8, 2, 3].into();
/// assert_eq!(a.as_text(), Some("hello"));
/// assert_eq!(b.as_bytes(), &[1, 2, 3]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Data {
    /// A text message (UTF-8).
    Text(Text),
    /// A binary message.
    Binary(Bytes),
}

impl Data {
    /// The payload length in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Data;
    ///
    /// assert_eq!(Data::from("héllo").len(), 6); // bytes, not characters
    /// assert_eq!(Data::from(vec![0u8; 3]).len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Data;
    ///
    /// assert!(Data::from("").is_empty());
    /// assert!(!Data::from(&[0u8][..]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a text message.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use unisocket_proto::Data;
    ///
    /// assert!(Data::from(String::from("hi")).is_text());
    /// assert!(!Data::from(Bytes::from_static(b"hi")).is_text());
    /// ```
    pub fn is_text(&self) -> bool {
        matches!(self, Data::Text(_))
    }

    /// The text, for a text message.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Data;
    ///
    /// let msg = Data::from(r#"{"op":"ping"}"#);
    /// assert_eq!(msg.as_text(), Some(r#"{"op":"ping"}"#));
    /// assert_eq!(Data::from(vec![0x89u8]).as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(t) => Some(t.as_str()),
            Data::Binary(_) => None,
        }
    }

    /// The payload bytes (UTF-8 for text).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::Data;
    ///
    /// // Text and binary messages alike.
    /// assert_eq!(Data::from("ab").as_bytes(), b"ab");
    /// assert_eq!(Data::from(vec![7u8, 8]).as_bytes(), &[7, 8]);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Text(t) => t.as_bytes(),
            Data::Binary(b) => b,
        }
    }

    /// The payload as `Bytes`, without copying.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::Bytes;
    /// use unisocket_proto::Data;
    ///
    /// // The payload without its text/binary tag, e.g. to write it to a file.
    /// for msg in [Data::from("hi"), Data::from(vec![b'h', b'i'])] {
    ///     assert_eq!(msg.into_bytes(), Bytes::from_static(b"hi"));
    /// }
    /// ```
    pub fn into_bytes(self) -> Bytes {
        match self {
            Data::Text(t) => t.into_bytes(),
            Data::Binary(b) => b,
        }
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Data::Text(t) if t.len() <= 256 => write!(f, "Text({t:?})"),
            Data::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Data::Binary(b) if b.len() <= 64 => write!(f, "Binary({b:?})"),
            Data::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

impl From<Text> for Data {
    fn from(t: Text) -> Self {
        Data::Text(t)
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Self {
        Data::Text(s.into())
    }
}

impl From<String> for Data {
    fn from(s: String) -> Self {
        Data::Text(s.into())
    }
}

impl From<Bytes> for Data {
    fn from(b: Bytes) -> Self {
        Data::Binary(b)
    }
}

impl From<Vec<u8>> for Data {
    fn from(b: Vec<u8>) -> Self {
        Data::Binary(b.into())
    }
}

impl From<&[u8]> for Data {
    fn from(b: &[u8]) -> Self {
        Data::Binary(Bytes::copy_from_slice(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rejects_invalid_utf8_and_keeps_valid_bytes_without_copy() {
        let b = Bytes::from_static(&[0xFF, 0x00]);
        assert!(Text::try_from_bytes(b).is_err());
        let b = Bytes::from(vec![b'h', b'i']);
        let ptr = b.as_ptr();
        let t = Text::try_from_bytes(b).unwrap();
        assert_eq!(t, "hi");
        assert_eq!(t.clone().as_bytes().as_ptr(), ptr);
        let s: String = t.into();
        assert_eq!(s, "hi");
    }

    #[test]
    fn long_text_is_checked_whole_and_its_error_says_where() {
        let mut bytes = "κόσμε ✓ ".repeat(30).into_bytes();
        assert!(Text::try_from_bytes(Bytes::from(bytes.clone())).is_ok());
        bytes[200] = 0xFF;
        let (back, err) = Text::try_from_bytes(Bytes::from(bytes.clone())).unwrap_err();
        assert_eq!(&back[..], &bytes[..]);
        assert_eq!(
            err.valid_up_to(),
            std::str::from_utf8(&bytes[..200]).map_or_else(|e| e.valid_up_to(), |_| 200)
        );
    }
}
