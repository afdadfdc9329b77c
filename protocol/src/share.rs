//! Share math: coinbase and header assembly from a job and a submit, BIP310
//! version rolling, and the resulting block hash.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::pow::CompactTarget;
use bitcoin::{BlockHash, TxMerkleNode};

use crate::fields::Extranonce;
use crate::hash::sha256d;
use crate::merkle::root_from_branch;
use crate::messages::Notify;

/// Version bits that lie outside the negotiated mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("version bits {bits:08x} outside the negotiated mask {mask:08x}")]
pub struct VersionBitsError {
    pub bits: u32,
    pub mask: u32,
}

/// The header version for BIP310 `bits` on a job of version `job_version`:
/// `(job_version & !mask) | (bits & mask)`.
///
/// # Errors
/// [`VersionBitsError`] when `bits` sets any bit outside `mask`.
pub fn rolled_version(job_version: u32, mask: u32, bits: u32) -> Result<u32, VersionBitsError> {
    if bits & !mask != 0 {
        return Err(VersionBitsError { bits, mask });
    }
    Ok((job_version & !mask) | (bits & mask))
}

/// What a miner chose for one share: the fields of `mining.submit` after the job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareFields {
    pub extranonce1: Extranonce,
    pub extranonce2: Extranonce,
    pub ntime: u32,
    pub nonce: u32,
    /// The full header version (already rolled, if version rolling is in use).
    pub version: u32,
}

/// Concatenates `coinb1 || extranonce1 || extranonce2 || coinb2`.
pub fn coinbase(coinb1: &[u8], en1: &Extranonce, en2: &Extranonce, coinb2: &[u8]) -> Vec<u8> {
    let mut tx = Vec::with_capacity(coinb1.len() + en1.len() + en2.len() + coinb2.len());
    tx.extend_from_slice(coinb1);
    tx.extend_from_slice(en1.as_bytes());
    tx.extend_from_slice(en2.as_bytes());
    tx.extend_from_slice(coinb2);
    tx
}

impl Notify {
    /// The coinbase transaction (non-witness serialization) for these extranonces.
    pub fn coinbase(&self, en1: &Extranonce, en2: &Extranonce) -> Vec<u8> {
        coinbase(&self.coinb1.0, en1, en2, &self.coinb2.0)
    }

    /// The merkle root (raw bytes) for these extranonces.
    pub fn merkle_root(&self, en1: &Extranonce, en2: &Extranonce) -> [u8; 32] {
        let leaf = sha256d(&self.coinbase(en1, en2));
        let branch: Vec<[u8; 32]> = self.merkle_branch.iter().map(|h| h.0).collect();
        root_from_branch(leaf, &branch)
    }

    /// The block header a share on this job describes.
    pub fn header(&self, share: &ShareFields) -> Header {
        let root = self.merkle_root(&share.extranonce1, &share.extranonce2);
        self.header_with_root(root, share)
    }

    /// The block header for a precomputed merkle `root`.
    pub fn header_with_root(&self, root: [u8; 32], share: &ShareFields) -> Header {
        Header {
            version: Version::from_consensus(share.version as i32),
            prev_blockhash: self.prevhash.to_block_hash(),
            merkle_root: TxMerkleNode::from_byte_array(root),
            time: share.ntime,
            bits: CompactTarget::from_consensus(self.nbits.0),
            nonce: share.nonce,
        }
    }
}

/// Serializes a header to its 80 consensus bytes.
pub fn header_bytes(header: &Header) -> [u8; 80] {
    let mut out = [0u8; 80];
    out.copy_from_slice(&bitcoin::consensus::serialize(header));
    out
}

/// The raw sha256d of a header (the proof-of-work hash, internal byte order).
pub fn header_hash(header: &Header) -> [u8; 32] {
    sha256d(&header_bytes(header))
}

/// The block hash of a header.
pub fn block_hash(header: &Header) -> BlockHash {
    BlockHash::from_byte_array(header_hash(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip310_example_of_stratum_md() {
        let version = rolled_version(0x2000_0000, 0x1fff_e000, 0x0000_2000).unwrap();
        assert_eq!(version, 0x2000_2000);
        assert_eq!(version.to_le_bytes(), [0x00, 0x20, 0x00, 0x20]);
    }

    #[test]
    fn bits_outside_the_mask_are_rejected() {
        let err = rolled_version(0x2000_0000, 0x1fff_e000, 0x0000_0001).unwrap_err();
        assert_eq!(
            err.to_string(),
            "version bits 00000001 outside the negotiated mask 1fffe000"
        );
    }
}
