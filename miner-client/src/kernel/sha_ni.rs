//! The SHA-NI kernel: the SHA extensions' `sha256rnds2` (two rounds) and
//! `sha256msg1`/`sha256msg2` (message schedule), on [`STREAMS`] independent nonces at
//! once so that one nonce's dependent round chain hides another's latency.
//!
//! The state lives in the two registers the instructions expect, `ABEF` and `CDGH`
//! (lane 0 holds `F`, resp. `H`). A message register holds four consecutive words,
//! `W[4g]` in lane 0. The first hash starts at round 4 from [`PreparedWork::round4`];
//! the second stops after round 61, where lane 0 of `ABEF` is `F = H7 - IV7`.

use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_cvtsi128_si32, _mm_set_epi32,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
};

use super::lanes::scan_batches;
use super::sha256::{ssig0, DIGEST_BITS, HEADER_BITS, IV, K, PAD};
use super::work::PreparedWork;

/// Nonces hashed side by side.
const STREAMS: usize = 3;

/// One message or state register per stream.
type Lanes = [__m128i; STREAMS];

/// The register holding `[w0, w1, w2, w3]`, `w0` in lane 0.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn words(w0: u32, w1: u32, w2: u32, w3: u32) -> __m128i {
    _mm_set_epi32(w3 as i32, w2 as i32, w1 as i32, w0 as i32)
}

/// `K[4g..4g + 4]`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn k(g: usize) -> __m128i {
    words(K[4 * g], K[4 * g + 1], K[4 * g + 2], K[4 * g + 3])
}

/// `K[4g..4g + 4] + w` for a message group that is the same for every nonce.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn constant_kw(g: usize, w: [u32; 4]) -> Lanes {
    let k = &K[4 * g..];
    [words(
        k[0].wrapping_add(w[0]),
        k[1].wrapping_add(w[1]),
        k[2].wrapping_add(w[2]),
        k[3].wrapping_add(w[3]),
    ); STREAMS]
}

/// `K[4g..4g + 4] + m` per stream.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn kw(g: usize, m: &Lanes) -> Lanes {
    let k = k(g);
    m.map(|m| _mm_add_epi32(m, k))
}

/// The next message group `W[4g..4g + 4]` from the previous one `m1`, the one before
/// `m2`, and `early = sha256msg1(W[4g - 16..], W[4g - 12..])`, computed or known.
/// `W[4g - 7..4g - 3]` is `m1:m2` shifted by one word.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn expand(early: &Lanes, m2: &Lanes, m1: &Lanes) -> Lanes {
    std::array::from_fn(|j| {
        let mid = _mm_alignr_epi8::<4>(m1[j], m2[j]);
        _mm_sha256msg2_epu32(_mm_add_epi32(early[j], mid), m1[j])
    })
}

/// `sha256msg1(a, b)` per stream.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn msg1(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|j| _mm_sha256msg1_epu32(a[j], b[j]))
}

/// The working state of every stream.
struct State {
    abef: Lanes,
    cdgh: Lanes,
}

impl State {
    /// Two rounds, with the low two words of `kw = K + W`.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds2(&mut self, kw: &Lanes) {
        // Indexing (rather than zipping) measured 2-7 % faster: the register allocation
        // of the whole unrolled kernel is sensitive to how this loop is written.
        #[allow(clippy::needless_range_loop)]
        for j in 0..STREAMS {
            let abef = _mm_sha256rnds2_epu32(self.cdgh[j], self.abef[j], kw[j]);
            self.cdgh[j] = self.abef[j];
            self.abef[j] = abef;
        }
    }

    /// Four rounds with `kw = K + W` of their message group.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn rounds4(&mut self, kw: &Lanes) {
        self.rounds2(kw);
        self.rounds2(&kw.map(|kw| _mm_shuffle_epi32::<0x0e>(kw)));
    }

    /// The rounds of the message groups `groups`, each expanded from the last four
    /// groups `m` (oldest first), which it then updates.
    #[inline]
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn scheduled_rounds(&mut self, m: &mut [Lanes; 4], groups: std::ops::Range<usize>) {
        for g in groups {
            let next = expand(&msg1(&m[0], &m[1]), &m[2], &m[3]);
            *m = [m[1], m[2], m[3], next];
            self.rounds4(&kw(g, &next));
        }
    }
}

/// `H7` of `sha256d` for the nonces `base..base + STREAMS`.
#[inline]
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
fn h7(work: &PreparedWork, base: u32) -> [u32; STREAMS] {
    let w3: [u32; STREAMS] = std::array::from_fn(|j| base.wrapping_add(j as u32).swap_bytes());
    let [a, b, c, d, e, f, g, h] = work.round4;
    let abef = words(f, e, b, a);
    let mut s = State {
        abef: w3.map(|n| _mm_add_epi32(abef, words(0, n, 0, n))),
        cdgh: [words(h, g, d, c); STREAMS],
    };
    s.rounds4(&constant_kw(1, [PAD, 0, 0, 0]));
    s.rounds4(&constant_kw(2, [0; 4]));
    s.rounds4(&constant_kw(3, [0, 0, 0, HEADER_BITS]));
    // W16..W19 from the precomputed parts; then `sha256msg1` of constant groups is a
    // constant: `[PAD, 0, 0, 0]` for W20.., zero for W24.., and
    // `[0, 0, σ0(W15), W15 + σ0(W16)]` for W28...
    let m4 = w3.map(|n| {
        words(
            work.w16,
            work.w17,
            work.w18.wrapping_add(ssig0(n)),
            work.w19.wrapping_add(n),
        )
    });
    s.rounds4(&kw(4, &m4));
    let m3 = [words(0, 0, 0, HEADER_BITS); STREAMS];
    let m5 = expand(&[words(PAD, 0, 0, 0); STREAMS], &m3, &m4);
    s.rounds4(&kw(5, &m5));
    let m6 = expand(&[words(0, 0, 0, 0); STREAMS], &m4, &m5);
    s.rounds4(&kw(6, &m6));
    let m7 = expand(
        &[words(0, 0, ssig0(HEADER_BITS), work.w31); STREAMS],
        &m5,
        &m6,
    );
    s.rounds4(&kw(7, &m7));
    let mut m = [m4, m5, m6, m7];
    s.scheduled_rounds(&mut m, 8..16);

    // The digest words: `[A, B, C, D]` and `[E, F, G, H]` after adding the midstate.
    let mid = work.midstate;
    let (mid_abef, mid_cdgh) = (
        words(mid[5], mid[4], mid[1], mid[0]),
        words(mid[7], mid[6], mid[3], mid[2]),
    );
    let mut m0 = s.abef;
    let mut m1 = s.cdgh;
    for j in 0..STREAMS {
        let feba = _mm_shuffle_epi32::<0x1b>(_mm_add_epi32(s.abef[j], mid_abef));
        let dchg = _mm_shuffle_epi32::<0xb1>(_mm_add_epi32(s.cdgh[j], mid_cdgh));
        m0[j] = _mm_blend_epi16::<0xf0>(feba, dchg);
        m1[j] = _mm_alignr_epi8::<8>(dchg, feba);
    }

    let mut s = State {
        abef: [words(IV[5], IV[4], IV[1], IV[0]); STREAMS],
        cdgh: [words(IV[7], IV[6], IV[3], IV[2]); STREAMS],
    };
    s.rounds4(&kw(0, &m0));
    s.rounds4(&kw(1, &m1));
    s.rounds4(&constant_kw(2, [PAD, 0, 0, 0]));
    s.rounds4(&constant_kw(3, [0, 0, 0, DIGEST_BITS]));
    // W9..W14 are zero: `sha256msg1(W8.., W12..) = [PAD, 0, 0, 0]` and W16.. needs no
    // `W9..W12` term.
    let m2 = [words(PAD, 0, 0, 0); STREAMS];
    let m3 = [words(0, 0, 0, DIGEST_BITS); STREAMS];
    let m4 =
        std::array::from_fn(|j| _mm_sha256msg2_epu32(_mm_sha256msg1_epu32(m0[j], m1[j]), m3[j]));
    s.rounds4(&kw(4, &m4));
    let m5 = expand(&msg1(&m1, &m2), &m3, &m4);
    s.rounds4(&kw(5, &m5));
    let m6 = expand(&m2, &m4, &m5);
    s.rounds4(&kw(6, &m6));
    let m7 = expand(&msg1(&m3, &m4), &m5, &m6);
    s.rounds4(&kw(7, &m7));
    let mut m = [m4, m5, m6, m7];
    s.scheduled_rounds(&mut m, 8..15);
    let m15 = expand(&msg1(&m[0], &m[1]), &m[2], &m[3]);
    s.rounds2(&kw(15, &m15));
    s.abef
        .map(|abef| IV[7].wrapping_add(_mm_cvtsi128_si32(abef) as u32))
}

/// Whether the CPU runs this kernel.
pub(super) fn is_supported() -> bool {
    is_x86_feature_detected!("sha")
        && is_x86_feature_detected!("sse2")
        && is_x86_feature_detected!("ssse3")
        && is_x86_feature_detected!("sse4.1")
}

/// Pushes the nonces of `start..start + count` whose hash word `H7` (byte-swapped)
/// is at most `top`.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub(super) fn scan(work: &PreparedWork, start: u32, count: u32, top: u32, found: &mut Vec<u32>) {
    scan_batches(start, count, STREAMS as u32, found, |base| {
        let words = h7(work, base);
        (0..STREAMS).fold(0, |hits, j| {
            hits | u32::from(words[j].swap_bytes() <= top) << j
        })
    });
}

#[cfg(test)]
mod tests {
    use crate::kernel::tests::{block_100000_is_found, genesis_is_found, matches_sha2};
    use crate::kernel::KernelKind::ShaNi;

    #[test]
    fn matches_sha2_on_random_headers() {
        matches_sha2(ShaNi);
    }

    #[test]
    fn finds_block_100000() {
        block_100000_is_found(ShaNi);
    }

    #[test]
    fn finds_genesis() {
        genesis_is_found(ShaNi);
    }
}
