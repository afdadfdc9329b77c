//! The encrypted Stratum V2 transport as a tokio-util [`Decoder`]: the Noise NX
//! handshake (either role), then SV2 frames, through SRI's `codec_sv2` and
//! `noise_sv2`. Reads are bounded: a frame that needs more than the codec's
//! limit is an error before it is buffered, whatever its header declares.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use codec_sv2::{
    Decoded, Decrypted, Handshake, MessageFrame, NoiseDecoder, NoiseEncoder, TransportDecryptState,
    TransportEncryptState,
};
use framing_sv2::framing::{EncodableFrame, SerializedFrame};
use framing_sv2::header::Header;
use noise_sv2::{Initiator, Responder, ELLSWIFT_ENCODING_SIZE};
use parsers_sv2::{AnyMessage, Tlv, TlvList};
use tokio_util::codec::Decoder;

use super::keys::{AuthorityKeypair, AuthorityPublicKey};
use super::shared::SharedFrame;
use super::Sv2Error;

/// What the peer's bytes amounted to.
#[derive(Debug)]
pub enum Incoming {
    /// (Responder) the initiator's handshake message arrived: write this reply;
    /// frames follow.
    Reply(Vec<u8>),
    /// (Initiator) the responder proved the pinned authority key; frames follow.
    Established,
    Frame(Frame),
}

/// One decrypted frame.
#[derive(Debug)]
pub struct Frame {
    header: Header,
    payload: Vec<u8>,
}

impl Frame {
    /// The message type byte.
    pub fn msg_type(&self) -> u8 {
        self.header.msg_type()
    }

    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        parsers_sv2::message_type_to_name(self.msg_type())
    }

    /// Parses the payload as the message its header names.
    ///
    /// # Errors
    /// An unknown type, or a payload that is not that message.
    pub fn message(&mut self) -> Result<AnyMessage<'_>, Sv2Error> {
        let name = self.name();
        AnyMessage::try_from((self.header, &mut self.payload[..]))
            .map_err(|err| Sv2Error::Malformed(format!("{name}: {err:?}")))
    }

    /// Parses the payload as the message its header names, and the TLV fields
    /// after it that belong to the `negotiated` extensions.
    ///
    /// # Errors
    /// An unknown type, or a payload that is not that message.
    pub fn message_with_tlvs(
        &mut self,
        negotiated: &[u16],
    ) -> Result<(AnyMessage<'_>, Vec<Tlv>), Sv2Error> {
        let name = self.name();
        parsers_sv2::parse_message_frame_with_tlvs(self.header, &mut self.payload, negotiated)
            .map(|(message, tlvs)| (message, tlvs.unwrap_or_default()))
            .map_err(|err| Sv2Error::Malformed(format!("{name}: {err:?}")))
    }
}

enum State {
    /// A responder waiting for the initiator's ephemeral key.
    Responding(Handshake<Responder>),
    /// An initiator waiting for the responder's reply.
    Initiating(Handshake<codec_sv2::InitiatorSent>),
    Transport {
        encrypt: TransportEncryptState,
        decrypt: TransportDecryptState,
    },
    /// A decryption or handshake failed: the connection must end.
    Broken,
}

enum Step {
    /// The decoder needs this many more bytes (0: call again).
    Need(usize),
    Done(Incoming),
}

/// The codec of one connection, from the handshake on.
pub struct NoiseCodec {
    decoder: NoiseDecoder,
    encoder: NoiseEncoder,
    state: State,
    /// Encrypted bytes taken toward the frame being read.
    reading: usize,
    /// The most encrypted bytes one frame (header and MACs included) may take.
    max_frame: usize,
}

impl NoiseCodec {
    /// A responder (a pool) proving `authority` with a certificate valid for `validity`.
    ///
    /// # Errors
    /// The keypair is inconsistent.
    pub fn responder(
        authority: &AuthorityKeypair,
        validity: Duration,
        max_frame: usize,
    ) -> Result<NoiseCodec, Sv2Error> {
        let responder =
            Responder::from_authority_kp(&authority.public.0, &authority.secret, validity)
                .map_err(|err| Sv2Error::Handshake(format!("{err:?}")))?;
        Ok(NoiseCodec::new(
            State::Responding(Handshake::responder(responder)),
            max_frame,
        ))
    }

    /// An initiator (a miner) that accepts only a responder proving `authority`;
    /// returns the codec and the first handshake message to write.
    ///
    /// # Errors
    /// The key is not a valid x-only public key.
    pub fn initiator(
        authority: AuthorityPublicKey,
        max_frame: usize,
    ) -> Result<(NoiseCodec, Vec<u8>), Sv2Error> {
        let initiator = Initiator::from_raw_k(authority.0)
            .map_err(|err| Sv2Error::Handshake(format!("{err:?}")))?;
        let (first, sent) = Handshake::initiator(initiator)
            .step_0()
            .map_err(|err| Sv2Error::Handshake(format!("{err:?}")))?;
        let mut codec = NoiseCodec::new(State::Initiating(sent), max_frame);
        let first = codec.encoder.encode_handshake(first);
        Ok((codec, first))
    }

    fn new(state: State, max_frame: usize) -> NoiseCodec {
        NoiseCodec {
            decoder: NoiseDecoder::new(),
            encoder: NoiseEncoder::new(),
            state,
            reading: 0,
            max_frame,
        }
    }

    /// Whether the handshake is over and frames flow.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport { .. })
    }

    /// Encrypts `message` into one frame's bytes.
    ///
    /// # Errors
    /// Before the handshake completed, or a message too large for a frame.
    pub fn encode(&mut self, message: AnyMessage<'_>) -> Result<Vec<u8>, Sv2Error> {
        let frame =
            MessageFrame::try_from(message).map_err(|err| Sv2Error::Encode(format!("{err:?}")))?;
        self.encrypt(frame)
    }

    /// Encrypts `message` with `tlvs` (fields of negotiated extensions) after it
    /// into one frame's bytes.
    ///
    /// # Errors
    /// Before the handshake completed, or a message too large for a frame.
    pub fn encode_with_tlvs(
        &mut self,
        message: AnyMessage<'_>,
        tlvs: &[Tlv],
    ) -> Result<Vec<u8>, Sv2Error> {
        let bytes = TlvList::from_slice(tlvs)
            .and_then(|list| list.build_frame_bytes_with_tlvs(message))
            .map_err(|err| Sv2Error::Encode(format!("{err:?}")))?;
        let frame = SerializedFrame::from_bytes(bytes)
            .map_err(|err| Sv2Error::Encode(format!("{err:?}")))?;
        self.encrypt(frame)
    }

    /// Encrypts `frame` for `channel_id` into one frame's bytes.
    ///
    /// # Errors
    /// Before the handshake completed.
    pub fn encode_shared(
        &mut self,
        frame: &SharedFrame,
        channel_id: u32,
    ) -> Result<Vec<u8>, Sv2Error> {
        self.encrypt(frame.on(channel_id))
    }

    fn encrypt(&mut self, frame: impl EncodableFrame) -> Result<Vec<u8>, Sv2Error> {
        let State::Transport { encrypt, .. } = &mut self.state else {
            return Err(Sv2Error::NotEstablished);
        };
        self.encoder
            .encode_transport(frame, encrypt)
            .map_err(|err| Sv2Error::Encode(format!("{err:?}")))
    }

    fn step(&mut self) -> Result<Step, Sv2Error> {
        match std::mem::replace(&mut self.state, State::Broken) {
            State::Responding(handshake) => {
                match self.decoder.next_handshake_frame::<Responder>()? {
                    Decoded::Incomplete(n) => {
                        self.state = State::Responding(handshake);
                        Ok(Step::Need(n))
                    }
                    Decoded::Frame(message) => {
                        let theirs: [u8; ELLSWIFT_ENCODING_SIZE] =
                            message.payload().try_into().map_err(|_| {
                                Sv2Error::Handshake("short handshake message".to_owned())
                            })?;
                        let (reply, transport) = handshake
                            .step_1(theirs)
                            .map_err(|err| Sv2Error::Handshake(format!("{err:?}")))?;
                        let reply = self.encoder.encode_handshake(reply);
                        self.established(transport);
                        Ok(Step::Done(Incoming::Reply(reply)))
                    }
                }
            }
            State::Initiating(handshake) => {
                match self
                    .decoder
                    .next_handshake_frame::<codec_sv2::InitiatorSent>()?
                {
                    Decoded::Incomplete(n) => {
                        self.state = State::Initiating(handshake);
                        Ok(Step::Need(n))
                    }
                    Decoded::Frame(message) => {
                        let reply = message.payload().try_into().map_err(|_| {
                            Sv2Error::Handshake("short handshake message".to_owned())
                        })?;
                        let transport = handshake.step_2(reply).map_err(|err| {
                            Sv2Error::Handshake(format!(
                                "the pool did not prove the pinned authority key: {err:?}"
                            ))
                        })?;
                        self.established(transport);
                        Ok(Step::Done(Incoming::Established))
                    }
                }
            }
            State::Transport { encrypt, decrypt } => {
                match self.decoder.next_transport_frame(decrypt)? {
                    Decrypted::Incomplete(n, decrypt) => {
                        self.state = State::Transport { encrypt, decrypt };
                        Ok(Step::Need(n))
                    }
                    Decrypted::Frame(mut frame, decrypt) => {
                        self.state = State::Transport { encrypt, decrypt };
                        self.reading = 0;
                        Ok(Step::Done(Incoming::Frame(Frame {
                            header: frame.header(),
                            payload: frame.payload().to_vec(),
                        })))
                    }
                }
            }
            State::Broken => Err(Sv2Error::Broken),
        }
    }

    fn established(&mut self, transport: codec_sv2::Transport) {
        let (encrypt, decrypt) = transport.split();
        self.state = State::Transport { encrypt, decrypt };
        self.reading = 0;
    }
}

impl Decoder for NoiseCodec {
    type Item = Incoming;
    type Error = Sv2Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, Sv2Error> {
        loop {
            match self.step()? {
                Step::Done(incoming) => return Ok(Some(incoming)),
                Step::Need(0) => {}
                Step::Need(n) => {
                    if self.reading + n > self.max_frame {
                        self.state = State::Broken;
                        return Err(Sv2Error::FrameTooLarge {
                            max: self.max_frame,
                        });
                    }
                    if src.len() < n {
                        src.reserve(n - src.len());
                        return Ok(None);
                    }
                    self.decoder.writable().copy_from_slice(&src[..n]);
                    src.advance(n);
                    self.reading += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
