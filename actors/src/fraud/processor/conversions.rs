//! The conversion path of the scorer: waiting for the click, inheriting its hits, the
//! conversion rules with the figures the state holds, the anomaly model's features, and
//! stricter verdicts for earlier conversions (click spamming found later).

use super::clicks::inherit;
use super::*;

impl FraudScorer {
    pub(super) fn on_conversion(&mut self, c: ConversionV2, out: &mut Vec<Output>) {
        let waits = c.click_id.as_deref().is_some_and(|k| {
            let k: Arc<str> = Arc::from(k);
            self.clicks.get(&k).is_none()
                && self.flagged.get(&k).is_none()
                // Not forgotten: nothing was ever forgotten, or it is newer than the
                // oldest click remembered.
                && (self.clicks.evicted == 0
                    || click_time_us(&k).is_none_or(|t| {
                        self.clicks
                            .oldest()
                            .and_then(|o| self.clicks.get(o))
                            .is_none_or(|o| t >= o.at_us - SECOND_US)
                    }))
        });
        if waits && self.waiting_len < WAITING_MAX {
            let click: Arc<str> = Arc::from(c.click_id.as_deref().unwrap_or_default());
            self.waiting.entry(click).or_default().push(Waiting {
                conversion: c,
                since_us: crate::catalog::now_us(),
            });
            self.waiting_len += 1;
            return;
        }
        self.settle(c, crate::catalog::now_us(), out);
    }

    /// Moves the conversions that waited for click `id` on to settle.
    pub(super) fn release(&mut self, id: &Arc<str>, out: &mut Vec<Output>) {
        let Some(ready) = self.waiting.remove(id) else {
            return;
        };
        self.waiting_len -= ready.len();
        for w in ready {
            self.settle(w.conversion, w.since_us, out);
        }
    }

    /// A conversion whose click is read (or not coming) is judged once the clicks read
    /// reach [`SETTLE_US`] past its click (a flood around its click is seen whole), when
    /// every input is read, or after [`SETTLE_WALL_US`].
    pub(super) fn settle(&mut self, c: ConversionV2, since_us: i64, out: &mut Vec<Output>) {
        let click_at = c.click_id.as_deref().and_then(|k| {
            let k: Arc<str> = Arc::from(k);
            self.clicks
                .get(&k)
                .map(|b| b.at_us)
                .or_else(|| click_time_us(&k))
        });
        match click_at {
            Some(t)
                if t + SETTLE_US > self.newest_click_us && self.settling.len() < WAITING_MAX =>
            {
                self.settle_seq += 1;
                let key = (t + SETTLE_US, self.settle_seq);
                self.settling.insert(
                    key,
                    Waiting {
                        conversion: c,
                        since_us,
                    },
                );
            }
            _ => self.judge(c, out),
        }
    }

    /// Judges the settling conversions the clicks read so far have settled.
    pub(super) fn settled(&mut self, out: &mut Vec<Output>) {
        while let Some(entry) = self.settling.first_entry() {
            if entry.key().0 > self.newest_click_us {
                break;
            }
            let w = entry.remove();
            self.judge(w.conversion, out);
        }
    }

    pub(super) fn judge(&mut self, c: ConversionV2, out: &mut Vec<Output>) {
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
        let (own, repeats) = self.conversion_rules(&c, &id, &affiliate, &campaign, ctit);
        for h in own {
            merge(&mut hits, h);
        }
        let features = self.model_features(&c, &affiliate, &campaign, brief.as_ref(), ctit, &hits);
        let camp = self.campaign(&campaign);
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
            resolved: Some(&camp.settings),
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
        self.tail_retro(&id, &affiliate, &campaign, ctit, &hits, out);
        // A spree is all of it: the customer's earlier orders too.
        if let Some(h) = hits.iter().find(|h| h.rule == "repeat-customer").cloned() {
            for earlier in repeats {
                self.rejudge(&earlier, vec![h.clone()], out);
            }
        }
    }

    /// What a conversion takes from its click's visitor and affiliate: other flagged
    /// clicks of the visitor, a spike of the affiliate when it clicked.
    pub(super) fn inherited_figures(
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
            resolved: Some(&camp.settings),
        };
        if let (Some(b), Some(s)) = (brief.filter(|b| b.cookie), rules.on("flagged-visitor")) {
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
    /// Also answers the customer's earlier conversions of a spree this one completes.
    pub(super) fn conversion_rules(
        &mut self,
        c: &ConversionV2,
        id: &Arc<str>,
        affiliate: &Arc<str>,
        campaign: &Arc<str>,
        ctit: Option<i64>,
    ) -> (Vec<Hit>, Vec<Arc<str>>) {
        let click_id = c.click_id.as_deref();
        let camp = self.campaign(campaign);
        let partner = self.partner(affiliate);
        let settings = |rule: &str| self.config.settings(rule, Some(&camp.rules));
        let (spam, dup, repeat) = (
            settings("click-spamming"),
            settings("duplicate-order"),
            settings("repeat-customer"),
        );
        let (tail, fast) = match ctit {
            Some(t) if !affiliate.is_empty() => (
                self.tails
                    .add(campaign, affiliate, t > spam.window_s as i64),
                self.fast_tails
                    .add(campaign, affiliate, t < conversion::FAST_S),
            ),
            _ => Default::default(),
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
        let spree = match (customer, click_id) {
            (Some(k), Some(click)) => self.customers.add(
                k,
                c.at_us,
                signals::key(&[click]),
                affiliate,
                id,
                repeat.window_s as i64 * SECOND_US,
            ),
            _ => Vec::new(),
        };
        let fresh = spree.len() as u64;
        let facts = conversion::ConversionFacts {
            click_to_conversion_s: ctit,
            email_hash: c.customer_email_hash.as_deref(),
            buyer_ip: signals::ip(&c.ip),
            own_email_hashes: &partner.own_email_hashes,
            own_ranges: &partner.own,
            order_elsewhere: order_elsewhere.as_deref(),
            customer_fresh_clicks: fresh,
            tail,
            fast,
        };
        let rules = Rules {
            config: &self.config,
            campaign: Some(&camp.rules),
            resolved: Some(&camp.settings),
        };
        let mut hits = conversion::hits(&rules, &facts);
        if let Some(other) = &partner.payout_shared_with {
            hits.extend(rules.hit(
                "self-referral-payout",
                rules::PPM_FULL,
                format!("the affiliate's payout account is affiliate {other}'s too"),
            ));
        }
        let repeats = if hits.iter().any(|h| h.rule == "repeat-customer") {
            spree.into_iter().filter(|s| s != id).collect()
        } else {
            Vec::new()
        };
        (hits, repeats)
    }

    /// Another merchant that converted this order id within the window through the same
    /// affiliate; remembers this one. Replaying an order id is an affiliate's trick (its postbacks told it the ids), so
    /// the earlier conversion must be the same affiliate's: two shops' counters overlap
    /// honestly.
    pub(super) fn order_elsewhere(&mut self, c: &ConversionV2, window_us: i64) -> Option<String> {
        let key: Box<str> = c.order_id.as_str().into();
        let merchant: Arc<str> = Arc::from(c.merchant_id.as_str());
        let affiliate = c.affiliate_id.as_deref().unwrap_or("");
        match self.orders.get(&key) {
            Some((m, a, t))
                if **m != *merchant
                    && !affiliate.is_empty()
                    && **a == *affiliate
                    && (c.at_us - t).abs() <= window_us =>
            {
                Some(m.to_string())
            }
            Some(_) => None,
            None => {
                self.orders
                    .insert(key, (merchant, Arc::from(affiliate), c.at_us));
                None
            }
        }
    }

    /// Click spamming and click injection are properties of the affiliate's distribution:
    /// once it is found, its earlier late (or fast) conversions are judged again.
    pub(super) fn tail_retro(
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
        let (Some(t), false) = (ctit, affiliate.is_empty()) else {
            return;
        };
        let kind = if t > window {
            Tail::Late
        } else if t < conversion::FAST_S {
            Tail::Fast
        } else {
            return;
        };
        let key = (kind, campaign.clone(), affiliate.clone());
        let list = self.tail_members.entry(key.clone()).or_default();
        list.push_back(id.clone());
        if list.len() > LATE_PER_AFFILIATE_MAX {
            list.pop_front();
        }
        let rule = match kind {
            Tail::Late => "click-spamming",
            Tail::Fast => "conversion-too-fast",
        };
        let found = hits
            .iter()
            .find(|h| h.rule == rule && h.reason.contains("; this one"))
            .cloned();
        let Some(found) = found else {
            return;
        };
        if !self.tails_found.insert(key.clone()) {
            return;
        }
        let earlier: Vec<Arc<str>> = self.tail_members[&key]
            .iter()
            .filter(|c| c.as_ref() != id.as_ref())
            .cloned()
            .collect();
        let figures = found
            .reason
            .split("; this one")
            .next()
            .unwrap_or_default()
            .to_string();
        for conv in earlier {
            let t = self
                .memos
                .get(&conv)
                .and_then(|m| m.click_to_conversion_s)
                .unwrap_or(0);
            let after = match kind {
                Tail::Late => format!("{} h", t / 3600),
                Tail::Fast => format!("{} s", t.max(0)),
            };
            let hit = Hit {
                reason: format!("{figures}; this one {after} after"),
                ..found.clone()
            };
            self.rejudge(&conv, vec![hit], out);
        }
    }

    /// Adds hits to an earlier conversion and writes its verdict when it is now stricter.
    pub(super) fn rejudge(&mut self, id: &Arc<str>, hits: Vec<Hit>, out: &mut Vec<Output>) {
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
    pub(super) fn on_decision(&mut self, d: FraudDecision, out: &mut Vec<Output>) {
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
}

impl FraudScorer {
    /// The anomaly model's features of a conversion (names in `model::FEATURES`).
    pub(super) fn model_features(
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
            f64::from(rules::combine(hits)) / f64::from(crate::fraud::config::PPM),
        ];
        debug_assert_eq!(features.len(), crate::fraud::model::FEATURES.len());
        features
    }
}

/// The time a click id says, when it is one of ours.
pub(super) fn click_time_us(click_id: &str) -> Option<i64> {
    crate::clicks::id_layout(click_id).map(|l| i64::from(l.time_s) * SECOND_US)
}
