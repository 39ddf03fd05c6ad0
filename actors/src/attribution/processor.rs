//! The attribution actor's journal shell: reads clicks, impressions and conversions from
//! the ingest partitions, keeps the journeys, writes one attribution per attributed
//! conversion and every fitted model to `attributions`.
//!
//! It reads its inputs from the start on every start (the journeys are rebuilt from the
//! clicks), and its own output first: a conversion whose attribution is already written
//! is not credited again, its journey is taken as the record says.

use super::config::{AttributionConfig, CLICK_WAIT_US, CONVERTED_CLICKS_MAX};
use super::credit::{self, Weigher, RULES_VERSION, SHAPLEY_SEED};
use super::journeys::{Ended, Journeys, Key, Path, Touch, TOUCH_BYTES_ESTIMATE};
use super::models::{self, Grouped};
use super::view::{find_model, FitRequest, SharedAttribution, TrainingFigures};
use crate::catalog::{Campaign, EntityStore};
use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{
    self, AttributionModelFit, AttributionV3, Click, Coalition, ConversionV2, Currency, Impression,
    JourneyTouch, Kind, Money, Touchpoint,
};
use clicktrail_storage::{Record, RecordExt};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// A path's (conversions, nulls, value in minor units).
type Counts = (f64, f64, f64);

/// A campaign's training set: distinct paths of channel indices with their counts.
#[derive(Debug, Default)]
struct Training {
    channels: Vec<String>,
    channel_ids: HashMap<String, u32>,
    paths: HashMap<Vec<u32>, Counts>,
    figures: TrainingFigures,
    /// Changed since the last fit.
    dirty: bool,
}

impl Training {
    fn add(&mut self, channels: &[String], converted: bool, value: f64, at_us: i64, max: usize) {
        let path: Vec<u32> = channels
            .iter()
            .map(|c| match self.channel_ids.get(c) {
                Some(i) => *i,
                None => {
                    let i = self.channels.len() as u32;
                    self.channels.push(c.clone());
                    self.channel_ids.insert(c.clone(), i);
                    i
                }
            })
            .collect();
        if !self.paths.contains_key(&path) && self.paths.len() >= max {
            self.figures.dropped += 1;
            return;
        }
        let e = self.paths.entry(path).or_default();
        if converted {
            e.0 += 1.0;
            e.2 += value;
            self.figures.conversions += 1;
        } else {
            e.1 += 1.0;
        }
        let f = &mut self.figures;
        f.journeys += 1;
        f.paths = self.paths.len() as u64;
        f.from_us = if f.from_us == 0 {
            at_us
        } else {
            f.from_us.min(at_us)
        };
        f.to_us = f.to_us.max(at_us);
        self.dirty = true;
    }

    /// As ChannelAttribution's grouped journeys (paths sorted, so a fit is reproducible).
    fn grouped(&self) -> Grouped {
        let mut paths: Vec<(&Vec<u32>, &Counts)> = self.paths.iter().collect();
        paths.sort_by(|a, b| a.0.cmp(b.0));
        let mut g = Grouped::default();
        g.channels = self.channels.clone();
        for (p, (c, n, v)) in paths {
            g.paths.push(models::GroupedPath {
                touches: p.clone(),
                conversions: *c,
                nulls: *n,
                value: *v,
            });
        }
        g
    }
}

/// A conversion waiting for its matched click to be read.
#[derive(Debug)]
struct Waiting {
    conversion: ConversionV2,
    since_us: i64,
}

/// See the module docs.
pub struct AttributionProcessor {
    inputs: Vec<String>,
    store: Arc<EntityStore>,
    config: AttributionConfig,
    view: SharedAttribution,
    journeys: Journeys,
    /// Conversions already attributed (from the output): their journey's touch ids.
    done: HashMap<Box<str>, Vec<Box<str>>>,
    /// Click ids recently taken by a conversion (oldest first out).
    converted: (VecDeque<Box<str>>, HashSet<Box<str>>),
    waiting: Vec<Waiting>,
    /// Waiting conversions whose click was just read: credited after the click.
    pending_out: Vec<ConversionV2>,
    training: HashMap<Arc<str>, Training>,
    models: HashMap<String, Vec<AttributionModelFit>>,
    campaigns: HashMap<String, Arc<str>>,
    last_refit_us: i64,
    /// Touches an already written attribution took before they were read again.
    taken_ahead: HashSet<Box<str>>,
    /// Offline (the export): inputs come in time order, conversions never wait.
    offline: bool,
}

impl std::fmt::Debug for AttributionProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttributionProcessor")
            .field("open_journeys", &self.journeys.open())
            .finish()
    }
}

impl AttributionProcessor {
    pub fn new(
        inputs: Vec<String>,
        store: Arc<EntityStore>,
        config: AttributionConfig,
        view: SharedAttribution,
    ) -> Self {
        let journeys = Journeys::new(config.touchpoints_max, config.journeys_max);
        AttributionProcessor {
            inputs,
            store,
            config,
            view,
            journeys,
            done: HashMap::new(),
            converted: (VecDeque::new(), HashSet::new()),
            waiting: Vec::new(),
            pending_out: Vec::new(),
            training: HashMap::new(),
            models: HashMap::new(),
            campaigns: HashMap::new(),
            last_refit_us: 0,
            taken_ahead: HashSet::new(),
            offline: false,
        }
    }

    /// For reading a stopped node's journal in time order (the export).
    pub fn offline(mut self) -> Self {
        self.offline = true;
        self
    }

    /// The grouped journeys of `campaign` (or of every campaign) as trained so far: what
    /// `clicktrail attribution export` writes.
    pub fn training_grouped(&self, campaign: Option<&str>) -> Grouped {
        let mut out = Grouped::default();
        let mut names: Vec<&Arc<str>> = self.training.keys().collect();
        names.sort();
        for name in names {
            if campaign.is_some_and(|c| c != &**name) {
                continue;
            }
            let g = self.training[name].grouped();
            for p in g.paths {
                let touches = p
                    .touches
                    .iter()
                    .map(|i| out.channel(&g.channels[*i as usize]))
                    .collect();
                out.add(touches, p.conversions, p.nulls, p.value);
            }
        }
        out
    }

    /// A copy of a campaign's settings (defaults for one deleted since): for the paths
    /// that need several of them once per conversion or fit.
    fn campaign(&self, id: &str) -> Campaign {
        self.with_campaign(id, |c| Campaign {
            id: id.to_string(),
            ..c.clone()
        })
    }

    /// Runs `f` on a campaign's settings without copying them (the per-click paths).
    fn with_campaign<R>(&self, id: &str, f: impl FnOnce(&Campaign) -> R) -> R {
        static DEFAULTS: std::sync::LazyLock<Campaign> =
            std::sync::LazyLock::new(Campaign::defaults);
        self.store.with(|c| match c.campaigns.get(id) {
            Some(rt) => f(&rt.campaign),
            None => f(&DEFAULTS),
        })
    }

    fn campaign_name(&mut self, id: &str) -> Arc<str> {
        if let Some(c) = self.campaigns.get(id) {
            return c.clone();
        }
        let c: Arc<str> = id.into();
        self.campaigns.insert(id.to_string(), c.clone());
        c
    }

    fn train_ended(&mut self, ended: Vec<Ended>) {
        for e in ended {
            let channels: Vec<String> = self.with_campaign(&e.campaign_id, |c| {
                e.touches
                    .iter()
                    .map(|t| {
                        credit::channel(
                            &c.attribution_channel,
                            &t.affiliate_id,
                            &e.campaign_id,
                            &t.sub1,
                        )
                    })
                    .collect()
            });
            self.train(&e.campaign_id, &channels, false, 0.0, e.at_us);
        }
    }

    fn train(
        &mut self,
        campaign: &Arc<str>,
        channels: &[String],
        converted: bool,
        value: f64,
        at_us: i64,
    ) {
        if channels.is_empty() {
            return;
        }
        if let Some((from, to)) = self.config.training_window_us {
            if at_us < from || at_us > to {
                return;
            }
        }
        let max = self.config.training_paths_max;
        self.training
            .entry(campaign.clone())
            .or_default()
            .add(channels, converted, value, at_us, max);
    }

    fn on_touch(&mut self, campaign_id: &str, keys: Vec<Key>, touch: Touch) {
        if keys.is_empty() || self.taken_ahead.remove(&touch.id) {
            return;
        }
        let lookback =
            self.with_campaign(campaign_id, |c| c.lookback_days() as i64 * 86_400_000_000);
        let name = self.campaign_name(campaign_id);
        let id = touch.id.clone();
        let ended = self.journeys.touch(&name, &keys, touch, lookback);
        self.train_ended(ended);
        // Every conversion that waited for this click, in the order they came: the first
        // takes the journey, the others find the click taken (it is their last touch).
        if self
            .waiting
            .iter()
            .any(|w| w.conversion.click_id.as_deref() == Some(&*id))
        {
            let (ready, wait): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition(|w| w.conversion.click_id.as_deref() == Some(&*id));
            self.waiting = wait;
            self.pending_out
                .extend(ready.into_iter().map(|w| w.conversion));
        }
    }

    /// Credits one conversion; pushes its attribution (and a model fitted for it first,
    /// when its campaign's data-driven model has none yet).
    fn attribute(&mut self, c: &ConversionV2, out: &mut Vec<Output>) {
        let (Some(click_id), Some(affiliate)) = (c.click_id.as_deref(), c.affiliate_id.as_deref())
        else {
            return;
        };
        let camp = self.campaign(&c.campaign_id);
        let name = self.campaign_name(&c.campaign_id);
        let lead = c.event == camp.lead_event;
        let ended = self.journeys.advance(c.occurred_at_us.min(c.at_us));
        self.train_ended(ended);
        let mut path = self
            .journeys
            .convert(
                &name,
                Some(click_id),
                c.customer_id.as_deref(),
                c.occurred_at_us,
                lead,
            )
            .unwrap_or(Path {
                touches: Vec::new(),
                lead_index: None,
            });
        if !path.touches.iter().any(|t| &*t.id == click_id) {
            // Not held (never read, evicted, made on another node): the matched click is
            // the last touch, at the time the conversion happened.
            path.touches.push(Touch {
                id: click_id.into(),
                affiliate_id: affiliate.into(),
                sub1: "".into(),
                at_us: c.occurred_at_us,
                impression: false,
            });
        }
        if !lead {
            for t in &path.touches {
                self.remember_converted(&t.id);
            }
        }
        let journey: Vec<JourneyTouch> = path
            .touches
            .iter()
            .map(|t| JourneyTouch {
                click_id: t.id.to_string(),
                affiliate_id: t.affiliate_id.to_string(),
                sub1: t.sub1.to_string(),
                at_us: t.at_us,
                impression: t.impression,
            })
            .collect();
        let channels: Vec<String> = journey
            .iter()
            .map(|t| {
                credit::channel(
                    &camp.attribution_channel,
                    &t.affiliate_id,
                    &camp.id,
                    &t.sub1,
                )
            })
            .collect();
        let value = c.amount.amount_minor as f64;
        if !lead {
            self.train(&name, &channels, true, value, c.occurred_at_us);
        }
        let (model, weights, version) =
            self.weigh(&camp, &name, c, &journey, &channels, path.lead_index, out);
        let touchpoints: Vec<Touchpoint> = journey
            .iter()
            .zip(&weights)
            .filter(|(_, w)| **w > 0)
            .map(|(t, w)| Touchpoint {
                click_id: t.click_id.clone(),
                affiliate_id: t.affiliate_id.clone(),
                at_us: t.at_us,
                weight_ppm: *w,
            })
            .collect();
        out.push(Output::event(&AttributionV3 {
            at_us: c.at_us,
            conversion_id: c.conversion_id.clone(),
            model: model.to_string(),
            model_version: version,
            touchpoints,
            merchant_id: c.merchant_id.clone(),
            campaign_id: c.campaign_id.clone(),
            order_id: c.order_id.clone(),
            event: c.event.clone(),
            amount: Money {
                amount_minor: c.amount.amount_minor,
                currency: Currency(c.amount.currency.0),
            },
            customer_id: c.customer_id.clone(),
            occurred_at_us: c.occurred_at_us,
            channel_by: camp.attribution_channel.clone(),
            journey,
            lead_index: path.lead_index.map(|i| i as u32),
        }));
    }

    /// The campaign's model weights for a converting journey: (the model that credited
    /// it, the weights, its version). A data-driven model without a version is fitted
    /// first (pushed to `out`); a pinned version that does not exist credits by last
    /// click, and the record says so.
    #[allow(clippy::too_many_arguments)]
    fn weigh(
        &mut self,
        camp: &Campaign,
        name: &Arc<str>,
        c: &ConversionV2,
        journey: &[JourneyTouch],
        channels: &[String],
        lead: Option<usize>,
        out: &mut Vec<Output>,
    ) -> (String, Vec<u32>, u32) {
        let model = camp.attribution_model.as_str();
        if let Some(w) = Weigher::rule(model, camp.half_life_days) {
            let weights = w.weights(journey, channels, c.occurred_at_us, lead);
            return (model.to_string(), weights, RULES_VERSION);
        }
        let pin = camp.attribution_model_version;
        if find_model(&self.models, &camp.id, model, pin).is_none() && pin.is_none() {
            if let Some(fit) = self.fit(name, model, camp.markov_order, "first-conversion", c.at_us)
            {
                out.push(Output::event(&fit));
            }
        }
        match find_model(&self.models, &camp.id, model, pin) {
            Some(fit) => {
                let w = Weigher::fitted(fit, self.config.shapley_exact_max);
                (
                    model.to_string(),
                    w.weights(journey, channels, c.occurred_at_us, lead),
                    fit.version,
                )
            }
            None => {
                let w = Weigher::rule("last-click", camp.half_life_days).expect("a rule");
                let weights = w.weights(journey, channels, c.occurred_at_us, None);
                ("last-click".to_string(), weights, RULES_VERSION)
            }
        }
    }

    fn remember_converted(&mut self, id: &str) {
        let (order, set) = &mut self.converted;
        if set.insert(id.into()) {
            order.push_back(id.into());
            if order.len() > CONVERTED_CLICKS_MAX {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Fits `model` on a campaign's training set: the next version, or `None` when there
    /// is nothing to train on.
    fn fit(
        &mut self,
        campaign: &Arc<str>,
        model: &str,
        order: u32,
        requested_by: &str,
        at_us: i64,
    ) -> Option<AttributionModelFit> {
        let t = self.training.get_mut(campaign)?;
        let g = t.grouped();
        if g.paths.is_empty() {
            return None;
        }
        t.dirty = false;
        let figures = t.figures.clone();
        let camp = self.campaign(campaign);
        let version = self.models.get(&**campaign).map_or(0, |v| {
            v.iter()
                .filter(|m| m.model == model)
                .map(|m| m.version)
                .max()
                .unwrap_or(0)
        }) + 1;
        let mut fit = AttributionModelFit {
            at_us,
            campaign_id: campaign.to_string(),
            model: model.to_string(),
            version,
            order: 0,
            channel_by: camp.attribution_channel.clone(),
            trained_from_us: figures.from_us,
            trained_to_us: figures.to_us,
            journeys: figures.journeys,
            conversions: figures.conversions,
            channels: g.channels.clone(),
            p_conversion: 0.0,
            removal_effects: Vec::new(),
            coalitions: Vec::new(),
            requested_by: requested_by.to_string(),
        };
        match model {
            "markov" => {
                let m = match models::fit_markov(&g, order as usize) {
                    Ok(m) => m,
                    Err(e) => {
                        log::warn!("attribution: cannot fit markov for {campaign}: {e}");
                        return None;
                    }
                };
                fit.order = order;
                fit.p_conversion = m.p_conversion;
                fit.removal_effects = m.removal_effects;
            }
            _ => {
                let s = models::fit_shapley(&g, self.config.shapley_exact_max, SHAPLEY_SEED);
                fit.coalitions = s
                    .coalitions
                    .into_iter()
                    .map(|(channels, conversions, journeys)| Coalition {
                        channels,
                        conversions,
                        journeys,
                    })
                    .collect();
            }
        }
        self.keep_model(fit.clone());
        Some(fit)
    }

    fn keep_model(&mut self, fit: AttributionModelFit) {
        self.models
            .entry(fit.campaign_id.clone())
            .or_default()
            .push(fit.clone());
        self.view.write(|v| {
            v.models
                .entry(fit.campaign_id.clone())
                .or_default()
                .push(fit);
        });
    }

    fn publish(&self) {
        let (open, touches, evicted) = (
            self.journeys.open() as u64,
            self.journeys.touches() as u64,
            self.journeys.evicted,
        );
        let training: HashMap<String, TrainingFigures> = self
            .training
            .iter()
            .map(|(k, t)| (k.to_string(), t.figures.clone()))
            .collect();
        let waiting = self.waiting.len() as u64;
        self.view.write(|v| {
            v.open_journeys = open;
            v.touches = touches;
            v.evicted_journeys = evicted;
            v.waiting_conversions = waiting;
            v.journey_bytes = touches * TOUCH_BYTES_ESTIMATE as u64 + open * 200;
            v.training = training;
        });
    }

    /// Runs the queued fits, and the scheduled refits of campaigns whose model is
    /// data-driven.
    fn run_fits(&mut self, now_us: i64, out: &mut Vec<Output>) {
        let mut requests = self.view.take_requests();
        let interval = self.config.refit_interval_s as i64 * 1_000_000;
        if interval > 0 && now_us - self.last_refit_us >= interval {
            self.last_refit_us = now_us;
            let due: Vec<(Arc<str>, Campaign)> = self
                .training
                .iter()
                .filter(|(_, t)| t.dirty)
                .map(|(k, _)| (k.clone(), self.campaign(k)))
                .filter(|(_, c)| matches!(c.attribution_model.as_str(), "markov" | "shapley"))
                .collect();
            for (k, c) in due {
                requests.push(FitRequest {
                    campaign_id: k.to_string(),
                    model: c.attribution_model.clone(),
                    order: c.markov_order,
                    requested_by: "schedule".into(),
                });
            }
        }
        for r in requests {
            let name = self.campaign_name(&r.campaign_id);
            if let Some(fit) = self.fit(&name, &r.model, r.order, &r.requested_by, now_us) {
                out.push(Output::event(&fit));
            }
        }
    }
}

/// What the actor takes from an ingest record.
#[derive(Debug, Clone)]
pub enum Input {
    Touch {
        campaign_id: String,
        keys: Vec<Key>,
        touch: Touch,
        /// An impression (a touch only on campaigns that count them).
        impression: bool,
    },
    /// A conversion of either version (v1 read as v2); boxed, as it is several times a
    /// touch's size and touches are most inputs.
    Conversion(Box<ConversionV2>),
}

impl Input {
    /// Its event time.
    pub fn at_us(&self) -> i64 {
        match self {
            Input::Touch { touch, .. } => touch.at_us,
            Input::Conversion(c) => c.at_us,
        }
    }
}

/// The input of an ingest record, if it is a click, impression or conversion.
pub fn input_of(rec: &Record<'_>) -> Option<Input> {
    match rec.kind_enum()? {
        Kind::Click => {
            let k = rec.event::<Click>()?;
            let mut keys = Vec::with_capacity(2);
            if let Some(v) = k.visitor_id.as_ref() {
                keys.push(Key::Visitor(v.as_str().into()));
            }
            if let (false, Some(f)) = (k.opted_out, k.fingerprint.as_ref()) {
                keys.push(Key::Fingerprint(f.to_native()));
            }
            Some(Input::Touch {
                campaign_id: k.campaign_id.to_string(),
                keys,
                touch: Touch {
                    id: k.click_id.as_str().into(),
                    affiliate_id: k.affiliate_id.as_str().into(),
                    sub1: k.sub_ids.first().map_or("", |s| s.as_str()).into(),
                    at_us: k.at_us.to_native(),
                    impression: false,
                },
                impression: false,
            })
        }
        Kind::Impression => {
            let i = rec.event::<Impression>()?;
            Some(Input::Touch {
                campaign_id: i.campaign_id.to_string(),
                keys: i
                    .visitor_id
                    .as_ref()
                    .map(|v| Key::Visitor(v.as_str().into()))
                    .into_iter()
                    .collect(),
                touch: Touch {
                    id: i.impression_id.as_str().into(),
                    affiliate_id: i.affiliate_id.as_str().into(),
                    sub1: "".into(),
                    at_us: i.at_us.to_native(),
                    impression: true,
                },
                impression: true,
            })
        }
        Kind::Conversion => schema::conversion(rec).map(|c| Input::Conversion(Box::new(c))),
        _ => None,
    }
}

impl AttributionProcessor {
    /// Handles one input (also the offline export's way in, in time order).
    pub fn handle(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Touch {
                campaign_id,
                keys,
                touch,
                impression,
            } => {
                if impression && !self.with_campaign(&campaign_id, |c| c.count_impressions) {
                    return;
                }
                self.on_touch(&campaign_id, keys, touch);
            }
            Input::Conversion(c) => self.on_conversion(*c, out),
        }
        for c in std::mem::take(&mut self.pending_out) {
            self.attribute(&c, out);
        }
    }

    fn on_conversion(&mut self, c: ConversionV2, out: &mut Vec<Output>) {
        if let Some(ids) = self.done.remove(c.conversion_id.as_str()) {
            let name = self.campaign_name(&c.campaign_id);
            let lead = self.with_campaign(&c.campaign_id, |camp| c.event == camp.lead_event);
            if !lead {
                // Touches not read yet (another partition is behind this one): dropped
                // when they come, as this conversion took them.
                for id in &ids {
                    if !self.journeys.holds(id) {
                        self.taken_ahead.insert(id.clone());
                    }
                }
            }
            let ids: Vec<&str> = ids.iter().map(|s| &**s).collect();
            self.journeys
                .consume(&name, &ids, c.customer_id.as_deref(), lead);
            if !lead {
                for id in ids {
                    self.remember_converted(id);
                }
            }
            return;
        }
        let held = self.offline
            || c.click_id
                .as_deref()
                .is_none_or(|k| self.journeys.holds(k) || self.converted.1.contains(k));
        if held {
            self.attribute(&c, out);
        } else {
            self.waiting.push(Waiting {
                conversion: c,
                since_us: crate::catalog::now_us(),
            });
        }
    }
}

impl Processor for AttributionProcessor {
    fn name(&self) -> &str {
        "attribution-aggregator"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::ATTRIBUTIONS.into()
    }

    fn keeps_output(&self) -> bool {
        true // the fitted models and what was credited
    }

    fn resumes_from_output(&self) -> bool {
        false // the journeys are rebuilt from every click on each start
    }

    fn restore(&mut self, record: &Record<'_>) {
        match record.kind_enum() {
            Some(Kind::Attribution) => {
                let Some(a) = schema::attribution(record) else {
                    return;
                };
                let lead = self.with_campaign(&a.campaign_id, |camp| a.event == camp.lead_event);
                if !lead {
                    let name = self.campaign_name(&a.campaign_id);
                    let channels: Vec<String> = a
                        .journey
                        .iter()
                        .map(|t| {
                            credit::channel(&a.channel_by, &t.affiliate_id, &a.campaign_id, &t.sub1)
                        })
                        .collect();
                    self.train(
                        &name,
                        &channels,
                        true,
                        a.amount.amount_minor as f64,
                        a.occurred_at_us,
                    );
                }
                let ids = a
                    .journey
                    .iter()
                    .map(|t| t.click_id.as_str().into())
                    .collect();
                self.done.insert(a.conversion_id.into(), ids);
            }
            Some(Kind::AttributionModel) => {
                if let Some(m) = record.to_owned_event::<AttributionModelFit>() {
                    self.last_refit_us = self.last_refit_us.max(m.at_us);
                    self.keep_model(m);
                }
            }
            _ => {}
        }
    }

    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        if let Some(i) = input_of(input) {
            self.handle(i, out);
        }
        Ok(())
    }

    fn tick(&mut self, now_us: i64, out: &mut Vec<Output>) {
        let (late, wait): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now_us - w.since_us >= CLICK_WAIT_US);
        self.waiting = wait;
        for w in late {
            self.attribute(&w.conversion, out);
        }
        self.publish();
    }

    fn idle(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.view.write(|v| v.caught_up = true);
        // Every input is read to its end: a touch still owed to a written attribution
        // is gone (retention took it) and will not come.
        self.taken_ahead.clear();
        self.run_fits(now_us, out);
        self.publish();
    }
}
