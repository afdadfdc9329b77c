//! Stratum V2 without IO: the Noise NX transport ([`codec`]), authority keys
//! ([`keys`]) and frames serialized once for many channels ([`shared`]).
//! Messages and their encoding are SRI's crates, re-exported here so the pool,
//! the miner and the tests name one version of them.

pub mod codec;
pub mod keys;
pub mod shared;

pub use binary_sv2;
pub use codec::{Frame, Incoming, NoiseCodec};
pub use common_messages_sv2;
pub use extensions_sv2;
pub use keys::{AuthorityKeypair, AuthorityPublicKey, KeyError};
pub use mining_sv2;
pub use parsers_sv2::{
    self, AnyMessage, CommonMessages, Extensions, ExtensionsNegotiation, Mining, Tlv, TlvList,
};
pub use shared::SharedFrame;

/// Why a V2 connection cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Sv2Error {
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    #[error("a frame needs more than {max} bytes")]
    FrameTooLarge { max: usize },
    #[error("cannot decrypt or frame the input: {0}")]
    Codec(String),
    #[error("the connection failed earlier")]
    Broken,
    #[error("a message before the handshake completed")]
    NotEstablished,
    #[error("malformed message {0}")]
    Malformed(String),
    #[error("cannot encode a message: {0}")]
    Encode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<codec_sv2::Error> for Sv2Error {
    fn from(err: codec_sv2::Error) -> Sv2Error {
        Sv2Error::Codec(format!("{err:?}"))
    }
}
