//! The lane-parallel nonce pipeline, written once for the portable, AVX2 and AVX-512 kernels.
//!
//! [`sha256d_h7!`] expands, inside a kernel module, to a function computing the final
//! state word `H7` of `sha256d(header)` for one nonce per lane. It calls the lane
//! operations `splat`, `add`, `bsig0`, `bsig1`, `ssig0`, `ssig1`, `ch` and `maj` that
//! the kernel module defines for its lane type (`u32`, `__m256i`, `__m512i`), so one
//! source serves every width.
//!
//! The rounds are fully unrolled over arrays with constant indices, which the compiler
//! turns into registers. Only `H7` is returned: it is the hash's most significant word
//! (bytes 28..32), enough to reject all but about `target / 2^224` of the nonces. It
//! equals `IV7 + e` after round 60 of the second hash, so dead-code elimination drops
//! rounds 61..63, the `a` half of rounds 57..60 and the schedule words `W61..W63`.
//! Message words known per job or per algorithm are specialised by hand below
//! (`W4..W15` of the header's second block, `W8..W15` of the second hash).

/// One SHA-256 round on `$s = [a, b, c, d, e, f, g, h]` with `$kw = K[i] + W[i]`.
macro_rules! round {
    ($s:ident, $kw:expr) => {{
        let [a, b, c, d, e, f, g, h] = $s;
        let t1 = add(add(h, $kw), add(bsig1(e), ch(e, f, g)));
        $s = [
            add(t1, add(bsig0(a), maj(a, b, c))),
            a,
            b,
            c,
            add(d, t1),
            e,
            f,
            g,
        ];
    }};
}

/// Round `$i` with a message word from the constant `W` of the padding.
macro_rules! constant_round {
    ($s:ident, $i:literal, $word:expr) => {
        $crate::kernel::lanes::round!($s, splat($crate::kernel::sha256::K[$i].wrapping_add($word)))
    };
}

/// Round `$i` with the message word `$w[$i]` set to `$word` first.
macro_rules! word_round {
    ($s:ident, $w:ident, $i:literal, $word:expr) => {
        $w[$i] = $word;
        $crate::kernel::lanes::round!($s, add(splat($crate::kernel::sha256::K[$i]), $w[$i]));
    };
}

/// Rounds with the general message schedule
/// `W[i] = σ1(W[i-2]) + W[i-7] + σ0(W[i-15]) + W[i-16]`.
macro_rules! scheduled_rounds {
    ($s:ident, $w:ident; $($i:literal)*) => {$(
        $crate::kernel::lanes::word_round!(
            $s,
            $w,
            $i,
            add(add(ssig1($w[$i - 2]), $w[$i - 7]), add(ssig0($w[$i - 15]), $w[$i - 16]))
        );
    )*};
}

/// Defines `fn $name(work: &PreparedWork, w3: $lane) -> $lane` returning `H7` of
/// `sha256d` of the prepared header with the message word `W3 = w3`. Both are
/// big-endian words: `w3` is the byte-swapped nonce, `H7` the byte-swapped top word.
macro_rules! sha256d_h7 {
    ($(#[$attr:meta])* fn $name:ident($lane:ty)) => {
        $(#[$attr])*
        fn $name(work: &$crate::kernel::work::PreparedWork, w3: $lane) -> $lane {
            use $crate::kernel::lanes::{constant_round, scheduled_rounds, word_round};
            use $crate::kernel::sha256::{self as scalar, DIGEST_BITS, HEADER_BITS, IV, PAD};

            // The header's second block from round 4 (see `PreparedWork`).
            let r = &work.round4;
            let mut s: [$lane; 8] = [
                add(splat(r[0]), w3), splat(r[1]), splat(r[2]), splat(r[3]),
                add(splat(r[4]), w3), splat(r[5]), splat(r[6]), splat(r[7]),
            ];
            let mut w: [$lane; 64] = [splat(0); 64];
            w[3] = w3;
            constant_round!(s, 4, PAD);
            constant_round!(s, 5, 0);
            constant_round!(s, 6, 0);
            constant_round!(s, 7, 0);
            constant_round!(s, 8, 0);
            constant_round!(s, 9, 0);
            constant_round!(s, 10, 0);
            constant_round!(s, 11, 0);
            constant_round!(s, 12, 0);
            constant_round!(s, 13, 0);
            constant_round!(s, 14, 0);
            constant_round!(s, 15, HEADER_BITS);
            word_round!(s, w, 16, splat(work.w16));
            word_round!(s, w, 17, splat(work.w17));
            word_round!(s, w, 18, add(ssig0(w[3]), splat(work.w18)));
            word_round!(s, w, 19, add(w[3], splat(work.w19)));
            word_round!(s, w, 20, add(ssig1(w[18]), splat(PAD)));
            word_round!(s, w, 21, ssig1(w[19]));
            word_round!(s, w, 22, add(ssig1(w[20]), splat(HEADER_BITS)));
            word_round!(s, w, 23, add(ssig1(w[21]), w[16]));
            word_round!(s, w, 24, add(ssig1(w[22]), w[17]));
            word_round!(s, w, 25, add(ssig1(w[23]), w[18]));
            word_round!(s, w, 26, add(ssig1(w[24]), w[19]));
            word_round!(s, w, 27, add(ssig1(w[25]), w[20]));
            word_round!(s, w, 28, add(ssig1(w[26]), w[21]));
            word_round!(s, w, 29, add(ssig1(w[27]), w[22]));
            word_round!(s, w, 30, add(add(ssig1(w[28]), w[23]), splat(scalar::ssig0(HEADER_BITS))));
            word_round!(s, w, 31, add(add(ssig1(w[29]), w[24]), splat(work.w31)));
            scheduled_rounds!(s, w; 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47);
            scheduled_rounds!(s, w; 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);

            // The second hash: one block of the 32-byte digest, padding and length.
            let mid = &work.midstate;
            let mut w: [$lane; 64] = [splat(0); 64];
            for i in 0..8 {
                w[i] = add(splat(mid[i]), s[i]);
            }
            let mut s: [$lane; 8] = [
                splat(IV[0]), splat(IV[1]), splat(IV[2]), splat(IV[3]),
                splat(IV[4]), splat(IV[5]), splat(IV[6]), splat(IV[7]),
            ];
            word_round!(s, w, 0, w[0]);
            word_round!(s, w, 1, w[1]);
            word_round!(s, w, 2, w[2]);
            word_round!(s, w, 3, w[3]);
            word_round!(s, w, 4, w[4]);
            word_round!(s, w, 5, w[5]);
            word_round!(s, w, 6, w[6]);
            word_round!(s, w, 7, w[7]);
            constant_round!(s, 8, PAD);
            constant_round!(s, 9, 0);
            constant_round!(s, 10, 0);
            constant_round!(s, 11, 0);
            constant_round!(s, 12, 0);
            constant_round!(s, 13, 0);
            constant_round!(s, 14, 0);
            constant_round!(s, 15, DIGEST_BITS);
            word_round!(s, w, 16, add(ssig0(w[1]), w[0]));
            word_round!(s, w, 17, add(add(ssig0(w[2]), w[1]), splat(scalar::ssig1(DIGEST_BITS))));
            word_round!(s, w, 18, add(add(ssig1(w[16]), ssig0(w[3])), w[2]));
            word_round!(s, w, 19, add(add(ssig1(w[17]), ssig0(w[4])), w[3]));
            word_round!(s, w, 20, add(add(ssig1(w[18]), ssig0(w[5])), w[4]));
            word_round!(s, w, 21, add(add(ssig1(w[19]), ssig0(w[6])), w[5]));
            word_round!(s, w, 22, add(add(ssig1(w[20]), ssig0(w[7])), add(w[6], splat(DIGEST_BITS))));
            word_round!(s, w, 23, add(add(ssig1(w[21]), w[16]), add(w[7], splat(scalar::ssig0(PAD)))));
            word_round!(s, w, 24, add(add(ssig1(w[22]), w[17]), splat(PAD)));
            word_round!(s, w, 25, add(ssig1(w[23]), w[18]));
            word_round!(s, w, 26, add(ssig1(w[24]), w[19]));
            word_round!(s, w, 27, add(ssig1(w[25]), w[20]));
            word_round!(s, w, 28, add(ssig1(w[26]), w[21]));
            word_round!(s, w, 29, add(ssig1(w[27]), w[22]));
            word_round!(s, w, 30, add(add(ssig1(w[28]), w[23]), splat(scalar::ssig0(DIGEST_BITS))));
            word_round!(s, w, 31, add(add(ssig1(w[29]), w[24]), add(ssig0(w[16]), splat(DIGEST_BITS))));
            scheduled_rounds!(s, w; 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47);
            scheduled_rounds!(s, w; 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
            add(splat(IV[7]), s[7])
        }
    };
}

pub(super) use {constant_round, round, scheduled_rounds, sha256d_h7, word_round};

/// Scans `count` nonces from `start` (wrapping), `lanes` per call of `batch`, and pushes
/// every nonce whose lane bit is set in the mask `batch(first_nonce_of_batch)` returns.
/// Bits for nonces past `count` in the last batch are ignored.
pub(super) fn scan_batches(
    start: u32,
    count: u32,
    lanes: u32,
    found: &mut Vec<u32>,
    mut batch: impl FnMut(u32) -> u32,
) {
    let mut base = start;
    let mut left = count;
    while left > 0 {
        let mut hits = batch(base);
        if left < lanes {
            hits &= (1 << left) - 1;
        }
        while hits != 0 {
            found.push(base.wrapping_add(hits.trailing_zeros()));
            hits &= hits - 1;
        }
        left = left.saturating_sub(lanes);
        base = base.wrapping_add(lanes);
    }
}
