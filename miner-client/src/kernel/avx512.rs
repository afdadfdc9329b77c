//! The AVX-512 kernel: 16 nonces per pass in `zmm` registers, with `vprord` for the
//! rotations and one `vpternlogd` for each three-input function (`Ch`, `Maj` and the
//! XOR of three rotations in every `Σ`/`σ`).

use std::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_cmple_epu32_mask, _mm512_rol_epi32, _mm512_ror_epi32,
    _mm512_set1_epi32, _mm512_setr_epi32, _mm512_srli_epi32, _mm512_ternarylogic_epi32,
};

use super::lanes::{scan_batches, sha256d_h7};
use super::work::PreparedWork;

/// Truth table of `a ^ b ^ c` for `vpternlogd`.
const XOR3: i32 = 0x96;
/// Truth table of `if a { b } else { c }`.
const SELECT: i32 = 0xca;
/// Truth table of the majority of `a`, `b`, `c`.
const MAJORITY: i32 = 0xe8;

#[inline]
#[target_feature(enable = "avx512f")]
fn splat(x: u32) -> __m512i {
    _mm512_set1_epi32(x as i32)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn add(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn bsig0(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<XOR3>(
        _mm512_ror_epi32::<2>(x),
        _mm512_ror_epi32::<13>(x),
        _mm512_ror_epi32::<22>(x),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
fn bsig1(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<XOR3>(
        _mm512_ror_epi32::<6>(x),
        _mm512_ror_epi32::<11>(x),
        _mm512_ror_epi32::<25>(x),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
fn ssig0(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<XOR3>(
        _mm512_ror_epi32::<7>(x),
        _mm512_ror_epi32::<18>(x),
        _mm512_srli_epi32::<3>(x),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
fn ssig1(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<XOR3>(
        _mm512_ror_epi32::<17>(x),
        _mm512_ror_epi32::<19>(x),
        _mm512_srli_epi32::<10>(x),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
fn ch(e: __m512i, f: __m512i, g: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<SELECT>(e, f, g)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn maj(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<MAJORITY>(a, b, c)
}

/// Reverses the bytes of every lane: bytes 0 and 2 come from `rol 8`, 1 and 3 from `ror 8`.
#[inline]
#[target_feature(enable = "avx512f")]
fn swap_bytes(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<SELECT>(
        splat(0x00ff_00ff),
        _mm512_rol_epi32::<8>(x),
        _mm512_ror_epi32::<8>(x),
    )
}

sha256d_h7!(
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn h7(__m512i)
);

/// Whether the CPU runs this kernel.
pub(super) fn is_supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Pushes the nonces of `start..start + count` whose hash word `H7` (byte-swapped)
/// is at most `top`.
#[target_feature(enable = "avx512f")]
pub(super) fn scan(work: &PreparedWork, start: u32, count: u32, top: u32, found: &mut Vec<u32>) {
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let top = splat(top);
    scan_batches(start, count, 16, found, |base| {
        let word = swap_bytes(h7(work, swap_bytes(add(splat(base), lane))));
        u32::from(_mm512_cmple_epu32_mask(word, top))
    });
}

#[cfg(test)]
mod tests {
    use crate::kernel::tests::{block_100000_is_found, genesis_is_found, matches_sha2};
    use crate::kernel::KernelKind::Avx512;

    #[test]
    fn matches_sha2_on_random_headers() {
        matches_sha2(Avx512);
    }

    #[test]
    fn finds_block_100000() {
        block_100000_is_found(Avx512);
    }

    #[test]
    fn finds_genesis() {
        genesis_is_found(Avx512);
    }
}
