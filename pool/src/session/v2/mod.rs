//! Stratum V2: one Noise-encrypted connection of binary frames, many channels.
//!
//! The pool is the Noise NX responder and proves its authority key; then the
//! miner (or a proxy such as SRI's translator) sets the connection up for the
//! mining protocol and opens standard (header-only) or extended channels. Each
//! channel is a miner to the rest of the pool: its own extranonce1 lease, vardiff,
//! worker and jobs remembered ([`Terms`]); its shares go through the same
//! [`Core`] as V1's. Acknowledgements are batched: every share one group commit
//! completes on a channel is answered by one `SubmitShares.Success`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common_messages_sv2::{
    has_work_selection, Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
};
use futures_util::StreamExt;
use mining_sv2::{SubmitSharesError, SubmitSharesSuccess};
use quarry_protocol::reject::ErrorCode;
use quarry_protocol::sv2::{
    common_messages_sv2, mining_sv2, AnyMessage, CommonMessages, Extensions, ExtensionsNegotiation,
    Incoming, Mining, NoiseCodec, SharedFrame, Sv2Error, Tlv,
};
use quarry_protocol::Extranonce;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::core::{AckDone, Core, Spent, Terms};
use super::drive::{drive, logged, Adapter};
use super::flush;
use crate::accounting::WorkerStats;
use crate::context::Context;
use crate::jobs::Announcement;
use crate::validate::Proposal;

/// The most encrypted bytes one incoming frame may take: the largest message a
/// miner sends (`SetupConnection`, five strings of up to 255 bytes) fits many times.
pub const MAX_FRAME: usize = 16 * 1024;
/// How long the certificate each handshake signs is valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(3600);
/// The most channels one connection may hold open.
const MAX_CHANNELS: usize = 256;
/// The connection's first read buffer: a handshake message or a share fits.
const READ_BUFFER: usize = 256;
/// The mining protocol's version.
const VERSION: u16 = 2;

/// Where a share's acknowledgement goes: its channel and sequence number.
type Ack = (u32, u32);

mod acks;
mod channels;
mod extensions;
mod jobs;

pub use jobs::frames;
use jobs::full_id;

use acks::Acks;
use extensions::{tracked_worker, MAX_TRACKED_WORKERS};

/// One channel: a miner to the rest of the pool.
struct Channel {
    /// Extended (the miner builds the coinbase) or standard (header-only).
    extended: bool,
    worker: Arc<WorkerStats>,
    terms: Terms,
    acks: Acks,
}

impl Channel {
    /// The channel's extranonce1: its lease's (every open channel has one).
    fn extranonce1(&self) -> Extranonce {
        self.terms
            .lease
            .as_ref()
            .map_or_else(Extranonce::default, crate::extranonce::Lease::extranonce)
    }
}

/// A standard channel's fixed extranonce2: `size` zero bytes.
fn standard_extranonce2(size: usize) -> Extranonce {
    Extranonce::from_counter(0, size)
}

struct Connection {
    core: Core<Ack>,
    connected_at: Instant,
    set_up: bool,
    channels: HashMap<u32, Channel>,
    next_channel: u32,
    /// The extensions negotiated (their TLV fields are read).
    extensions: Vec<u16>,
    out: Vec<Vec<u8>>,
}

/// Serves one V2 connection until it closes, errs, or the pool shuts down.
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let context = ctx.clone();
    logged(&context, peer, 2, |id| run(stream, peer, id, ctx)).await;
}

/// Runs the Noise handshake as responder, within the handshake timeout.
async fn handshake<S>(framed: &mut FramedRead<S, NoiseCodec>, ctx: &Context) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = match tokio::time::timeout(ctx.config.handshake_timeout, framed.next()).await {
        Err(_) => Err("noise handshake timed out".to_owned()),
        Ok(None) => Err("closed during the noise handshake".to_owned()),
        Ok(Some(Err(err))) => Err(err.to_string()),
        Ok(Some(Ok(Incoming::Reply(reply)))) => Ok(reply),
        Ok(Some(Ok(other))) => Err(format!("unexpected {other:?} in the handshake")),
    };
    ctx.metrics.sv2_handshake(reply.is_ok());
    flush(framed.get_mut(), &mut vec![reply?]).await
}

async fn run<S>(stream: S, peer: SocketAddr, id: u64, ctx: Arc<Context>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(authority) = &ctx.authority else {
        return Err("no authority key".to_owned());
    };
    let codec = NoiseCodec::responder(authority, CERT_VALIDITY, MAX_FRAME)
        .map_err(|err| err.to_string())?;
    let mut framed = FramedRead::with_capacity(stream, codec, READ_BUFFER);
    let mut conn = Connection {
        core: Core::new(ctx.clone(), id, peer),
        connected_at: Instant::now(),
        set_up: false,
        channels: HashMap::new(),
        next_channel: 1,
        extensions: Vec::new(),
        out: Vec::new(),
    };
    handshake(&mut framed, &ctx).await?;
    drive(framed, &mut conn, &ctx).await
}

impl Adapter for Connection {
    type Reply = Ack;
    type Codec = NoiseCodec;
    type Out = Vec<u8>;

    fn core(&mut self) -> &mut Core<Ack> {
        &mut self.core
    }

    fn deadline(&self) -> (Instant, &'static str) {
        self.deadline()
    }

    fn input(&mut self, incoming: Incoming, codec: &mut NoiseCodec) {
        let Incoming::Frame(mut frame) = incoming else {
            self.core.close = Some(format!("unexpected {incoming:?} after the handshake"));
            return;
        };
        let name = frame.name();
        let parsed = if self.extensions.is_empty() {
            frame.message().map(|message| (message, Vec::new()))
        } else {
            frame.message_with_tlvs(&self.extensions)
        };
        match parsed {
            Ok((message, tlvs)) => self.handle(message, &tlvs, name, codec),
            Err(err) => self.core.close = Some(format!("malformed {name}: {err}")),
        }
    }

    fn on_job(&mut self, announcement: &Arc<Announcement>, codec: &mut NoiseCodec) -> bool {
        self.on_job(announcement, codec)
    }

    fn finish_ack(&mut self, done: AckDone<Ack>, codec: &mut NoiseCodec) {
        self.finish_ack(done, codec);
    }

    fn acks_answered(&mut self, codec: &mut NoiseCodec) {
        self.send_batches(codec);
    }

    fn out(&mut self) -> &mut Vec<Vec<u8>> {
        &mut self.out
    }
}

impl Connection {
    /// When the connection times out next, and why.
    fn deadline(&self) -> (Instant, &'static str) {
        let limits = &self.core.ctx.guard.config;
        if !self.set_up {
            return (
                self.connected_at + limits.subscribe_timeout,
                "no SetupConnection in time",
            );
        }
        match self
            .channels
            .values()
            .filter_map(|c| c.terms.active_at)
            .max()
        {
            None => (
                self.connected_at + limits.subscribe_timeout + limits.authorize_timeout,
                "no channel opened in time",
            ),
            Some(at) => (at + limits.idle_timeout, "idle: no share for too long"),
        }
    }

    fn send(&mut self, codec: &mut NoiseCodec, message: AnyMessage<'_>) {
        let encoded = codec.encode(message);
        self.queue(encoded);
    }

    fn send_shared(&mut self, codec: &mut NoiseCodec, frame: &SharedFrame, channel_id: u32) {
        let encoded = codec.encode_shared(frame, channel_id);
        self.queue(encoded);
    }

    fn queue(&mut self, encoded: Result<Vec<u8>, Sv2Error>) {
        match encoded {
            Ok(bytes) => self.out.push(bytes),
            Err(err) => {
                tracing::error!(%err, "cannot encode a message");
                self.core.close = Some(format!("cannot encode a message: {err}"));
            }
        }
    }

    fn handle(
        &mut self,
        message: AnyMessage<'_>,
        tlvs: &[Tlv],
        name: &str,
        codec: &mut NoiseCodec,
    ) {
        let is_submit = matches!(
            message,
            AnyMessage::Mining(Mining::SubmitSharesStandard(_) | Mining::SubmitSharesExtended(_))
        );
        match self.core.spend(is_submit) {
            Spent::Within => {}
            Spent::Banned => return,
            Spent::Over => {
                if let AnyMessage::Mining(Mining::SubmitSharesStandard(share)) = &message {
                    self.share_error(
                        codec,
                        share.channel_id,
                        share.sequence_number,
                        "rate-limit-exceeded",
                    );
                } else if let AnyMessage::Mining(Mining::SubmitSharesExtended(share)) = &message {
                    self.share_error(
                        codec,
                        share.channel_id,
                        share.sequence_number,
                        "rate-limit-exceeded",
                    );
                }
                return;
            }
        }
        match message {
            AnyMessage::Common(CommonMessages::SetupConnection(setup)) if !self.set_up => {
                self.setup(setup, codec);
            }
            _ if !self.set_up => {
                self.core.close = Some(format!("{name} before SetupConnection"));
            }
            AnyMessage::Extensions(Extensions::ExtensionsNegotiation(
                ExtensionsNegotiation::RequestExtensions(request),
            )) => self.request_extensions(request, codec),
            AnyMessage::Mining(Mining::OpenStandardMiningChannel(open)) => {
                self.open_standard(open, codec);
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(open)) => {
                self.open_extended(open, codec);
            }
            AnyMessage::Mining(Mining::SubmitSharesStandard(share)) => {
                let en2 = standard_extranonce2(self.core.ctx.config.extranonce2_size);
                self.submit(
                    codec,
                    (share.channel_id, share.sequence_number),
                    share.job_id,
                    en2.as_bytes(),
                    [share.ntime, share.nonce, share.version],
                    None,
                );
            }
            AnyMessage::Mining(Mining::SubmitSharesExtended(share)) => {
                self.submit(
                    codec,
                    (share.channel_id, share.sequence_number),
                    share.job_id,
                    share.extranonce.as_bytes(),
                    [share.ntime, share.nonce, share.version],
                    Some(extensions::worker_identity(tlvs)),
                );
            }
            AnyMessage::Mining(Mining::UpdateChannel(update)) => self.update(update, codec),
            AnyMessage::Mining(Mining::CloseChannel(close)) => {
                if self.channels.remove(&close.channel_id).is_some() {
                    tracing::debug!(channel = close.channel_id, reason = %close.reason_code.as_utf8_or_hex(), "channel closed by the miner");
                }
            }
            _ => self.core.close = Some(format!("unexpected message {name}")),
        }
    }

    fn setup(&mut self, setup: SetupConnection<'_>, codec: &mut NoiseCodec) {
        let error = if setup.protocol != Protocol::MiningProtocol {
            Some(("unsupported-protocol", 0))
        } else if !(setup.min_version..=setup.max_version).contains(&VERSION) {
            Some(("protocol-version-mismatch", 0))
        } else if has_work_selection(setup.flags) {
            // Work selection (custom jobs) needs job declaration, which this pool
            // does not offer.
            Some(("unsupported-feature-flags", 1 << 1))
        } else {
            None
        };
        if let Some((code, flags)) = error {
            tracing::info!(code, protocol = ?setup.protocol, versions = ?(setup.min_version, setup.max_version), flags = setup.flags, "SetupConnection refused");
            let reply = SetupConnectionError {
                flags,
                error_code: code.try_into().expect("a short code"),
            };
            self.send(
                codec,
                AnyMessage::Common(CommonMessages::SetupConnectionError(reply)),
            );
            self.core.close = Some(format!("SetupConnection refused: {code}"));
            return;
        }
        tracing::debug!(vendor = %setup.vendor.as_utf8_or_hex(), firmware = %setup.firmware.as_utf8_or_hex(), "set up");
        self.set_up = true;
        let reply = SetupConnectionSuccess {
            used_version: VERSION,
            flags: 0,
        };
        self.send(
            codec,
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(reply)),
        );
    }

    fn share_error(&mut self, codec: &mut NoiseCodec, channel_id: u32, sequence: u32, code: &str) {
        let reply = SubmitSharesError {
            channel_id,
            sequence_number: sequence,
            error_code: code.try_into().expect("a short code"),
        };
        self.send(codec, AnyMessage::Mining(Mining::SubmitSharesError(reply)));
    }

    /// Judges one share. `[ntime, nonce, version]` as the miner sent them; the
    /// version is whole, its rolled bits are those under the pool's mask.
    /// `extended` is `None` for a standard share, else the worker it names (if any).
    fn submit(
        &mut self,
        codec: &mut NoiseCodec,
        (channel_id, sequence): Ack,
        job_id: u32,
        extranonce2: &[u8],
        [ntime, nonce, version]: [u32; 3],
        extended: Option<Option<String>>,
    ) {
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            return self.share_error(codec, channel_id, sequence, "invalid-channel-id");
        };
        if channel.extended != extended.is_some() {
            return self.share_error(codec, channel_id, sequence, "invalid-channel-id");
        }
        let Some(extranonce2) = Extranonce::new(extranonce2) else {
            return self.share_error(codec, channel_id, sequence, "invalid-extranonce");
        };
        let worker = match extended.flatten() {
            None => channel.worker.clone(),
            Some(identity) => {
                let name = tracked_worker(&channel.worker.name, &identity);
                self.core
                    .authorize(&mut channel.terms, &name, MAX_TRACKED_WORKERS)
                    .unwrap_or_else(|reason| {
                        tracing::debug!(%reason, worker = name, "share credited to its channel");
                        channel.worker.clone()
                    })
            }
        };
        let channel = &self.channels[&channel_id];
        let newest = self.core.ctx.book.current().job.id;
        let submit = Proposal {
            wire: Some(full_id(newest, job_id)),
            extranonce2,
            ntime,
            nonce,
            version_bits: version & channel.terms.version_mask,
        };
        let size = self.core.ctx.config.extranonce2_size;
        let judged = self.core.judge(
            worker,
            &submit,
            &channel.terms,
            size,
            (channel_id, sequence),
        );
        if judged.is_ok() {
            if let Some(channel) = self.channels.get_mut(&channel_id) {
                channel.acks.judged(sequence);
            }
        }
        if let Err((_, error)) = judged {
            let code = match error.code {
                ErrorCode::JobNotFound if error.message == "stale" => "stale-share",
                ErrorCode::JobNotFound => "invalid-job-id",
                ErrorCode::LowDifficulty => "difficulty-too-low",
                ErrorCode::Duplicate => "duplicate-share",
                _ => "invalid-share",
            };
            tracing::debug!(channel = channel_id, sequence, code, %error.message, "share rejected");
            self.share_error(codec, channel_id, sequence, code);
        }
    }

    fn finish_ack(&mut self, done: AckDone<Ack>, codec: &mut NoiseCodec) {
        let (channel_id, sequence) = done.reply;
        let stored = self.core.committed(&done);
        // The work acknowledged, in difficulty-1 shares (at least one per share).
        let work = stored.then(|| (done.difficulty as u64).max(1));
        let Some(channel) = self.channels.get_mut(&channel_id) else {
            // Closed meanwhile: nobody to tell.
            return;
        };
        channel.acks.settled(sequence, work);
        if !stored {
            return self.share_error(codec, channel_id, sequence, "storage-error");
        }
        if channel.terms.accepted(done.difficulty) {
            self.send_target(channel_id, codec);
        }
    }

    /// Answers the shares whose commits finished, one message per channel, in order.
    fn send_batches(&mut self, codec: &mut NoiseCodec) {
        let reports: Vec<_> = self
            .channels
            .iter_mut()
            .filter_map(|(id, channel)| channel.acks.report().map(|r| (*id, r)))
            .collect();
        for (channel_id, report) in reports {
            let message = SubmitSharesSuccess {
                channel_id,
                last_sequence_number: report.last,
                new_submits_accepted_count: report.count,
                new_shares_sum: report.sum,
            };
            self.send(
                codec,
                AnyMessage::Mining(Mining::SubmitSharesSuccess(message)),
            );
        }
    }
}
