//! Difficulty retargeting: Bitcoin's rule, in exact 256-bit integer arithmetic.
//!
//! `new = old × actual / expected` with `actual` clamped to `[expected/4, expected×4]`
//! and the result capped at [`MAX_TARGET`] (Bitcoin Core `CalculateNextWorkRequired`,
//! <https://github.com/bitcoin/bitcoin/blob/v27.0/src/pow.cpp>). The `bitcoin` crate's
//! `CompactTarget::from_next_work_required` does the same but overflows 256 bits for
//! targets as easy as regtest's, which this chain allows, so the product is kept in
//! 320 bits here.

use bitcoin::{CompactTarget, Target};

/// The easiest target the chain allows: regtest's `207fffff`.
pub const MAX_TARGET: Target = Target::MAX_ATTAINABLE_REGTEST;

/// The compact form of [`MAX_TARGET`], as a header carries it.
pub const MAX_NBITS: u32 = 0x207f_ffff;

/// [`MAX_NBITS`] as a [`CompactTarget`].
pub fn max_bits() -> CompactTarget {
    CompactTarget::from_consensus(MAX_NBITS)
}

/// The bits after a retarget from `last` (the bits of the window's last block), when the
/// window's blocks took `actual` seconds (may be negative: timestamps only need to beat the
/// median time past) and should have taken `expected` seconds.
pub fn next_bits(last: CompactTarget, actual: i64, expected: u64) -> CompactTarget {
    let old = Target::from_compact(last);
    let (numerator, denominator) = if i128::from(actual) * 4 < i128::from(expected) {
        (1, 4)
    } else if i128::from(actual) > i128::from(expected) * 4 {
        (4, 1)
    } else {
        // Here 0 <= expected / 4 <= actual <= expected * 4.
        (actual.unsigned_abs(), expected)
    };
    let new = mul_div(old, numerator, denominator).min(MAX_TARGET);
    // A zero target could never be met; the hardest target is 1.
    let new = if new == Target::ZERO {
        Target::from_le_bytes(one_le())
    } else {
        new
    };
    new.to_compact_lossy()
}

fn one_le() -> [u8; 32] {
    let mut one = [0u8; 32];
    one[0] = 1;
    one
}

/// `floor(target × numerator / denominator)`, saturating at the all-ones target;
/// a zero `denominator` saturates too.
fn mul_div(target: Target, numerator: u64, denominator: u64) -> Target {
    if denominator == 0 {
        return Target::from_le_bytes([0xff; 32]);
    }
    let bytes = target.to_le_bytes();
    let mut limbs = [0u64; 5];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
    }
    // Multiply: 256 × 64 bits fits 320.
    let mut carry = 0u128;
    for limb in limbs.iter_mut() {
        let product = u128::from(*limb) * u128::from(numerator) + carry;
        *limb = product as u64;
        carry = product >> 64;
    }
    // Divide, most significant limb first.
    let mut remainder = 0u128;
    for limb in limbs.iter_mut().rev() {
        let current = (remainder << 64) | u128::from(*limb);
        *limb = (current / u128::from(denominator)) as u64;
        remainder = current % u128::from(denominator);
    }
    if limbs[4] != 0 {
        return Target::from_le_bytes([0xff; 32]);
    }
    let mut out = [0u8; 32];
    for (chunk, limb) in out.chunks_exact_mut(8).zip(limbs) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    Target::from_le_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_protocol::target::network_difficulty;

    fn mainnet_like() -> CompactTarget {
        CompactTarget::from_consensus(0x1d00_ffff)
    }

    fn target(bits: CompactTarget) -> Target {
        Target::from_compact(bits)
    }

    #[test]
    fn max_bits_is_max_target() {
        assert_eq!(target(max_bits()), MAX_TARGET);
        assert_eq!(MAX_TARGET.to_compact_lossy(), max_bits());
    }

    #[test]
    fn on_time_blocks_keep_the_target() {
        for bits in [
            mainnet_like(),
            max_bits(),
            CompactTarget::from_consensus(0x1b04_864c),
        ] {
            assert_eq!(next_bits(bits, 3600, 3600), bits);
        }
    }

    #[test]
    fn twice_as_fast_halves_the_target() {
        let new = next_bits(mainnet_like(), 1800, 3600);
        assert_eq!(new.to_consensus(), 0x1c7f_ff80);
        assert_eq!(
            network_difficulty(new.to_consensus()),
            2.0 * network_difficulty(mainnet_like().to_consensus())
        );
    }

    #[test]
    fn twice_as_slow_doubles_the_target() {
        let new = next_bits(mainnet_like(), 7200, 3600);
        assert_eq!(new.to_consensus(), 0x1d01_fffe);
    }

    #[test]
    fn adjustment_is_clamped_to_four_times() {
        let quarter = next_bits(mainnet_like(), 900, 3600);
        assert_eq!(quarter.to_consensus(), 0x1c3f_ffc0);
        for actual in [-5_000, 0, 1, 899] {
            assert_eq!(next_bits(mainnet_like(), actual, 3600), quarter, "{actual}");
        }
        let four = next_bits(mainnet_like(), 14_400, 3600);
        assert_eq!(four.to_consensus(), 0x1d03_fffc);
        for actual in [14_401, 1_000_000, i64::MAX] {
            assert_eq!(next_bits(mainnet_like(), actual, 3600), four, "{actual}");
        }
    }

    #[test]
    fn never_easier_than_the_maximum() {
        // Regtest-easy targets do not fit 256 bits once multiplied: saturate, then cap.
        assert_eq!(next_bits(max_bits(), 14_400, 3600), max_bits());
        assert_eq!(next_bits(max_bits(), i64::MAX, 1), max_bits());
        let near = CompactTarget::from_consensus(0x203f_ffff);
        assert_eq!(next_bits(near, 7200, 3600).to_consensus(), 0x207f_fffe);
        assert_eq!(next_bits(near, 14_400, 3600), max_bits());
        // And the halving of the maximum is exact up to compact rounding.
        let half = next_bits(max_bits(), 1800, 3600);
        assert_eq!(half.to_consensus(), 0x203f_ffff);
    }

    #[test]
    fn never_harder_than_one() {
        let hardest = CompactTarget::from_consensus(0x0101_0000); // target 1
        assert_eq!(target(hardest), Target::from_le_bytes(one_le()));
        assert_eq!(next_bits(hardest, 0, 3600), hardest);
    }

    #[test]
    fn mul_div_is_exact() {
        let t = Target::from_le_bytes([0xff; 32]);
        assert_eq!(mul_div(t, 3, 3), t);
        assert_eq!(mul_div(t, 2, 1), t, "saturates");
        assert_eq!(mul_div(t, 1, 0), t, "saturates");
        let mut half = [0xff; 32];
        half[31] = 0x7f;
        assert_eq!(mul_div(t, 1, 2), Target::from_le_bytes(half));
        let mut bytes = [0u8; 32];
        bytes[0] = 10;
        assert_eq!(
            mul_div(Target::from_le_bytes(bytes), 7, 3).to_le_bytes()[0],
            23
        );
    }
}
