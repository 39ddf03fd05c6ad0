//! The attribution actor's read model: fitted models, training and journey figures, and
//! the queue of fits asked for over the API. The HTTP layer only reads it and queues.

use clicktrail_storage::schema::AttributionModelFit;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// A fit asked for over the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitRequest {
    pub campaign_id: String,
    /// markov or shapley.
    pub model: String,
    /// Markov order (ignored for shapley).
    pub order: u32,
    pub requested_by: String,
}

/// What a campaign's training set holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrainingFigures {
    pub journeys: u64,
    pub conversions: u64,
    pub paths: u64,
    /// Journeys not kept: their path was new past `training-paths-max`.
    pub dropped: u64,
    /// The kept journeys ended in [from, to] (microseconds; 0 when none).
    pub from_us: i64,
    pub to_us: i64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct AttributionView {
    /// Every fitted model per campaign, oldest first.
    pub models: HashMap<String, Vec<AttributionModelFit>>,
    pub training: HashMap<String, TrainingFigures>,
    pub open_journeys: u64,
    pub touches: u64,
    pub evicted_journeys: u64,
    /// Conversions waiting for their matched click.
    pub waiting_conversions: u64,
    /// Estimated bytes of the journey store.
    pub journey_bytes: u64,
    /// Whether the actor has read its inputs to their end at least once since it started.
    pub caught_up: bool,
    requests: Vec<FitRequest>,
}

/// The view shared between the actor and the HTTP layer.
#[derive(Debug, Clone, Default)]
pub struct SharedAttribution(Arc<RwLock<AttributionView>>);

impl SharedAttribution {
    pub fn read<R>(&self, f: impl FnOnce(&AttributionView) -> R) -> R {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn write<R>(&self, f: impl FnOnce(&mut AttributionView) -> R) -> R {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Queues a fit; the actor runs it within about a second once it is caught up. The
    /// same fit already queued is not queued again (the queue holds at most one per
    /// campaign, model and order, whoever asks).
    pub fn request_fit(&self, r: FitRequest) {
        self.write(|v| {
            let same = |q: &FitRequest| {
                (&q.campaign_id, &q.model, q.order) == (&r.campaign_id, &r.model, r.order)
            };
            if !v.requests.iter().any(same) {
                v.requests.push(r);
            }
        });
    }

    /// Takes the queued fits.
    pub fn take_requests(&self) -> Vec<FitRequest> {
        self.write(|v| std::mem::take(&mut v.requests))
    }

    /// The newest version of `model` fitted for `campaign`, or the pinned one.
    pub fn model(
        &self,
        campaign: &str,
        model: &str,
        pin: Option<u32>,
    ) -> Option<AttributionModelFit> {
        self.read(|v| find_model(&v.models, campaign, model, pin).cloned())
    }
}

/// The newest version of `model` for `campaign` (or version `pin`).
pub fn find_model<'a>(
    models: &'a HashMap<String, Vec<AttributionModelFit>>,
    campaign: &str,
    model: &str,
    pin: Option<u32>,
) -> Option<&'a AttributionModelFit> {
    models
        .get(campaign)?
        .iter()
        .rev()
        .find(|m| m.model == model && pin.is_none_or(|p| m.version == p))
}
