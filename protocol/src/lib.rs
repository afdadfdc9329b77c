//! Sans-IO core of Quarry's Stratum V1 pool and miner: no sockets, no runtime.
//!
//! Everything here is plain data and functions, so the pool, the miner and the
//! tests share one implementation of the wire and of the share math.
//!
//! # Layout
//! - [`codec`]: the bounded line codec (tokio-util `Decoder`/`Encoder`).
//! - [`jsonrpc`]: ids, classification of a line into request, notification or
//!   response, and reply formatting.
//! - [`messages`]: typed Stratum messages in both directions and their results.
//! - [`reject`]: error codes 20–25 and the three reject encodings of the field.
//! - [`fields`]: one newtype per wire field with its own byte order.
//! - [`share`]: coinbase and header assembly, BIP310 version rolling.
//! - [`merkle`]: Stratum merkle branches and roots.
//! - [`target`]: difficulty ⇄ target, compact nBits, hash difficulty, hashrate.
//! - [`hash`]: sha256d, the proof-of-work and merkle hash.
//! - `logging` (feature `logging`, not sans-IO): the binaries' shared log and
//!   tokio-console set-up.
//!
//! The wire rules follow `STRATUM.md` (the project's verified protocol reference).

pub mod codec;
pub mod fields;
pub mod hash;
pub mod jsonrpc;
#[cfg(feature = "logging")]
pub mod logging;
pub mod merkle;
pub mod messages;
pub mod reject;
pub mod share;
pub mod sv2;
pub mod target;

pub use codec::{CodecError, LineCodec};
pub use fields::{Extranonce, FieldError, HexBytes, HexU32Be, JobId, PrevHash, RawHash};
pub use jsonrpc::{Call, Id, Message, Response, WireLine};
pub use messages::{ClientRequest, Notify, ServerMessage, Submit};
pub use reject::{ErrorCode, Reply, StratumError};
pub use target::Difficulty;
