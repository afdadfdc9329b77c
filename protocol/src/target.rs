//! Difficulty ⇄ target conversion, compact nBits, hash difficulty and hashrate.
//!
//! The difficulty-1 target is `0x00000000FFFF0000…` (compact `1d00ffff`), the
//! "bdiff" constant every checked pool and miner uses (STRATUM.md §7). Targets are
//! computed exactly as `floor(T1 / difficulty)` with arbitrary-precision integers,
//! saturating at the largest 256-bit value.

use std::fmt;

use bitcoin::pow::CompactTarget;
use bitcoin::Target;
use num_bigint::BigUint;
use num_traits::ToPrimitive;

/// The difficulty-1 target, little-endian bytes.
const DIFF1_LE: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[26] = 0xff;
    bytes[27] = 0xff;
    bytes
};

/// Hashes needed on average for one share of difficulty 1: `2^256 / T1 = 2^48 / 0xffff`.
pub const HASHES_PER_DIFF1: f64 = 281_474_976_710_656.0 / 65_535.0;

/// A share or network difficulty that was not a finite positive number.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("difficulty must be a finite number above zero, got {0}")]
pub struct DifficultyError(pub f64);

/// A share difficulty: finite and strictly positive.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Difficulty(f64);

impl Difficulty {
    /// Difficulty 1, what miners assume before the pool says otherwise.
    pub const ONE: Difficulty = Difficulty(1.0);

    /// Wraps `value`.
    ///
    /// # Errors
    /// [`DifficultyError`] for zero, negative, NaN or infinite values.
    pub fn new(value: f64) -> Result<Self, DifficultyError> {
        if value.is_finite() && value > 0.0 {
            Ok(Self(value))
        } else {
            Err(DifficultyError(value))
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Clamps into `[min, max]`.
    pub fn clamp(self, min: Difficulty, max: Difficulty) -> Difficulty {
        Difficulty(self.0.clamp(min.0, max.0.max(min.0)))
    }

    /// The share target `floor(T1 / difficulty)`, saturating at `2^256 - 1`.
    pub fn to_target(self) -> Target {
        let (mantissa, exponent) = decompose(self.0);
        let t1 = BigUint::from_bytes_le(&DIFF1_LE);
        // d = mantissa * 2^exponent, so T1 / d = (T1 << -exponent) / mantissa.
        let quotient = if exponent <= 0 {
            (t1 << exponent.unsigned_abs()) / mantissa
        } else {
            t1 / (BigUint::from(mantissa) << exponent as u32)
        };
        target_from_biguint(&quotient)
    }

    /// The difficulty whose target is `target` (`T1 / target`).
    pub fn from_target(target: Target) -> Difficulty {
        Difficulty(diff1_ratio(&target.to_le_bytes()))
    }
}

impl fmt::Display for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Splits a finite positive f64 into `(mantissa, exponent)` with `value = mantissa * 2^exponent`.
fn decompose(value: f64) -> (u64, i32) {
    let bits = value.to_bits();
    let raw_exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    if raw_exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), raw_exponent - 1075)
    }
}

fn target_from_biguint(value: &BigUint) -> Target {
    let bytes = value.to_bytes_le();
    if bytes.len() > 32 {
        return Target::from_le_bytes([0xff; 32]);
    }
    let mut le = [0u8; 32];
    le[..bytes.len()].copy_from_slice(&bytes);
    Target::from_le_bytes(le)
}

/// `T1 / value` in floating point for a little-endian 256-bit `value`.
fn diff1_ratio(value_le: &[u8; 32]) -> f64 {
    let value = BigUint::from_bytes_le(value_le)
        .to_f64()
        .unwrap_or(f64::INFINITY);
    let t1 = BigUint::from_bytes_le(&DIFF1_LE)
        .to_f64()
        .unwrap_or(f64::INFINITY);
    if value == 0.0 {
        f64::MAX
    } else {
        t1 / value
    }
}

/// The difficulty a hash achieves: `T1 / hash`, the hash read as a little-endian integer.
pub fn hash_difficulty(hash: &[u8; 32]) -> f64 {
    diff1_ratio(hash)
}

/// Whether `hash` (raw sha256d output) meets `target` (Bitcoin consensus: `hash <= target`).
pub fn meets_target(hash: &[u8; 32], target: &Target) -> bool {
    let target = target.to_le_bytes();
    for i in (0..32).rev() {
        if hash[i] != target[i] {
            return hash[i] < target[i];
        }
    }
    true
}

/// Decodes compact nBits into a target.
pub fn target_from_nbits(nbits: u32) -> Target {
    Target::from_compact(CompactTarget::from_consensus(nbits))
}

/// Encodes a target as compact nBits (rounding down, as consensus does).
pub fn nbits_from_target(target: Target) -> u32 {
    target.to_compact_lossy().to_consensus()
}

/// The network difficulty of compact `nbits`.
pub fn network_difficulty(nbits: u32) -> f64 {
    Difficulty::from_target(target_from_nbits(nbits)).get()
}

/// Estimated hashrate (hashes per second) from a sum of accepted share
/// difficulties over `seconds`.
pub fn hashrate(accepted_difficulty: f64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    accepted_difficulty * HASHES_PER_DIFF1 / seconds
}

/// The difficulty at which `hashes_per_second` finds one share every
/// `seconds` on average; `None` when that is not a positive difficulty.
pub fn difficulty_for(hashes_per_second: f64, seconds: f64) -> Option<Difficulty> {
    Difficulty::new(hashes_per_second * seconds / HASHES_PER_DIFF1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target_hex(difficulty: f64) -> String {
        let mut be = Difficulty::new(difficulty)
            .unwrap()
            .to_target()
            .to_le_bytes();
        be.reverse();
        hex::encode(be)
    }

    #[test]
    fn difficulty_table_of_stratum_md() {
        assert!(target_hex(1.0).starts_with("00000000ffff0000000000"));
        assert!(target_hex(2.0).starts_with("000000007fff8000000000"));
        assert!(target_hex(0.5).starts_with("00000001fffe0000000000"));
        assert!(target_hex(1.0 / 65536.0).starts_with("0000ffff000000000000"));
        assert!(target_hex(1000.0).starts_with("00000000004188f5c28f5c28f5c2"));
    }

    #[test]
    fn difficulty_one_is_exactly_t1() {
        assert_eq!(Difficulty::ONE.to_target().to_le_bytes(), DIFF1_LE);
        assert_eq!(target_from_nbits(0x1d00ffff).to_le_bytes(), DIFF1_LE);
    }

    #[test]
    fn tiny_difficulties_saturate_at_the_maximum_target() {
        let max = Difficulty::new(1e-12).unwrap().to_target();
        assert_eq!(max.to_le_bytes(), [0xff; 32]);
        // 2^-32 is the largest difficulty whose target still fits below 2^256.
        let fits = Difficulty::new(2f64.powi(-31))
            .unwrap()
            .to_target()
            .to_le_bytes();
        assert_eq!(fits[31], 0x7f);
    }

    #[test]
    fn compact_round_trips() {
        for nbits in [
            0x1d00ffffu32,
            0x1b04864c,
            0x1705ae3a,
            0x1c2ac4af,
            0x207fffff,
        ] {
            assert_eq!(
                nbits_from_target(target_from_nbits(nbits)),
                nbits,
                "{nbits:08x}"
            );
        }
    }

    #[test]
    fn network_difficulty_of_block_100000() {
        let diff = network_difficulty(0x1b04864c);
        assert!((diff - 14484.162361).abs() < 1e-5, "{diff}");
        let regtest = network_difficulty(0x207fffff);
        assert!((regtest - 4.656542373906925e-10).abs() < 1e-20, "{regtest}");
    }

    #[test]
    fn hash_of_block_100000_has_its_difficulty() {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(
            "06e533fd1ada86391f3f6c343204b0d278d4aaec1c0b20aa27ba030000000000",
            &mut raw,
        )
        .unwrap();
        assert!((hash_difficulty(&raw) - 17583.056276).abs() < 1e-5);
        assert!(meets_target(&raw, &target_from_nbits(0x1b04864c)));
        assert!(!meets_target(
            &raw,
            &Difficulty::new(17584.0).unwrap().to_target()
        ));
    }

    #[test]
    fn invalid_difficulties_are_errors() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Difficulty::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashrate_of_one_share_per_second_at_difficulty_one() {
        assert!((hashrate(1.0, 1.0) - 4_295_032_833.0).abs() < 1.0);
    }

    #[test]
    fn difficulty_for_inverts_hashrate() {
        let d = difficulty_for(43e6, 5.0).unwrap();
        assert!((hashrate(d.get(), 5.0) - 43e6).abs() < 1e-3);
        assert_eq!(difficulty_for(0.0, 5.0), None);
    }

    proptest! {
        #[test]
        fn target_is_floor_of_t1_over_difficulty(difficulty in 1e-9f64..1e15) {
            let target = Difficulty::new(difficulty).unwrap().to_target();
            let back = Difficulty::from_target(target).get();
            prop_assert!((back - difficulty).abs() / difficulty < 1e-12, "{} -> {}", difficulty, back);
        }

        #[test]
        fn meets_target_agrees_with_bitcoin(hash: [u8; 32], target: [u8; 32]) {
            let target = Target::from_le_bytes(target);
            let ours = meets_target(&hash, &target);
            let theirs = bitcoin::Target::from_le_bytes(hash) <= target;
            prop_assert_eq!(ours, theirs);
        }
    }
}
