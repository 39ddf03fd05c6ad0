//! The fraud scorer's journal shell: reads clicks, impressions, conversions and people's
//! decisions from the ingest partitions, and writes verdicts (and trained anomaly models)
//! to `fraud-verdicts`.
//!
//! It reads its inputs from the start on every start (the windows, tails and maps are
//! rebuilt from them), and its own output first: a subject that already has a verdict gets
//! a new one only when the scorer now judges it stricter (a flood's first clicks, once the
//! flood is seen), never over a person's decision.
//!
//! Clicks get a verdict when they go to review or worse (a verdict per clean click would
//! double the busiest path's journal traffic); every conversion gets one. A conversion
//! read before its click (another partition is behind) waits for it, at most
//! [`CLICK_WAIT_US`], or until every input is read.

mod clicks;
mod conversions;

use super::config::{Cidr, FraudConfig, RuleOverride};
use super::email::email_hash;
use super::graph::{IdKind, LinkGraph};
use super::rules::{self, click, conversion, Hit, Rules};
use super::signals;
use super::state::{
    Affiliates, ClickBrief, Customers, Fifo, Flagged, Spikes, Tails, DAY_US, SECOND_US,
};
use super::view::{FraudView, SharedFraud};
use super::windows::{Limit, Windows};
use crate::catalog::EntityStore;
use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{
    self, ArchivedClick, ConversionV2, FraudDecision, FraudVerdictV2, Impression, Kind,
    VerdictAction,
};
use clicktrail_storage::{Record, RecordExt};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Longest a conversion waits for its click to be read, wall clock.
pub const CLICK_WAIT_US: i64 = 5 * SECOND_US;
/// How far past a conversion's click the clicks read must reach before it is judged (the
/// flood windows' length): the clicks around it are then known.
pub const SETTLE_US: i64 = 60 * SECOND_US;
/// Longest a conversion waits to settle, wall clock (the inputs stalled, or a backlog).
pub const SETTLE_WALL_US: i64 = 60 * SECOND_US;
/// Most conversions remembered for a later, stricter verdict (their click flagged later,
/// their affiliate's tail found flat).
pub const CONVERSIONS_REMEMBERED_MAX: usize = 200_000;
/// Most late (or fast) conversions remembered per (campaign, affiliate), for a stricter
/// verdict once the affiliate's distribution is found.
const LATE_PER_AFFILIATE_MAX: usize = 1_000;
/// Most ids of the link graph.
pub const GRAPH_IDS_MAX: usize = 1_000_000;
/// Most distinct user agents remembered read (the cache starts again when full).
const USER_AGENTS_MAX: usize = 65_536;
/// Most conversions waiting for their click; past it they are judged without waiting.
pub const WAITING_MAX: usize = 100_000;
/// Least time between two computations of the clusters, wall clock.
const CLUSTERS_EVERY_US: i64 = 5 * SECOND_US;

/// A campaign as the rules read it.
#[derive(Debug, Default)]
struct CampaignRt {
    merchant: Arc<str>,
    paid_search: bool,
    requires_impression: bool,
    rules: BTreeMap<String, RuleOverride>,
    /// Every rule's settings for this campaign (`rules::resolve`).
    settings: Vec<super::config::RuleSettings>,
}

/// An affiliate as the rules read it.
#[derive(Debug, Default)]
struct PartnerRt {
    sites: Vec<String>,
    own: Vec<Cidr>,
    own_email_hashes: Vec<String>,
    /// Another affiliate with the same payout account.
    payout_shared_with: Option<String>,
}

/// What was last decided about a subject.
#[derive(Debug, Clone, Copy)]
struct Judged {
    action: VerdictAction,
    by_person: bool,
}

/// A judged conversion, for a stricter verdict later.
#[derive(Debug, Clone)]
struct Memo {
    at_us: i64,
    affiliate: Arc<str>,
    campaign: Arc<str>,
    click_to_conversion_s: Option<i64>,
    hits: Vec<Hit>,
}

/// A conversion waiting for its click.
#[derive(Debug)]
struct Waiting {
    conversion: ConversionV2,
    since_us: i64,
}

/// The sliding-window families.
#[derive(Debug)]
struct Floods {
    ip: Windows,
    subnet: Windows,
    fingerprint: Windows,
    visitor: Windows,
    stuffing: Windows,
}

/// One end of one affiliate's distribution on one campaign.
type TailKey = (Tail, Arc<str>, Arc<str>);

/// Which end of an affiliate's click-to-conversion distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tail {
    /// Over the click-spamming window (a flat tail: click spamming).
    Late,
    /// Within a minute (click injection).
    Fast,
}

/// See the module docs.
pub struct FraudScorer {
    inputs: Vec<String>,
    store: Arc<EntityStore>,
    config: FraudConfig,
    view: SharedFraud,
    catalog_at: usize,
    campaigns: HashMap<String, Arc<CampaignRt>>,
    partners: HashMap<String, Arc<PartnerRt>>,
    floods: Floods,
    spikes: Spikes,
    clicks: Fifo<Arc<str>, ClickBrief>,
    flagged: Fifo<Arc<str>, Flagged>,
    flagged_visitors: Fifo<u64, (i64, Arc<str>)>,
    impressions: Fifo<u64, i64>,
    judged: HashMap<Arc<str>, Judged>,
    decisions_applied: HashSet<(Arc<str>, i64)>,
    memos: Fifo<Arc<str>, Memo>,
    by_click: Fifo<Arc<str>, Vec<Arc<str>>>,
    /// Recent late and fast conversions per (kind, campaign, affiliate).
    tail_members: HashMap<TailKey, VecDeque<Arc<str>>>,
    /// Distributions found flat (click spamming) or fast (click injection).
    tails_found: HashSet<TailKey>,
    tails: Tails,
    fast_tails: Tails,
    /// Order ids seen: (merchant, affiliate, time).
    orders: Fifo<Box<str>, (Arc<str>, Arc<str>, i64)>,
    customers: Customers,
    affiliates: Affiliates,
    graph: LinkGraph,
    graph_dirty: bool,
    last_clusters_us: i64,
    /// Conversions waiting for their click, by click id.
    waiting: HashMap<Arc<str>, Vec<Waiting>>,
    waiting_len: usize,
    /// Conversions whose click is read, until the clicks around it are: by (click time +
    /// [`SETTLE_US`], arrival).
    settling: BTreeMap<(i64, u64), Waiting>,
    settle_seq: u64,
    /// The newest click time read.
    newest_click_us: i64,
    pub(super) model: super::model::ModelState,
    user_agents: HashMap<u64, signals::UaFacts>,
    /// Affiliate and campaign ids, shared (one allocation per id, not per click).
    names: HashSet<Arc<str>>,
    shares: super::state::Shares,
    /// Clicks scored since the view was last told.
    scored_clicks: u64,
}

impl std::fmt::Debug for FraudScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FraudScorer")
            .field("clicks", &self.clicks.len())
            .field("judged", &self.judged.len())
            .finish()
    }
}

impl FraudScorer {
    /// A scorer reading `inputs`; its view starts empty (the restore fills it).
    pub fn new(
        inputs: Vec<String>,
        store: Arc<EntityStore>,
        config: FraudConfig,
        view: SharedFraud,
    ) -> FraudScorer {
        view.write(|v| {
            let requested = v.fit_requested.take();
            *v = FraudView::default();
            v.set_verdicts_max(config.verdicts_max);
            v.fit_requested = requested;
        });
        let keys = config.window_keys_max;
        FraudScorer {
            inputs,
            store,
            floods: Floods {
                ip: Windows::new(keys),
                subnet: Windows::new(keys),
                fingerprint: Windows::new(keys),
                visitor: Windows::new(keys),
                stuffing: Windows::new(keys),
            },
            spikes: Spikes::default(),
            clicks: Fifo::new(config.clicks_max),
            flagged: Fifo::new(config.flagged_max),
            flagged_visitors: Fifo::new(config.flagged_max),
            impressions: Fifo::new(config.clicks_max),
            judged: HashMap::new(),
            decisions_applied: HashSet::new(),
            memos: Fifo::new(CONVERSIONS_REMEMBERED_MAX),
            by_click: Fifo::new(CONVERSIONS_REMEMBERED_MAX),
            tail_members: HashMap::new(),
            tails_found: HashSet::new(),
            tails: Tails::default(),
            fast_tails: Tails::default(),
            orders: Fifo::new(config.clicks_max),
            customers: Customers::new(config.clicks_max),
            affiliates: Affiliates::default(),
            graph: LinkGraph::new(GRAPH_IDS_MAX),
            graph_dirty: false,
            last_clusters_us: 0,
            waiting: HashMap::new(),
            waiting_len: 0,
            settling: BTreeMap::new(),
            settle_seq: 0,
            newest_click_us: i64::MIN,
            model: super::model::ModelState::new(&config.anomaly),
            user_agents: HashMap::new(),
            names: HashSet::new(),
            shares: Default::default(),
            scored_clicks: 0,
            catalog_at: 0,
            campaigns: HashMap::new(),
            partners: HashMap::new(),
            config,
            view,
        }
    }

    /// Forgets the cached campaigns and affiliates when the catalog changed.
    fn refresh_catalog(&mut self) {
        let at = self.store.with(|c| c as *const _ as usize);
        if at != self.catalog_at {
            self.catalog_at = at;
            self.campaigns.clear();
            self.partners.clear();
        }
    }

    fn campaign(&mut self, id: &str) -> Arc<CampaignRt> {
        if let Some(c) = self.campaigns.get(id) {
            return c.clone();
        }
        let rt = self.store.with(|cat| {
            cat.campaigns.get(id).map(|c| CampaignRt {
                merchant: Arc::from(c.campaign.merchant_id.as_str()),
                paid_search: c.campaign.paid_search,
                requires_impression: c.campaign.requires_impression,
                rules: c.campaign.fraud_rules.clone(),
                settings: Vec::new(),
            })
        });
        let mut rt = rt.unwrap_or(CampaignRt {
            paid_search: true,
            ..CampaignRt::default()
        });
        rt.settings = rules::resolve(&self.config, Some(&rt.rules));
        let rt = Arc::new(rt);
        self.campaigns.insert(id.to_string(), rt.clone());
        rt
    }

    fn partner(&mut self, id: &str) -> Arc<PartnerRt> {
        if let Some(p) = self.partners.get(id) {
            return p.clone();
        }
        let key = self.config.email_key.clone();
        let rt = self.store.with(|cat| {
            let Some(a) = cat.affiliates.get(id) else {
                return PartnerRt::default();
            };
            let mut own_email_hashes: Vec<String> = a
                .email
                .iter()
                .chain(a.payout_account.iter().filter(|p| p.contains('@')))
                .filter_map(|e| email_hash(&key, e))
                .collect();
            own_email_hashes.dedup();
            PartnerRt {
                sites: a
                    .sites
                    .iter()
                    .filter_map(|s| signals::site_host(s))
                    .collect(),
                own: a.ips.iter().filter_map(|r| Cidr::parse(r).ok()).collect(),
                own_email_hashes,
                payout_shared_with: a.payout_account.as_ref().and_then(|acct| {
                    cat.affiliates
                        .values()
                        .find(|o| o.id != a.id && o.payout_account.as_ref() == Some(acct))
                        .map(|o| o.id.clone())
                }),
            }
        });
        let rt = Arc::new(rt);
        self.partners.insert(id.to_string(), rt.clone());
        rt
    }

    /// The payout accounts every affiliate uses (the graph's identifiers besides traffic).
    fn payout_ids(&self) -> Vec<(IdKind, String, String)> {
        self.store.with(|cat| {
            cat.affiliates
                .values()
                .filter_map(|a| {
                    let acct = a.payout_account.as_ref()?;
                    Some((IdKind::PayoutAccount, acct.to_lowercase(), a.id.clone()))
                })
                .collect()
        })
    }
}

/// A subject being judged.
struct Subject<'a> {
    kind: Kind,
    id: &'a Arc<str>,
    at_us: i64,
    affiliate: &'a str,
    campaign: &'a str,
}

/// Adds a hit, keeping the higher score when the rule already hit.
fn merge(hits: &mut Vec<Hit>, hit: Hit) {
    match hits.iter_mut().find(|h| h.rule == hit.rule) {
        Some(h) if h.score_ppm >= hit.score_ppm => {}
        Some(h) => *h = hit,
        None => hits.push(hit),
    }
}

impl FraudScorer {
    /// Writes a verdict when the subject has none, or when this one is stricter and no
    /// person decided. Clicks get one only from review up.
    fn emit(&mut self, s: &Subject<'_>, hits: &[Hit], out: &mut Vec<Output>) {
        let score = rules::combine(hits);
        let action = rules::action(&self.config, score, hits);
        match self.judged.get(s.id) {
            Some(j) if j.by_person => return,
            Some(j) if rules::strictness(action) <= rules::strictness(j.action) => return,
            None if s.kind == Kind::Click && action == VerdictAction::Allow => return,
            _ => {}
        }
        let v = FraudVerdictV2 {
            at_us: crate::catalog::now_us(),
            subject_kind: s.kind as u16,
            subject_id: s.id.to_string(),
            score_ppm: score,
            reasons: hits.iter().map(|h| h.reason.clone()).collect(),
            action,
            hits: hits.iter().map(Hit::to_record).collect(),
            subject_at_us: s.at_us,
            affiliate_id: s.affiliate.to_string(),
            campaign_id: s.campaign.to_string(),
            decided_by: "scorer".into(),
            note: String::new(),
            model_version: self.model.version(),
        };
        self.record(&v);
        out.push(Output::event(&v));
    }

    /// Takes a verdict (written now or restored) into the state and the view.
    fn record(&mut self, v: &FraudVerdictV2) {
        let id: Arc<str> = Arc::from(v.subject_id.as_str());
        let by_person = v.decided_by != "scorer";
        if by_person {
            self.decisions_applied.insert((id.clone(), v.at_us));
        }
        self.judged.insert(
            id,
            Judged {
                action: v.action,
                by_person,
            },
        );
        self.view.write(|view| view.push(v));
    }

    fn count_click_hits(&self, hits: &[Hit]) {
        if hits.is_empty() {
            return;
        }
        self.view.write(|v| {
            for h in hits {
                v.rule_hits.entry(h.rule.to_string()).or_default().0 += 1;
            }
        });
    }
}

/// Key of a click's visitor: its cookie, else its fingerprint, else IP and user agent.
fn visitor_key(c: &ArchivedClick) -> u64 {
    if let Some(v) = c.visitor_id.as_ref() {
        signals::key(&["v", v.as_str()])
    } else if let (Some(f), false) = (c.fingerprint.as_ref(), c.opted_out) {
        signals::key(&["f", &f.to_native().to_string()])
    } else {
        signals::key(&["u", c.ip.as_str(), c.user_agent.as_str()])
    }
}

impl FraudScorer {
    fn publish_gauges(&mut self) {
        let f = &self.floods;
        let g = super::view::Gauges {
            recent_clicks: self.clicks.len() as u64,
            flagged_clicks: self.flagged.len() as u64,
            window_keys: (f.ip.len()
                + f.subnet.len()
                + f.fingerprint.len()
                + f.visitor.len()
                + f.stuffing.len()) as u64,
            evicted: f.ip.evicted
                + f.subnet.evicted
                + f.fingerprint.evicted
                + f.visitor.evicted
                + f.stuffing.evicted
                + self.clicks.evicted
                + self.flagged.evicted,
            waiting_conversions: (self.waiting_len + self.settling.len()) as u64,
            judged_subjects: self.judged.len() as u64,
        };
        let scored = std::mem::take(&mut self.scored_clicks);
        self.view.write(|v| {
            v.gauges = g;
            v.scored.0 += scored;
        });
    }

    /// Conversions that waited long enough for their click go on to settle, those that
    /// settled long enough are judged; `all`: every one (the inputs are read to the end).
    fn release_late(&mut self, now_us: i64, all: bool, out: &mut Vec<Output>) {
        let mut late = Vec::new();
        self.waiting.retain(|_, ws| {
            let (l, keep): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(ws)
                .into_iter()
                .partition(|w| all || now_us - w.since_us >= CLICK_WAIT_US);
            late.extend(l);
            *ws = keep;
            !ws.is_empty()
        });
        // In the order they came (a later one of the same customer sees the earlier).
        late.sort_by_key(|w| w.since_us);
        self.waiting_len -= late.len();
        for w in late {
            self.settle(w.conversion, w.since_us, out);
        }
        let due: Vec<(i64, u64)> = self
            .settling
            .iter()
            .filter(|(_, w)| all || now_us - w.since_us >= SETTLE_WALL_US)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(w) = self.settling.remove(&k) {
                self.judge(w.conversion, out);
            }
        }
    }

    fn clusters(&mut self, now_us: i64) {
        if !self.graph_dirty && self.last_clusters_us != 0 {
            return;
        }
        if now_us - self.last_clusters_us < CLUSTERS_EVERY_US {
            return;
        }
        self.last_clusters_us = now_us;
        self.graph_dirty = false;
        let clusters = self.graph.clusters(&self.payout_ids());
        self.view.write(|v| v.clusters = clusters);
    }
}

/// One input of the scorer.
enum Input<'a> {
    Click(&'a ArchivedClick),
    Impression(&'a rkyv::Archived<Impression>),
    Conversion(Box<ConversionV2>),
    Decision(FraudDecision),
}

fn input_of<'a>(rec: &Record<'a>) -> Option<Input<'a>> {
    match rec.kind_enum()? {
        Kind::Click => rec.event::<schema::Click>().map(Input::Click),
        Kind::Impression => rec.event::<Impression>().map(Input::Impression),
        Kind::Conversion => schema::conversion(rec).map(|c| Input::Conversion(Box::new(c))),
        Kind::FraudDecision => rec.to_owned_event::<FraudDecision>().map(Input::Decision),
        _ => None,
    }
}

impl Processor for FraudScorer {
    fn name(&self) -> &str {
        "fraud-scorer"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::VERDICTS.into()
    }

    fn keeps_output(&self) -> bool {
        true // people's decisions and the models
    }

    fn resumes_from_output(&self) -> bool {
        false // the windows and tails are rebuilt from every input on each start
    }

    fn restore(&mut self, record: &Record<'_>) {
        match record.kind_enum() {
            Some(Kind::FraudVerdict) => {
                if let Some(v) = schema::verdict(record) {
                    self.record(&v);
                }
            }
            Some(Kind::FraudModel) => self.model.restore(record),
            _ => {}
        }
    }

    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        match input_of(input) {
            Some(Input::Click(c)) => self.on_click(c, out),
            Some(Input::Impression(i)) => self.on_impression(i),
            Some(Input::Conversion(c)) => self.on_conversion(*c, out),
            Some(Input::Decision(d)) => self.on_decision(d, out),
            None => {}
        }
        Ok(())
    }

    fn tick(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.release_late(now_us, false, out);
        self.publish_gauges();
    }

    fn idle(&mut self, now_us: i64, out: &mut Vec<Output>) {
        self.release_late(now_us, true, out);
        let fit = self.model.idle(&self.config, &self.view, now_us, DAY_US);
        out.extend(fit);
        self.clusters(now_us);
        self.view.write(|v| {
            v.caught_up = true;
            v.lag_bytes = 0;
        });
        self.publish_gauges();
    }

    fn lag(&mut self, bytes: u64) {
        self.view.write(|v| {
            v.lag_bytes = bytes;
            if bytes > 0 {
                v.caught_up = false;
            }
        });
    }
}
