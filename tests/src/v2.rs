//! A raw Stratum V2 client for tests: the Noise initiator and SV2 frames, over TCP.
//! It says exactly what the test tells it to, including what no miner should.

use std::net::SocketAddr;
use std::time::Duration;

use bitcoin::hashes::Hash;
use futures_util::StreamExt;
use quarry_protocol::fields::{HexBytes, HexU32Be, PrevHash, RawHash};
use quarry_protocol::messages::Notify;
use quarry_protocol::sv2::binary_sv2::{Seq064K, B032, U256};
use quarry_protocol::sv2::common_messages_sv2::{Protocol, SetupConnection};
use quarry_protocol::sv2::extensions_sv2::RequestExtensions;
use quarry_protocol::sv2::mining_sv2::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesExtended,
    SubmitSharesStandard,
};
use quarry_protocol::sv2::{
    AnyMessage, AuthorityPublicKey, CommonMessages, Extensions, ExtensionsNegotiation, Incoming,
    Mining, NoiseCodec, Sv2Error, Tlv,
};
use quarry_protocol::{Difficulty, Extranonce};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::grind::Share;

/// How long any expected message may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest frame the client reads (jobs carry whole coinbases).
const MAX_FRAME: usize = 1 << 18;

/// What the pool sent, reduced to what tests look at.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    SetupSuccess,
    SetupError(String),
    Opened {
        channel: u32,
        target: [u8; 32],
        prefix: Vec<u8>,
        /// The extranonce a share carries (0 for a standard channel).
        size: usize,
    },
    OpenError(String),
    /// A job; `future` until a `SetNewPrevHash` names it.
    ExtendedJob {
        job: u32,
        future: bool,
        version: u32,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        path: Vec<[u8; 32]>,
        ntime: Option<u32>,
    },
    StandardJob {
        job: u32,
        future: bool,
        version: u32,
        root: [u8; 32],
        ntime: Option<u32>,
    },
    PrevHash {
        job: u32,
        prev: [u8; 32],
        ntime: u32,
        nbits: u32,
    },
    Target([u8; 32]),
    Success {
        last: u32,
        count: u32,
    },
    ShareError {
        sequence: u32,
        code: String,
    },
    UpdateError(String),
    /// `RequestExtensions.Success`: the extensions the pool speaks.
    ExtensionsSupported {
        request: u16,
        supported: Vec<u16>,
    },
    /// `RequestExtensions.Error`: those it does not.
    ExtensionsRefused {
        request: u16,
        unsupported: Vec<u16>,
    },
    Other(String),
}

/// One V2 connection after its handshake.
pub struct V2Client {
    read: FramedRead<OwnedReadHalf, NoiseCodec>,
    write: OwnedWriteHalf,
}

impl V2Client {
    /// Connects to `addr` and runs the handshake pinning `authority`.
    ///
    /// # Errors
    /// The pool did not prove the key, or the connection failed.
    pub async fn connect(addr: SocketAddr, authority: &str) -> Result<V2Client, Sv2Error> {
        let authority: AuthorityPublicKey = authority
            .parse()
            .map_err(|err| Sv2Error::Handshake(format!("{err}")))?;
        V2Client::over(TcpStream::connect(addr).await?, authority).await
    }

    /// Runs the handshake pinning `authority` over a connected `stream`.
    ///
    /// # Errors
    /// The pool did not prove the key, or the connection failed.
    pub async fn over(
        stream: TcpStream,
        authority: AuthorityPublicKey,
    ) -> Result<V2Client, Sv2Error> {
        let (codec, first) = NoiseCodec::initiator(authority, MAX_FRAME)?;
        let (read, mut write) = stream.into_split();
        write.write_all(&first).await?;
        let mut read = FramedRead::new(read, codec);
        match tokio::time::timeout(TIMEOUT, read.next()).await {
            Ok(Some(Ok(Incoming::Established))) => Ok(V2Client { read, write }),
            Ok(Some(Err(err))) => Err(err),
            other => Err(Sv2Error::Handshake(format!(
                "no handshake reply: {other:?}"
            ))),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, message: AnyMessage<'_>) {
        let bytes = self.encode(message);
        self.send_raw(&bytes).await.expect("writing to the pool");
    }

    /// Encrypts one message into the bytes to write (with [`V2Client::send_raw`]).
    pub fn encode(&mut self, message: AnyMessage<'_>) -> Vec<u8> {
        self.read.decoder_mut().encode(message).expect("encodable")
    }

    /// Writes raw bytes (anything at all).
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write.write_all(bytes).await
    }

    /// The next message, `None` once the pool closed the connection (or broke it).
    pub async fn recv(&mut self) -> Option<Reply> {
        match tokio::time::timeout(TIMEOUT, self.next_reply()).await {
            Err(_) => panic!("no message from the pool within {TIMEOUT:?}"),
            Ok(reply) => reply,
        }
    }

    /// The next message, however long it takes; `None` once the connection ended.
    /// Cancel-safe.
    pub async fn next_reply(&mut self) -> Option<Reply> {
        match self.read.next().await {
            None | Some(Err(_)) => None,
            Some(Ok(Incoming::Frame(mut frame))) => frame.message().ok().map(reply),
            Some(Ok(_)) => None,
        }
    }

    /// Waits for the message `pick` takes, passing over others; panics if the
    /// connection ends first.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&Reply) -> Option<T>) -> T {
        loop {
            let reply = self.recv().await.expect("the pool closed the connection");
            if let Some(found) = pick(&reply) {
                return found;
            }
        }
    }

    /// Reads until the pool closes the connection; what it sent meanwhile.
    pub async fn until_closed(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(reply) = self.recv().await {
            replies.push(reply);
        }
        replies
    }

    /// `RequestExtensions` number `request` for `extensions`.
    pub async fn request_extensions(&mut self, request: u16, extensions: &[u16]) {
        let message = RequestExtensions {
            request_id: request,
            requested_extensions: Seq064K::new(extensions.to_vec()).expect("a short list"),
        };
        let message = ExtensionsNegotiation::RequestExtensions(message);
        self.send(AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
            message,
        )))
        .await;
    }

    /// `SetupConnection` for `protocol` with `flags`.
    pub async fn setup_with(&mut self, protocol: Protocol, flags: u32) {
        let setup = SetupConnection {
            protocol,
            min_version: 2,
            max_version: 2,
            flags,
            endpoint_host: "127.0.0.1".try_into().unwrap(),
            endpoint_port: 3336,
            vendor: "quarry-tests".try_into().unwrap(),
            hardware_version: "".try_into().unwrap(),
            firmware: "".try_into().unwrap(),
            device_id: "".try_into().unwrap(),
        };
        self.send(AnyMessage::Common(CommonMessages::SetupConnection(setup)))
            .await;
    }

    /// Sets the connection up for mining; panics unless the pool agrees.
    pub async fn setup(&mut self) {
        self.try_setup().await.unwrap();
    }

    /// Sets the connection up for mining.
    ///
    /// # Errors
    /// The pool refused, or closed the connection.
    pub async fn try_setup(&mut self) -> anyhow::Result<()> {
        self.setup_with(Protocol::MiningProtocol, 0).await;
        match self.next_reply().await {
            Some(Reply::SetupSuccess) => Ok(()),
            other => anyhow::bail!("SetupConnection: {other:?}"),
        }
    }

    /// Asks for an extended channel for `user`.
    pub async fn open_extended(&mut self, request: u32, user: &str, min_extranonce: u16) {
        let max = [0xff; 32];
        let open = OpenExtendedMiningChannel {
            request_id: request,
            user_identity: user.try_into().unwrap(),
            nominal_hash_rate: 0.0,
            max_target: U256::from(&max),
            min_extranonce_size: min_extranonce,
        };
        self.send(AnyMessage::Mining(Mining::OpenExtendedMiningChannel(open)))
            .await;
    }

    /// Asks for a standard channel for `user`.
    pub async fn open_standard(&mut self, request: u32, user: &str) {
        let max = [0xff; 32];
        let open = OpenStandardMiningChannel {
            request_id: request,
            user_identity: user.try_into().unwrap(),
            nominal_hash_rate: 0.0,
            max_target: U256::from(&max),
        };
        self.send(AnyMessage::Mining(Mining::OpenStandardMiningChannel(open)))
            .await;
    }

    /// Submits an extended-channel share.
    pub async fn submit_extended(&mut self, channel: u32, sequence: u32, job: u32, share: &Share) {
        let bytes = self.encode_share(channel, sequence, job, share);
        self.send_raw(&bytes).await.expect("writing to the pool");
    }

    /// An extended-channel share, encrypted, to write later.
    pub fn encode_share(
        &mut self,
        channel: u32,
        sequence: u32,
        job: u32,
        share: &Share,
    ) -> Vec<u8> {
        self.encode_share_as(channel, sequence, job, share, None)
    }

    /// An extended-channel share naming `worker` (worker-specific hashrate
    /// tracking's TLV field), encrypted.
    pub fn encode_share_as(
        &mut self,
        channel: u32,
        sequence: u32,
        job: u32,
        share: &Share,
        worker: Option<&str>,
    ) -> Vec<u8> {
        let extranonce = share.fields.extranonce2.as_bytes().to_vec();
        let submit = SubmitSharesExtended {
            channel_id: channel,
            sequence_number: sequence,
            job_id: job,
            nonce: share.fields.nonce,
            ntime: share.fields.ntime,
            version: share.fields.version,
            extranonce: B032::new(&extranonce).unwrap(),
        };
        let message = AnyMessage::Mining(Mining::SubmitSharesExtended(submit));
        let tlvs: Vec<Tlv> = worker
            .map(|name| Tlv::new(2, 1, name.as_bytes().to_vec()))
            .into_iter()
            .collect();
        self.read
            .decoder_mut()
            .encode_with_tlvs(message, &tlvs)
            .expect("encodable")
    }

    /// Submits a standard-channel share.
    pub async fn submit_standard(&mut self, channel: u32, sequence: u32, job: u32, share: &Share) {
        let submit = SubmitSharesStandard {
            channel_id: channel,
            sequence_number: sequence,
            job_id: job,
            nonce: share.fields.nonce,
            ntime: share.fields.ntime,
            version: share.fields.version,
        };
        self.send(AnyMessage::Mining(Mining::SubmitSharesStandard(submit)))
            .await;
    }
}

/// An extended job as a V1 notify, to grind shares on with the protocol crate's
/// share math: the coinbase halves around the channel's extranonce prefix (the
/// notify's extranonce1) and the share's extranonce (its extranonce2).
pub fn as_notify(job: &Reply, prev_hash: &Reply) -> Notify {
    let (
        Reply::ExtendedJob {
            version,
            prefix,
            suffix,
            path,
            ..
        },
        Reply::PrevHash {
            prev, ntime, nbits, ..
        },
    ) = (job, prev_hash)
    else {
        panic!("not a job and its prev hash: {job:?} {prev_hash:?}");
    };
    Notify {
        job_id: "1".parse().unwrap(),
        prevhash: PrevHash::from_block_hash(bitcoin::BlockHash::from_byte_array(*prev)),
        coinb1: HexBytes(prefix.clone()),
        coinb2: HexBytes(suffix.clone()),
        merkle_branch: path.iter().map(|h| RawHash(*h)).collect(),
        version: HexU32Be(*version),
        nbits: HexU32Be(*nbits),
        ntime: HexU32Be(*ntime),
        clean_jobs: true,
    }
}

/// The difficulty of a V2 target (32 bytes, little-endian).
pub fn target_difficulty(target: &[u8; 32]) -> Difficulty {
    Difficulty::from_target(bitcoin::Target::from_le_bytes(*target))
}

/// An extranonce of `size` zero bytes but its last, `n`.
pub fn extranonce(size: usize, n: u8) -> Extranonce {
    let mut bytes = vec![0u8; size];
    if let Some(last) = bytes.last_mut() {
        *last = n;
    }
    Extranonce::new(&bytes).unwrap()
}

/// Bytes that are no frame at all, `len` of them.
pub fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn reply(message: AnyMessage<'_>) -> Reply {
    match message {
        AnyMessage::Common(CommonMessages::SetupConnectionSuccess(_)) => Reply::SetupSuccess,
        AnyMessage::Common(CommonMessages::SetupConnectionError(e)) => {
            Reply::SetupError(e.error_code.as_utf8_or_hex())
        }
        AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(m)) => Reply::Opened {
            channel: m.channel_id,
            target: m.target.to_array(),
            prefix: m.extranonce_prefix.as_bytes().to_vec(),
            size: usize::from(m.extranonce_size),
        },
        AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(m)) => Reply::Opened {
            channel: m.channel_id,
            target: m.target.to_array(),
            prefix: m.extranonce_prefix.as_bytes().to_vec(),
            size: 0,
        },
        AnyMessage::Mining(Mining::OpenMiningChannelError(e)) => {
            Reply::OpenError(e.error_code.as_utf8_or_hex())
        }
        AnyMessage::Mining(Mining::NewExtendedMiningJob(m)) => Reply::ExtendedJob {
            job: m.job_id,
            future: m.min_ntime.clone().into_inner().is_none(),
            ntime: m.min_ntime.into_inner(),
            version: m.version,
            prefix: m.coinbase_tx_prefix.as_bytes().to_vec(),
            suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
            path: m
                .merkle_path
                .into_inner()
                .into_iter()
                .map(|h| h.to_array())
                .collect(),
        },
        AnyMessage::Mining(Mining::NewMiningJob(m)) => Reply::StandardJob {
            job: m.job_id,
            future: m.min_ntime.clone().into_inner().is_none(),
            ntime: m.min_ntime.into_inner(),
            version: m.version,
            root: m.merkle_root.to_array(),
        },
        AnyMessage::Mining(Mining::SetNewPrevHash(m)) => Reply::PrevHash {
            job: m.job_id,
            prev: m.prev_hash.to_array(),
            ntime: m.min_ntime,
            nbits: m.nbits,
        },
        AnyMessage::Mining(Mining::SetTarget(m)) => Reply::Target(m.maximum_target.to_array()),
        AnyMessage::Mining(Mining::SubmitSharesSuccess(m)) => Reply::Success {
            last: m.last_sequence_number,
            count: m.new_submits_accepted_count,
        },
        AnyMessage::Mining(Mining::SubmitSharesError(e)) => Reply::ShareError {
            sequence: e.sequence_number,
            code: e.error_code.as_utf8_or_hex(),
        },
        AnyMessage::Mining(Mining::UpdateChannelError(e)) => {
            Reply::UpdateError(e.error_code.as_utf8_or_hex())
        }
        AnyMessage::Extensions(Extensions::ExtensionsNegotiation(m)) => match m {
            ExtensionsNegotiation::RequestExtensionsSuccess(m) => Reply::ExtensionsSupported {
                request: m.request_id,
                supported: m.supported_extensions.into_inner(),
            },
            ExtensionsNegotiation::RequestExtensionsError(m) => Reply::ExtensionsRefused {
                request: m.request_id,
                unsupported: m.unsupported_extensions.into_inner(),
            },
            other => Reply::Other(format!("{other:?}")),
        },
        other => Reply::Other(format!("{other:?}")),
    }
}
