//! Variable difficulty per connection: steers each miner towards one share every
//! `share_interval`, retargeting once per window with hysteresis.
//!
//! The estimate is the share count over the time since the last retarget. A change
//! is made only when the rate is off by more than the hysteresis band and the
//! window has passed (or enough shares arrived to be sure early), and a single step
//! is bounded so one lucky burst cannot swing the difficulty wildly.

use std::time::Duration;

use quarry_protocol::Difficulty;
use tokio::time::Instant;

/// Rate ratios inside `[1/HYSTERESIS, HYSTERESIS]` leave the difficulty alone.
const HYSTERESIS: f64 = 1.5;
/// The most one retarget may multiply or divide the difficulty by.
const MAX_STEP: f64 = 16.0;
/// Shares that justify a retarget before the window has passed.
const EARLY_SHARES: u32 = 24;

/// Vardiff settings.
#[derive(Debug, Clone, Copy)]
pub struct VardiffConfig {
    pub share_interval: Duration,
    pub window: Duration,
    pub min: Difficulty,
    pub max: Difficulty,
}

/// One connection's vardiff state.
#[derive(Debug, Clone)]
pub struct Vardiff {
    config: VardiffConfig,
    current: Difficulty,
    since: Instant,
    shares: u32,
}

impl Vardiff {
    /// Starts at `start` (clamped to the bounds) at time `now`.
    pub fn new(config: VardiffConfig, start: Difficulty, now: Instant) -> Vardiff {
        Vardiff {
            config,
            current: start.clamp(config.min, config.max),
            since: now,
            shares: 0,
        }
    }

    /// The difficulty vardiff currently wants.
    pub fn current(&self) -> Difficulty {
        self.current
    }

    /// Sets the difficulty (e.g. from `mining.suggest_difficulty`), clamped, and
    /// restarts the measurement.
    pub fn set(&mut self, difficulty: Difficulty, now: Instant) -> Difficulty {
        self.current = difficulty.clamp(self.config.min, self.config.max);
        self.since = now;
        self.shares = 0;
        self.current
    }

    /// Counts an accepted share; returns a new difficulty when it is time to change.
    pub fn on_share(&mut self, now: Instant) -> Option<Difficulty> {
        self.shares += 1;
        self.evaluate(now)
    }

    /// Re-evaluates without a share (called periodically, so a miner whose
    /// difficulty is far too high still gets it lowered).
    pub fn on_tick(&mut self, now: Instant) -> Option<Difficulty> {
        self.evaluate(now)
    }

    fn evaluate(&mut self, now: Instant) -> Option<Difficulty> {
        let elapsed = now.duration_since(self.since).as_secs_f64();
        let window_passed = elapsed >= self.config.window.as_secs_f64();
        if !window_passed && self.shares < EARLY_SHARES {
            return None;
        }
        let expected = elapsed / self.config.share_interval.as_secs_f64();
        if expected <= 0.0 {
            return None;
        }
        let ratio = f64::from(self.shares) / expected;
        if (1.0 / HYSTERESIS..=HYSTERESIS).contains(&ratio) {
            self.since = now;
            self.shares = 0;
            return None;
        }
        let factor = ratio.clamp(1.0 / MAX_STEP, MAX_STEP);
        let wanted = Difficulty::new(self.current.get() * factor).ok()?;
        let next = wanted.clamp(self.config.min, self.config.max);
        self.since = now;
        self.shares = 0;
        if next == self.current {
            return None;
        }
        self.current = next;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VardiffConfig {
        VardiffConfig {
            share_interval: Duration::from_secs(10),
            window: Duration::from_secs(60),
            min: Difficulty::new(1e-12).unwrap(),
            max: Difficulty::new(1e6).unwrap(),
        }
    }

    /// Feeds a steady share stream of `per_second` at the vardiff's own difficulty
    /// scaled to a miner of `hashrate_diff1` (difficulty-1 shares per second).
    async fn converge(hashrate_diff1: f64, start: f64) -> f64 {
        let mut vardiff = Vardiff::new(config(), Difficulty::new(start).unwrap(), Instant::now());
        for _ in 0..400 {
            let interval = vardiff.current().get() / hashrate_diff1;
            if interval > 30.0 {
                tokio::time::advance(Duration::from_secs(30)).await;
                vardiff.on_tick(Instant::now());
            } else {
                tokio::time::advance(Duration::from_secs_f64(interval)).await;
                vardiff.on_share(Instant::now());
            }
        }
        vardiff.current().get()
    }

    #[tokio::test(start_paused = true)]
    async fn converges_to_one_share_per_interval_from_above_and_below() {
        // A miner making 0.5 difficulty-1 shares a second wants difficulty 5.
        for start in [1e-6, 1.0, 5.0, 1e4] {
            let diff = converge(0.5, start).await;
            assert!(
                (diff / 5.0 - 1.0).abs() < 0.5,
                "start {start} ended at {diff}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_difficulties_for_slow_rigs() {
        let diff = converge(1e-4, 1.0).await;
        assert!((diff / 1e-3 - 1.0).abs() < 0.5, "ended at {diff}");
    }

    #[tokio::test(start_paused = true)]
    async fn holds_inside_the_hysteresis_band() {
        let mut vardiff = Vardiff::new(config(), Difficulty::new(8.0).unwrap(), Instant::now());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(12)).await;
            assert_eq!(vardiff.on_share(Instant::now()), None);
        }
        assert_eq!(vardiff.current().get(), 8.0);
    }

    #[tokio::test(start_paused = true)]
    async fn respects_bounds() {
        let mut cfg = config();
        cfg.max = Difficulty::new(100.0).unwrap();
        let mut vardiff = Vardiff::new(cfg, Difficulty::new(50.0).unwrap(), Instant::now());
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(10)).await;
            vardiff.on_share(Instant::now());
        }
        assert_eq!(vardiff.current().get(), 100.0);
        assert_eq!(
            vardiff
                .set(Difficulty::new(1e9).unwrap(), Instant::now())
                .get(),
            100.0
        );
    }
}
