//! Finding shares the way a miner does, with the protocol crate's share math.

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
    let target = difficulty.to_target();
    let mut fields = ShareFields {
        extranonce1: en1,
        extranonce2: en2,
        ntime: job.ntime.0,
        nonce: start,
        version: job.version.0,
    };
    let root = job.merkle_root(&en1, &en2);
    loop {
        let hash = header_hash(&job.header_with_root(root, &fields));
        if meets_target(&hash, &target) == want {
            return Share { fields, hash };
        }
        fields.nonce = fields.nonce.wrapping_add(1);
    }
}
