//! Filling a PPLNS window from the newest share backwards, the same way on every backend.

use std::collections::BTreeMap;

use super::WindowCredits;

/// A window being filled with shares, newest first.
pub(super) struct WindowFill {
    window: f64,
    filled: f64,
    workers: BTreeMap<String, f64>,
    oldest_id: Option<i64>,
}

impl WindowFill {
    /// An empty window of `window` credited difficulty.
    pub(super) fn new(window: f64) -> WindowFill {
        WindowFill {
            window,
            filled: 0.0,
            workers: BTreeMap::new(),
            oldest_id: None,
        }
    }

    /// Whether the window is full (an empty or invalid one always is).
    pub(super) fn is_full(&self) -> bool {
        !matches!(
            self.filled.partial_cmp(&self.window),
            Some(std::cmp::Ordering::Less)
        )
    }

    /// Adds the next older share (only the part that still fits); true once full.
    pub(super) fn add(&mut self, id: i64, worker: String, difficulty: f64) -> bool {
        if self.is_full() {
            return true;
        }
        if difficulty.is_finite() && difficulty > 0.0 {
            let counted = difficulty.min(self.window - self.filled);
            *self.workers.entry(worker).or_default() += counted;
            self.filled += counted;
        }
        self.oldest_id = Some(id);
        self.is_full()
    }

    /// The credits per worker, by name.
    pub(super) fn finish(self) -> WindowCredits {
        WindowCredits {
            workers: self.workers.into_iter().collect(),
            oldest_id: self.oldest_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_share_counts_only_in_part() {
        let mut fill = WindowFill::new(10.0);
        assert!(!fill.add(9, "b".into(), 4.0));
        assert!(!fill.add(8, "a".into(), 4.0));
        assert!(fill.add(7, "b".into(), 4.0));
        assert!(fill.add(6, "a".into(), 4.0), "full: nothing more counts");
        let credits = fill.finish();
        assert_eq!(credits.workers, vec![("a".into(), 4.0), ("b".into(), 6.0)]);
        assert_eq!(credits.oldest_id, Some(7));
        assert!(WindowFill::new(0.0).is_full());
        assert!(WindowFill::new(f64::NAN).is_full());
    }
}
