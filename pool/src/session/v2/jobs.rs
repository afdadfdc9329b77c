//! Jobs on a V2 channel: extended jobs (the coinbase around the channel's
//! extranonce) or standard ones (the channel's merkle root), a new block as a
//! future job activated by `SetNewPrevHash`, and `SetTarget` from vardiff. What
//! is the same on every channel (an extended job, a prev hash) is serialized
//! once per job face and only encrypted per channel.

use std::sync::Arc;

use binary_sv2::{Seq0255, Sv2Option, B064K, U256};
use bitcoin::hashes::Hash as _;
use bitcoin::BlockHash;
use mining_sv2::{NewExtendedMiningJob, NewMiningJob, SetNewPrevHash, SetTarget};
use quarry_protocol::messages::Notify;
use quarry_protocol::sv2::{binary_sv2, mining_sv2, AnyMessage, Mining, NoiseCodec, SharedFrame};
use quarry_protocol::Difficulty;
use tokio::time::Instant;

use super::{standard_extranonce2, Connection};
use crate::jobs::{Announcement, Face, V2Frames};

/// The job id a V2 miner names: the low 32 bits of the pool's job id.
pub(super) fn short_id(job: u64) -> u32 {
    job as u32
}

/// The pool's job id of V2 job id `short`: the one at or below `newest` with those
/// low bits. Job ids count up from the clock in seconds shifted by 8 bits, so any
/// job still remembered is far less than 2^32 below the newest.
pub(super) fn full_id(newest: u64, short: u32) -> u64 {
    let candidate = (newest & !0xffff_ffff) | u64::from(short);
    if candidate > newest {
        candidate.wrapping_sub(1 << 32)
    } else {
        candidate
    }
}

/// A target as V2 carries it: 256 bits, little-endian.
pub(super) fn target_bytes(difficulty: Difficulty) -> [u8; 32] {
    difficulty.to_target().to_le_bytes()
}

/// A job as V2 frames, for any channel: `notify` is one of its faces, sent as
/// V2 job `job_id` on top of `prev_hash`.
pub fn frames(job_id: u32, notify: &Notify, prev_hash: &BlockHash) -> V2Frames {
    let ntime = notify.ntime.0;
    let branch: Vec<U256<'_>> = notify
        .merkle_branch
        .iter()
        .map(|h| U256::from(&h.0))
        .collect();
    let extended = |min_ntime: Option<u32>| {
        let message = NewExtendedMiningJob {
            channel_id: 0,
            job_id,
            min_ntime: Sv2Option::new(min_ntime),
            version: notify.version.0,
            version_rolling_allowed: true,
            merkle_path: Seq0255::new(branch.clone()).expect("a branch is short"),
            coinbase_tx_prefix: B064K::new(&notify.coinb1.0).expect("coinbase fits"),
            coinbase_tx_suffix: B064K::new(&notify.coinb2.0).expect("coinbase fits"),
        };
        shared(Mining::NewExtendedMiningJob(message))
    };
    let prev_hash = prev_hash.to_byte_array();
    let prev_hash = SetNewPrevHash {
        channel_id: 0,
        job_id,
        prev_hash: U256::from(&prev_hash),
        min_ntime: ntime,
        nbits: notify.nbits.0,
    };
    V2Frames {
        job: extended(Some(ntime)),
        future_job: extended(None),
        prev_hash: shared(Mining::SetNewPrevHash(prev_hash)),
    }
}

/// `message` serialized for every channel.
fn shared(message: Mining<'_>) -> SharedFrame {
    SharedFrame::new(AnyMessage::Mining(message)).expect("a job's frames fit")
}

impl Connection {
    pub(super) fn first_job(&mut self, id: u32, codec: &mut NoiseCodec) {
        let current = self.core.ctx.book.current();
        self.send_job(id, &current, codec);
    }

    /// Sends `announcement`'s job to every channel; true when it went out on a new tip.
    pub(super) fn on_job(
        &mut self,
        announcement: &Arc<Announcement>,
        codec: &mut NoiseCodec,
    ) -> bool {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        let mut new_tip = false;
        for id in ids {
            new_tip |= self.send_job(id, announcement, codec);
        }
        new_tip
    }

    /// Sends channel `id` the job: first `SetTarget` if vardiff moved, then the
    /// job; on a new tip as a future job activated by `SetNewPrevHash`. True when
    /// the tip is new to the channel.
    pub(super) fn send_job(
        &mut self,
        id: u32,
        announcement: &Arc<Announcement>,
        codec: &mut NoiseCodec,
    ) -> bool {
        let Some(channel) = self.channels.get_mut(&id) else {
            return false;
        };
        let terms = &mut channel.terms;
        let new_tip = terms.new_tip(announcement);
        let retarget = terms.last_job.is_some() && {
            terms.vardiff.on_tick(Instant::now());
            terms.vardiff.current() != terms.difficulty
        };
        let extended = channel.extended;
        // The new target first: the job is remembered at the difficulty it carries.
        if retarget {
            self.send_target(id, codec);
        }
        let Some(channel) = self.channels.get_mut(&id) else {
            return false;
        };
        let terms = &mut channel.terms;
        let job = &announcement.job;
        let face = job.face(terms.payee.as_ref());
        terms.remember(job.id);
        terms.last_job = Some(announcement.clone());
        terms.face = Some(face.clone());
        let frames = face
            .v2
            .get_or_init(|| frames(short_id(job.id), &face.notify, &job.template.prev_hash));
        if extended {
            let frame = if new_tip {
                &frames.future_job
            } else {
                &frames.job
            };
            self.send_shared(codec, frame, id);
        } else {
            let root = self.standard_root(id, &face, &job.template.merkle_branch);
            let ntime = face.notify.ntime.0;
            let message = NewMiningJob {
                channel_id: id,
                job_id: short_id(job.id),
                min_ntime: Sv2Option::new((!new_tip).then_some(ntime)),
                version: face.notify.version.0,
                merkle_root: U256::from(&root),
            };
            self.send(codec, AnyMessage::Mining(Mining::NewMiningJob(message)));
        }
        if new_tip {
            self.send_shared(codec, &frames.prev_hash, id);
        }
        new_tip
    }

    /// A standard channel's merkle root: its coinbase has the channel's extranonce1
    /// and a zero extranonce2.
    pub(super) fn standard_root(&self, id: u32, face: &Face, branch: &[[u8; 32]]) -> [u8; 32] {
        let channel = &self.channels[&id];
        let en2 = standard_extranonce2(self.core.ctx.config.extranonce2_size);
        let coinbase = face.coinbase(0, &channel.extranonce1(), &en2);
        let leaf = quarry_protocol::hash::sha256d(&coinbase);
        quarry_protocol::merkle::root_from_branch(leaf, branch)
    }

    /// Sends channel `id` the difficulty vardiff wants, as `SetTarget`.
    pub(super) fn send_target(&mut self, id: u32, codec: &mut NoiseCodec) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let wanted = channel.terms.announce_difficulty(&self.core.ctx.accounting);
        let target = target_bytes(wanted);
        let message = SetTarget {
            channel_id: id,
            maximum_target: U256::from(&target),
        };
        self.send(codec, AnyMessage::Mining(Mining::SetTarget(message)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_across_the_32_bit_boundary() {
        for newest in [0x1_0000_0005u64, 0x0067_5000_0001, u64::from(u32::MAX) + 3] {
            for back in 0..10u64 {
                let job = newest - back * 0x100;
                assert_eq!(full_id(newest, short_id(job)), job, "{newest:x} {job:x}");
            }
        }
    }
}
