//! `ChannelData::decode` and `stream_frame_len` on arbitrary bytes.
//!
//! A decoded ChannelData message re-encodes (padded and unpadded) to one that decodes to the
//! same channel and data; stream framing never panics and never reports a frame shorter than
//! the smallest header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::stun::{ChannelData, is_channel_data, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    match stream_frame_len(data) {
        Ok(Some(len)) => assert!(len >= ChannelData::HEADER_LEN, "frame length {len} < 4"),
        Ok(None) => assert!(data.len() < 4, "{} bytes are enough to frame", data.len()),
        Err(err) => {
            let _ = err.to_string();
        }
    }

    let cd = match ChannelData::decode(data) {
        Ok(cd) => cd,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    assert!(
        is_channel_data(data[0]),
        "decoded ChannelData whose first byte is {:#04x}",
        data[0]
    );
    assert_eq!(&data[4..4 + cd.data.len()], cd.data);

    let mut out = vec![0u8; ChannelData::encoded_len(cd.data.len(), true)];
    for pad in [false, true] {
        let len = cd
            .encode(&mut out, pad)
            .unwrap_or_else(|| panic!("{} data bytes do not encode (pad {pad})", cd.data.len()));
        assert_eq!(len, ChannelData::encoded_len(cd.data.len(), pad));
        if pad {
            assert_eq!(len % 4, 0);
        }
        let again = ChannelData::decode(&out[..len]).expect("re-encoded ChannelData decodes");
        assert_eq!(again.channel, cd.channel);
        assert_eq!(again.data, cd.data);
    }
});
