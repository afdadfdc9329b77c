//! A channel message serialized once and sent on many channels: a new job goes
//! to every channel alike but for the channel id that opens its payload, so the
//! pool serializes it once (with SRI's encoder) and each channel's encryption
//! copies the bytes with its own id in place.

use framing_sv2::framing::{EncodableFrame, MessageFrame};
use framing_sv2::header::Header;
use parsers_sv2::AnyMessage;

use super::Sv2Error;

/// Where a channel message's payload, and so its channel id, starts.
const CHANNEL_ID_AT: usize = Header::SIZE;
const CHANNEL_ID_END: usize = CHANNEL_ID_AT + 4;

/// A whole plaintext frame (header and payload) of a channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFrame {
    bytes: Vec<u8>,
}

impl SharedFrame {
    /// Serializes `message`, whichever channel id it names.
    ///
    /// # Errors
    /// Not a channel message, or too large for a frame.
    pub fn new(message: AnyMessage<'_>) -> Result<SharedFrame, Sv2Error> {
        let frame =
            MessageFrame::try_from(message).map_err(|err| Sv2Error::Encode(format!("{err:?}")))?;
        if !frame.header().channel_msg() {
            return Err(Sv2Error::Encode("not a channel message".to_owned()));
        }
        let mut bytes = vec![0; frame.encoded_length()];
        frame
            .encode_into(&mut bytes)
            .map_err(|err| Sv2Error::Encode(format!("{err:?}")))?;
        if bytes.len() < CHANNEL_ID_END {
            return Err(Sv2Error::Encode("no channel id".to_owned()));
        }
        Ok(SharedFrame { bytes })
    }

    /// This frame for `channel_id`, for the encoder.
    pub(crate) fn on(&self, channel_id: u32) -> OnChannel<'_> {
        OnChannel {
            frame: self,
            channel_id,
        }
    }
}

/// A [`SharedFrame`] with one channel's id.
pub(crate) struct OnChannel<'a> {
    frame: &'a SharedFrame,
    channel_id: u32,
}

impl EncodableFrame for OnChannel<'_> {
    fn encoded_length(&self) -> usize {
        self.frame.bytes.len()
    }

    fn encode_into(self, dst: &mut [u8]) -> Result<(), framing_sv2::Error> {
        let bytes = &self.frame.bytes;
        if dst.len() != bytes.len() {
            return Err(framing_sv2::Error::UnexpectedDestinationLength {
                expected: bytes.len(),
                actual: dst.len(),
            });
        }
        dst.copy_from_slice(bytes);
        dst[CHANNEL_ID_AT..CHANNEL_ID_END].copy_from_slice(&self.channel_id.to_le_bytes());
        Ok(())
    }
}
