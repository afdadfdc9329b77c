//! Protection for a public host: connection caps, per-IP connection rates,
//! per-connection message budgets (separate for `mining.submit` and for
//! everything else), bans with reasons and expiries, and an allow-list of CIDRs
//! exempt from all of it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often "the pool is full" may be logged.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limits, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub allow: Vec<IpNet>,
    pub connection_rate: f64,
    pub connection_burst: u32,
    pub max_connections_per_ip: u32,
    pub max_connections: usize,
    pub submit_rate: f64,
    pub submit_burst: u32,
    pub message_rate: f64,
    pub message_burst: u32,
    pub violations_before_ban: u32,
    pub ban_duration: Duration,
    pub invalid_share_percent: f64,
    pub invalid_share_minimum: u64,
    pub subscribe_timeout: Duration,
    pub authorize_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            allow: Vec::new(),
            connection_rate: 5.0,
            connection_burst: 20,
            max_connections_per_ip: 256,
            max_connections: 19_000,
            submit_rate: 100.0,
            submit_burst: 500,
            message_rate: 5.0,
            message_burst: 20,
            violations_before_ban: 100,
            ban_duration: Duration::from_secs(600),
            invalid_share_percent: 50.0,
            invalid_share_minimum: 100,
            subscribe_timeout: Duration::from_secs(30),
            authorize_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(900),
        }
    }
}

fn quota(per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Why a connection was turned away or a client banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub reason: String,
    pub until: SystemTime,
}

/// A connection refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("banned: {0}")]
    Banned(String),
    #[error("too many new connections from this address")]
    ConnectionRate,
    #[error("too many connections from this address")]
    PerIpCap,
}

/// Shared limiter state for the whole pool.
pub struct Guard {
    pub config: LimitsConfig,
    connection_rate: DefaultKeyedRateLimiter<IpAddr>,
    per_ip: DashMap<IpAddr, u32>,
    slots: Arc<Semaphore>,
    bans: DashMap<IpAddr, Ban>,
    /// Bans made since start, for metrics.
    bans_made: AtomicU64,
    last_full_log: Mutex<Option<Instant>>,
    /// Bans made and lifted here, for the other nodes of a cluster (`None` when alone).
    outbox: Mutex<Option<VecDeque<BanChange>>>,
}

/// A ban made (`Some`) or lifted (`None`) on this node, to share with the cluster.
pub type BanChange = (IpAddr, Option<Ban>);

/// Ban changes kept for the cluster at most between two heartbeats; beyond, the oldest
/// are dropped (each ban still holds on this node).
const OUTBOX_CAP: usize = 65_536;

/// Holds one connection's place in the per-IP count; released on drop.
pub struct IpPermit {
    ip: IpAddr,
    guard: Arc<Guard>,
}

impl Drop for IpPermit {
    fn drop(&mut self) {
        if let dashmap::mapref::entry::Entry::Occupied(mut entry) = self.guard.per_ip.entry(self.ip)
        {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

/// A connection's place: the global slot and the per-IP count.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
    _ip: Option<IpPermit>,
}

impl Guard {
    /// A guard enforcing `config`.
    pub fn new(config: LimitsConfig) -> Arc<Guard> {
        Arc::new(Guard {
            connection_rate: RateLimiter::keyed(quota(
                config.connection_rate,
                config.connection_burst,
            )),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: DashMap::new(),
            bans: DashMap::new(),
            bans_made: AtomicU64::new(0),
            last_full_log: Mutex::new(None),
            outbox: Mutex::new(None),
            config,
        })
    }

    /// Whether `ip` is on the allow-list (exempt from every limit and ban).
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.config.allow.iter().any(|net| net.contains(&ip))
    }

    /// Waits for a free connection slot. At the cap the accept loop waits here,
    /// so new connections wait in the listen backlog; "full" is logged once per
    /// interval, never per connection.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return permit;
        }
        {
            let mut last = self.last_full_log.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if last.is_none_or(|at| now.duration_since(at) >= FULL_LOG_INTERVAL) {
                tracing::warn!(
                    max_connections = self.config.max_connections,
                    "pool is full; new connections wait in the listen backlog"
                );
                *last = Some(now);
            }
        }
        match self.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Admits a connection from `ip` holding `slot`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        slot: OwnedSemaphorePermit,
    ) -> Result<Admission, Refusal> {
        let ip = ip.to_canonical();
        if self.is_allowed(ip) {
            return Ok(Admission {
                _slot: slot,
                _ip: None,
            });
        }
        if let Some(ban) = self.ban_of(ip) {
            return Err(Refusal::Banned(ban.reason));
        }
        if self.connection_rate.check_key(&ip).is_err() {
            return Err(Refusal::ConnectionRate);
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.config.max_connections_per_ip {
            return Err(Refusal::PerIpCap);
        }
        *count += 1;
        drop(count);
        Ok(Admission {
            _slot: slot,
            _ip: Some(IpPermit {
                ip,
                guard: self.clone(),
            }),
        })
    }

    /// The live ban of `ip`, if any (expired bans are removed).
    pub fn ban_of(&self, ip: IpAddr) -> Option<Ban> {
        let ip = ip.to_canonical();
        let ban = self.bans.get(&ip).map(|b| b.clone())?;
        if ban.until <= SystemTime::now() {
            self.bans.remove(&ip);
            return None;
        }
        Some(ban)
    }

    /// Bans `ip` for `duration` (allow-listed addresses are never banned).
    /// Returns whether a ban was made.
    pub fn ban(&self, ip: IpAddr, reason: &str, duration: Duration) -> bool {
        let ip = ip.to_canonical();
        if self.is_allowed(ip) {
            return false;
        }
        let until = SystemTime::now() + duration;
        tracing::warn!(%ip, reason, seconds = duration.as_secs(), "banned");
        self.bans_made.fetch_add(1, Ordering::Relaxed);
        let ban = Ban {
            reason: reason.to_owned(),
            until,
        };
        self.share((ip, Some(ban.clone())));
        self.bans.insert(ip, ban);
        true
    }

    /// Starts keeping this node's ban changes for [`Guard::take_changes`].
    pub fn share_bans(&self) {
        *lock(&self.outbox) = Some(VecDeque::new());
    }

    /// The ban changes made here since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<BanChange> {
        lock(&self.outbox)
            .as_mut()
            .map(|outbox| outbox.drain(..).collect())
            .unwrap_or_default()
    }

    /// Puts changes back that could not be shared, before any made since.
    pub fn return_changes(&self, mut changes: Vec<BanChange>) {
        if let Some(outbox) = lock(&self.outbox).as_mut() {
            changes.extend(outbox.drain(..));
            let excess = changes.len().saturating_sub(OUTBOX_CAP);
            outbox.extend(changes.drain(excess..));
        }
    }

    /// Applies a ban made (`Some`) or lifted (`None`) on another node; whether it changed
    /// anything here.
    pub fn adopt(&self, ip: IpAddr, ban: Option<Ban>) -> bool {
        let ip = ip.to_canonical();
        match ban {
            Some(ban) if !self.is_allowed(ip) => {
                if self.bans.get(&ip).is_some_and(|b| *b == ban) {
                    return false;
                }
                tracing::warn!(%ip, reason = %ban.reason, "banned by another node");
                self.bans.insert(ip, ban);
                true
            }
            Some(_) => false,
            None => self.bans.remove(&ip).is_some(),
        }
    }

    fn share(&self, change: BanChange) {
        if let Some(outbox) = lock(&self.outbox).as_mut() {
            if outbox.len() >= OUTBOX_CAP {
                outbox.pop_front();
            }
            outbox.push_back(change);
        }
    }

    /// Bans made since start.
    pub fn bans_made(&self) -> u64 {
        self.bans_made.load(Ordering::Relaxed)
    }

    /// Lifts the ban of `ip`; whether there was one.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.share((ip, None));
        self.bans.remove(&ip).is_some()
    }

    /// Every live ban, sorted by address.
    pub fn bans(&self) -> Vec<(IpAddr, Ban)> {
        let now = SystemTime::now();
        self.bans.retain(|_, ban| ban.until > now);
        let mut bans: Vec<(IpAddr, Ban)> = self
            .bans
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        bans.sort_by_key(|(ip, _)| *ip);
        bans
    }

    /// Forgets idle per-IP rate state (call periodically).
    pub fn tidy(&self) {
        self.connection_rate.retain_recent();
        self.connection_rate.shrink_to_fit();
    }

    /// The message budgets of a new connection from `ip` (`None`: unlimited).
    pub fn budgets(&self, ip: IpAddr) -> Option<Budgets> {
        (!self.is_allowed(ip)).then(|| Budgets {
            submit: RateLimiter::direct(quota(self.config.submit_rate, self.config.submit_burst)),
            other: RateLimiter::direct(quota(self.config.message_rate, self.config.message_burst)),
        })
    }
}

/// One connection's message budgets.
pub struct Budgets {
    submit: DefaultDirectRateLimiter,
    other: DefaultDirectRateLimiter,
}

impl Budgets {
    /// Spends one message; `false` when over budget.
    pub fn spend(&self, is_submit: bool) -> bool {
        let limiter = if is_submit { &self.submit } else { &self.other };
        limiter.check().is_ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(config: LimitsConfig) -> Arc<Guard> {
        Guard::new(config)
    }

    #[tokio::test]
    async fn per_ip_cap_and_release() {
        let g = guard(LimitsConfig {
            max_connections_per_ip: 2,
            connection_burst: 100,
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = g.admit(ip, g.slot().await).unwrap();
        let _b = g.admit(ip, g.slot().await).unwrap();
        assert_eq!(g.admit(ip, g.slot().await).err(), Some(Refusal::PerIpCap));
        drop(a);
        assert!(g.admit(ip, g.slot().await).is_ok());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(g.admit(other, g.slot().await).is_ok());
    }

    #[tokio::test]
    async fn connection_rate_and_bans_spare_the_allow_list() {
        let g = guard(LimitsConfig {
            connection_burst: 3,
            connection_rate: 0.001,
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(g.admit(ip, g.slot().await).unwrap());
        }
        assert_eq!(
            g.admit(ip, g.slot().await).err(),
            Some(Refusal::ConnectionRate)
        );
        let farm: IpAddr = "10.1.2.3".parse().unwrap();
        for _ in 0..50 {
            held.push(g.admit(farm, g.slot().await).unwrap());
        }
        assert!(!g.ban(farm, "test", Duration::from_secs(60)));
        assert!(g.budgets(farm).is_none());

        assert!(g.ban(ip, "flooding", Duration::from_secs(60)));
        assert_eq!(
            g.admit(ip, g.slot().await).err(),
            Some(Refusal::Banned("flooding".into()))
        );
        assert_eq!(g.bans().len(), 1);
        assert!(g.unban(ip));
        assert!(g.bans().is_empty());
        // IPv4-mapped IPv6 is the same address.
        let mapped: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        g.ban(mapped, "mapped", Duration::from_secs(60));
        assert!(g.ban_of(ip).is_some());
    }

    #[test]
    fn expired_bans_vanish() {
        let g = guard(LimitsConfig::default());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        g.ban(ip, "short", Duration::ZERO);
        assert!(g.ban_of(ip).is_none());
        assert!(g.bans().is_empty());
    }

    #[test]
    fn budgets_run_out_separately() {
        let g = guard(LimitsConfig {
            submit_burst: 5,
            submit_rate: 0.001,
            message_burst: 2,
            message_rate: 0.001,
            ..LimitsConfig::default()
        });
        let budgets = g.budgets("192.0.2.50".parse().unwrap()).unwrap();
        assert!((0..2).all(|_| budgets.spend(false)));
        assert!(!budgets.spend(false));
        assert!((0..5).all(|_| budgets.spend(true)));
        assert!(!budgets.spend(true));
    }

    #[tokio::test]
    async fn at_the_cap_a_slot_waits_until_one_frees() {
        let g = guard(LimitsConfig {
            max_connections: 1,
            ..LimitsConfig::default()
        });
        let first = g.slot().await;
        let waiting = tokio::spawn({
            let g = g.clone();
            async move { g.slot().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        drop(waiting.await.unwrap());
    }
}
