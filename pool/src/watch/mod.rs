//! Watching workers: offline and hashrate-drop detection that accounts for the
//! randomness of share arrivals, and the events it raises (log, metrics, API,
//! webhook).
//!
//! - [`detect`]: the statistics, as pure functions.
//! - [`monitor`]: the periodic check of every worker and the status changes.
//! - [`webhook`]: JSON events POSTed to the operator's URL, never blocking the pool.

pub mod detect;
pub mod monitor;
pub mod webhook;

use std::time::Duration;

/// The `[watch]` options, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// The chance that a healthy worker is flagged by one decision.
    pub false_alarm: f64,
    /// The 10-minute over 1-hour hashrate ratio below which a drop is flagged.
    pub drop_fraction: f64,
    pub check_interval: Duration,
    pub webhook: Option<String>,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            false_alarm: 1e-4,
            drop_fraction: 0.5,
            check_interval: Duration::from_secs(5),
            webhook: None,
        }
    }
}

/// What the monitor last concluded about a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// Not enough shares yet to judge.
    Waiting = 0,
    Online = 1,
    /// Silent for longer than its share rate makes plausible.
    Offline = 2,
    /// Its 10-minute hashrate fell well below its hourly one.
    Drop = 3,
}

impl Status {
    /// Every status, in `u8` order.
    pub const ALL: [Status; 4] = [
        Status::Waiting,
        Status::Online,
        Status::Offline,
        Status::Drop,
    ];

    /// The status's name in the API, metrics and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Drop => "drop",
        }
    }

    /// The status stored as `value` (unknown values read as waiting).
    pub fn from_u8(value: u8) -> Status {
        Status::ALL
            .get(usize::from(value))
            .copied()
            .unwrap_or(Status::Waiting)
    }
}
