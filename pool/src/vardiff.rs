//! Variable difficulty per connection: steers each miner towards one share every
//! `share_interval`, retargeting once per window with hysteresis.
//!
//! The estimate is the credited difficulty over the time since the last retarget
//! (so shares still found at an older difficulty count for what they are). A
//! change is made only when the rate is off by more than the hysteresis band and
//! the window has passed (or enough shares arrived to be sure early), a single
//! step is bounded so one lucky burst cannot swing the difficulty wildly, and no
//! further change is made until the last one has reached the miner (the session
//! sends it at once, re-announcing the miner's job under a new id): otherwise a
//! miner still working at the old difficulty would ratchet it all the way to a
//! bound.

use std::time::Duration;

use quarry_protocol::Difficulty;
use tokio::time::Instant;

/// Rate ratios inside `[1/HYSTERESIS, HYSTERESIS]` leave the difficulty alone.
const HYSTERESIS: f64 = 1.5;
/// The most one retarget may multiply or divide the difficulty by.
const MAX_STEP: f64 = 16.0;
/// Shares that justify a retarget before the window has passed.
const EARLY_SHARES: u32 = 24;
/// Fewer shares suffice when the rate is off by more than [`FAR`]: six shares
/// put the true rate within about 0.4x..2.2x of the estimate, so a miner that
/// starts (or suggested) far from its difficulty is moved in seconds.
const EARLY_FAR_SHARES: u32 = 6;
const FAR: f64 = 3.0;
/// How far above its estimate a rate measured over [`EARLY_FAR_SHARES`] can
/// be: a rate far too high for the difficulty is raised by at least the
/// estimate over this (past [`MAX_STEP`]), never above the true rate. A
/// 100 TH/s rig that suggests nothing is then raised from difficulty 1 in one
/// step, not five round trips of 16x while it floods the submit budget.
const ESTIMATE_MARGIN: f64 = 2.5;

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
    /// Difficulty credited since `since`.
    work: f64,
    /// A change not yet announced to the miner.
    pending: bool,
}

impl Vardiff {
    /// Starts at `start` (clamped to the bounds) at time `now`.
    pub fn new(config: VardiffConfig, start: Difficulty, now: Instant) -> Vardiff {
        Vardiff {
            config,
            current: start.clamp(config.min, config.max),
            since: now,
            shares: 0,
            work: 0.0,
            pending: true,
        }
    }

    /// The difficulty vardiff currently wants.
    pub fn current(&self) -> Difficulty {
        self.current
    }

    /// Sets the difficulty (e.g. from `mining.suggest_difficulty`), clamped; it
    /// holds until announced.
    pub fn set(&mut self, difficulty: Difficulty, now: Instant) -> Difficulty {
        self.current = difficulty.clamp(self.config.min, self.config.max);
        self.restart(now);
        self.pending = true;
        self.current
    }

    /// The current difficulty has been sent to the miner: measure from `now`.
    pub fn announced(&mut self, now: Instant) {
        self.restart(now);
        self.pending = false;
    }

    /// Counts an accepted share credited at `difficulty`; returns a new
    /// difficulty when it is time to change.
    pub fn on_share(&mut self, now: Instant, difficulty: f64) -> Option<Difficulty> {
        self.shares += 1;
        self.work += difficulty;
        self.evaluate(now)
    }

    fn restart(&mut self, now: Instant) {
        self.since = now;
        self.shares = 0;
        self.work = 0.0;
    }

    /// Re-evaluates without a share (called periodically, so a miner whose
    /// difficulty is far too high still gets it lowered).
    pub fn on_tick(&mut self, now: Instant) -> Option<Difficulty> {
        self.evaluate(now)
    }

    fn evaluate(&mut self, now: Instant) -> Option<Difficulty> {
        if self.pending {
            return None;
        }
        let elapsed = now.duration_since(self.since).as_secs_f64();
        let window_passed = elapsed >= self.config.window.as_secs_f64();
        if !window_passed && self.shares < EARLY_FAR_SHARES || elapsed <= 0.0 {
            return None;
        }
        // The difficulty that would have given one share per interval.
        let wanted = self.work * self.config.share_interval.as_secs_f64() / elapsed;
        let ratio = wanted / self.current.get();
        let far = !(1.0 / FAR..=FAR).contains(&ratio);
        if !window_passed && self.shares < EARLY_SHARES && !far {
            return None;
        }
        if (1.0 / HYSTERESIS..=HYSTERESIS).contains(&ratio) {
            self.restart(now);
            return None;
        }
        let factor = ratio
            .clamp(1.0 / MAX_STEP, MAX_STEP)
            .max(ratio / ESTIMATE_MARGIN);
        let next = Difficulty::new(self.current.get() * factor)
            .ok()?
            .clamp(self.config.min, self.config.max);
        self.restart(now);
        if next == self.current {
            return None;
        }
        self.current = next;
        self.pending = true;
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

    /// A miner of `hashrate_diff1` (difficulty-1 shares per second) that works at
    /// the announced difficulty; a change reaches it with the next job, every
    /// `job_every`.
    async fn converge_with_jobs(
        vardiff: &mut Vardiff,
        hashrate_diff1: f64,
        job_every: Duration,
        steps: usize,
    ) -> f64 {
        let mut mining_at = vardiff.current().get();
        vardiff.announced(Instant::now());
        let mut next_job = Instant::now() + job_every;
        for _ in 0..steps {
            let interval = Duration::from_secs_f64(mining_at / hashrate_diff1);
            let now = Instant::now();
            // Shares found while a change awaits its job do not count.
            if vardiff.pending || now + interval > next_job {
                tokio::time::advance(next_job - now).await;
                vardiff.on_tick(Instant::now());
                if vardiff.current().get() != mining_at || vardiff.pending {
                    mining_at = vardiff.current().get();
                    vardiff.announced(Instant::now());
                }
                next_job = Instant::now() + job_every;
            } else {
                tokio::time::advance(interval).await;
                vardiff.on_share(Instant::now(), mining_at);
            }
        }
        vardiff.current().get()
    }

    async fn converge(hashrate_diff1: f64, start: f64) -> f64 {
        let mut vardiff = Vardiff::new(config(), Difficulty::new(start).unwrap(), Instant::now());
        converge_with_jobs(&mut vardiff, hashrate_diff1, Duration::from_secs(30), 400).await
    }

    /// Found when the pool banned an honest fast miner: with a short window and
    /// jobs every 30 s, vardiff kept lowering the difficulty while the miner
    /// still worked at the old one, down to the bound, until the miner's share
    /// rate tripped the rate limit.
    #[tokio::test(start_paused = true)]
    async fn regression_no_ratchet_while_a_change_awaits_its_job() {
        let mut cfg = config();
        cfg.share_interval = Duration::from_millis(500);
        cfg.window = Duration::from_secs(3);
        // 2,600 difficulty-1 shares a second wants difficulty 1,300; start at 10,000.
        let mut vardiff = Vardiff::new(cfg, Difficulty::new(10_000.0).unwrap(), Instant::now());
        let diff = converge_with_jobs(&mut vardiff, 2_600.0, Duration::from_secs(30), 2_000).await;
        assert!((diff / 1_300.0 - 1.0).abs() < 0.5, "ended at {diff}");
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

    /// A miner that suggested a difficulty for a share every 3 s on a pool
    /// that wants one every 10 s is moved after six shares, not after a
    /// minute's window or 24 shares; one only a little off waits for those.
    #[tokio::test(start_paused = true)]
    async fn far_off_moves_after_six_shares() {
        let mut vardiff = Vardiff::new(config(), Difficulty::new(3.0).unwrap(), Instant::now());
        vardiff.announced(Instant::now());
        // 1 difficulty-1 share a second wants difficulty 10: a share every 3 s.
        let mut changes = Vec::new();
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(3)).await;
            changes.push(vardiff.on_share(Instant::now(), 3.0));
        }
        assert_eq!(changes[..5], [None; 5]);
        let raised = changes[5].expect("raised after six shares").get();
        assert!((raised / 10.0 - 1.0).abs() < 0.01, "{raised}");

        // Off by 2x (inside FAR, outside the hysteresis): 24 shares, not 6.
        let mut cfg = config();
        cfg.window = Duration::from_secs(600);
        let mut vardiff = Vardiff::new(cfg, Difficulty::new(5.0).unwrap(), Instant::now());
        vardiff.announced(Instant::now());
        for n in 1..=24 {
            tokio::time::advance(Duration::from_secs(5)).await;
            let change = vardiff.on_share(Instant::now(), 5.0);
            assert_eq!(change.is_some(), n == 24, "share {n}");
        }
    }

    /// A 100 TH/s rig that suggests nothing starts at difficulty 1: 23,000
    /// shares a second. Six shares later it is within 2.5x of its difficulty
    /// (233,000 at a share every 10 s), and the next retarget finishes the job.
    #[tokio::test(start_paused = true)]
    async fn a_huge_rig_is_raised_in_one_step() {
        let mut cfg = config();
        cfg.max = Difficulty::new(1e15).unwrap();
        let mut vardiff = Vardiff::new(cfg, Difficulty::ONE, Instant::now());
        vardiff.announced(Instant::now());
        let diff1_per_second = 100e12 / quarry_protocol::target::HASHES_PER_DIFF1;
        let mut change = None;
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs_f64(1.0 / diff1_per_second)).await;
            change = vardiff.on_share(Instant::now(), 1.0);
        }
        let raised = change.expect("raised after six shares").get();
        let wanted = diff1_per_second * 10.0;
        assert!(
            raised >= wanted / ESTIMATE_MARGIN && raised <= wanted * 1.01,
            "{raised} vs {wanted}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_difficulties_for_slow_rigs() {
        let diff = converge(1e-4, 1.0).await;
        assert!((diff / 1e-3 - 1.0).abs() < 0.5, "ended at {diff}");
    }

    #[tokio::test(start_paused = true)]
    async fn holds_inside_the_hysteresis_band() {
        let mut vardiff = Vardiff::new(config(), Difficulty::new(8.0).unwrap(), Instant::now());
        vardiff.announced(Instant::now());
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(12)).await;
            assert_eq!(vardiff.on_share(Instant::now(), 8.0), None);
        }
        assert_eq!(vardiff.current().get(), 8.0);
    }

    #[tokio::test(start_paused = true)]
    async fn respects_bounds() {
        let mut cfg = config();
        cfg.max = Difficulty::new(100.0).unwrap();
        let mut vardiff = Vardiff::new(cfg, Difficulty::new(50.0).unwrap(), Instant::now());
        vardiff.announced(Instant::now());
        for _ in 0..200 {
            tokio::time::advance(Duration::from_millis(10)).await;
            vardiff.on_share(Instant::now(), 50.0);
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
