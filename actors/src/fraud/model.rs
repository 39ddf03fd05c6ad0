//! The anomaly model in the scorer: a uniform reservoir of conversions' feature vectors,
//! an isolation forest trained from it when the scorer is idle (first when enough samples
//! are in, then every `window-s` of the `anomaly` rule, or when an admin asks), written to
//! the journal as a versioned [`FraudModelFit`] and read back on start. A conversion
//! scoring at or above the model's threshold (the `limit` ppm quantile of its training
//! scores) gets an `anomaly` hit: one more reason, weak on its own by default.

use super::anomaly::forest::Forest;
use super::config::{AnomalyConfig, FraudConfig, PPM};
use super::rules::{Hit, Rules, PPM_FULL};
use super::view::{ModelFigures, SharedFraud};
use crate::worker::Output;
use clicktrail_storage::schema::FraudModelFit;
use clicktrail_storage::{Record, RecordExt};

/// What the model reads of a conversion, in order (see `FraudScorer::model_features`).
pub const FEATURES: [&str; 9] = [
    "log-seconds-from-click",
    "log-affiliate-vs-campaign-conversion-rate",
    "log-affiliate-clicks-today",
    "affiliate-flagged-click-share-today",
    "affiliate-no-referrer-share-today",
    "log-amount-minor",
    "match-kind",
    "click-without-referrer",
    "rules-score",
];

/// The seed of every fit (a fit is reproducible from its samples).
const SEED: u64 = 0x5eed_f00d;

/// See the module docs.
#[derive(Debug)]
pub struct ModelState {
    config: AnomalyConfig,
    samples: Vec<Vec<f64>>,
    seen: u64,
    rng: u64,
    from_us: i64,
    to_us: i64,
    forest: Option<(Forest, FraudModelFit)>,
    last_fit_us: i64,
}

impl ModelState {
    pub fn new(config: &AnomalyConfig) -> ModelState {
        ModelState {
            config: config.clone(),
            samples: Vec::new(),
            seen: 0,
            rng: SEED,
            from_us: 0,
            to_us: 0,
            forest: None,
            last_fit_us: 0,
        }
    }

    /// The version of the model in use (0: none yet).
    pub fn version(&self) -> u32 {
        self.forest.as_ref().map_or(0, |f| f.1.version)
    }

    /// The `anomaly` hit of a conversion, when a model is in use and flags it.
    pub fn hit(&self, features: &[f64], rules: &Rules<'_>) -> Option<Hit> {
        let (forest, fit) = self.forest.as_ref()?;
        if forest.features() != features.len() {
            return None; // a model of other features (an older build): not used
        }
        let score = forest.score(features);
        (score >= fit.threshold).then_some(())?;
        rules.hit(
            "anomaly",
            PPM_FULL,
            format!(
                "anomaly score {score:.3} (model v{} flags from {:.3})",
                fit.version, fit.threshold
            ),
        )
    }

    /// Offers a conversion's features to the training reservoir (algorithm R, seeded).
    pub fn sample(&mut self, features: Vec<f64>, at_us: i64) {
        self.seen += 1;
        self.from_us = if self.from_us == 0 {
            at_us
        } else {
            self.from_us.min(at_us)
        };
        self.to_us = self.to_us.max(at_us);
        if self.samples.len() < self.config.samples_max {
            self.samples.push(features);
            return;
        }
        let j = self.next() % self.seen;
        if let Some(slot) = self.samples.get_mut(j as usize) {
            *slot = features;
        }
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Takes a model written earlier (the newest wins).
    pub fn restore(&mut self, record: &Record<'_>) {
        let Some(fit) = record.to_owned_event::<FraudModelFit>() else {
            return;
        };
        self.last_fit_us = self.last_fit_us.max(fit.at_us);
        match Forest::from_trees(fit.sample_size, fit.features.len(), fit.trees.clone()) {
            Ok(forest) => self.forest = Some((forest, fit)),
            Err(e) => log::warn!("fraud model v{}: not usable: {e}", fit.version),
        }
    }

    /// Trains when due; answers the model to write.
    pub fn idle(
        &mut self,
        config: &FraudConfig,
        view: &SharedFraud,
        now_us: i64,
        default_interval_us: i64,
    ) -> Option<Output> {
        let settings = config.settings("anomaly", None);
        let requested = view.write(|v| v.fit_requested.take());
        let interval = if settings.window_s > 0 {
            settings.window_s as i64 * 1_000_000
        } else {
            default_interval_us
        };
        let due = self.forest.is_none() || now_us - self.last_fit_us >= interval;
        if !settings.enabled
            || self.samples.len() < self.config.samples_min
            || (!due && requested.is_none())
        {
            if let Some(r) = requested {
                view.write(|v| v.fit_requested = Some(r)); // not enough samples yet: keep asking
            }
            self.publish(view);
            return None;
        }
        let fit = self.fit(
            now_us,
            settings.limit,
            requested.unwrap_or_else(|| "schedule".into()),
        );
        let out = Output::event(&fit);
        self.publish(view);
        Some(out)
    }

    fn fit(&mut self, now_us: i64, quantile_ppm: u64, requested_by: String) -> FraudModelFit {
        let forest = Forest::fit(
            &self.samples,
            self.config.trees,
            self.config.sample_size,
            SEED,
        );
        let q = (quantile_ppm.min(u64::from(PPM)) as f64) / f64::from(PPM);
        let threshold = forest.threshold(&self.samples, q);
        let fit = FraudModelFit {
            at_us: now_us,
            subject: "conversion".into(),
            version: self.version() + 1,
            trained_from_us: self.from_us,
            trained_to_us: self.to_us,
            samples: self.samples.len() as u64,
            features: FEATURES.map(String::from).to_vec(),
            sample_size: forest.sample_size(),
            seed: SEED,
            trees: forest.trees().to_vec(),
            threshold,
            requested_by,
        };
        self.last_fit_us = now_us;
        self.forest = Some((forest, fit.clone()));
        fit
    }

    fn publish(&self, view: &SharedFraud) {
        let figures = self.forest.as_ref().map(|(_, f)| ModelFigures {
            version: f.version,
            at_us: f.at_us,
            samples: f.samples,
            features: f.features.clone(),
            threshold: f.threshold,
            trained_from_us: f.trained_from_us,
            trained_to_us: f.trained_to_us,
            requested_by: f.requested_by.clone(),
        });
        let pending = self.samples.len() as u64;
        view.write(|v| {
            v.model = figures;
            v.model_samples = pending;
        });
    }
}
