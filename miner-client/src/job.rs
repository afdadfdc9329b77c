//! A job as the hashing threads see it: a pool's `mining.notify` with the extranonce1,
//! extranonce2 size, share target and version mask in force when it arrived, and the
//! partition of its search space into disjoint work units. A Stratum V2 job takes the
//! same form (its coinbase prefix and suffix as coinb1 and coinb2, the channel's
//! extranonce prefix as extranonce1), or, on a standard channel, a fixed merkle root.

use std::time::Instant;

use quarry_protocol::hash::sha256d;
use quarry_protocol::merkle::root_from_branch;
use quarry_protocol::messages::Notify;
use quarry_protocol::{Difficulty, Extranonce};

/// One job, immutable once published to the threads.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Increases with every job the miner publishes, across connections.
    pub generation: u64,
    /// Which connection the job came from (shares are only valid on it, or after a
    /// reconnect to the same pool that resumes the same extranonce1).
    pub connection: u64,
    pub notify: Notify,
    pub extranonce1: Extranonce,
    pub extranonce2_size: usize,
    pub difficulty: Difficulty,
    /// The share target, little-endian.
    pub target: [u8; 32],
    /// The negotiated BIP310 mask; 0 without version rolling.
    pub version_mask: u32,
    /// The merkle root a Stratum V2 standard channel's pool fixed: the header takes
    /// it as is (the coinbase fields are then empty and extranonce2_size is 0).
    pub merkle_root: Option<[u8; 32]>,
    /// When the job arrived: ntime is rolled forward by the real time elapsed since.
    pub received: Instant,
}

/// One unit of work: a header template whose 2^32 nonces a thread scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkUnit {
    pub extranonce2: Extranonce,
    /// The version bits inside the mask (0 without version rolling).
    pub version_bits: u32,
}

impl Job {
    /// Builds a job; the target follows from `difficulty`.
    pub fn new(
        generation: u64,
        connection: u64,
        notify: Notify,
        extranonce1: Extranonce,
        extranonce2_size: usize,
        difficulty: Difficulty,
        version_mask: u32,
    ) -> Job {
        Job {
            generation,
            connection,
            notify,
            extranonce1,
            extranonce2_size,
            difficulty,
            target: difficulty.to_target().to_le_bytes(),
            version_mask,
            merkle_root: None,
            received: Instant::now(),
        }
    }

    /// The same job with the share target `target` (little-endian) exactly as a
    /// pool sent it, rather than as derived from a difficulty.
    pub fn with_target(mut self, target: [u8; 32]) -> Job {
        self.target = target;
        self
    }

    /// The same job hashing `root` as its merkle root (a V2 standard channel's job).
    pub fn with_merkle_root(mut self, root: [u8; 32]) -> Job {
        self.merkle_root = Some(root);
        self
    }

    /// The merkle root of `unit`'s header: the fixed one, or the coinbase with the
    /// unit's extranonce2 hashed up the branch.
    pub fn merkle_root(&self, unit: &WorkUnit) -> [u8; 32] {
        if let Some(root) = self.merkle_root {
            return root;
        }
        let coinbase = self.notify.coinbase(&self.extranonce1, &unit.extranonce2);
        let branch: Vec<[u8; 32]> = self.notify.merkle_branch.iter().map(|h| h.0).collect();
        root_from_branch(sha256d(&coinbase), &branch)
    }

    /// The work unit with global index `index`, or `None` past the end of the job's
    /// space. Units are numbered extranonce2-first: `index mod 2^(8·size)` is the
    /// extranonce2 counter, the quotient is spread over the version mask's bits.
    /// Distinct indexes give distinct units, so threads that take disjoint index
    /// sets never hash the same header.
    pub fn unit(&self, index: u64) -> Option<WorkUnit> {
        let en2_bits = (self.extranonce2_size * 8).min(64) as u32;
        let (counter, roll) = if en2_bits >= 64 {
            (index, 0)
        } else {
            (index & ((1u64 << en2_bits) - 1), index >> en2_bits)
        };
        let version_bits = deposit(roll, self.version_mask)?;
        Some(WorkUnit {
            extranonce2: Extranonce::from_counter(counter, self.extranonce2_size),
            version_bits,
        })
    }

    /// The header version for `unit`.
    pub fn version(&self, unit: &WorkUnit) -> u32 {
        (self.notify.version.0 & !self.version_mask) | (unit.version_bits & self.version_mask)
    }

    /// The ntime to hash now: the job's, rolled forward by the whole seconds elapsed
    /// since it arrived (never further).
    pub fn ntime(&self) -> u32 {
        let elapsed = self.received.elapsed().as_secs();
        self.notify
            .ntime
            .0
            .wrapping_add(u32::try_from(elapsed).unwrap_or(u32::MAX))
    }

    /// The 80-byte header of `unit` at `ntime`, nonce bytes zero.
    pub fn header(&self, unit: &WorkUnit, ntime: u32) -> [u8; 80] {
        let root = self.merkle_root(unit);
        let mut header = [0u8; 80];
        header[..4].copy_from_slice(&self.version(unit).to_le_bytes());
        header[4..36].copy_from_slice(&self.notify.prevhash.header_bytes());
        header[36..68].copy_from_slice(&root);
        header[68..72].copy_from_slice(&ntime.to_le_bytes());
        header[72..76].copy_from_slice(&self.notify.nbits.0.to_le_bytes());
        header
    }
}

/// Spreads the low bits of `value` over the set bits of `mask` (low to high), or
/// `None` when `value` needs more bits than `mask` has.
fn deposit(mut value: u64, mask: u32) -> Option<u32> {
    let mut out = 0u32;
    for bit in 0..32 {
        if mask & (1 << bit) != 0 {
            out |= ((value & 1) as u32) << bit;
            value >>= 1;
        }
    }
    (value == 0).then_some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use quarry_protocol::share::{header_bytes, ShareFields};

    /// Block 100000 as a Stratum job (STRATUM.md §11 b).
    pub(crate) fn block_100000() -> Notify {
        let line = r#"["186a0","1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000","01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08","ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000",["c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff","49aef42d78e3e9999c9e6ec9e1dddd6cb880bf3b076a03be1318ca789089308e"],"00000001","1b04864c","4d1b2237",true]"#;
        let params: Vec<serde_json::Value> = serde_json::from_str(line).unwrap();
        match quarry_protocol::ServerMessage::parse("mining.notify", &params).unwrap() {
            quarry_protocol::ServerMessage::Notify(n) => n,
            other => panic!("{other:?}"),
        }
    }

    pub(crate) fn job(size: usize, mask: u32) -> Job {
        Job::new(
            1,
            1,
            block_100000(),
            "044c8604".parse().unwrap(),
            size,
            Difficulty::ONE,
            mask,
        )
    }

    #[test]
    fn header_matches_the_protocol_crate_and_block_100000() {
        let job = job(4, 0);
        let unit = WorkUnit {
            extranonce2: "1b020602".parse().unwrap(),
            version_bits: 0,
        };
        let mut header = job.header(&unit, 0x4d1b_2237);
        header[76..].copy_from_slice(&274_148_111u32.to_le_bytes());
        let fields = ShareFields {
            extranonce1: job.extranonce1,
            extranonce2: unit.extranonce2,
            ntime: 0x4d1b_2237,
            nonce: 274_148_111,
            version: 1,
        };
        assert_eq!(header, header_bytes(&job.notify.header(&fields)));
        assert!(crate::kernel::verify(&header, 274_148_111, &job.target));
    }

    #[test]
    fn units_roll_extranonce2_then_version_bits() {
        let job = job(2, 0x1fff_e000);
        let first = job.unit(0).unwrap();
        assert_eq!(first.extranonce2.to_string(), "0000");
        assert_eq!(first.version_bits, 0);
        assert_eq!(job.unit(0x0102).unwrap().extranonce2.to_string(), "0201");
        let rolled = job.unit(0x1_0000).unwrap();
        assert_eq!(rolled.extranonce2.to_string(), "0000");
        assert_eq!(rolled.version_bits, 0x0000_2000);
        assert_eq!(job.version(&rolled), 0x0000_2001);
        // 16 extranonce2 bits and 16 mask bits: 2^32 units in all.
        assert!(job.unit((1 << 32) - 1).is_some());
        assert!(job.unit(1 << 32).is_none());
        assert!(
            self::job(2, 0).unit(1 << 16).is_none(),
            "no rolling without a mask"
        );
        assert!(self::job(8, 0).unit(u64::MAX).is_some());
    }

    #[test]
    fn deposit_fills_mask_bits_in_order() {
        assert_eq!(deposit(0b101, 0b1110), Some(0b1010));
        assert_eq!(deposit(0b1000, 0b1110), None);
        assert_eq!(deposit(0, 0), Some(0));
    }
}
