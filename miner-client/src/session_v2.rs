//! The client side of one Stratum V2 connection as a plain state machine, once the
//! Noise handshake has proved the pool's key: messages from the pool in, [`Action`]s
//! out (requests to send, jobs to hash, share outcomes). No sockets, no codec.
//!
//! The session sets the connection up for the mining protocol, opens one channel
//! (extended by default, standard on request), and turns the pool's jobs,
//! `SetNewPrevHash` and `SetTarget` into [`Job`]s: a job without `min_ntime` is a
//! future job that waits for the `SetNewPrevHash` naming it, a job with one is
//! active at once on the current previous block. Shares go out with increasing
//! sequence numbers, so the batched `SubmitShares.Success` (so many accepted, up to
//! a sequence number) and `SubmitShares.Error` map back to them. Byte orders are
//! SRI's: `prev_hash` and merkle path entries in header order, targets 256-bit
//! little-endian.

use std::collections::BTreeMap;
use std::sync::Arc;

use bitcoin::hashes::Hash as _;
use bitcoin::{BlockHash, Target};
use quarry_protocol::fields::{HexBytes, HexU32Be, JobId, PrevHash, RawHash};
use quarry_protocol::messages::Notify;
use quarry_protocol::sv2::binary_sv2::{Str0255, B032, U256};
use quarry_protocol::sv2::common_messages_sv2::{Protocol, SetupConnection};
use quarry_protocol::sv2::mining_sv2::{
    NewExtendedMiningJob, NewMiningJob, OpenExtendedMiningChannel, OpenStandardMiningChannel,
    SetNewPrevHash, SubmitSharesExtended, SubmitSharesStandard,
};
use quarry_protocol::sv2::{AnyMessage, CommonMessages, Mining, Sv2Error};
use quarry_protocol::{Difficulty, Extranonce};
use serde::Deserialize;

use crate::hasher::FoundShare;
use crate::job::Job;
use crate::session::{Action, USER_AGENT};

/// BIP320's general-purpose version bits: the ones a V2 miner may roll.
pub const BIP320_MASK: u32 = 0x1fff_e000;
/// The mining protocol version spoken (min = max).
const VERSION: u16 = 2;
/// SetupConnection flags of the mining protocol.
const REQUIRES_STANDARD_JOBS: u32 = 1 << 0;
const REQUIRES_VERSION_ROLLING: u32 = 1 << 2;
/// The request id of the one channel this session opens.
const OPEN_REQUEST: u32 = 1;
/// Future jobs waiting for their `SetNewPrevHash`, at most (oldest dropped).
const MAX_FUTURE: usize = 16;
/// Submits awaiting an answer beyond this many are forgotten, oldest first.
const MAX_PENDING: usize = 4096;

/// Which channel to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// The miner builds the coinbase from the pool's prefix and suffix and rolls
    /// its own extranonce.
    #[default]
    Extended,
    /// Header-only: the pool fixes the merkle root; only nonce, ntime and the
    /// version bits roll.
    Standard,
}

/// What the session needs to know about the miner.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The worker name, sent as the channel's `user_identity`.
    pub user: String,
    pub channel: ChannelKind,
    /// The version-rolling mask wanted (used within [`BIP320_MASK`]); `None`: no rolling.
    pub version_mask: Option<u32>,
    /// Hashes per second, from which the pool picks the first target; 0 if unknown.
    pub nominal_hash_rate: f32,
    /// Where the miner connected, as SetupConnection reports it.
    pub endpoint_host: String,
    pub endpoint_port: u16,
}

/// A message for the pool, owning its data; [`Request::message`] borrows it as SRI's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    SetupConnection {
        flags: u32,
        endpoint_host: String,
        endpoint_port: u16,
    },
    OpenChannel {
        kind: ChannelKind,
        user: String,
        nominal_hash_rate: f32,
    },
    Submit {
        channel_id: u32,
        sequence_number: u32,
        job_id: u32,
        nonce: u32,
        ntime: u32,
        /// The whole header version, rolled bits included.
        version: u32,
        /// The rolled extranonce of an extended channel; `None` on a standard one.
        extranonce: Option<Extranonce>,
    },
}

impl Request {
    /// The request as the SV2 message the codec encodes.
    ///
    /// # Errors
    /// A string too long for its field (a worker name over 255 bytes).
    pub fn message(&self) -> Result<AnyMessage<'_>, Sv2Error> {
        Ok(match self {
            Request::SetupConnection {
                flags,
                endpoint_host,
                endpoint_port,
            } => AnyMessage::Common(CommonMessages::SetupConnection(SetupConnection {
                protocol: Protocol::MiningProtocol,
                min_version: VERSION,
                max_version: VERSION,
                flags: *flags,
                endpoint_host: text("endpoint_host", endpoint_host)?,
                endpoint_port: *endpoint_port,
                vendor: text("vendor", "quarry")?,
                hardware_version: text("hardware_version", "cpu")?,
                firmware: text("firmware", USER_AGENT)?,
                device_id: text("device_id", "")?,
            })),
            Request::OpenChannel {
                kind,
                user,
                nominal_hash_rate,
            } => {
                let user_identity = text("user_identity", user)?;
                // Any target the pool likes: this miner takes whatever it is given.
                let max_target = U256::from(&[0xff; 32]);
                match kind {
                    ChannelKind::Extended => {
                        AnyMessage::Mining(Mining::OpenExtendedMiningChannel(
                            OpenExtendedMiningChannel {
                                request_id: OPEN_REQUEST,
                                user_identity,
                                nominal_hash_rate: *nominal_hash_rate,
                                max_target,
                                // Version rolling alone gives 2^16 work units a job;
                                // any extranonce the pool grants adds to that.
                                min_extranonce_size: 0,
                            },
                        ))
                    }
                    ChannelKind::Standard => AnyMessage::Mining(Mining::OpenStandardMiningChannel(
                        OpenStandardMiningChannel {
                            request_id: OPEN_REQUEST,
                            user_identity,
                            nominal_hash_rate: *nominal_hash_rate,
                            max_target,
                        },
                    )),
                }
            }
            Request::Submit {
                channel_id,
                sequence_number,
                job_id,
                nonce,
                ntime,
                version,
                extranonce,
            } => match extranonce {
                Some(extranonce) => {
                    AnyMessage::Mining(Mining::SubmitSharesExtended(SubmitSharesExtended {
                        channel_id: *channel_id,
                        sequence_number: *sequence_number,
                        job_id: *job_id,
                        nonce: *nonce,
                        ntime: *ntime,
                        version: *version,
                        extranonce: B032::new(extranonce.as_bytes())
                            .map_err(|err| Sv2Error::Encode(format!("extranonce: {err:?}")))?,
                    }))
                }
                None => AnyMessage::Mining(Mining::SubmitSharesStandard(SubmitSharesStandard {
                    channel_id: *channel_id,
                    sequence_number: *sequence_number,
                    job_id: *job_id,
                    nonce: *nonce,
                    ntime: *ntime,
                    version: *version,
                })),
            },
        })
    }
}

/// The channel the pool opened.
#[derive(Debug, Clone)]
struct Channel {
    id: u32,
    /// The group the pool put the channel in: jobs and new blocks sent to the group
    /// are the channel's too (SRI's pool sends them that way).
    group: u32,
    /// The coinbase bytes before the miner's extranonce (on a standard channel all
    /// of it, for jobs sent to its group as extended jobs).
    extranonce_prefix: Extranonce,
    /// How many extranonce bytes the miner rolls (0 on a standard channel).
    extranonce_size: usize,
}

/// A job's work as the pool sent it, before it has a previous block.
#[derive(Debug, Clone)]
struct Template {
    job_id: u32,
    version: u32,
    version_rolling: bool,
    work: Work,
}

#[derive(Debug, Clone)]
enum Work {
    /// Extended: the coinbase around the extranonce, and its merkle path.
    Coinbase {
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        path: Vec<RawHash>,
    },
    /// Standard: the merkle root itself.
    Root([u8; 32]),
}

/// The previous block active jobs build on (the latest `SetNewPrevHash`).
#[derive(Debug, Clone, Copy)]
struct Tip {
    prev_hash: [u8; 32],
    nbits: u32,
}

/// What a sequence number was.
#[derive(Debug, Clone)]
struct Pending {
    job_id: u32,
    difficulty: f64,
}

/// One connection's client state.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    connection: u64,
    set_up: bool,
    channel: Option<Channel>,
    /// The channel's target, little-endian.
    target: [u8; 32],
    future: BTreeMap<u32, Template>,
    tip: Option<Tip>,
    last_job: Option<Arc<Job>>,
    jobs: u64,
    /// The generation of the first job on the current previous block: shares of
    /// older jobs are stale.
    clean_since: u64,
    next_sequence: u32,
    pending: BTreeMap<u32, Pending>,
}

impl Session {
    /// A session for connection number `connection` (which orders job generations
    /// across connections).
    pub fn new(config: SessionConfig, connection: u64) -> Session {
        Session {
            config,
            connection,
            set_up: false,
            channel: None,
            target: [0xff; 32],
            future: BTreeMap::new(),
            tip: None,
            last_job: None,
            jobs: 0,
            clean_since: 0,
            next_sequence: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The opening request: SetupConnection for the mining protocol, version 2,
    /// asking for version rolling when wanted and for standard jobs on a standard
    /// channel.
    pub fn start(&mut self) -> Vec<Action<Request>> {
        let mut flags = 0;
        if self.config.channel == ChannelKind::Standard {
            flags |= REQUIRES_STANDARD_JOBS;
        }
        if self.rolling_mask() != 0 {
            flags |= REQUIRES_VERSION_ROLLING;
        }
        vec![Action::Send(Request::SetupConnection {
            flags,
            endpoint_host: self.config.endpoint_host.clone(),
            endpoint_port: self.config.endpoint_port,
        })]
    }

    /// The newest job, once one is active.
    pub fn last_job(&self) -> Option<&Arc<Job>> {
        self.last_job.as_ref()
    }

    /// Handles one message from the pool; `name` is its type's name, for logs.
    pub fn handle(&mut self, message: AnyMessage<'_>, name: &str) -> Vec<Action<Request>> {
        match message {
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(_)) if !self.set_up => {
                self.set_up = true;
                vec![Action::Send(Request::OpenChannel {
                    kind: self.config.channel,
                    user: self.config.user.clone(),
                    nominal_hash_rate: self.config.nominal_hash_rate,
                })]
            }
            AnyMessage::Common(CommonMessages::SetupConnectionError(error)) => {
                vec![Action::SubscribeFailed(format!(
                    "SetupConnection refused: {}",
                    error.error_code.as_utf8_or_hex()
                ))]
            }
            AnyMessage::Mining(message) => self.mining(message, name),
            _ => vec![Action::Ignored(format!("unexpected {name}"))],
        }
    }

    fn mining(&mut self, message: Mining<'_>, name: &str) -> Vec<Action<Request>> {
        let current = self.channel.as_ref().map(|c| c.id);
        let group = self.channel.as_ref().map(|c| c.group);
        let ours = |channel_id: u32| current == Some(channel_id);
        let ours_or_group = |channel_id: u32| ours(channel_id) || group == Some(channel_id);
        match message {
            Mining::OpenExtendedMiningChannelSuccess(open)
                if open.request_id == OPEN_REQUEST
                    && self.channel.is_none()
                    && self.config.channel == ChannelKind::Extended =>
            {
                let prefix = Extranonce::new(open.extranonce_prefix.as_bytes());
                let size = usize::from(open.extranonce_size);
                match prefix.filter(|p| p.len() + size <= Extranonce::MAX_LEN) {
                    Some(prefix) => self.opened(
                        (open.channel_id, open.group_channel_id),
                        prefix,
                        size,
                        open.target.as_array(),
                    ),
                    None => vec![Action::Closed(format!(
                        "the channel's extranonce ({} + {size} bytes) is longer than {} bytes",
                        open.extranonce_prefix.len(),
                        Extranonce::MAX_LEN
                    ))],
                }
            }
            Mining::OpenStandardMiningChannelSuccess(open)
                if open.request_id == OPEN_REQUEST
                    && self.channel.is_none()
                    && self.config.channel == ChannelKind::Standard =>
            {
                match Extranonce::new(open.extranonce_prefix.as_bytes()) {
                    Some(prefix) => self.opened(
                        (open.channel_id, open.group_channel_id),
                        prefix,
                        0,
                        open.target.as_array(),
                    ),
                    None => vec![Action::Closed(format!(
                        "the channel's extranonce ({} bytes) is longer than {} bytes",
                        open.extranonce_prefix.len(),
                        Extranonce::MAX_LEN
                    ))],
                }
            }
            Mining::OpenMiningChannelError(error) if self.channel.is_none() => {
                vec![Action::Unauthorized(format!(
                    "channel refused: {}",
                    error.error_code.as_utf8_or_hex()
                ))]
            }
            Mining::NewExtendedMiningJob(job) if ours_or_group(job.channel_id) => {
                self.extended_job(job)
            }
            Mining::NewMiningJob(job) if ours(job.channel_id) => self.standard_job(job),
            Mining::SetNewPrevHash(prev) if ours_or_group(prev.channel_id) => {
                self.new_prev_hash(prev)
            }
            Mining::SetTarget(set) if ours(set.channel_id) => {
                self.target = *set.maximum_target.as_array();
                self.retarget()
            }
            Mining::SetExtranoncePrefix(set) if ours(set.channel_id) => {
                let size = self.channel.as_ref().map_or(0, |c| c.extranonce_size);
                match Extranonce::new(set.extranonce_prefix.as_bytes())
                    .filter(|p| p.len() + size <= Extranonce::MAX_LEN)
                {
                    Some(prefix) => {
                        if let Some(channel) = &mut self.channel {
                            channel.extranonce_prefix = prefix;
                        }
                        vec![]
                    }
                    None => vec![Action::Closed(
                        "the new extranonce prefix is too long".into(),
                    )],
                }
            }
            Mining::SubmitSharesSuccess(success) if ours(success.channel_id) => self.accepted(
                success.last_sequence_number,
                success.new_submits_accepted_count,
            ),
            Mining::SubmitSharesError(error) if ours(error.channel_id) => {
                let reason = error.error_code.as_utf8_or_hex();
                match self.pending.remove(&error.sequence_number) {
                    Some(pending) => vec![Action::ShareRejected {
                        job_id: pending.job_id.to_string(),
                        code: None,
                        reason,
                    }],
                    None => vec![Action::Ignored(format!(
                        "SubmitShares.Error for unknown sequence {}: {reason}",
                        error.sequence_number
                    ))],
                }
            }
            Mining::CloseChannel(close) if ours(close.channel_id) => {
                self.channel = None;
                vec![Action::Closed(format!(
                    "the pool closed the channel: {}",
                    close.reason_code.as_utf8_or_hex()
                ))]
            }
            _ => vec![Action::Ignored(format!("unexpected {name}"))],
        }
    }

    fn opened(
        &mut self,
        (id, group): (u32, u32),
        extranonce_prefix: Extranonce,
        extranonce_size: usize,
        target: &[u8; 32],
    ) -> Vec<Action<Request>> {
        self.channel = Some(Channel {
            id,
            group,
            extranonce_prefix,
            extranonce_size,
        });
        self.target = *target;
        vec![Action::Authorized]
    }

    fn extended_job(&mut self, job: NewExtendedMiningJob<'_>) -> Vec<Action<Request>> {
        let template = Template {
            job_id: job.job_id,
            version: job.version,
            version_rolling: job.version_rolling_allowed,
            work: Work::Coinbase {
                prefix: job.coinbase_tx_prefix.as_bytes().to_vec(),
                suffix: job.coinbase_tx_suffix.as_bytes().to_vec(),
                path: job
                    .merkle_path
                    .iter()
                    .map(|h| RawHash(*h.as_array()))
                    .collect(),
            },
        };
        self.job(template, job.min_ntime.as_ref().copied())
    }

    fn standard_job(&mut self, job: NewMiningJob<'_>) -> Vec<Action<Request>> {
        let template = Template {
            job_id: job.job_id,
            version: job.version,
            // BIP320's bits are the miner's on a standard job (SV2 spec, NewMiningJob).
            version_rolling: true,
            work: Work::Root(*job.merkle_root.as_array()),
        };
        self.job(template, job.min_ntime.as_ref().copied())
    }

    /// A job with `min_ntime` is active at once; one without waits for its
    /// `SetNewPrevHash`.
    fn job(&mut self, template: Template, min_ntime: Option<u32>) -> Vec<Action<Request>> {
        match min_ntime {
            Some(ntime) if self.tip.is_some() => self.publish(template, ntime, false),
            Some(_) => vec![Action::Ignored(format!(
                "job {} before any SetNewPrevHash",
                template.job_id
            ))],
            None => {
                if self.future.len() >= MAX_FUTURE {
                    self.future.pop_first();
                }
                self.future.insert(template.job_id, template);
                vec![]
            }
        }
    }

    fn new_prev_hash(&mut self, prev: SetNewPrevHash<'_>) -> Vec<Action<Request>> {
        self.tip = Some(Tip {
            prev_hash: *prev.prev_hash.as_array(),
            nbits: prev.nbits,
        });
        // Future jobs were for this previous block or one that will not come.
        let template = self.future.remove(&prev.job_id);
        self.future.clear();
        match template {
            Some(template) => self.publish(template, prev.min_ntime, true),
            None => {
                // Every job so far builds on another block: none is worth hashing.
                self.clean_since = self.next_generation();
                vec![Action::Ignored(format!(
                    "SetNewPrevHash for unknown job {}",
                    prev.job_id
                ))]
            }
        }
    }

    /// The generation the next job will have.
    fn next_generation(&self) -> u64 {
        (self.connection << 32) | (self.jobs + 1)
    }

    /// The mask rolled on jobs that allow rolling.
    fn rolling_mask(&self) -> u32 {
        self.config.version_mask.unwrap_or(0) & BIP320_MASK
    }

    /// Makes `template` on the current tip at `ntime` the job to hash.
    fn publish(&mut self, template: Template, ntime: u32, clean: bool) -> Vec<Action<Request>> {
        let (Some(channel), Some(tip)) = (&self.channel, self.tip) else {
            return vec![Action::Ignored("a job before the channel opened".into())];
        };
        let (extranonce_prefix, extranonce_size) =
            (channel.extranonce_prefix, channel.extranonce_size);
        let (coinb1, coinb2, branch, root) = match &template.work {
            Work::Coinbase {
                prefix,
                suffix,
                path,
            } => (prefix.clone(), suffix.clone(), path.clone(), None),
            Work::Root(root) => (Vec::new(), Vec::new(), Vec::new(), Some(*root)),
        };
        let notify = Notify {
            job_id: wire_job_id(template.job_id),
            prevhash: PrevHash::from_block_hash(BlockHash::from_byte_array(tip.prev_hash)),
            coinb1: HexBytes(coinb1),
            coinb2: HexBytes(coinb2),
            merkle_branch: branch,
            version: HexU32Be(template.version),
            nbits: HexU32Be(tip.nbits),
            ntime: HexU32Be(ntime),
            clean_jobs: clean,
        };
        let mask = if template.version_rolling {
            self.rolling_mask()
        } else {
            0
        };
        let generation = self.next_generation();
        self.jobs += 1;
        let mut job = Job::new(
            generation,
            self.connection,
            notify,
            extranonce_prefix,
            extranonce_size,
            difficulty(&self.target),
            mask,
        )
        .with_target(self.target);
        if let Some(root) = root {
            job = job.with_merkle_root(root);
        }
        if clean {
            self.clean_since = generation;
        }
        let job = Arc::new(job);
        self.last_job = Some(Arc::clone(&job));
        vec![Action::Job(job)]
    }

    /// Re-issues the newest job under the channel's new target, which holds from
    /// now on: the same work (ntime still rolling from when it came), a new generation.
    fn retarget(&mut self) -> Vec<Action<Request>> {
        let Some(last) = &self.last_job else {
            return vec![];
        };
        let mut job = Job::clone(last);
        job.generation = self.next_generation();
        job.notify.clean_jobs = false;
        job.difficulty = difficulty(&self.target);
        job.target = self.target;
        self.jobs += 1;
        let job = Arc::new(job);
        self.last_job = Some(Arc::clone(&job));
        vec![Action::Job(job)]
    }

    /// The submission of `share`, or `None` when its job is void: from another
    /// connection (another channel), or on an older previous block.
    pub fn submit(&mut self, share: &FoundShare) -> Option<Request> {
        let job = &share.job;
        if job.connection != self.connection || job.generation < self.clean_since {
            return None;
        }
        let channel = self.channel.as_ref()?;
        let job_id = job.notify.job_id.as_str().parse::<u32>().ok()?;
        let sequence_number = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_first();
        }
        self.pending.insert(
            sequence_number,
            Pending {
                job_id,
                difficulty: job.difficulty.get(),
            },
        );
        Some(Request::Submit {
            channel_id: channel.id,
            sequence_number,
            job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: job.version(&share.unit),
            extranonce: job.merkle_root.is_none().then_some(share.unit.extranonce2),
        })
    }

    /// `SubmitShares.Success`: `count` of the shares up to `last` were accepted.
    /// Acknowledgements may come out of order, so the newest unanswered ones at or
    /// below `last` are taken; never more than were sent.
    fn accepted(&mut self, last: u32, count: u32) -> Vec<Action<Request>> {
        let answered: Vec<u32> = self
            .pending
            .range(..=last)
            .rev()
            .take(count as usize)
            .map(|(sequence, _)| *sequence)
            .collect();
        let mut out: Vec<Action<Request>> = answered
            .iter()
            .rev()
            .filter_map(|sequence| self.pending.remove(sequence))
            .map(|pending| Action::ShareAccepted {
                job_id: pending.job_id.to_string(),
                difficulty: pending.difficulty,
            })
            .collect();
        if out.len() < count as usize {
            out.push(Action::Ignored(format!(
                "SubmitShares.Success for {count} shares up to {last}, {} of them unanswered",
                out.len()
            )));
        }
        out
    }
}

/// The difficulty of `target`, for logs and stats only: the threads hash against
/// the exact target.
fn difficulty(target: &[u8; 32]) -> Difficulty {
    Difficulty::new(Difficulty::from_target(Target::from_le_bytes(*target)).get())
        .unwrap_or(Difficulty::ONE)
}

/// `value` as a string field of up to 255 bytes.
fn text<'a>(field: &'static str, value: &'a str) -> Result<Str0255<'a>, Sv2Error> {
    Str0255::try_from(value).map_err(|err| Sv2Error::Encode(format!("{field}: {err:?}")))
}

/// A V2 job id as the miner's [`Job`] carries it: decimal text.
fn wire_job_id(id: u32) -> JobId {
    id.to_string()
        .parse()
        .expect("decimal digits are a valid job id")
}

#[cfg(test)]
mod tests;
