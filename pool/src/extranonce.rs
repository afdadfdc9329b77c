//! Extranonce1 allocation: 4 bytes unique among live connections, released when
//! the connection's lease drops, and resumable by session id for a while after. In a
//! cluster the high byte is the node's id, so no two nodes hand out the same value.
//!
//! A lease also remembers the work handed out under its extranonce1 (wire job
//! ids with their difficulties, and the last job variant), and that memory
//! outlives the connection: a resumed session judges the shares it mined before
//! the reconnect at their difficulty, and is handed work it never had, even if
//! it starts its search over.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_protocol::{Difficulty, Extranonce};

/// How long a disconnected session's extranonce1 is held for its resume.
const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// The most disconnected sessions remembered for resumption.
const RESUME_CAPACITY: usize = 65_536;
/// Wire job ids a live lease remembers the difficulty of.
const JOB_MEMORY: usize = 32;
/// Of those, the newest kept while the lease waits for its resume.
const PARKED_JOB_MEMORY: usize = 8;

#[derive(Default)]
struct State {
    live: HashSet<u32>,
    /// Recently released values, when, and what they were handed; resumable, and
    /// not handed to others meanwhile.
    released: HashMap<u32, (Instant, Handed)>,
    next: u32,
    /// The cluster node id every value starts with (`None`: the whole space).
    node: Option<u8>,
}

/// The work handed out under one extranonce1.
#[derive(Default)]
struct Handed {
    /// Wire job ids and the difficulty each was announced with, oldest first.
    jobs: VecDeque<(u64, Difficulty)>,
    /// The last job variant handed out (0: none).
    variant: u16,
}

/// Hands out extranonce1 values.
#[derive(Clone, Default)]
pub struct Allocator {
    state: Arc<Mutex<State>>,
}

/// One connection's extranonce1 and the work handed out under it; released
/// (and parked for a resume) on drop.
pub struct Lease {
    value: u32,
    handed: Handed,
    resumed: bool,
    state: Arc<Mutex<State>>,
}

impl Lease {
    /// Whether this lease continues a disconnected session's.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Remembers that shares on wire job id `job` are judged at `difficulty`.
    pub fn remember(&mut self, job: u64, difficulty: Difficulty) {
        if self.handed.jobs.len() == JOB_MEMORY {
            self.handed.jobs.pop_front();
        }
        self.handed.jobs.push_back((job, difficulty));
    }

    /// The difficulty wire job id `job` was announced with, if it was.
    pub fn difficulty_for(&self, job: u64) -> Option<Difficulty> {
        let jobs = &self.handed.jobs;
        jobs.iter()
            .rev()
            .find(|(id, _)| *id == job)
            .map(|(_, d)| *d)
    }

    /// The difficulty of the work handed out last, if any.
    pub fn last_difficulty(&self) -> Option<Difficulty> {
        self.handed.jobs.back().map(|(_, d)| *d)
    }

    /// A job variant (non-zero) never handed out under this extranonce1 before:
    /// 65,535 of them before they repeat.
    pub fn next_variant(&mut self) -> u16 {
        self.handed.variant = self.handed.variant.checked_add(1).unwrap_or(1);
        self.handed.variant
    }

    /// The extranonce1 bytes (big-endian of the value).
    pub fn extranonce(&self) -> Extranonce {
        Extranonce::new(&self.value.to_be_bytes()).expect("4 bytes fit")
    }

    /// The session id a client may send to resume this extranonce1.
    pub fn session_id(&self) -> String {
        format!("{:08x}", self.value)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut handed = std::mem::take(&mut self.handed);
        let stale = handed.jobs.len().saturating_sub(PARKED_JOB_MEMORY);
        handed.jobs.drain(..stale);
        handed.jobs.shrink_to_fit();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.live.remove(&self.value);
        if state.released.len() >= RESUME_CAPACITY {
            let now = Instant::now();
            state
                .released
                .retain(|_, (at, _)| now.duration_since(*at) < RESUME_WINDOW);
        }
        if state.released.len() < RESUME_CAPACITY {
            state.released.insert(self.value, (Instant::now(), handed));
        }
    }
}

impl Allocator {
    /// An allocator for cluster node `node`: every value's high byte is `node`.
    pub fn for_node(node: u8) -> Allocator {
        let allocator = Allocator::default();
        allocator.lock().node = Some(node);
        allocator
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh extranonce1, or the one `resume` names if it is free to resume.
    pub fn lease(&self, resume: Option<&str>) -> Lease {
        let mut state = self.lock();
        let now = Instant::now();
        let node = state.node;
        let resumed = resume
            .filter(|id| id.len() == 8)
            .and_then(|id| u32::from_str_radix(id, 16).ok())
            .filter(|v| {
                state
                    .released
                    .get(v)
                    .is_some_and(|(at, _)| now.duration_since(*at) < RESUME_WINDOW)
            })
            .and_then(|v| state.released.remove(&v).map(|(_, handed)| (v, handed)));
        let was_resumed = resumed.is_some();
        let (value, handed) = match resumed {
            Some(parked) => parked,
            None => loop {
                // A multiplicative step spreads consecutive connections over the space.
                state.next = state.next.wrapping_add(0x9e37_79b9);
                let candidate = match node {
                    Some(node) => u32::from(node) << 24 | state.next & 0x00ff_ffff,
                    None => state.next,
                };
                let recently_released = state
                    .released
                    .get(&candidate)
                    .is_some_and(|(at, _)| now.duration_since(*at) < RESUME_WINDOW);
                if !state.live.contains(&candidate) && !recently_released {
                    break (candidate, Handed::default());
                }
            },
        };
        state.live.insert(value);
        Lease {
            value,
            handed,
            resumed: was_resumed,
            state: self.state.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_leases_are_unique_and_resumable_after_release() {
        let allocator = Allocator::default();
        let leases: Vec<Lease> = (0..10_000).map(|_| allocator.lease(None)).collect();
        let unique: HashSet<String> = leases.iter().map(Lease::session_id).collect();
        assert_eq!(unique.len(), leases.len());

        let first = allocator.lease(None);
        let id = first.session_id();
        // Cannot resume a live session.
        assert_ne!(allocator.lease(Some(&id)).session_id(), id);
        drop(first);
        let resumed = allocator.lease(Some(&id));
        assert_eq!(resumed.session_id(), id);
        assert_eq!(resumed.extranonce().to_string(), id);
        // Garbage session ids get a fresh value.
        assert_eq!(allocator.lease(Some("not-hex!")).extranonce().len(), 4);
    }

    #[test]
    fn a_nodes_values_all_carry_its_id() {
        let (node_5, node_6) = (Allocator::for_node(5), Allocator::for_node(6));
        let leases: Vec<Lease> = (0..10_000)
            .flat_map(|_| [node_5.lease(None), node_6.lease(None)])
            .collect();
        let unique: HashSet<String> = leases.iter().map(Lease::session_id).collect();
        assert_eq!(unique.len(), leases.len());
        for (i, lease) in leases.iter().enumerate() {
            let expected = if i % 2 == 0 { "05" } else { "06" };
            assert!(
                lease.session_id().starts_with(expected),
                "{}",
                lease.session_id()
            );
        }
    }

    #[test]
    fn what_a_lease_was_handed_survives_its_resume() {
        let allocator = Allocator::default();
        let mut lease = allocator.lease(None);
        assert!(!lease.resumed());
        let d = |v: f64| Difficulty::new(v).unwrap();
        for job in 0..40 {
            lease.remember(job, d(1.0 + job as f64));
        }
        assert_eq!(lease.difficulty_for(39), Some(d(40.0)));
        assert_eq!(lease.difficulty_for(0), None, "only the newest are kept");
        assert_eq!((lease.next_variant(), lease.next_variant()), (1, 2));
        let id = lease.session_id();
        drop(lease);

        let mut resumed = allocator.lease(Some(&id));
        assert!(resumed.resumed());
        assert_eq!(resumed.difficulty_for(39), Some(d(40.0)));
        assert_eq!(resumed.difficulty_for(31), None, "parked memory is bounded");
        assert_eq!(resumed.last_difficulty(), Some(d(40.0)));
        assert_eq!(
            resumed.next_variant(),
            3,
            "variants never repeat across a resume"
        );
        drop(resumed);
        // A fresh lease starts with nothing handed.
        let fresh = allocator.lease(None);
        assert_eq!((fresh.resumed(), fresh.last_difficulty()), (false, None));
    }
}
