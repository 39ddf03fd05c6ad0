//! `[attribution]`: the bounds of the journey store and the training schedule.

/// Most touches kept per journey (oldest dropped). Default.
pub const TOUCHPOINTS_MAX_DEFAULT: usize = 32;
/// Bounds of `touchpoints-max`.
pub const TOUCHPOINTS_MAX_RANGE: std::ops::RangeInclusive<usize> = 1..=256;
/// Most open journeys in memory (about 400 bytes each with a few touches). Default.
pub const JOURNEYS_MAX_DEFAULT: usize = 1_000_000;
/// Bounds of `journeys-max`.
pub const JOURNEYS_MAX_RANGE: std::ops::RangeInclusive<usize> = 100..=100_000_000;
/// Most distinct paths kept per campaign for training (journeys on a path not kept are
/// counted as dropped). Default.
pub const TRAINING_PATHS_MAX_DEFAULT: usize = 200_000;
/// Bounds of `training-paths-max`.
pub const TRAINING_PATHS_MAX_RANGE: std::ops::RangeInclusive<usize> = 100..=10_000_000;
/// Channels per journey up to which Shapley values are enumerated exactly. Default.
pub const SHAPLEY_EXACT_MAX_DEFAULT: usize = 15;
/// Bounds of `shapley-exact-max` (2^20 subsets per journey at most).
pub const SHAPLEY_EXACT_MAX_RANGE: std::ops::RangeInclusive<usize> = 1..=20;
/// How often data-driven models are refitted, in seconds. Default: a day.
pub const REFIT_INTERVAL_S_DEFAULT: u64 = 86_400;
/// How long a conversion waits for its matched click to be read (the click and the
/// conversion are in different partitions), in microseconds of wall time.
pub const CLICK_WAIT_US: i64 = 5_000_000;
/// Click ids of recently converted journeys remembered, so a second conversion on the
/// same click does not wait for it.
pub const CONVERTED_CLICKS_MAX: usize = 100_000;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributionConfig {
    /// Most touches per journey, oldest dropped. Default: 32. Bounds: 1 ..= 256.
    pub touchpoints_max: usize,
    /// Most open journeys in memory; past it the journeys closest to their end end first.
    /// Default: 1,000,000. Bounds: 100 ..= 100,000,000.
    pub journeys_max: usize,
    /// Most distinct paths per campaign kept for training. Default: 200,000.
    pub training_paths_max: usize,
    /// Refit data-driven models this often (0: only on demand). Default: 86400 s.
    pub refit_interval_s: u64,
    /// Exact Shapley up to this many channels in a journey; sampled above. Default: 15.
    pub shapley_exact_max: usize,
    /// Only journeys that end in [from, to] train (the offline export's period).
    pub training_window_us: Option<(i64, i64)>,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            touchpoints_max: TOUCHPOINTS_MAX_DEFAULT,
            journeys_max: JOURNEYS_MAX_DEFAULT,
            training_paths_max: TRAINING_PATHS_MAX_DEFAULT,
            refit_interval_s: REFIT_INTERVAL_S_DEFAULT,
            shapley_exact_max: SHAPLEY_EXACT_MAX_DEFAULT,
            training_window_us: None,
        }
    }
}

impl AttributionConfig {
    /// The first bound broken, named by its configuration key.
    pub fn check(&self) -> Result<(), String> {
        let ranges = [
            (
                "touchpoints-max",
                self.touchpoints_max,
                TOUCHPOINTS_MAX_RANGE,
            ),
            ("journeys-max", self.journeys_max, JOURNEYS_MAX_RANGE),
            (
                "training-paths-max",
                self.training_paths_max,
                TRAINING_PATHS_MAX_RANGE,
            ),
            (
                "shapley-exact-max",
                self.shapley_exact_max,
                SHAPLEY_EXACT_MAX_RANGE,
            ),
        ];
        for (key, v, r) in ranges {
            if !r.contains(&v) {
                return Err(format!(
                    "attribution.{key} must be {}..={}",
                    r.start(),
                    r.end()
                ));
            }
        }
        Ok(())
    }
}
