//! Finding shares the way a miner does, with the protocol crate's share math.

use bitcoin::Target;
use quarry_protocol::messages::Notify;
use quarry_protocol::share::{header_hash, ShareFields};
use quarry_protocol::target::meets_target;
use quarry_protocol::{Difficulty, Extranonce};
use serde_json::{json, Value};

/// A found share: the submit params and the hash.
#[derive(Debug, Clone)]
pub struct Share {
    pub fields: ShareFields,
    pub hash: [u8; 32],
}

impl Share {
    /// `mining.submit` params for `worker` on `job`.
    pub fn params(&self, worker: &str, job: &Notify) -> Value {
        json!([
            worker,
            job.job_id.to_string(),
            self.fields.extranonce2.to_string(),
            format!("{:08x}", self.fields.ntime),
            format!("{:08x}", self.fields.nonce),
        ])
    }
}

/// Scans nonces of one job and extranonce pair; the merkle root is computed once.
pub struct Grinder {
    job: Notify,
    root: [u8; 32],
    fields: ShareFields,
    target: Target,
}

impl Grinder {
    /// Starts at nonce `start` on `job`, looking for hashes at `difficulty`.
    pub fn new(
        job: &Notify,
        en1: Extranonce,
        en2: Extranonce,
        difficulty: Difficulty,
        start: u32,
    ) -> Grinder {
        Grinder {
            root: job.merkle_root(&en1, &en2),
            fields: ShareFields {
                extranonce1: en1,
                extranonce2: en2,
                ntime: job.ntime.0,
                nonce: start,
                version: job.version.0,
            },
            job: job.clone(),
            target: difficulty.to_target(),
        }
    }

    /// Starts at nonce `start` on a job whose merkle root is given (a Stratum V2
    /// standard channel's), looking for hashes at `difficulty`.
    pub fn with_root(job: &Notify, root: [u8; 32], difficulty: Difficulty, start: u32) -> Grinder {
        let none = Extranonce::default();
        Grinder {
            root,
            fields: ShareFields {
                extranonce1: none,
                extranonce2: none,
                ntime: job.ntime.0,
                nonce: start,
                version: job.version.0,
            },
            job: job.clone(),
            target: difficulty.to_target(),
        }
    }

    /// Looks for hashes at `difficulty` from here on, keeping the position.
    pub fn retarget(&mut self, difficulty: Difficulty) {
        self.target = difficulty.to_target();
    }

    /// The next nonce whose hash meets (`want = true`) or misses the target;
    /// the scan continues after it on the next call.
    pub fn next(&mut self, want: bool) -> Share {
        loop {
            let hash = header_hash(&self.job.header_with_root(self.root, &self.fields));
            let fields = self.fields;
            self.fields.nonce = self.fields.nonce.wrapping_add(1);
            if meets_target(&hash, &self.target) == want {
                return Share { fields, hash };
            }
        }
    }
}

/// The first nonce from `start` whose hash meets (`want = true`) or misses the
/// target of `difficulty`.
pub fn grind(
    job: &Notify,
    en1: Extranonce,
    en2: Extranonce,
    difficulty: Difficulty,
    start: u32,
    want: bool,
) -> Share {
    Grinder::new(job, en1, en2, difficulty, start).next(want)
}
