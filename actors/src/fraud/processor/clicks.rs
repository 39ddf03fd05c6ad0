//! The click path of the scorer: the rules a click decides, the sliding windows (a
//! crossing flags the earlier clicks of the burst too), spikes, impressions, and the
//! stricter verdicts a flagged click passes on to its conversions.

use super::*;

/// The flood rules in the order of their keys, and what each key is called in words.
const FLOOD_FAMILIES: [(&str, &str); 4] = [
    ("click-flood-ip", "IP"),
    ("click-flood-subnet", "network"),
    ("click-flood-fingerprint", "device"),
    ("click-flood-visitor", "visitor"),
];

/// Most affiliate and campaign ids kept shared (the set starts again when full).
const NAMES_MAX: usize = 100_000;
/// Fewest clicks of an affiliate before its shares are judged.
const SHARE_CLICKS_MIN: u64 = 30;
/// An affiliate whose clicks come from data centres at least this often (99% lower bound)
/// is not sending VPN users: its data-centre clicks weigh double.
const DATACENTER_SHARE_PPM: u32 = 200_000;
/// An affiliate whose clicks come from other sites than its own (and than the platforms
/// where people share links) at least this often: its foreign referrers weigh double.
const FOREIGN_SHARE_PPM: u32 = 500_000;
/// Where people share links: a referrer from these is not a stranger's page.
const PLATFORMS: [&str; 14] = [
    "facebook.com",
    "instagram.com",
    "t.co",
    "x.com",
    "twitter.com",
    "pinterest.com",
    "youtube.com",
    "reddit.com",
    "tiktok.com",
    "linkedin.com",
    "lnkd.in",
    "threads.net",
    "whatsapp.com",
    "telegram.org",
];

impl FraudScorer {
    /// Data-centre and foreign-referrer hits weigh double when most of the affiliate's
    /// clicks carry them (an honest partner has a few VPN users and shared links).
    fn escalate(
        &mut self,
        referrer_host: Option<&str>,
        affiliate: &Arc<str>,
        partner: &PartnerRt,
        hits: &mut [Hit],
    ) {
        let dc = hits.iter().any(|h| h.rule == "datacenter-ip");
        // A stranger's page: not the affiliate's own sites, nor a platform where people
        // share links (and not a missing referrer, which email and apps send).
        let foreign = !partner.sites.is_empty()
            && referrer_host.is_some_and(|h| {
                !h.is_empty()
                    && !partner.sites.iter().any(|s| signals::on_host(h, s))
                    && !PLATFORMS.iter().any(|p| signals::on_host(h, p))
            });
        let families = [
            (
                "datacenter-ip",
                dc,
                DATACENTER_SHARE_PPM,
                "come from data centres",
            ),
            (
                "foreign-referrer",
                foreign,
                FOREIGN_SHARE_PPM,
                "come from other sites",
            ),
        ];
        for (n, (rule, this, min, what)) in families.into_iter().enumerate() {
            let share = self.shares.add(affiliate, n as u8, this);
            if !this || share.conversions < SHARE_CLICKS_MIN || share.late_lower_ppm() < min {
                continue;
            }
            if let Some(h) = hits.iter_mut().find(|h| h.rule == rule) {
                h.score_ppm = (h.score_ppm * 2).min(crate::fraud::config::PPM);
                h.reason = format!(
                    "{}; {}% of the affiliate's {} clicks {what}",
                    h.reason,
                    share.late_ppm() / 10_000,
                    share.conversions
                );
            }
        }
    }

    /// An affiliate or campaign id as the one shared copy.
    fn name(&mut self, id: &str) -> Arc<str> {
        if let Some(n) = self.names.get(id) {
            return n.clone();
        }
        if self.names.len() >= NAMES_MAX {
            self.names.clear();
        }
        let n: Arc<str> = Arc::from(id);
        self.names.insert(n.clone());
        n
    }

    /// A user agent read once per distinct user agent (bounded cache).
    fn ua_facts(&mut self, ua: &str) -> signals::UaFacts {
        let k = signals::key(&[ua]);
        if let Some(f) = self.user_agents.get(&k) {
            return *f;
        }
        if self.user_agents.len() >= USER_AGENTS_MAX {
            self.user_agents.clear();
        }
        let f = signals::ua_facts(ua, &self.config.bot_markers);
        self.user_agents.insert(k, f);
        f
    }

    pub(super) fn on_click(&mut self, c: &ArchivedClick, out: &mut Vec<Output>) {
        self.refresh_catalog();
        let id: Arc<str> = Arc::from(c.click_id.as_str());
        let at = c.at_us.to_native();
        let affiliate = self.name(c.affiliate_id.as_str());
        let campaign = self.name(c.campaign_id.as_str());
        let camp = self.campaign(&campaign);
        let partner = self.partner(&affiliate);
        let ip = signals::ip(c.ip.as_str());
        // Read once, and only when a rule needs it.
        let host = (!partner.sites.is_empty() || !camp.paid_search)
            .then(|| signals::host(c.referrer.as_str()))
            .flatten();
        let visitor = visitor_key(c);
        let ua = self.ua_facts(c.user_agent.as_str());
        let mut hits = {
            let facts = click::ClickFacts {
                user_agent: c.user_agent.as_str(),
                ua: Some(ua),
                ip,
                referrer: c.referrer.as_str(),
                referrer_host: Some(host.as_deref().unwrap_or_default()),
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
                resolved: Some(&camp.settings),
            };
            click::hits(&rules, &facts, &partner_facts)
        };
        self.escalate(host.as_deref(), &affiliate, &partner, &mut hits);
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
                cookie: c.visitor_id.is_some(),
                no_referrer: c.referrer.is_empty(),
            },
        );
        self.scored_clicks += 1;
        if !hits.is_empty() {
            self.flag_click(&id, hits, out);
        }
        for (other, hit) in retro {
            if *other != *id {
                self.flag_click(&other, vec![hit], out);
            }
        }
        self.newest_click_us = self.newest_click_us.max(at);
        self.release(&id, out);
        self.settled(out);
    }

    /// The sliding-window rules (floods and many merchants from one visitor); answers the
    /// earlier clicks a crossing flags too.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn floods(
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
            resolved: Some(&camp.settings),
        };
        // Keys first, words only when a window crosses its limit.
        let visitor = c.visitor_id.as_ref().map(|v| v.as_str());
        let keys = [
            Some(c.ip.as_str())
                .filter(|s| !s.is_empty())
                .map(|s| signals::key(&["ip", s])),
            ip.map(signals::subnet_key),
            fingerprint.map(|f| f ^ 0x5f1d_2c3b_a4e5_9687),
            visitor.map(|v| signals::key(&["v", v])),
        ];
        let mut retro = Vec::new();
        for (n, key) in keys.into_iter().enumerate() {
            let (rule, what) = FLOOD_FAMILIES[n];
            let (Some(key), Some(s)) = (key, rules.on(rule)) else {
                continue;
            };
            let windows = match n {
                0 => &mut self.floods.ip,
                1 => &mut self.floods.subnet,
                2 => &mut self.floods.fingerprint,
                _ => &mut self.floods.visitor,
            };
            let w = windows.add(
                key,
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
            let value = match n {
                0 => c.ip.to_string(),
                1 => ip.map(signals::subnet).unwrap_or_default(),
                2 => format!("{:016x}", fingerprint.unwrap_or_default()),
                _ => visitor.unwrap_or_default().to_string(),
            };
            let why = format!("{} clicks from {what} {value} in {} s", w.count, s.window_s);
            if let Some(h) = rules.hit(rule, rules::PPM_FULL, why) {
                retro.extend(w.flagged.iter().map(|f| (f.clone(), h.clone())));
                merge(hits, h);
            }
        }
        if let Some(s) = rules.on("cookie-stuffing-burst") {
            // Keyed by the browser (address and user agent: a stuffing page sets the cookie
            // with its first hidden click) and by the cookie once there is one (the address
            // may change mid-burst behind a relay): a crossing on either counts.
            let browser = signals::key(&["stuffing", c.ip.as_str(), c.user_agent.as_str()]);
            let cookie = visitor.map(|v| signals::key(&["stuffing-cookie", v]));
            let limit = Limit {
                window_us: s.window_s as i64 * SECOND_US,
                limit: s.limit as usize,
                distinct: true,
            };
            let merchant = signals::key(&[&camp.merchant]);
            for key in std::iter::once(browser).chain(cookie) {
                let w = self.floods.stuffing.add(key, at, merchant, id, limit);
                if w.count < s.limit as usize || s.limit == 0 {
                    continue;
                }
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
    pub(super) fn affiliate_figures(
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
            resolved: Some(&camp.settings),
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

    pub(super) fn on_impression(&mut self, i: &rkyv::Archived<Impression>) {
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
    pub(super) fn flag_click(&mut self, id: &Arc<str>, hits: Vec<Hit>, out: &mut Vec<Output>) {
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
        // Only a visitor cookie is one person (carriers' NAT puts many behind one address),
        // and only a click sent to review marks it (a weak hint alone does not).
        let reviewed = rules::combine(&all) >= self.config.review_ppm;
        if let Some(v) = (brief.cookie && reviewed).then_some(brief.visitor) {
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

    pub(super) fn graph_link_click(&mut self, h: &Hit, brief: &ClickBrief) {
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
pub(super) fn inherit(hits: &[Hit]) -> Vec<Hit> {
    hits.iter()
        .map(|h| Hit {
            reason: format!("its click: {}", h.reason),
            ..h.clone()
        })
        .collect()
}
