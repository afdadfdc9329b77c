//! One newtype per Stratum wire field with its own encoding.
//!
//! Each type has exactly one parse (`FromStr`) and one format (`Display`), and
//! serializes as the same string in JSON. See STRATUM.md §5 for the byte orders.

use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wire field that could not be parsed; names the field and the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The text has the wrong number of characters.
    #[error("{field}: expected {expected} hex characters, got {got} in {input:?}")]
    Length {
        field: &'static str,
        expected: String,
        got: usize,
        input: String,
    },
    /// The text is not hexadecimal.
    #[error("{field}: not hex: {input:?}")]
    NotHex { field: &'static str, input: String },
    /// The text is not a valid job id.
    #[error("job id: must be 1..={max} printable ASCII characters, got {input:?}")]
    JobId { max: usize, input: String },
}

/// Truncates peer input before it is quoted in an error message.
fn excerpt(input: &str) -> String {
    input.chars().take(80).collect()
}

fn decode_hex_into(field: &'static str, input: &str, out: &mut [u8]) -> Result<(), FieldError> {
    if input.len() != out.len() * 2 {
        return Err(FieldError::Length {
            field,
            expected: (out.len() * 2).to_string(),
            got: input.len(),
            input: excerpt(input),
        });
    }
    hex::decode_to_slice(input, out).map_err(|_| FieldError::NotHex {
        field,
        input: excerpt(input),
    })
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A u32 sent as 8 big-endian hex digits (`version`, `nbits`, `ntime`, `nonce`,
/// version bits), stored as its value. In the header it is written little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HexU32Be(pub u32);

impl FromStr for HexU32Be {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 4];
        decode_hex_into("u32 field", s, &mut bytes)?;
        Ok(Self(u32::from_be_bytes(bytes)))
    }
}

impl fmt::Display for HexU32Be {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}
string_serde!(HexU32Be);

/// The previous-block hash as `mining.notify` carries it: the header's 32 bytes
/// with every 4-byte word byte-reversed. Kept in that "stratum order".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrevHash([u8; 32]);

impl PrevHash {
    /// Builds the notify form from a block hash.
    pub fn from_block_hash(hash: BlockHash) -> Self {
        Self(swap_words(hash.to_byte_array()))
    }

    /// Returns the block hash this field names.
    pub fn to_block_hash(self) -> BlockHash {
        BlockHash::from_byte_array(self.header_bytes())
    }

    /// The 32 bytes as they stand in the block header (internal byte order).
    pub fn header_bytes(self) -> [u8; 32] {
        swap_words(self.0)
    }
}

fn swap_words(mut bytes: [u8; 32]) -> [u8; 32] {
    for word in bytes.chunks_exact_mut(4) {
        word.reverse();
    }
    bytes
}

impl FromStr for PrevHash {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        decode_hex_into("prevhash", s, &mut bytes)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for PrevHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
string_serde!(PrevHash);

/// A 32-byte hash in raw byte order, as merkle branch entries are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawHash(pub [u8; 32]);

impl FromStr for RawHash {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        decode_hex_into("merkle branch", s, &mut bytes)?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for RawHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
string_serde!(RawHash);

/// Hex-encoded bytes of any length (coinb1, coinb2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl FromStr for HexBytes {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        hex::decode(s).map(Self).map_err(|_| FieldError::NotHex {
            field: "hex bytes",
            input: excerpt(s),
        })
    }
}

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}
string_serde!(HexBytes);

/// An extranonce (extranonce1 or extranonce2): raw bytes inserted into the coinbase
/// as they are, at most [`Extranonce::MAX_LEN`] bytes. Stored inline, never allocated.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Extranonce {
    len: u8,
    bytes: [u8; Extranonce::MAX_LEN],
}

impl Extranonce {
    /// The longest extranonce accepted from any peer.
    pub const MAX_LEN: usize = 32;

    /// Wraps `bytes`, or `None` when longer than [`Self::MAX_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut out = Self::default();
        out.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        out.len = bytes.len() as u8;
        Some(out)
    }

    /// The extranonce whose little-endian counter value is `counter`, `size` bytes long
    /// (the way miners roll extranonce2: first byte least significant).
    pub fn from_counter(counter: u64, size: usize) -> Self {
        let mut out = Self {
            len: size.min(Self::MAX_LEN) as u8,
            ..Self::default()
        };
        let le = counter.to_le_bytes();
        let n = le.len().min(out.len as usize);
        out.bytes[..n].copy_from_slice(&le[..n]);
        out
    }

    /// Parses hex that must decode to exactly `size` bytes.
    ///
    /// # Errors
    /// [`FieldError::Length`] when the length differs, [`FieldError::NotHex`] for non-hex.
    pub fn parse_sized(s: &str, size: usize) -> Result<Self, FieldError> {
        if size > Self::MAX_LEN {
            return Err(FieldError::Length {
                field: "extranonce",
                expected: format!("at most {}", Self::MAX_LEN * 2),
                got: s.len(),
                input: excerpt(s),
            });
        }
        let mut out = Self {
            len: size as u8,
            ..Self::default()
        };
        decode_hex_into("extranonce", s, &mut out.bytes[..size])?;
        Ok(out)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromStr for Extranonce {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.len().is_multiple_of(2) || s.len() > Self::MAX_LEN * 2 {
            return Err(FieldError::Length {
                field: "extranonce",
                expected: format!("an even number up to {}", Self::MAX_LEN * 2),
                got: s.len(),
                input: excerpt(s),
            });
        }
        Self::parse_sized(s, s.len() / 2)
    }
}

impl fmt::Display for Extranonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

impl fmt::Debug for Extranonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extranonce({self})")
    }
}
string_serde!(Extranonce);

/// A job id: opaque to miners, at most [`JobId::MAX_LEN`] printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// The longest job id accepted from any peer.
    pub const MAX_LEN: usize = 64;

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok =
            !s.is_empty() && s.len() <= Self::MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(FieldError::JobId {
                max: Self::MAX_LEN,
                input: excerpt(s),
            })
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(JobId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hex_u32_round_trips(value: u32) {
            let text = HexU32Be(value).to_string();
            prop_assert_eq!(text.len(), 8);
            prop_assert_eq!(text.parse::<HexU32Be>().unwrap(), HexU32Be(value));
            prop_assert_eq!(text.to_uppercase().parse::<HexU32Be>().unwrap(), HexU32Be(value));
        }

        #[test]
        fn prevhash_round_trips(bytes: [u8; 32]) {
            let hash = BlockHash::from_byte_array(bytes);
            let field = PrevHash::from_block_hash(hash);
            prop_assert_eq!(field.to_block_hash(), hash);
            prop_assert_eq!(field.to_string().parse::<PrevHash>().unwrap(), field);
        }

        #[test]
        fn extranonce_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..=32)) {
            let nonce = Extranonce::new(&bytes).unwrap();
            prop_assert_eq!(nonce.as_bytes(), &bytes[..]);
            prop_assert_eq!(nonce.to_string().parse::<Extranonce>().unwrap(), nonce);
            prop_assert_eq!(Extranonce::parse_sized(&nonce.to_string(), bytes.len()).unwrap(), nonce);
        }

        #[test]
        fn job_id_round_trips(id in "[!-~]{1,64}") {
            let parsed: JobId = id.parse().unwrap();
            prop_assert_eq!(parsed.to_string(), id);
        }

        #[test]
        fn hex_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let field = HexBytes(bytes);
            prop_assert_eq!(field.to_string().parse::<HexBytes>().unwrap(), field);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            let _ = text.parse::<HexU32Be>();
            let _ = text.parse::<PrevHash>();
            let _ = text.parse::<Extranonce>();
            let _ = text.parse::<JobId>();
            let _ = Extranonce::parse_sized(&text, 4);
        }
    }

    #[test]
    fn block_100000_prevhash_is_word_swapped() {
        let display = "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250";
        let hash: BlockHash = display.parse().unwrap();
        let field = PrevHash::from_block_hash(hash);
        assert_eq!(
            field.to_string(),
            "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000"
        );
    }

    #[test]
    fn extranonce_counter_is_little_endian() {
        assert_eq!(Extranonce::from_counter(1, 4).to_string(), "01000000");
        assert_eq!(
            Extranonce::from_counter(0xffff_fffe, 4).to_string(),
            "feffffff"
        );
        assert_eq!(Extranonce::from_counter(0x0102, 2).to_string(), "0201");
    }

    #[test]
    fn wrong_lengths_name_the_input() {
        let err = "abc".parse::<HexU32Be>().unwrap_err();
        assert!(err.to_string().contains("\"abc\""), "{err}");
        let err = Extranonce::parse_sized("0011", 4).unwrap_err();
        assert!(matches!(err, FieldError::Length { got: 4, .. }), "{err}");
        assert!(matches!(
            "zz".parse::<HexBytes>(),
            Err(FieldError::NotHex { .. })
        ));
        assert!("".parse::<JobId>().is_err());
        assert!("a b".parse::<JobId>().is_err());
        assert!("x".repeat(65).parse::<JobId>().is_err());
    }
}
