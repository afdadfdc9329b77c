//! The portable kernel: one nonce at a time in plain Rust, available on every target.

use super::lanes::{scan_batches, sha256d_h7};
use super::sha256::{add, bsig0, bsig1, ch, maj, splat, ssig0, ssig1};
use super::work::PreparedWork;

sha256d_h7!(
    #[inline]
    fn h7(u32)
);

/// Pushes the nonces of `start..start + count` whose hash word `H7` (byte-swapped)
/// is at most `top`.
pub(super) fn scan(work: &PreparedWork, start: u32, count: u32, top: u32, found: &mut Vec<u32>) {
    scan_batches(start, count, 1, found, |nonce| {
        u32::from(h7(work, nonce.swap_bytes()).swap_bytes() <= top)
    });
}

#[cfg(test)]
mod tests {
    use crate::kernel::tests::{block_100000_is_found, genesis_is_found, matches_sha2};
    use crate::kernel::KernelKind::Portable;

    #[test]
    fn matches_sha2_on_random_headers() {
        matches_sha2(Portable);
    }

    #[test]
    fn finds_block_100000() {
        block_100000_is_found(Portable);
    }

    #[test]
    fn finds_genesis() {
        genesis_is_found(Portable);
    }
}
