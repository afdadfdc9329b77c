//! Extranonce1 allocation: 4 bytes unique among live connections, released when
//! the connection's lease drops, and resumable by session id for a while after.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quarry_protocol::Extranonce;

/// How long a disconnected session's extranonce1 is held for its resume.
const RESUME_WINDOW: Duration = Duration::from_secs(600);
/// The most disconnected sessions remembered for resumption.
const RESUME_CAPACITY: usize = 65_536;

#[derive(Default)]
struct State {
    live: HashSet<u32>,
    /// Recently released values and when; resumable, and not handed to others meanwhile.
    released: HashMap<u32, Instant>,
    next: u32,
}

/// Hands out extranonce1 values.
#[derive(Clone, Default)]
pub struct Allocator {
    state: Arc<Mutex<State>>,
}

/// One connection's extranonce1; released on drop.
pub struct Lease {
    value: u32,
    state: Arc<Mutex<State>>,
}

impl Lease {
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
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.live.remove(&self.value);
        if state.released.len() >= RESUME_CAPACITY {
            let now = Instant::now();
            state
                .released
                .retain(|_, at| now.duration_since(*at) < RESUME_WINDOW);
        }
        if state.released.len() < RESUME_CAPACITY {
            state.released.insert(self.value, Instant::now());
        }
    }
}

impl Allocator {
    /// A fresh extranonce1, or the one `resume` names if it is free to resume.
    pub fn lease(&self, resume: Option<&str>) -> Lease {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let resumed = resume
            .filter(|id| id.len() == 8)
            .and_then(|id| u32::from_str_radix(id, 16).ok())
            .filter(|v| {
                state
                    .released
                    .get(v)
                    .is_some_and(|at| now.duration_since(*at) < RESUME_WINDOW)
            });
        let value = match resumed {
            Some(value) => {
                state.released.remove(&value);
                value
            }
            None => loop {
                // A multiplicative step spreads consecutive connections over the space.
                state.next = state.next.wrapping_add(0x9e37_79b9);
                let candidate = state.next;
                let recently_released = state
                    .released
                    .get(&candidate)
                    .is_some_and(|at| now.duration_since(*at) < RESUME_WINDOW);
                if !state.live.contains(&candidate) && !recently_released {
                    break candidate;
                }
            },
        };
        state.live.insert(value);
        Lease {
            value,
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
}
