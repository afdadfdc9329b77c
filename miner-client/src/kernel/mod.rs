//! SHA-256d nonce-scanning kernels and their run-time selection.
//!
//! A job's 80-byte header is prepared once ([`PreparedWork`]); a [`Kernel`] then scans
//! ranges of nonces. Kernels compute only the hash's most significant 32-bit word
//! (bytes 28..32 read little-endian) and report every nonce whose word is at most the
//! target's: a superset of the nonces meeting the target, tiny for any real target.
//! [`verify`] decides each candidate with the full `sha256d` of the `sha2` crate.
//!
//! | kernel | nonces per pass | needs |
//! |---|---|---|
//! | [`KernelKind::Avx512`] | 16 | AVX-512F |
//! | [`KernelKind::ShaNi`] | 3 (interleaved) | SHA, SSE4.1 |
//! | [`KernelKind::Avx2`] | 8 | AVX2 |
//! | [`KernelKind::Portable`] | 1 | nothing |

use std::fmt;
use std::str::FromStr;

use bitcoin::Target;
use quarry_protocol::hash::sha256d;
use quarry_protocol::target::meets_target;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod lanes;
mod portable;
mod sha256;
#[cfg(target_arch = "x86_64")]
mod sha_ni;
#[cfg(test)]
mod tests;
mod work;

pub use work::PreparedWork;

/// The kernels, by implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Plain Rust, one nonce at a time; runs everywhere.
    Portable,
    /// The x86 SHA extensions, several nonces interleaved.
    ShaNi,
    /// 8 nonces in 256-bit AVX2 registers.
    Avx2,
    /// 16 nonces in 512-bit AVX-512 registers.
    Avx512,
}

impl KernelKind {
    /// Every kernel, fastest first (as measured on Zen 4; see `BENCHMARKS.md`).
    pub const ALL: [KernelKind; 4] = [
        KernelKind::Avx512,
        KernelKind::ShaNi,
        KernelKind::Avx2,
        KernelKind::Portable,
    ];

    /// The name used by `--kernel`.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Portable => "portable",
            KernelKind::ShaNi => "sha-ni",
            KernelKind::Avx2 => "avx2",
            KernelKind::Avx512 => "avx512",
        }
    }

    /// Whether the running CPU can execute this kernel.
    pub fn is_supported(self) -> bool {
        match self {
            KernelKind::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelKind::ShaNi => sha_ni::is_supported(),
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx2 => avx2::is_supported(),
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx512 => avx512::is_supported(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelKind {
    type Err = KernelError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        KernelKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| KernelError::Unknown(name.to_owned()))
    }
}

/// Why a kernel cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The name is none of `portable`, `sha-ni`, `avx2`, `avx512`.
    #[error("unknown kernel {0:?} (expected portable, sha-ni, avx2 or avx512)")]
    Unknown(String),
    /// The running CPU lacks the instructions the kernel needs.
    #[error("this CPU does not support the {0} kernel")]
    Unsupported(KernelKind),
}

/// A kernel the running CPU supports.
///
/// The only constructors check the CPU, which is what makes [`Kernel::scan`] safe to
/// call into code compiled for instructions beyond the build's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    kind: KernelKind,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn fastest() -> Kernel {
        let kind = KernelKind::ALL
            .into_iter()
            .find(|kind| kind.is_supported())
            .unwrap_or(KernelKind::Portable);
        Kernel { kind }
    }

    /// The kernel `kind`.
    ///
    /// # Errors
    /// [`KernelError::Unsupported`] when the CPU cannot run it.
    pub fn new(kind: KernelKind) -> Result<Kernel, KernelError> {
        if kind.is_supported() {
            Ok(Kernel { kind })
        } else {
            Err(KernelError::Unsupported(kind))
        }
    }

    /// The kernel called `name` (`portable`, `sha-ni`, `avx2`, `avx512`).
    ///
    /// # Errors
    /// [`KernelError::Unknown`] for other names, [`KernelError::Unsupported`] when the
    /// CPU cannot run it.
    pub fn by_name(name: &str) -> Result<Kernel, KernelError> {
        Kernel::new(name.parse()?)
    }

    /// Which kernel this is.
    pub fn kind(self) -> KernelKind {
        self.kind
    }

    /// Hashes the `count` nonces `nonce_start, nonce_start + 1, …` (wrapping past
    /// `u32::MAX`) and pushes onto `found`, in scan order, each nonce whose hash's most
    /// significant word (bytes 28..32, little-endian) is at most that of `target`
    /// (little-endian 256-bit). Pass the candidates to [`verify`] before submitting.
    ///
    /// Returns the number of hashes done, which is `count`.
    pub fn scan(
        &self,
        work: &PreparedWork,
        nonce_start: u32,
        count: u32,
        target: &[u8; 32],
        found: &mut Vec<u32>,
    ) -> u32 {
        let top = u32::from_le_bytes([target[28], target[29], target[30], target[31]]);
        match self.kind {
            KernelKind::Portable => portable::scan(work, nonce_start, count, top, found),
            // SAFETY: `Kernel`s are only built for kinds whose `is_supported` detected
            // the target features these functions are compiled for.
            #[cfg(target_arch = "x86_64")]
            KernelKind::ShaNi => unsafe { sha_ni::scan(work, nonce_start, count, top, found) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx2 => unsafe { avx2::scan(work, nonce_start, count, top, found) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            KernelKind::Avx512 => unsafe { avx512::scan(work, nonce_start, count, top, found) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the portable kernel is supported off x86_64"),
        }
        count
    }
}

/// Whether `header` with `nonce` (at bytes 76..80, little-endian) hashes to at most
/// `target` (little-endian), by the full `sha256d`: the final check of a candidate.
pub fn verify(header: &[u8; 80], nonce: u32, target: &[u8; 32]) -> bool {
    let mut header = *header;
    header[76..].copy_from_slice(&nonce.to_le_bytes());
    meets_target(&sha256d(&header), &Target::from_le_bytes(*target))
}
