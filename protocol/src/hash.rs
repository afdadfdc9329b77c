//! SHA-256d, the proof-of-work and merkle hash of Bitcoin.

use sha2::{Digest, Sha256};

/// Returns `SHA256(SHA256(data))` in raw (internal) byte order.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// Returns `SHA256(SHA256(left || right))`, one step of a merkle fold.
pub fn sha256d_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let first = Sha256::new()
        .chain_update(left)
        .chain_update(right)
        .finalize();
    Sha256::digest(first).into()
}

/// Formats a raw hash the way explorers and Bitcoin Core print it (byte-reversed hex).
pub fn display_hex(raw: &[u8; 32]) -> String {
    let mut reversed = *raw;
    reversed.reverse();
    hex::encode(reversed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256d_of_empty_input() {
        assert_eq!(
            hex::encode(sha256d(b"")),
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
    }

    #[test]
    fn pair_equals_concatenation() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let mut joined = [0u8; 64];
        joined[..32].copy_from_slice(&a);
        joined[32..].copy_from_slice(&b);
        assert_eq!(sha256d_pair(&a, &b), sha256d(&joined));
    }
}
