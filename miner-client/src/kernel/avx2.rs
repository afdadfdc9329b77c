//! The AVX2 kernel: 8 nonces per pass in `ymm` registers. AVX2 has no rotate, so each
//! `Σ`/`σ` is written as its six shifts; `Maj` is `b ^ ((a ^ b) & (b ^ c))`, whose
//! `b ^ c` is the previous round's `a ^ b` and is shared by the compiler.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_ps, _mm256_cmpeq_epi32,
    _mm256_min_epu32, _mm256_movemask_ps, _mm256_set1_epi32, _mm256_setr_epi32, _mm256_setr_epi8,
    _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_xor_si256,
};

use super::lanes::{scan_batches, sha256d_h7};
use super::work::PreparedWork;

#[inline]
#[target_feature(enable = "avx2")]
fn splat(x: u32) -> __m256i {
    _mm256_set1_epi32(x as i32)
}

#[inline]
#[target_feature(enable = "avx2")]
fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn xor(a: __m256i, b: __m256i) -> __m256i {
    _mm256_xor_si256(a, b)
}

#[inline]
#[target_feature(enable = "avx2")]
fn bsig0(x: __m256i) -> __m256i {
    let right = xor(
        xor(_mm256_srli_epi32::<2>(x), _mm256_srli_epi32::<13>(x)),
        _mm256_srli_epi32::<22>(x),
    );
    let left = xor(
        xor(_mm256_slli_epi32::<30>(x), _mm256_slli_epi32::<19>(x)),
        _mm256_slli_epi32::<10>(x),
    );
    xor(right, left)
}

#[inline]
#[target_feature(enable = "avx2")]
fn bsig1(x: __m256i) -> __m256i {
    let right = xor(
        xor(_mm256_srli_epi32::<6>(x), _mm256_srli_epi32::<11>(x)),
        _mm256_srli_epi32::<25>(x),
    );
    let left = xor(
        xor(_mm256_slli_epi32::<26>(x), _mm256_slli_epi32::<21>(x)),
        _mm256_slli_epi32::<7>(x),
    );
    xor(right, left)
}

#[inline]
#[target_feature(enable = "avx2")]
fn ssig0(x: __m256i) -> __m256i {
    let right = xor(
        xor(_mm256_srli_epi32::<7>(x), _mm256_srli_epi32::<18>(x)),
        _mm256_srli_epi32::<3>(x),
    );
    xor(
        right,
        xor(_mm256_slli_epi32::<25>(x), _mm256_slli_epi32::<14>(x)),
    )
}

#[inline]
#[target_feature(enable = "avx2")]
fn ssig1(x: __m256i) -> __m256i {
    let right = xor(
        xor(_mm256_srli_epi32::<17>(x), _mm256_srli_epi32::<19>(x)),
        _mm256_srli_epi32::<10>(x),
    );
    xor(
        right,
        xor(_mm256_slli_epi32::<15>(x), _mm256_slli_epi32::<13>(x)),
    )
}

#[inline]
#[target_feature(enable = "avx2")]
fn ch(e: __m256i, f: __m256i, g: __m256i) -> __m256i {
    xor(_mm256_and_si256(e, xor(f, g)), g)
}

#[inline]
#[target_feature(enable = "avx2")]
fn maj(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
    xor(b, _mm256_and_si256(xor(a, b), xor(b, c)))
}

sha256d_h7!(
    #[inline]
    #[target_feature(enable = "avx2")]
    fn h7(__m256i)
);

/// Whether the CPU runs this kernel.
pub(super) fn is_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Pushes the nonces of `start..start + count` whose hash word `H7` (byte-swapped)
/// is at most `top`.
#[target_feature(enable = "avx2")]
pub(super) fn scan(work: &PreparedWork, start: u32, count: u32, top: u32, found: &mut Vec<u32>) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let swap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, //
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
    );
    let top = splat(top);
    scan_batches(start, count, 8, found, |base| {
        let w3 = _mm256_shuffle_epi8(add(splat(base), lane), swap);
        let word = _mm256_shuffle_epi8(h7(work, w3), swap);
        // Unsigned `word <= top` as `min(word, top) == word`.
        let at_most = _mm256_cmpeq_epi32(_mm256_min_epu32(word, top), word);
        _mm256_movemask_ps(_mm256_castsi256_ps(at_most)) as u32
    });
}

#[cfg(test)]
mod tests {
    use crate::kernel::tests::{block_100000_is_found, genesis_is_found, matches_sha2};
    use crate::kernel::KernelKind::Avx2;

    #[test]
    fn matches_sha2_on_random_headers() {
        matches_sha2(Avx2);
    }

    #[test]
    fn finds_block_100000() {
        block_100000_is_found(Avx2);
    }

    #[test]
    fn finds_genesis() {
        genesis_is_found(Avx2);
    }
}
