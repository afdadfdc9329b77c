//! Merkle branches as Stratum sends them, and roots from branches.
//!
//! Leaves are txids in internal byte order; the coinbase is leaf 0. The branch is
//! the coinbase's path to the root, bottom-up, duplicating the last node of an
//! odd level (STRATUM.md §6; the algorithm of ckpool and node-stratum-pool).

use crate::hash::sha256d_pair;

/// The Stratum merkle branch for a block whose non-coinbase transactions have
/// `txids` (internal byte order, block order).
pub fn branch_from_txids(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut branch = Vec::new();
    // `level` holds the nodes right of the coinbase's path at the current height.
    let mut level: Vec<[u8; 32]> = txids.to_vec();
    while !level.is_empty() {
        branch.push(level[0]);
        let rest = &level[1..];
        level = rest
            .chunks(2)
            .map(|pair| sha256d_pair(&pair[0], pair.get(1).unwrap_or(&pair[0])))
            .collect();
    }
    branch
}

/// Folds `leaf` (the coinbase txid) up through `branch` to the merkle root.
pub fn root_from_branch(leaf: [u8; 32], branch: &[[u8; 32]]) -> [u8; 32] {
    branch
        .iter()
        .fold(leaf, |node, sibling| sha256d_pair(&node, sibling))
}

/// The merkle root of all `txids` including the coinbase, computed level by level.
/// Returns `None` for an empty list.
pub fn root_from_txids(txids: &[[u8; 32]]) -> Option<[u8; 32]> {
    let mut level = txids.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| sha256d_pair(&pair[0], pair.get(1).unwrap_or(&pair[0])))
            .collect();
    }
    level.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256d;

    fn txids(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| sha256d(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn branch_reproduces_the_full_root_for_1_to_41_transactions() {
        for n in 1..=41 {
            let all = txids(n);
            let branch = branch_from_txids(&all[1..]);
            let expected_len = (n as f64).log2().ceil() as usize;
            assert_eq!(branch.len(), expected_len, "{n} transactions");
            assert_eq!(
                root_from_branch(all[0], &branch),
                root_from_txids(&all).unwrap(),
                "{n} transactions"
            );
        }
    }

    #[test]
    fn root_agrees_with_the_bitcoin_crate() {
        use bitcoin::hashes::Hash;
        for n in 1..=41 {
            let all = txids(n);
            let hashes = all.iter().map(|t| bitcoin::Txid::from_byte_array(*t));
            let theirs = bitcoin::merkle_tree::calculate_root(hashes).unwrap();
            assert_eq!(root_from_txids(&all).unwrap(), theirs.to_byte_array());
        }
    }
}
