//! ChannelData (RFC 8656 §12.4) and the framing of STUN and ChannelData on stream transports.

/// Whether a packet starting with `first_byte` is ChannelData: its top bits are 01, i.e. the
/// first byte is 0x40–0x7F (RFC 7983 demultiplexing; STUN starts with 0x00–0x03). This is the
/// test the kernel fast path makes too.
pub const fn is_channel_data(first_byte: u8) -> bool {
    first_byte & 0xC0 == 0x40
}

/// Why a ChannelData message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    #[error("shorter than the 4-byte ChannelData header")]
    TooShort,
    #[error("channel number {0:#06x} is outside 0x4000-0x7FFF")]
    BadChannel(u16),
    #[error("length field says {field} bytes but {actual} follow the header")]
    Truncated { field: u16, actual: usize },
}

/// A ChannelData message borrowing its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    pub channel: u16,
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    pub const HEADER_LEN: usize = 4;
    /// The channel numbers accepted: RFC 5766's whole range. RFC 8656 narrowed new bindings to
    /// 0x4000–0x4FFF, but deployed clients (coturn's `turnutils_uclient` among them) pick from
    /// all of it, and nothing is gained by refusing them.
    pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

    /// Decodes one ChannelData message. Bytes beyond the length field (padding on UDP, which
    /// RFC 8656 allows but does not require) are ignored.
    pub fn decode(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        let h = buf
            .get(..Self::HEADER_LEN)
            .ok_or(ChannelDataError::TooShort)?;
        let channel = u16::from_be_bytes([h[0], h[1]]);
        if !Self::CHANNELS.contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        let field = u16::from_be_bytes([h[2], h[3]]);
        let data = buf
            .get(Self::HEADER_LEN..Self::HEADER_LEN + usize::from(field))
            .ok_or(ChannelDataError::Truncated {
                field,
                actual: buf.len() - Self::HEADER_LEN,
            })?;
        Ok(Self { channel, data })
    }

    /// Encoded length: with `pad` (stream transports, RFC 8656 §12.5) rounded up to 4 bytes.
    pub fn encoded_len(data_len: usize, pad: bool) -> usize {
        let len = Self::HEADER_LEN + data_len;
        if pad { (len + 3) & !3 } else { len }
    }

    /// Writes the message into `out` and returns its length, or `None` if `out` is too small or
    /// the data longer than 65535 bytes.
    pub fn encode(&self, out: &mut [u8], pad: bool) -> Option<usize> {
        let field = u16::try_from(self.data.len()).ok()?;
        let len = Self::encoded_len(self.data.len(), pad);
        let dst = out.get_mut(..len)?;
        dst[..2].copy_from_slice(&self.channel.to_be_bytes());
        dst[2..4].copy_from_slice(&field.to_be_bytes());
        dst[4..4 + self.data.len()].copy_from_slice(self.data);
        dst[4 + self.data.len()..].fill(0);
        Some(len)
    }

    /// Writes just the 4-byte header in front of data already in place.
    pub fn write_header(channel: u16, data_len: u16, out: &mut [u8; 4]) {
        out[..2].copy_from_slice(&channel.to_be_bytes());
        out[2..].copy_from_slice(&data_len.to_be_bytes());
    }
}

/// Why a stream could not be framed; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("stream carries neither STUN nor ChannelData (first byte {0:#04x})")]
    UnknownFrame(u8),
}

/// Length of the first frame of a stream (TCP or TLS), or `None` if more bytes are needed to
/// tell. STUN frames are 20 + length bytes; ChannelData frames are 4 + length rounded up to 4,
/// since stream transports pad ChannelData (RFC 8656 §12.5).
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if buf.len() < 4 {
        return if first & 0xC0 <= 0x40 {
            Ok(None)
        } else {
            Err(FramingError::UnknownFrame(first))
        };
    }
    let field = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match first & 0xC0 {
        0x00 => Ok(Some(super::HEADER_LEN + field)),
        0x40 => Ok(Some((ChannelData::HEADER_LEN + field + 3) & !3)),
        _ => Err(FramingError::UnknownFrame(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_demultiplexes() {
        assert!(!is_channel_data(0x00));
        assert!(!is_channel_data(0x01));
        assert!(!is_channel_data(0x3F));
        assert!(is_channel_data(0x40));
        assert!(is_channel_data(0x7F));
        assert!(!is_channel_data(0x80));
        assert!(!is_channel_data(0xFF));
    }

    #[test]
    fn whole_rfc5766_range_is_accepted() {
        for channel in [0x4000, 0x4FFF, 0x5000, 0x7FFF] {
            let buf = [(channel >> 8) as u8, channel as u8, 0, 1, 0xAB];
            let cd = ChannelData::decode(&buf).expect("valid channel");
            assert_eq!(cd.channel, channel);
            assert_eq!(cd.data, &[0xAB]);
        }
        assert_eq!(
            ChannelData::decode(&[0x3F, 0xFF, 0, 0]),
            Err(ChannelDataError::BadChannel(0x3FFF))
        );
        assert_eq!(
            ChannelData::decode(&[0x80, 0x00, 0, 0]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
    }

    #[test]
    fn udp_needs_no_padding_and_ignores_trailing_bytes() {
        let cd = ChannelData::decode(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3]).expect("unpadded");
        assert_eq!(cd.data, &[1, 2, 3]);
        let cd = ChannelData::decode(&[0x40, 0x00, 0x00, 0x03, 1, 2, 3, 0]).expect("padded");
        assert_eq!(cd.data, &[1, 2, 3]);
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3]),
            Err(ChannelDataError::Truncated {
                field: 5,
                actual: 3
            })
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00]),
            Err(ChannelDataError::TooShort)
        );
    }

    #[test]
    fn encode_pads_only_on_streams() {
        let cd = ChannelData {
            channel: 0x4001,
            data: &[9, 8, 7],
        };
        let mut out = [0xEE; 16];
        assert_eq!(cd.encode(&mut out, false), Some(7));
        assert_eq!(&out[..7], &[0x40, 0x01, 0x00, 0x03, 9, 8, 7]);
        assert_eq!(cd.encode(&mut out, true), Some(8));
        assert_eq!(&out[..8], &[0x40, 0x01, 0x00, 0x03, 9, 8, 7, 0]);
        assert_eq!(cd.encode(&mut out[..6], false), None);
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01]), Ok(None));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x04]), Ok(Some(8)));
        assert_eq!(
            stream_frame_len(&[0x80]),
            Err(FramingError::UnknownFrame(0x80))
        );
    }
}
