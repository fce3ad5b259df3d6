//! Frame header encoding and decoding, and masking (RFC 6455 section 5.2).

use super::error::ProtocolError;

/// The opcode of a frame. Reserved opcodes never get this far: decoding one
/// is a protocol error.
///
/// # Examples
///
/// ```
/// use unisocket_proto::frame::OpCode;
/// use unisocket_proto::ProtocolError;
///
/// assert_eq!(OpCode::try_from(0x1), Ok(OpCode::Text));
/// assert_eq!(OpCode::try_from(0x3), Err(ProtocolError::ReservedOpCode(3)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A continuation of a fragmented data message.
    Continuation,
    /// The first frame of a UTF-8 text message.
    Text,
    /// The first frame of a binary message.
    Binary,
    /// A close frame.
    Close,
    /// A ping frame.
    Ping,
    /// A pong frame.
    Pong,
}

impl OpCode {
    /// Whether this is a control frame (close, ping, pong).
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::OpCode;
    ///
    /// assert!(OpCode::Ping.is_control());
    /// assert!(!OpCode::Binary.is_control());
    /// ```
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }

    /// The 4-bit wire value.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::OpCode;
    ///
    /// assert_eq!(OpCode::Pong.as_u8(), 0xA);
    /// assert_eq!(OpCode::try_from(OpCode::Close.as_u8()), Ok(OpCode::Close));
    /// ```
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }
}

impl TryFrom<u8> for OpCode {
    type Error = ProtocolError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Ok(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(ProtocolError::ReservedOpCode(other)),
        })
    }
}

/// The largest encoded header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
///
/// # Examples
///
/// ```
/// use unisocket_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
///
/// // A masked frame with a 64-bit length fills the whole buffer.
/// let header = FrameHeader {
///     fin: true,
///     rsv1: false,
///     opcode: OpCode::Binary,
///     mask: Some([1, 2, 3, 4]),
///     payload_len: 1 << 20,
/// };
/// let mut out = [0u8; MAX_HEADER_LEN];
/// assert_eq!(header.encode(&mut out), MAX_HEADER_LEN);
/// ```
pub const MAX_HEADER_LEN: usize = 14;

/// A decoded frame header.
///
/// # Examples
///
/// ```
/// use unisocket_proto::frame::{FrameHeader, OpCode};
///
/// // An unmasked text frame "hi" from the server.
/// let (header, len) = FrameHeader::decode(&[0x81, 0x02, b'h', b'i'], false)?.unwrap();
/// assert!(header.fin && !header.rsv1);
/// assert_eq!((header.opcode, header.mask, header.payload_len), (OpCode::Text, None, 2));
/// assert_eq!(len, 2); // the payload starts after the 2-byte header
/// # Ok::<(), unisocket_proto::ProtocolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The FIN bit.
    pub fin: bool,
    /// RSV1 (used by permessage-deflate).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`, checking each rule in wire
    /// order. The MASK bit is decoded, not judged: whether a masked frame is
    /// allowed depends on the role, which the caller knows. Returns `Ok(None)` when `buf` does not yet hold the whole
    /// header, and `Ok(Some((header, header_len)))` otherwise.
    ///
    /// `allow_rsv1` is set when an extension that uses RSV1 was negotiated.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::FrameHeader;
    /// use unisocket_proto::ProtocolError;
    ///
    /// // A binary frame with a 16-bit length of 256: the header is 4 bytes.
    /// let bytes = [0x82, 126, 0x01, 0x00];
    /// assert_eq!(FrameHeader::decode(&bytes[..3], false), Ok(None)); // not all there yet
    /// let (header, len) = FrameHeader::decode(&bytes, false)?.unwrap();
    /// assert_eq!((header.payload_len, len), (256, 4));
    /// // A ping without FIN breaks a rule.
    /// assert_eq!(
    ///     FrameHeader::decode(&[0x09, 0x00], false),
    ///     Err(ProtocolError::FragmentedControlFrame)
    /// );
    /// # Ok::<(), ProtocolError>(())
    /// ```
    pub fn decode(buf: &[u8], allow_rsv1: bool) -> Result<Option<(Self, usize)>, ProtocolError> {
        let (b0, b1) = match buf {
            [b0, b1, ..] => (*b0, *b1),
            _ => return Ok(None),
        };
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        if (rsv1 && !allow_rsv1) || b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits(b0 & 0x70));
        }
        let opcode = OpCode::try_from(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(ProtocolError::ControlFrameTooLong);
            }
            if rsv1 {
                return Err(ProtocolError::ReservedBits(b0 & 0x70));
            }
        }
        let (payload_len, len_bytes) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let len = u64::from_be_bytes(a);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(k) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        Ok(Some((
            FrameHeader {
                fin,
                rsv1,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        )))
    }

    /// Encodes the header into `out` and returns the number of bytes used.
    /// The shortest length form is always chosen.
    ///
    /// # Examples
    ///
    /// ```
    /// use unisocket_proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
    ///
    /// let header = FrameHeader {
    ///     fin: true,
    ///     rsv1: false,
    ///     opcode: OpCode::Text,
    ///     mask: Some([0x37, 0xfa, 0x21, 0x3d]),
    ///     payload_len: 5,
    /// };
    /// let mut out = [0u8; MAX_HEADER_LEN];
    /// let n = header.encode(&mut out);
    /// assert_eq!(out[..n], [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
    /// ```
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | (u8::from(self.rsv1) << 6) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xFFFF => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }
}

/// XORs `data` with the masking key, starting at `offset` bytes into the
/// key stream (RFC 6455 section 5.3). Masking and unmasking are the same
/// operation.
///
/// Works a machine word at a time; the compiler turns the inner loop into
/// SIMD instructions where the target has them.
///
/// # Examples
///
/// ```
/// use unisocket_proto::frame::apply_mask;
///
/// // The masked "Hello" of RFC 6455 section 5.7.
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut data = *b"Hello";
/// apply_mask(&mut data, key, 0);
/// assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// // Unmasking in two pieces: the second continues 2 bytes into the key.
/// let (head, tail) = data.split_at_mut(2);
/// apply_mask(head, key, 0);
/// apply_mask(tail, key, 2);
/// assert_eq!(&data, b"Hello");
/// ```
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate_key(key, offset);
    let word = key_word(key);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let masked = mask_word(chunk, word);
        chunk.copy_from_slice(&masked);
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Appends `src` to `dst` masked with `key` (from the key's start), in one
/// pass: each byte is read once and written once, where copying and then
/// masking in place would go over the copy a second time.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use unisocket_proto::frame::{apply_mask, extend_masked};
///
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut out = BytesMut::from(&b"head:"[..]);
/// extend_masked(&mut out, b"Hello", key);
/// assert_eq!(out[5..], [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// apply_mask(&mut out[5..], key, 0);
/// assert_eq!(&out[..], b"head:Hello");
/// ```
pub fn extend_masked(dst: &mut bytes::BytesMut, src: &[u8], key: [u8; 4]) {
    dst.reserve(src.len());
    let out = &mut dst.spare_capacity_mut()[..src.len()];
    #[cfg(target_arch = "x86_64")]
    if src.len() >= AVX2_MIN && std::arch::is_x86_feature_detected!("avx2") {
        #[allow(
            unsafe_code,
            reason = "calls the AVX2 build of the masking loop once the CPU is known to have AVX2"
        )]
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe {
            mask_into_avx2(out, src, key)
        };
    } else {
        mask_into(out, src, key);
    }
    #[cfg(not(target_arch = "x86_64"))]
    mask_into(out, src, key);
    let len = dst.len() + src.len();
    #[allow(
        unsafe_code,
        reason = "masks straight into the spare capacity: no zeroing pass before the masking pass"
    )]
    // SAFETY: `reserve` made room for `src.len()` more bytes, and
    // `mask_into` wrote every one of them (see there).
    unsafe {
        dst.set_len(len)
    };
}

/// From this size on, masking uses AVX2 where the CPU has it (twice the
/// width of the baseline's SSE2); below it, the check would cost more.
#[cfg(target_arch = "x86_64")]
const AVX2_MIN: usize = 256;

/// [`mask_into`] compiled for AVX2.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(
    unsafe_code,
    reason = "a function built for AVX2 is unsafe to call: the caller checks the CPU"
)]
unsafe fn mask_into_avx2(out: &mut [std::mem::MaybeUninit<u8>], src: &[u8], key: [u8; 4]) {
    mask_into(out, src, key);
}

/// Writes `src` masked with `key` into `out` (of the same length): every
/// byte of `out` is written.
#[inline(always)]
fn mask_into(out: &mut [std::mem::MaybeUninit<u8>], src: &[u8], key: [u8; 4]) {
    const BLOCK: usize = 64;
    let word = key_word(key);
    let write_word = |o: &mut [std::mem::MaybeUninit<u8>], i: &[u8]| {
        for (o, m) in o.iter_mut().zip(mask_word(i, word)) {
            o.write(m);
        }
    };
    let mut out_blocks = out.chunks_exact_mut(BLOCK);
    let mut in_blocks = src.chunks_exact(BLOCK);
    // Whole blocks of eight words: the compiler makes SIMD of them.
    for (o, i) in (&mut out_blocks).zip(&mut in_blocks) {
        for (o, i) in o.chunks_exact_mut(8).zip(i.chunks_exact(8)) {
            write_word(o, i);
        }
    }
    // Then words, then bytes; BLOCK and 8 are multiples of 4, so each part
    // starts at the key's start. Each pair of `chunks_exact` splits `out` and
    // `src`, of equal length, at the same place: every byte is written.
    let mut out_words = out_blocks.into_remainder().chunks_exact_mut(8);
    let mut in_words = in_blocks.remainder().chunks_exact(8);
    for (o, i) in (&mut out_words).zip(&mut in_words) {
        write_word(o, i);
    }
    let out_rest = out_words.into_remainder();
    for (n, (o, i)) in out_rest.iter_mut().zip(in_words.remainder()).enumerate() {
        o.write(i ^ key[n & 3]);
    }
}

/// The 4-byte key twice, as one machine word.
#[inline(always)]
fn key_word(key: [u8; 4]) -> u64 {
    u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ])
}

/// Eight bytes (`chunk`, of length 8) masked with [`key_word`]'s word.
#[inline(always)]
fn mask_word(chunk: &[u8], word: u64) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(chunk);
    (u64::from_ne_bytes(a) ^ word).to_ne_bytes()
}

fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset & 3);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(i + offset) & 3];
        }
    }

    #[test]
    fn mask_matches_the_definition_for_every_length_and_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..70 {
            for offset in 0..4 {
                let orig: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let mut fast = orig.clone();
                let mut slow = orig.clone();
                apply_mask(&mut fast, key, offset);
                naive_mask(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                apply_mask(&mut fast, key, offset);
                assert_eq!(fast, orig);
            }
        }
    }

    /// Also run under Miri (`cargo +nightly miri test -p unisocket --lib
    /// extend_masked`): it checks that every byte `set_len` exposes was
    /// written.
    #[test]
    fn extend_masked_matches_the_definition_for_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        // Both sides of `AVX2_MIN`, with every remainder of a block.
        for len in (0..200).chain(240..340).chain([4096, 4099]) {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            for before in [0usize, 3] {
                let mut out = bytes::BytesMut::new();
                out.extend_from_slice(&vec![0xAA; before]);
                extend_masked(&mut out, &src, key);
                let mut expected = src.clone();
                naive_mask(&mut expected, key, 0);
                assert_eq!(out.len(), before + len, "len {len}");
                assert!(out[..before].iter().all(|&b| b == 0xAA));
                assert_eq!(out[before..], expected, "len {len} after {before}");
            }
        }
    }

    #[test]
    fn header_round_trips_every_length_form() {
        for (len, mask) in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40, (1 << 63) - 1]
            .into_iter()
            .flat_map(|l| [(l, None), (l, Some([9, 8, 7, 6]))])
        {
            let h = FrameHeader {
                fin: true,
                rsv1: false,
                opcode: OpCode::Binary,
                mask,
                payload_len: len,
            };
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            let expected = match len {
                0..=125 => 2,
                126..=65535 => 4,
                _ => 10,
            } + if mask.is_some() { 4 } else { 0 };
            assert_eq!(n, expected);
            // Every strict prefix is "need more".
            for cut in 0..n {
                assert_eq!(FrameHeader::decode(&out[..cut], false).unwrap(), None);
            }
            assert_eq!(FrameHeader::decode(&out[..n], false).unwrap(), Some((h, n)));
        }
    }

    #[test]
    fn decode_rejects_each_rule() {
        assert_eq!(
            FrameHeader::decode(&[0x81 | 0x40, 0], false),
            Err(ProtocolError::ReservedBits(0x40))
        );
        assert!(FrameHeader::decode(&[0xC1, 0], true).unwrap().is_some());
        assert_eq!(
            FrameHeader::decode(&[0x83, 0], false),
            Err(ProtocolError::ReservedOpCode(3))
        );
        assert_eq!(
            FrameHeader::decode(&[0x8B, 0], false),
            Err(ProtocolError::ReservedOpCode(11))
        );
        assert_eq!(
            FrameHeader::decode(&[0x09, 0], false),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            FrameHeader::decode(&[0x89, 126], false),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(FrameHeader::decode(&[0x81, 0x80, 1, 2, 3], false), Ok(None));
        let (h, n) = FrameHeader::decode(&[0x81, 0x80, 1, 2, 3, 4], false)
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, n), (Some([1, 2, 3, 4]), 6));
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(
            FrameHeader::decode(&big, false),
            Err(ProtocolError::InvalidLength)
        );
    }
}
