//! Share validation: one submit in, a verdict out (STRATUM.md §4, §8).
//!
//! Order of checks: field sizes and version bits (20), job known (21 "job not
//! found"), ntime window (20), proof of work against the network target (a block,
//! even when stale), stale job (21 "stale"), share target (23), duplicate (22).

use std::sync::Arc;

use bitcoin::block::Header;
use quarry_protocol::messages::Submit;
use quarry_protocol::reject::{ErrorCode, StratumError};
use quarry_protocol::share::{header_hash, rolled_version, ShareFields};
use quarry_protocol::target::{hash_difficulty, meets_target};
use quarry_protocol::{Difficulty, Extranonce};

use crate::jobs::{Face, Job, JobBook, JobRef};
use crate::ledger::RejectKind;
use crate::reward::Payee;

/// A block candidate and the worker whose share solved it.
pub struct Solved {
    pub worker: Arc<str>,
    pub candidate: BlockCandidate,
}

/// Seconds ntime may run ahead of the job's ntime (ckpool's window).
pub const NTIME_AHEAD: u32 = 7000;

/// A share as either protocol proposes it: the job by the id the pool sent it
/// under (`None`: the miner named no job of ours) and the header fields the
/// miner chose.
pub struct Proposal {
    pub wire: Option<u64>,
    pub extranonce2: Extranonce,
    pub ntime: u32,
    pub nonce: u32,
    /// The version bits the miner rolled (0: none).
    pub version_bits: u32,
}

impl From<&Submit> for Proposal {
    fn from(submit: &Submit) -> Proposal {
        Proposal {
            wire: u64::from_str_radix(submit.job_id.as_str(), 16).ok(),
            extranonce2: submit.extranonce2,
            ntime: submit.ntime.0,
            nonce: submit.nonce.0,
            version_bits: submit.version_bits.map_or(0, |b| b.0),
        }
    }
}

/// What the session knows that validation needs.
pub struct SessionTerms<'a> {
    pub extranonce1: Extranonce,
    pub extranonce2_size: usize,
    /// The negotiated version-rolling mask; 0 when none was negotiated.
    pub version_mask: u32,
    /// The difficulty sent with a (wire) job id this session was sent.
    pub difficulty_for: &'a dyn Fn(u64) -> Option<Difficulty>,
    /// The difficulty announced last.
    pub current_difficulty: Difficulty,
    /// Whom the session's coinbases pay when it mines solo.
    pub payee: Option<&'a Payee>,
    /// The face of the job the session was sent last, which most shares name.
    pub held: Option<&'a Arc<Face>>,
}

/// A share that solves a block: everything needed to assemble it.
pub struct BlockCandidate {
    pub job: Arc<Job>,
    /// The job as the miner had it: its coinbase and what that pays.
    pub face: Arc<Face>,
    pub header: Header,
    pub coinbase: Vec<u8>,
    pub hash_difficulty: f64,
}

impl BlockCandidate {
    /// The full block, or `None` (logged) when it cannot be assembled.
    pub fn block(&self) -> Option<bitcoin::Block> {
        let transactions = &self.job.template.transactions;
        match crate::coinbase::assemble_block(self.header, &self.coinbase, transactions) {
            Ok(block) => Some(block),
            Err(err) => {
                let hash = quarry_protocol::share::block_hash(&self.header);
                tracing::error!(%hash, %err, "could not assemble a solved block");
                None
            }
        }
    }
}

/// A share judged acceptable.
pub struct Accepted {
    /// The difficulty credited (the share target it met).
    pub difficulty: f64,
    pub hash_difficulty: f64,
}

/// The verdict on one share.
pub struct Verdict {
    pub outcome: Result<Accepted, (RejectKind, StratumError)>,
    /// Set whenever the hash meets the network target, accepted or not.
    pub block: Option<BlockCandidate>,
}

fn reject(
    kind: RejectKind,
    code: ErrorCode,
    message: impl Into<std::borrow::Cow<'static, str>>,
) -> Verdict {
    Verdict {
        outcome: Err((kind, StratumError::new(code, message))),
        block: None,
    }
}

/// Judges `submit` under `terms` against the jobs in `book`.
pub fn validate(book: &JobBook, submit: &Proposal, terms: &SessionTerms<'_>) -> Verdict {
    if submit.extranonce2.len() != terms.extranonce2_size {
        return reject(
            RejectKind::Malformed,
            ErrorCode::Other,
            format!(
                "incorrect size of extranonce2: expected {} bytes, got {}",
                terms.extranonce2_size,
                submit.extranonce2.len()
            ),
        );
    }
    let Some(JobRef { job, variant, wire }) = submit.wire.and_then(|wire| book.get(wire)) else {
        return reject(RejectKind::Stale, ErrorCode::JobNotFound, "job not found");
    };
    let version = match rolled_version(
        job.notify.version.0,
        terms.version_mask,
        submit.version_bits,
    ) {
        Ok(version) => version,
        Err(err) => return reject(RejectKind::Malformed, ErrorCode::Other, err.to_string()),
    };
    let job_ntime = job.notify.ntime.0;
    let ntime = submit.ntime;
    if ntime < job_ntime || ntime - job_ntime > NTIME_AHEAD {
        return reject(
            RejectKind::Malformed,
            ErrorCode::Other,
            "ntime out of range",
        );
    }

    let fields = ShareFields {
        extranonce1: terms.extranonce1,
        extranonce2: submit.extranonce2,
        ntime,
        nonce: submit.nonce,
        version,
    };
    let face = match terms.held.filter(|face| face.job_id == job.id) {
        Some(held) => held.clone(),
        None => job.face(terms.payee),
    };
    let coinbase = face.coinbase(variant, &fields.extranonce1, &fields.extranonce2);
    let leaf = quarry_protocol::hash::sha256d(&coinbase);
    let branch: Vec<[u8; 32]> = job.notify.merkle_branch.iter().map(|h| h.0).collect();
    let root = quarry_protocol::merkle::root_from_branch(leaf, &branch);
    let header = job.notify.header_with_root(root, &fields);
    let hash = header_hash(&header);
    let achieved = hash_difficulty(&hash);

    let block = meets_target(&hash, &job.block_target).then(|| BlockCandidate {
        job: job.clone(),
        face,
        header,
        coinbase,
        hash_difficulty: achieved,
    });
    let with_block = |mut verdict: Verdict| {
        verdict.block = block;
        verdict
    };

    if job.height() < book.height() {
        return with_block(reject(RejectKind::Stale, ErrorCode::JobNotFound, "stale"));
    }
    // Judged by the difficulty in force when the job was sent, or the current one
    // if lower: miners differ on whether set_difficulty applies to work in
    // progress (cpuminer: next job; others: at once), and honest work of both
    // kinds must pass.
    let difficulty = match (terms.difficulty_for)(wire) {
        Some(at_job) if at_job < terms.current_difficulty => at_job,
        _ => terms.current_difficulty,
    };
    if !meets_target(&hash, &difficulty.to_target()) {
        return with_block(reject(
            RejectKind::LowDifficulty,
            ErrorCode::LowDifficulty,
            format!("low difficulty share of {achieved:.6}"),
        ));
    }
    if !job.first_sighting(&hash) {
        return with_block(reject(
            RejectKind::Duplicate,
            ErrorCode::Duplicate,
            "duplicate share",
        ));
    }
    with_block(Verdict {
        outcome: Ok(Accepted {
            difficulty: difficulty.get(),
            hash_difficulty: achieved,
        }),
        block: None,
    })
}

#[cfg(test)]
mod tests;
