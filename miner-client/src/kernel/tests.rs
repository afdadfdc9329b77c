//! Checks shared by every kernel's tests, and tests of the selection API.

use quarry_protocol::target::target_from_nbits;
use sha2::{Digest, Sha256};

use super::{verify, Kernel, KernelError, KernelKind, PreparedWork};

/// Real block 100000 (STRATUM.md §11 b), nonce 274148111, nBits `1b04864c`.
const BLOCK_100000: &str = "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710";

/// The genesis block (STRATUM.md §11 a), nonce 2083236893, nBits `1d00ffff`.
const GENESIS: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

/// xorshift64*: reproducible pseudo-random headers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn header(&mut self) -> [u8; 80] {
        std::array::from_fn(|_| self.next() as u8)
    }
}

/// The kernel, or `None` after saying why the test skips it.
fn kernel_or_skip(kind: KernelKind) -> Option<Kernel> {
    match Kernel::new(kind) {
        Ok(kernel) => Some(kernel),
        Err(error) => {
            println!("skipping the {kind} kernel: {error}");
            None
        }
    }
}

/// `sha256d` of `header` with `nonce`, straight from the `sha2` crate.
fn reference_hash(header: &[u8; 80], nonce: u32) -> [u8; 32] {
    let mut header = *header;
    header[76..].copy_from_slice(&nonce.to_le_bytes());
    Sha256::digest(Sha256::digest(header)).into()
}

fn top_word(hash: &[u8; 32]) -> u32 {
    u32::from_le_bytes([hash[28], hash[29], hash[30], hash[31]])
}

fn scan(kernel: Kernel, header: &[u8; 80], start: u32, count: u32, target: &[u8; 32]) -> Vec<u32> {
    let mut found = Vec::new();
    let done = kernel.scan(&PreparedWork::new(header), start, count, target, &mut found);
    assert_eq!(done, count);
    found
}

/// On random headers and ranges (wrapping past `u32::MAX`, partial last passes), the
/// kernel reports exactly the nonces whose hash's top word is at most the target's
/// (about one in 16 here), the same as the portable kernel, and all pass [`verify`].
pub(super) fn matches_sha2(kind: KernelKind) {
    let Some(kernel) = kernel_or_skip(kind) else {
        return;
    };
    let portable = Kernel::new(KernelKind::Portable).expect("portable runs everywhere");
    let top = 0x0fff_ffff_u32;
    let mut target = [0xff; 32];
    target[28..].copy_from_slice(&top.to_le_bytes());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let random_start = rng.next() as u32;
    for (start, count) in [
        (random_start, 4099),
        (u32::MAX - 1000, 2003),
        (0, 17),
        (7, 0),
    ] {
        let header = rng.header();
        let expected: Vec<u32> = (0..count)
            .map(|i| start.wrapping_add(i))
            .filter(|&nonce| top_word(&reference_hash(&header, nonce)) <= top)
            .collect();
        assert!(
            expected.len() as u32 >= count / 32,
            "too few hits to compare"
        );
        let found = scan(kernel, &header, start, count, &target);
        assert_eq!(found, expected, "{kind} vs sha2 from {start} for {count}");
        assert_eq!(
            found,
            scan(portable, &header, start, count, &target),
            "{kind} vs portable"
        );
        assert!(found.iter().all(|&nonce| verify(&header, nonce, &target)));
    }
}

/// Scanning 6001 nonces around the block's own nonce with the block's target finds it
/// and nothing else; the header's nonce bytes are zeroed first, as kernels ignore them.
fn block_is_found(kind: KernelKind, header_hex: &str, nbits: u32, nonce: u32) {
    let Some(kernel) = kernel_or_skip(kind) else {
        return;
    };
    let mut header: [u8; 80] = hex::decode(header_hex).unwrap().try_into().unwrap();
    assert_eq!(header[76..], nonce.to_le_bytes());
    header[76..].fill(0);
    let target = target_from_nbits(nbits).to_le_bytes();
    let found = scan(kernel, &header, nonce - 3000, 6001, &target);
    let blocks: Vec<u32> = found
        .into_iter()
        .filter(|&n| verify(&header, n, &target))
        .collect();
    assert_eq!(blocks, [nonce], "{kind}");
}

pub(super) fn block_100000_is_found(kind: KernelKind) {
    block_is_found(kind, BLOCK_100000, 0x1b04_864c, 274_148_111);
}

pub(super) fn genesis_is_found(kind: KernelKind) {
    block_is_found(kind, GENESIS, 0x1d00_ffff, 2_083_236_893);
}

#[test]
fn verify_decides_a_candidate_whose_top_word_equals_the_target() {
    let header = Rng(7).header();
    let hash = reference_hash(&header, 42);
    let mut target = [0u8; 32];
    target[28..].copy_from_slice(&hash[28..]);
    let portable = Kernel::new(KernelKind::Portable).unwrap();
    assert_eq!(scan(portable, &header, 42, 1, &target), [42]);
    assert!(!verify(&header, 42, &target));
    target[..28].fill(0xff);
    assert!(verify(&header, 42, &target));
}

#[test]
fn names_round_trip() {
    for kind in KernelKind::ALL {
        assert_eq!(kind.name().parse::<KernelKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(
        Kernel::by_name("sse9"),
        Err(KernelError::Unknown("sse9".to_owned()))
    );
}

#[test]
fn the_fastest_kernel_is_the_first_supported() {
    let fastest = Kernel::fastest().kind();
    assert!(fastest.is_supported());
    let first = KernelKind::ALL.into_iter().find(|kind| kind.is_supported());
    assert_eq!(Some(fastest), first);
    assert_eq!(
        Kernel::by_name("portable").map(Kernel::kind),
        Ok(KernelKind::Portable)
    );
}
