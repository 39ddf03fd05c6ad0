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
/// Most conversions remembered for a later, stricter verdict (their click flagged later,
/// their affiliate's tail found flat).
pub const CONVERSIONS_REMEMBERED_MAX: usize = 200_000;
/// Most late conversions remembered per (campaign, affiliate) for the click-spamming rule.
const LATE_PER_AFFILIATE_MAX: usize = 1_000;
/// Most ids of the link graph.
pub const GRAPH_IDS_MAX: usize = 1_000_000;
/// Least time between two computations of the clusters, wall clock.
const CLUSTERS_EVERY_US: i64 = 5 * SECOND_US;

/// A campaign as the rules read it.
#[derive(Debug, Default)]
struct CampaignRt {
    merchant: Arc<str>,
    paid_search: bool,
    requires_impression: bool,
    rules: BTreeMap<String, RuleOverride>,
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

/// A campaign and one of its affiliates.
type CampaignAffiliate = (Arc<str>, Arc<str>);

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
    late: HashMap<CampaignAffiliate, VecDeque<Arc<str>>>,
    spamming: HashSet<CampaignAffiliate>,
    tails: Tails,
    orders: Fifo<Box<str>, (Arc<str>, i64)>,
    customers: Customers,
    affiliates: Affiliates,
    graph: LinkGraph,
    graph_dirty: bool,
    last_clusters_us: i64,
    waiting: Vec<Waiting>,
    pub(super) model: super::model::ModelState,
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
            late: HashMap::new(),
            spamming: HashSet::new(),
            tails: Tails::default(),
            orders: Fifo::new(config.clicks_max),
            customers: Customers::new(config.clicks_max),
            affiliates: Affiliates::default(),
            graph: LinkGraph::new(GRAPH_IDS_MAX),
            graph_dirty: false,
            last_clusters_us: 0,
            waiting: Vec::new(),
            model: super::model::ModelState::new(&config.anomaly),
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
            })
        });
        let rt = Arc::new(rt.unwrap_or(CampaignRt {
            paid_search: true,
            ..CampaignRt::default()
        }));
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
                sites: a.sites.clone(),
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
    fn on_click(&mut self, c: &ArchivedClick, out: &mut Vec<Output>) {
        self.refresh_catalog();
        let id: Arc<str> = Arc::from(c.click_id.as_str());
        let at = c.at_us.to_native();
        let affiliate: Arc<str> = Arc::from(c.affiliate_id.as_str());
        let campaign: Arc<str> = Arc::from(c.campaign_id.as_str());
        let camp = self.campaign(&campaign);
        let partner = self.partner(&affiliate);
        let ip = signals::ip(c.ip.as_str());
        let visitor = visitor_key(c);
        let mut hits = {
            let facts = click::ClickFacts {
                user_agent: c.user_agent.as_str(),
                ip,
                referrer: c.referrer.as_str(),
                accept_language: c.accept_language.as_str(),
                sec_fetch_dest: c.sec_fetch_dest.as_str(),
                sec_fetch_site: c.sec_fetch_site.as_str(),
                hints: c
                    .client_hints
                    .iter()
                    .map(|p| (p.name.as_str(), p.value.as_str()))
                    .collect(),
                params: c
                    .utm
                    .iter()
                    .map(|p| (p.name.as_str(), p.value.as_str()))
                    .collect(),
            };
            let partner_facts = click::PartnerFacts {
                sites: &partner.sites,
                own_ranges: &partner.own,
                paid_search: camp.paid_search,
            };
            let rules = Rules {
                config: &self.config,
                campaign: Some(&camp.rules),
            };
            click::hits(&rules, &facts, &partner_facts)
        };
        let fingerprint = c
            .fingerprint
            .as_ref()
            .filter(|_| !c.opted_out)
            .map(|f| f.to_native());
        let retro = self.floods(c, &id, at, ip, fingerprint, &camp, &mut hits);
        self.affiliate_figures(c, &affiliate, &campaign, &camp, at, visitor, &mut hits);
        let day = self.affiliates.day_mut(&affiliate, at);
        day.clicks += 1;
        day.no_referrer += u64::from(c.referrer.is_empty());
        day.flagged_clicks += u64::from(!hits.is_empty());
        self.affiliates.count(&affiliate, &campaign, false);
        self.clicks.insert(
            id.clone(),
            ClickBrief {
                at_us: at,
                affiliate: affiliate.clone(),
                campaign: campaign.clone(),
                visitor,
                no_referrer: c.referrer.is_empty(),
            },
        );
        self.view.write(|v| v.scored.0 += 1);
        if !hits.is_empty() {
            self.flag_click(&id, hits, out);
        }
        for (other, hit) in retro {
            if *other != *id {
                self.flag_click(&other, vec![hit], out);
            }
        }
        self.release(&id, out);
    }

    /// The sliding-window rules (floods and many merchants from one visitor); answers the
    /// earlier clicks a crossing flags too.
    #[allow(clippy::too_many_arguments)]
    fn floods(
        &mut self,
        c: &ArchivedClick,
        id: &Arc<str>,
        at: i64,
        ip: Option<std::net::IpAddr>,
        fingerprint: Option<u64>,
        camp: &CampaignRt,
        hits: &mut Vec<Hit>,
    ) -> Vec<(Arc<str>, Hit)> {
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
        };
        let subnet = ip.map(signals::subnet);
        let fp = fingerprint.map(|f| format!("{f:016x}"));
        let visitor = c.visitor_id.as_ref().map(|v| v.as_str());
        let families: [(&str, Option<&str>, &mut Windows, &str); 4] = [
            (
                "click-flood-ip",
                Some(c.ip.as_str()).filter(|s| !s.is_empty()),
                &mut self.floods.ip,
                "IP",
            ),
            (
                "click-flood-subnet",
                subnet.as_deref(),
                &mut self.floods.subnet,
                "network",
            ),
            (
                "click-flood-fingerprint",
                fp.as_deref(),
                &mut self.floods.fingerprint,
                "device",
            ),
            (
                "click-flood-visitor",
                visitor,
                &mut self.floods.visitor,
                "visitor",
            ),
        ];
        let mut retro = Vec::new();
        for (rule, value, windows, what) in families {
            let (Some(value), Some(s)) = (value, rules.on(rule)) else {
                continue;
            };
            let w = windows.add(
                signals::key(&[value]),
                at,
                0,
                id,
                Limit {
                    window_us: s.window_s as i64 * SECOND_US,
                    limit: s.limit as usize,
                    distinct: false,
                },
            );
            if w.flagged.is_empty() && w.count <= s.limit as usize {
                continue;
            }
            let why = format!("{} clicks from {what} {value} in {} s", w.count, s.window_s);
            if let Some(h) = rules.hit(rule, rules::PPM_FULL, why) {
                retro.extend(w.flagged.iter().map(|f| (f.clone(), h.clone())));
                merge(hits, h);
            }
        }
        if let Some(s) = rules.on("cookie-stuffing-burst") {
            let key = signals::key(&[&visitor_key(c).to_string()]);
            let w = self.floods.stuffing.add(
                key,
                at,
                signals::key(&[&camp.merchant]),
                id,
                Limit {
                    window_us: s.window_s as i64 * SECOND_US,
                    limit: s.limit as usize,
                    distinct: true,
                },
            );
            if w.count >= s.limit as usize && s.limit > 0 {
                let why = format!(
                    "one visitor got clicks for {} merchants within {} s",
                    w.count, s.window_s
                );
                if let Some(h) = rules.hit("cookie-stuffing-burst", rules::PPM_FULL, why) {
                    retro.extend(w.flagged.iter().map(|f| (f.clone(), h.clone())));
                    merge(hits, h);
                }
            }
        }
        retro
    }

    /// An affiliate's spike, and a required impression missing.
    #[allow(clippy::too_many_arguments)]
    fn affiliate_figures(
        &mut self,
        c: &ArchivedClick,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        camp: &CampaignRt,
        at: i64,
        visitor: u64,
        hits: &mut Vec<Hit>,
    ) {
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
        };
        if let Some(s) = rules.on("affiliate-click-spike") {
            if let Some(why) = self.spikes.add(
                affiliate,
                at,
                s.window_s.max(60) as i64 * SECOND_US,
                s.limit,
            ) {
                hits.extend(rules.hit("affiliate-click-spike", rules::PPM_FULL, why));
            }
        }
        if camp.requires_impression {
            if let Some(s) = rules.on("no-impression") {
                let seen = [
                    visitor,
                    signals::key(&["u", c.ip.as_str(), c.user_agent.as_str()]),
                ]
                .iter()
                .filter_map(|v| {
                    self.impressions
                        .get(&signals::key(&[affiliate, campaign, &v.to_string()]))
                })
                .any(|t| *t <= at && at - *t <= s.window_s as i64 * SECOND_US);
                if !seen {
                    hits.extend(rules.hit(
                        "no-impression",
                        rules::PPM_FULL,
                        format!(
                            "no impression of the affiliate's before the click (within {} h)",
                            s.window_s / 3600
                        ),
                    ));
                }
            }
        }
    }

    fn on_impression(&mut self, i: &rkyv::Archived<Impression>) {
        let at = i.at_us.to_native();
        let (a, c) = (i.affiliate_id.as_str(), i.campaign_id.as_str());
        let mut keys = vec![signals::key(&["u", i.ip.as_str(), i.user_agent.as_str()])];
        if let Some(v) = i.visitor_id.as_ref() {
            keys.push(signals::key(&["v", v.as_str()]));
        }
        for k in keys {
            let key = signals::key(&[a, c, &k.to_string()]);
            let newest = self.impressions.get(&key).map_or(at, |t| (*t).max(at));
            self.impressions.insert(key, newest);
        }
    }

    /// Adds hits to a click (new or earlier), writes its verdict when it is now stricter,
    /// and judges again the conversions that came from it.
    fn flag_click(&mut self, id: &Arc<str>, hits: Vec<Hit>, out: &mut Vec<Output>) {
        let Some(brief) = self.clicks.get(id).cloned() else {
            return; // forgotten (bounded memory): its conversions are judged already
        };
        let mut all = self
            .flagged
            .get(id)
            .map(|f| f.hits.clone())
            .unwrap_or_default();
        let before = all.len();
        for h in hits {
            merge(&mut all, h);
        }
        self.count_click_hits(&all[before..]);
        if let Some(v) = self
            .config
            .settings("flagged-visitor", None)
            .enabled
            .then_some(brief.visitor)
        {
            self.flagged_visitors.insert(v, (brief.at_us, id.clone()));
        }
        for h in &all[before..] {
            self.graph_link_click(h, &brief);
        }
        self.flagged
            .insert(id.clone(), Flagged { hits: all.clone() });
        let s = Subject {
            kind: Kind::Click,
            id,
            at_us: brief.at_us,
            affiliate: &brief.affiliate,
            campaign: &brief.campaign,
        };
        self.emit(&s, &all, out);
        let convs = self.by_click.get(id).cloned().unwrap_or_default();
        for conv in convs {
            let inherited = inherit(&all);
            self.rejudge(&conv, inherited, out);
        }
    }

    fn graph_link_click(&mut self, h: &Hit, brief: &ClickBrief) {
        // Only the network and device identifiers of flooding or automated traffic.
        if !h.rule.starts_with("click-flood")
            && h.rule != "bot-user-agent"
            && h.rule != "datacenter-ip"
        {
            return;
        }
        if let Some(value) = h
            .reason
            .split(" from ")
            .nth(1)
            .and_then(|r| r.split(" in ").next())
        {
            let kind = if value.starts_with("device") {
                IdKind::Fingerprint
            } else {
                IdKind::Subnet
            };
            let value = value.split_once(' ').map_or(value, |v| v.1);
            self.graph.link(kind, value, &brief.affiliate);
            self.graph_dirty = true;
        }
    }
}

/// A click's hits as its conversion's: the same rules, the reason says whose.
fn inherit(hits: &[Hit]) -> Vec<Hit> {
    hits.iter()
        .map(|h| Hit {
            reason: format!("its click: {}", h.reason),
            ..h.clone()
        })
        .collect()
}

impl FraudScorer {
    fn on_conversion(&mut self, c: ConversionV2, out: &mut Vec<Output>) {
        let waits = c.click_id.as_deref().is_some_and(|k| {
            let k: Arc<str> = Arc::from(k);
            self.clicks.get(&k).is_none()
                && self.flagged.get(&k).is_none()
                && click_time_us(&k).is_none_or(|t| {
                    self.clicks
                        .oldest()
                        .and_then(|o| self.clicks.get(o))
                        .is_none_or(|o| t >= o.at_us - SECOND_US)
                })
        });
        if waits {
            self.waiting.push(Waiting {
                conversion: c,
                since_us: crate::catalog::now_us(),
            });
            self.publish_gauges();
            return;
        }
        self.judge(c, out);
    }

    /// Judges the conversions that waited for click `id`.
    fn release(&mut self, id: &Arc<str>, out: &mut Vec<Output>) {
        if !self
            .waiting
            .iter()
            .any(|w| w.conversion.click_id.as_deref() == Some(&**id))
        {
            return;
        }
        let (ready, wait): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.conversion.click_id.as_deref() == Some(&**id));
        self.waiting = wait;
        for w in ready {
            self.judge(w.conversion, out);
        }
    }

    fn judge(&mut self, c: ConversionV2, out: &mut Vec<Output>) {
        self.refresh_catalog();
        let id: Arc<str> = Arc::from(c.conversion_id.as_str());
        let affiliate: Arc<str> = Arc::from(c.affiliate_id.as_deref().unwrap_or(""));
        let campaign: Arc<str> = Arc::from(c.campaign_id.as_str());
        let click_id: Option<Arc<str>> = c.click_id.as_deref().map(Arc::from);
        let brief = click_id.as_ref().and_then(|k| self.clicks.get(k)).cloned();
        let click_at = brief
            .as_ref()
            .map(|b| b.at_us)
            .or_else(|| click_id.as_deref().and_then(click_time_us));
        let converted_at = if c.occurred_at_us > 0 {
            c.occurred_at_us
        } else {
            c.at_us
        };
        let ctit = click_at.map(|t| (converted_at - t).div_euclid(SECOND_US));
        let mut hits = click_id
            .as_ref()
            .and_then(|k| self.flagged.get(k))
            .map(|f| inherit(&f.hits))
            .unwrap_or_default();
        self.inherited_figures(
            &c,
            &affiliate,
            &campaign,
            brief.as_ref(),
            click_at,
            &mut hits,
        );
        for h in self.conversion_rules(&c, &affiliate, &campaign, click_id.as_ref(), ctit) {
            merge(&mut hits, h);
        }
        let features = self.model_features(&c, &affiliate, &campaign, brief.as_ref(), ctit, &hits);
        let camp = self.campaign(&campaign);
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
        };
        if let Some(h) = self.model.hit(&features, &rules) {
            merge(&mut hits, h);
        }
        self.model.sample(features, c.at_us);
        let s = Subject {
            kind: Kind::Conversion,
            id: &id,
            at_us: c.at_us,
            affiliate: &affiliate,
            campaign: &campaign,
        };
        self.emit(&s, &hits, out);
        self.view.write(|v| v.scored.1 += 1);
        self.affiliates.day_mut(&affiliate, c.at_us).conversions += 1;
        self.affiliates.count(&affiliate, &campaign, true);
        if !hits.is_empty() {
            if let Some(h) = c.customer_email_hash.as_deref() {
                self.graph.link(IdKind::EmailHash, h, &affiliate);
                self.graph_dirty = true;
            }
        }
        if let Some(k) = &click_id {
            let mut v = self.by_click.get(k).cloned().unwrap_or_default();
            v.push(id.clone());
            self.by_click.insert(k.clone(), v);
        }
        self.memos.insert(
            id.clone(),
            Memo {
                at_us: c.at_us,
                affiliate: affiliate.clone(),
                campaign: campaign.clone(),
                click_to_conversion_s: ctit,
                hits: hits.clone(),
            },
        );
        self.spam_tail(&id, &affiliate, &campaign, ctit, &hits, out);
    }

    /// What a conversion takes from its click's visitor and affiliate: other flagged
    /// clicks of the visitor, a spike of the affiliate when it clicked.
    fn inherited_figures(
        &mut self,
        c: &ConversionV2,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        brief: Option<&ClickBrief>,
        click_at: Option<i64>,
        hits: &mut Vec<Hit>,
    ) {
        let camp = self.campaign(campaign);
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
        };
        if let (Some(b), Some(s)) = (brief, rules.on("flagged-visitor")) {
            if let Some((t, other)) = self.flagged_visitors.get(&b.visitor) {
                let own = c.click_id.as_deref() == Some(&**other);
                if !own && (c.at_us - t).abs() <= s.window_s as i64 * SECOND_US {
                    let why = format!("the visitor's click {other} was flagged");
                    if let Some(h) = rules.hit("flagged-visitor", rules::PPM_FULL, why) {
                        merge(hits, h);
                    }
                }
            }
        }
        if let (Some(t), Some(s)) = (click_at, rules.on("affiliate-click-spike")) {
            if let Some(why) =
                self.spikes
                    .spiked(affiliate, t, s.window_s.max(60) as i64 * SECOND_US)
            {
                let why = format!("its click came in a spike: {why}");
                if let Some(h) = rules.hit("affiliate-click-spike", rules::PPM_FULL, why) {
                    merge(hits, h);
                }
            }
        }
    }

    /// The conversion rules with the figures the state holds.
    fn conversion_rules(
        &mut self,
        c: &ConversionV2,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        click_id: Option<&Arc<str>>,
        ctit: Option<i64>,
    ) -> Vec<Hit> {
        let camp = self.campaign(campaign);
        let partner = self.partner(affiliate);
        let settings = |rule: &str| self.config.settings(rule, Some(&camp.rules));
        let (spam, dup, repeat) = (
            settings("click-spamming"),
            settings("duplicate-order"),
            settings("repeat-customer"),
        );
        let tail = match ctit {
            Some(t) if !affiliate.is_empty() => {
                self.tails
                    .add(campaign, affiliate, t > spam.window_s as i64)
            }
            _ => conversion::Tail::default(),
        };
        let order_elsewhere = self.order_elsewhere(c, dup.window_s as i64 * SECOND_US);
        let customer = c
            .customer_id
            .as_deref()
            .map(|k| signals::key(&["id", &c.merchant_id, k]))
            .or_else(|| {
                c.customer_email_hash
                    .as_deref()
                    .map(|h| signals::key(&["email", h]))
            });
        let fresh = match (customer, click_id) {
            (Some(k), Some(click)) => self.customers.add(
                k,
                c.at_us,
                signals::key(&[click]),
                affiliate,
                repeat.window_s as i64 * SECOND_US,
            ),
            _ => 0,
        };
        let facts = conversion::ConversionFacts {
            click_to_conversion_s: ctit,
            email_hash: c.customer_email_hash.as_deref(),
            buyer_ip: signals::ip(&c.ip),
            own_email_hashes: &partner.own_email_hashes,
            own_ranges: &partner.own,
            order_elsewhere: order_elsewhere.as_deref(),
            customer_fresh_clicks: fresh,
            tail,
        };
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
        };
        let mut hits = conversion::hits(&rules, &facts);
        if let Some(other) = &partner.payout_shared_with {
            hits.extend(rules.hit(
                "self-referral-payout",
                rules::PPM_FULL,
                format!("the affiliate's payout account is affiliate {other}'s too"),
            ));
        }
        hits
    }

    /// Another merchant that converted this order id within the window; remembers this one.
    fn order_elsewhere(&mut self, c: &ConversionV2, window_us: i64) -> Option<String> {
        let key: Box<str> = c.order_id.as_str().into();
        let merchant: Arc<str> = Arc::from(c.merchant_id.as_str());
        match self.orders.get(&key) {
            Some((m, t)) if **m != *merchant && (c.at_us - t).abs() <= window_us => {
                Some(m.to_string())
            }
            Some(_) => None,
            None => {
                self.orders.insert(key, (merchant, c.at_us));
                None
            }
        }
    }

    /// Click spamming is a property of the affiliate's tail: once it is flat, its earlier
    /// late conversions are judged again.
    fn spam_tail(
        &mut self,
        id: &Arc<str>,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        ctit: Option<i64>,
        hits: &[Hit],
        out: &mut Vec<Output>,
    ) {
        let camp = self.campaign(campaign);
        let window = self
            .config
            .settings("click-spamming", Some(&camp.rules))
            .window_s as i64;
        if ctit.is_none_or(|t| t <= window) || affiliate.is_empty() {
            return;
        }
        let pair = (campaign.clone(), affiliate.clone());
        let late = self.late.entry(pair.clone()).or_default();
        late.push_back(id.clone());
        if late.len() > LATE_PER_AFFILIATE_MAX {
            late.pop_front();
        }
        let Some(spam) = hits.iter().find(|h| h.rule == "click-spamming").cloned() else {
            return;
        };
        if !self.spamming.insert(pair.clone()) {
            return;
        }
        let earlier: Vec<Arc<str>> = self.late[&pair]
            .iter()
            .filter(|c| c.as_ref() != id.as_ref())
            .cloned()
            .collect();
        let tail = spam
            .reason
            .split("; this one")
            .next()
            .unwrap_or_default()
            .to_string();
        for conv in earlier {
            let hours = self
                .memos
                .get(&conv)
                .and_then(|m| m.click_to_conversion_s)
                .unwrap_or(0)
                / 3600;
            let hit = Hit {
                reason: format!("{tail}; this one {hours} h after"),
                ..spam.clone()
            };
            self.rejudge(&conv, vec![hit], out);
        }
    }

    /// Adds hits to an earlier conversion and writes its verdict when it is now stricter.
    fn rejudge(&mut self, id: &Arc<str>, hits: Vec<Hit>, out: &mut Vec<Output>) {
        let Some(mut memo) = self.memos.get(id).cloned() else {
            return;
        };
        for h in hits {
            merge(&mut memo.hits, h);
        }
        let s = Subject {
            kind: Kind::Conversion,
            id,
            at_us: memo.at_us,
            affiliate: &memo.affiliate,
            campaign: &memo.campaign,
        };
        self.emit(&s, &memo.hits, out);
        if let Some(m) = self.memos.get_mut(id) {
            *m = memo;
        }
    }

    /// A person's decision: a verdict of its own, once.
    fn on_decision(&mut self, d: FraudDecision, out: &mut Vec<Output>) {
        let id: Arc<str> = Arc::from(d.subject_id.as_str());
        if self.decisions_applied.contains(&(id.clone(), d.at_us)) {
            return;
        }
        let last = self.view.read(|v| v.latest(&id).cloned());
        let v = FraudVerdictV2 {
            at_us: d.at_us,
            subject_kind: d.subject_kind,
            subject_id: d.subject_id.clone(),
            score_ppm: last.as_ref().map_or(0, |l| l.score_ppm),
            reasons: last.as_ref().map_or(Vec::new(), |l| {
                l.hits.iter().map(|h| h.reason.clone()).collect()
            }),
            action: d.action,
            hits: last.as_ref().map_or(Vec::new(), |l| l.hits.clone()),
            subject_at_us: last.as_ref().map_or(d.at_us, |l| l.subject_at_us),
            affiliate_id: last
                .as_ref()
                .map_or(String::new(), |l| l.affiliate_id.clone()),
            campaign_id: last
                .as_ref()
                .map_or(String::new(), |l| l.campaign_id.clone()),
            decided_by: d.actor.clone(),
            note: d.reason.clone(),
            model_version: last.as_ref().map_or(0, |l| l.model_version),
        };
        self.record(&v);
        out.push(Output::event(&v));
    }

    fn publish_gauges(&self) {
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
            waiting_conversions: self.waiting.len() as u64,
            judged_subjects: self.judged.len() as u64,
        };
        self.view.write(|v| v.gauges = g);
    }

    fn release_late(&mut self, now_us: i64, all: bool, out: &mut Vec<Output>) {
        let (late, wait): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| all || now_us - w.since_us >= CLICK_WAIT_US);
        self.waiting = wait;
        for w in late {
            self.judge(w.conversion, out);
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

impl FraudScorer {
    /// The anomaly model's features of a conversion (names in `model::FEATURES`).
    fn model_features(
        &self,
        c: &ConversionV2,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        brief: Option<&ClickBrief>,
        ctit: Option<i64>,
        hits: &[Hit],
    ) -> Vec<f64> {
        let day = self.affiliates.day(affiliate, c.at_us);
        let (rate, campaign_rate) = self.affiliates.rates(affiliate, campaign);
        let clicks = day.clicks.max(1) as f64;
        let features = vec![
            ctit.map_or(-1.0, |t| ((t.max(0) + 1) as f64).ln()),
            (rate / campaign_rate).ln(),
            ((day.clicks + 1) as f64).ln(),
            day.flagged_clicks as f64 / clicks,
            day.no_referrer as f64 / clicks,
            ((c.amount.amount_minor.unsigned_abs() + 1) as f64).ln(),
            f64::from(c.match_kind as u8),
            f64::from(u8::from(brief.is_some_and(|b| b.no_referrer))),
            f64::from(rules::combine(hits)) / f64::from(super::config::PPM),
        ];
        debug_assert_eq!(features.len(), super::model::FEATURES.len());
        features
    }
}

/// The time a click id says, when it is one of ours.
fn click_time_us(click_id: &str) -> Option<i64> {
    crate::clicks::id_layout(click_id).map(|l| i64::from(l.time_s) * SECOND_US)
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
