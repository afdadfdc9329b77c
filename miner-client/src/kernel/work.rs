//! Per-job precomputation: everything in `sha256d(header)` that does not depend on the nonce.
//!
//! The 80-byte header is hashed as two 64-byte blocks. The first block (version, prev
//! hash, most of the merkle root) is nonce-free, so its compression is done once: the
//! *midstate*. The second block is `W0..W2` (end of the merkle root, ntime, nbits), the
//! nonce as `W3`, then padding and the 640-bit length, so its first three rounds, most of
//! the fourth and the schedule words `W16`, `W17` and parts of `W18`, `W19`, `W31` are
//! nonce-free too. Kernels start at round 4 from [`PreparedWork::round4`].

use super::sha256::{
    bsig0, bsig1, ch, compress, maj, round, ssig0, ssig1, HEADER_BITS, IV, K, PAD,
};

/// The nonce-independent part of one header's double SHA-256, shared by every kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedWork {
    /// The state after the first block, added back after the second block's rounds.
    pub(super) midstate: [u32; 8],
    /// The state entering round 4 of the second block, without the nonce: `a` and `e`
    /// each still need `+ W3` (round 3's `T1 = h + Σ1(e) + Ch(e, f, g) + K3 + W3`).
    pub(super) round4: [u32; 8],
    /// `W16 = σ0(W1) + W0` (`W9 = W14 = 0`).
    pub(super) w16: u32,
    /// `W17 = σ1(W15) + σ0(W2) + W1` (`W10 = 0`).
    pub(super) w17: u32,
    /// `W18 - σ0(W3) = σ1(W16) + W2` (`W11 = 0`).
    pub(super) w18: u32,
    /// `W19 - W3 = σ1(W17) + σ0(W4)` (`W12 = 0`).
    pub(super) w19: u32,
    /// `W31 - σ1(W29) - W24 = σ0(W16) + W15`.
    pub(super) w31: u32,
}

impl PreparedWork {
    /// Precomputes `header` (its nonce bytes 76..80 are ignored: kernels supply their own).
    pub fn new(header: &[u8; 80]) -> Self {
        let first: &[u8; 64] = header[..64].try_into().expect("64 of 80 bytes");
        let midstate = compress(&IV, first);
        let word =
            |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let w = [word(64), word(68), word(72)];

        let mut s = midstate;
        for i in 0..3 {
            round(&mut s, K[i].wrapping_add(w[i]));
        }
        let [a, b, c, d, e, f, g, h] = s;
        let t1 = h
            .wrapping_add(bsig1(e))
            .wrapping_add(ch(e, f, g))
            .wrapping_add(K[3]);
        let t2 = bsig0(a).wrapping_add(maj(a, b, c));
        let round4 = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];

        let w16 = ssig0(w[1]).wrapping_add(w[0]);
        let w17 = ssig1(HEADER_BITS)
            .wrapping_add(ssig0(w[2]))
            .wrapping_add(w[1]);
        Self {
            midstate,
            round4,
            w16,
            w17,
            w18: ssig1(w16).wrapping_add(w[2]),
            w19: ssig1(w17).wrapping_add(ssig0(PAD)),
            w31: ssig0(w16).wrapping_add(HEADER_BITS),
        }
    }
}
