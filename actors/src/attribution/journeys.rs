//! Journeys: each visitor's touches on each campaign, until a conversion takes them or the
//! campaign's lookback window passes them by.
//!
//! A *person* is the set of identity keys seen together: the first-party visitor cookie
//! and the fingerprint of each click (the fingerprint only when the visitor did not opt
//! out: opted-out clicks carry none), and the merchant's `customer_id` of each conversion,
//! which joins the person of the converting click. Keys seen together merge their
//! persons (union by size; the smaller person's keys and journeys move).
//!
//! Per person and campaign there is at most one open journey of at most
//! `touchpoints_max` touches (oldest dropped). A conversion takes the touches up to its
//! matched click (or up to the time it happened, when the click is not in the journey);
//! a journey whose newest touch is older than the lookback window *ends unconverted*
//! and is handed back for training. All times are event times: the store's clock is the
//! newest event it has seen, so a replay of the same events ends the same journeys.
//!
//! **Late touches.** Times in a partition need not only go forward: imported history
//! brings touches whose window the clock has already passed. Ended at once, their journey
//! would be trained as unconverted and the imported conversion that follows would find
//! none of it. So a touch arriving after its own journey's lookback has passed holds that
//! journey open for [`LATE_TOUCH_HOLD_US`] of event time from then (its conversions come
//! in the same import, or one soon after); it then ends as of its own lookback.
//!
//! Memory is bounded by `journeys_max` open journeys: past it, the journeys closest to
//! ending end first (counted as evicted). Persons without an open journey are forgotten
//! with their keys (a customer key links only persons that still have open journeys).

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// An identity key of a person.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Visitor(Box<str>),
    Fingerprint(u64),
    Customer(Box<str>),
}

/// One touch: a click or an impression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// Click id (or impression id).
    pub id: Box<str>,
    pub affiliate_id: Arc<str>,
    pub sub1: Box<str>,
    pub at_us: i64,
    pub impression: bool,
}

/// The touches a conversion was credited over, and where its lead was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub touches: Vec<Touch>,
    /// Index of the last touch before the person's lead event, if any.
    pub lead_index: Option<usize>,
}

/// A journey that ended without a conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub campaign_id: Arc<str>,
    pub touches: Vec<Touch>,
    /// When it ended (its newest touch plus the lookback window, or the time it was
    /// evicted).
    pub at_us: i64,
}

type PersonId = u64;

/// Stale expiry entries tolerated beyond twice the open journeys before a rebuild.
const EXPIRY_SLACK: usize = 1024;

/// How long (event time, from its arrival) a journey stays open after a touch that came
/// when the journey's lookback had already passed (see the module docs): one day.
pub const LATE_TOUCH_HOLD_US: i64 = 86_400_000_000;

#[derive(Debug, Default)]
struct Journey {
    touches: std::collections::VecDeque<Touch>,
    /// When the person's lead event happened (W-shaped), if it did during this journey.
    lead_at_us: Option<i64>,
    /// The lookback window of its campaign, as of its newest touch.
    lookback_us: i64,
    /// Open at least until then: a late touch came (see the module docs). 0: none.
    hold_until_us: i64,
}

impl Journey {
    /// When its lookback passes its newest touch.
    fn lookback_ends_at(&self) -> i64 {
        self.touches
            .back()
            .map_or(i64::MIN, |t| t.at_us.saturating_add(self.lookback_us))
    }

    /// When it ends: its lookback's end, or later while a late touch holds it.
    fn expires_at(&self) -> i64 {
        self.lookback_ends_at().max(self.hold_until_us)
    }
}

#[derive(Debug, Default)]
struct Person {
    keys: Vec<Key>,
    journeys: HashMap<Arc<str>, Journey>,
}

/// Per-touch memory estimate (the touch, its id in the click map, the heap entry), in
/// bytes: for the `/metrics` figure, not an exact count.
pub const TOUCH_BYTES_ESTIMATE: usize = 160;

/// See the module docs.
#[derive(Debug)]
pub struct Journeys {
    touches_max: usize,
    journeys_max: usize,
    key_person: HashMap<Key, PersonId>,
    persons: HashMap<PersonId, Person>,
    /// The person of every touch held (by click or impression id).
    touch_person: HashMap<Box<str>, PersonId>,
    /// (expiry, person, campaign), soonest first; stale entries are skipped when popped.
    expiry: BinaryHeap<std::cmp::Reverse<(i64, PersonId, Arc<str>)>>,
    next_person: PersonId,
    open: usize,
    touches: usize,
    now_us: i64,
    /// Journeys ended early to stay within `journeys_max`.
    pub evicted: u64,
}

impl Journeys {
    pub fn new(touches_max: usize, journeys_max: usize) -> Journeys {
        assert!(touches_max >= 1 && journeys_max >= 1);
        Journeys {
            touches_max,
            journeys_max,
            key_person: HashMap::new(),
            persons: HashMap::new(),
            touch_person: HashMap::new(),
            expiry: BinaryHeap::new(),
            next_person: 1,
            open: 0,
            touches: 0,
            now_us: i64::MIN,
            evicted: 0,
        }
    }

    /// Open journeys.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Touches held in open journeys.
    pub fn touches(&self) -> usize {
        self.touches
    }

    /// Whether a touch with this id is held in an open journey.
    pub fn holds(&self, id: &str) -> bool {
        self.touch_person.contains_key(id)
    }

    /// The newest event time seen.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// Adds a touch on `campaign` by the person of `keys`; returns the journeys that
    /// ended meanwhile (by time, or evicted).
    pub fn touch(
        &mut self,
        campaign: &Arc<str>,
        keys: &[Key],
        touch: Touch,
        lookback_us: i64,
    ) -> Vec<Ended> {
        self.now_us = self.now_us.max(touch.at_us);
        let mut ended = self.expire();
        if self.touch_person.contains_key(&touch.id) {
            return ended; // the same touch again (a replayed record): already held
        }
        let person = self.person_of(keys);
        let p = self.persons.get_mut(&person).expect("person just made");
        let j = p.journeys.entry(campaign.clone()).or_insert_with(|| {
            self.open += 1;
            Journey::default()
        });
        j.lookback_us = lookback_us;
        // Touches arrive nearly in time order; keep the journey sorted anyway.
        let at = j.touches.partition_point(|t| t.at_us <= touch.at_us);
        self.touch_person.insert(touch.id.clone(), person);
        j.touches.insert(at, touch);
        self.touches += 1;
        if j.touches.len() > self.touches_max {
            let old = j.touches.pop_front().expect("over the bound");
            self.touch_person.remove(&old.id);
            self.touches -= 1;
        }
        if j.lookback_ends_at() <= self.now_us {
            // A late touch: its journey's window passed before it came.
            j.hold_until_us = self.now_us.saturating_add(LATE_TOUCH_HOLD_US);
        }
        self.expiry.push(std::cmp::Reverse((
            j.expires_at(),
            person,
            campaign.clone(),
        )));
        self.compact_expiry();
        while self.open > self.journeys_max {
            match self.pop_soonest(i64::MAX) {
                Some(mut e) => {
                    e.at_us = self.now_us;
                    self.evicted += 1;
                    ended.push(e);
                }
                None => break,
            }
        }
        ended
    }

    /// Advances the clock to `now_us` (an event time) and ends what the lookback passed.
    pub fn advance(&mut self, now_us: i64) -> Vec<Ended> {
        self.now_us = self.now_us.max(now_us);
        self.expire()
    }

    /// Takes the converting path of a conversion on `campaign`: the journey of the
    /// person of `click_id` (or of `customer`), touches up to that click (or up to
    /// `occurred_at_us` when the click is not held). `customer` joins that person. With
    /// `lead`, the touches stay (the journey goes on) and the lead's place is noted.
    /// `None` when no journey is known.
    pub fn convert(
        &mut self,
        campaign: &Arc<str>,
        click_id: Option<&str>,
        customer: Option<&str>,
        occurred_at_us: i64,
        lead: bool,
    ) -> Option<Path> {
        self.now_us = self.now_us.max(occurred_at_us);
        let by_click = click_id.and_then(|c| self.touch_person.get(c).copied());
        let customer_key = customer.map(|c| Key::Customer(c.into()));
        let person = match (by_click, &customer_key) {
            (Some(p), Some(k)) => {
                let q = self.key_person.get(k).copied();
                let p = match q {
                    Some(q) if q != p => self.merge(p, q),
                    _ => p,
                };
                self.add_key(p, k.clone());
                p
            }
            (Some(p), None) => p,
            (None, Some(k)) => *self.key_person.get(k)?,
            (None, None) => return None,
        };
        let p = self.persons.get_mut(&person)?;
        let j = p.journeys.get_mut(campaign)?;
        let cutoff = click_id
            .and_then(|c| j.touches.iter().find(|t| &*t.id == c))
            .map_or(occurred_at_us, |t| t.at_us);
        let oldest = occurred_at_us.saturating_sub(j.lookback_us);
        let n = j.touches.partition_point(|t| t.at_us <= cutoff);
        let lead_index = j.lead_at_us.and_then(|l| {
            let i = j.touches.partition_point(|t| t.at_us <= l);
            (i > 0).then(|| i - 1)
        });
        if lead {
            j.lead_at_us = Some(cutoff);
            let touches: Vec<Touch> = j
                .touches
                .iter()
                .take(n)
                .filter(|t| t.at_us >= oldest)
                .cloned()
                .collect();
            return Some(Path {
                lead_index: None,
                touches,
            });
        }
        let taken: Vec<Touch> = j.touches.drain(..n).collect();
        j.lead_at_us = None;
        self.touches -= taken.len();
        for t in &taken {
            self.touch_person.remove(&t.id);
        }
        let left = j.touches.len();
        if left == 0 {
            self.end_journey(person, campaign);
        }
        let first_kept = taken
            .iter()
            .position(|t| t.at_us >= oldest)
            .unwrap_or(taken.len());
        let lead_index = lead_index
            .and_then(|i| i.checked_sub(first_kept))
            .filter(|i| *i < taken.len() - first_kept);
        Some(Path {
            touches: taken[first_kept..].to_vec(),
            lead_index,
        })
    }

    /// Takes the touches named by an attribution already written (a replay after a
    /// restart): the journey ends as it did then. `lead` keeps them, as a lead did.
    pub fn consume(
        &mut self,
        campaign: &Arc<str>,
        ids: &[&str],
        customer: Option<&str>,
        lead: bool,
    ) {
        let Some(person) = ids
            .iter()
            .find_map(|id| self.touch_person.get(*id).copied())
        else {
            return;
        };
        let person = match customer.map(|c| Key::Customer(c.into())) {
            Some(k) => {
                let p = match self.key_person.get(&k).copied() {
                    Some(q) if q != person => self.merge(person, q),
                    _ => person,
                };
                self.add_key(p, k);
                p
            }
            None => person,
        };
        let Some(j) = self
            .persons
            .get_mut(&person)
            .and_then(|p| p.journeys.get_mut(campaign))
        else {
            return;
        };
        if lead {
            j.lead_at_us = ids
                .iter()
                .filter_map(|id| j.touches.iter().find(|t| &*t.id == *id))
                .map(|t| t.at_us)
                .max();
            return;
        }
        let before = j.touches.len();
        j.touches.retain(|t| !ids.contains(&&*t.id));
        j.lead_at_us = None;
        let taken = before - j.touches.len();
        self.touches -= taken;
        for id in ids {
            self.touch_person.remove(*id);
        }
        if j.touches.is_empty() {
            self.end_journey(person, campaign);
        }
    }

    /// The person of `keys`, made when none is known; keys of several persons merge them.
    fn person_of(&mut self, keys: &[Key]) -> PersonId {
        let mut found: Option<PersonId> = None;
        for k in keys {
            if let Some(&q) = self.key_person.get(k) {
                found = Some(match found {
                    Some(p) if p != q => self.merge(p, q),
                    _ => q,
                });
            }
        }
        let p = found.unwrap_or_else(|| {
            let id = self.next_person;
            self.next_person += 1;
            self.persons.insert(id, Person::default());
            id
        });
        for k in keys {
            self.add_key(p, k.clone());
        }
        p
    }

    fn add_key(&mut self, p: PersonId, k: Key) {
        if self.key_person.insert(k.clone(), p) != Some(p) {
            self.persons
                .get_mut(&p)
                .expect("person exists")
                .keys
                .push(k);
        }
    }

    /// Merges two persons; answers the one that stays.
    fn merge(&mut self, a: PersonId, b: PersonId) -> PersonId {
        let (size_a, size_b) = (self.size(a), self.size(b));
        let (keep, gone) = if size_a >= size_b { (a, b) } else { (b, a) };
        let Some(g) = self.persons.remove(&gone) else {
            return keep;
        };
        for k in &g.keys {
            self.key_person.insert(k.clone(), keep);
        }
        let mut moved_touches = Vec::new();
        {
            let k = self.persons.get_mut(&keep).expect("kept person exists");
            k.keys.extend(g.keys);
            for (campaign, jg) in g.journeys {
                moved_touches.extend(jg.touches.iter().map(|t| t.id.clone()));
                match k.journeys.get_mut(&campaign) {
                    None => {
                        k.journeys.insert(campaign.clone(), jg);
                    }
                    Some(jk) => {
                        self.open -= 1;
                        let mut all: Vec<Touch> = jk.touches.drain(..).chain(jg.touches).collect();
                        all.sort_by_key(|t| t.at_us);
                        let over = all.len().saturating_sub(self.touches_max);
                        for t in all.drain(..over) {
                            self.touch_person.remove(&t.id);
                            self.touches -= 1;
                        }
                        jk.touches = all.into();
                        jk.lead_at_us = jk.lead_at_us.max(jg.lead_at_us);
                        jk.lookback_us = jk.lookback_us.max(jg.lookback_us);
                        jk.hold_until_us = jk.hold_until_us.max(jg.hold_until_us);
                    }
                }
                if let Some(j) = k.journeys.get(&campaign) {
                    self.expiry
                        .push(std::cmp::Reverse((j.expires_at(), keep, campaign)));
                }
            }
        }
        for id in moved_touches {
            if let Some(p) = self.touch_person.get_mut(&id) {
                *p = keep;
            }
        }
        keep
    }

    fn size(&self, p: PersonId) -> usize {
        self.persons.get(&p).map_or(0, |p| p.keys.len())
    }

    /// Every touch pushes its journey's new expiry and the older entry goes stale, to be
    /// skipped when it comes up: without this, stale entries would pile up for a whole
    /// lookback window. Past twice the open journeys (and a floor), the heap is rebuilt
    /// with one entry per journey: amortised O(1) per touch, memory bounded by the open
    /// journeys.
    fn compact_expiry(&mut self) {
        if self.expiry.len() <= 2 * self.open + EXPIRY_SLACK {
            return;
        }
        self.expiry = self
            .persons
            .iter()
            .flat_map(|(id, p)| {
                p.journeys
                    .iter()
                    .map(move |(c, j)| std::cmp::Reverse((j.expires_at(), *id, c.clone())))
            })
            .collect();
    }

    /// Ends journeys whose lookback passed.
    fn expire(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        while let Some(e) = self.pop_soonest(self.now_us) {
            ended.push(e);
        }
        ended
    }

    /// Ends the open journey closest to ending if it ends by `until` (skipping stale heap
    /// entries).
    fn pop_soonest(&mut self, until: i64) -> Option<Ended> {
        while let Some(std::cmp::Reverse((at, _, _))) = self.expiry.peek() {
            if *at > until {
                return None;
            }
            let std::cmp::Reverse((at, person, campaign)) = self.expiry.pop().expect("just peeked");
            let current = self
                .persons
                .get(&person)
                .and_then(|p| p.journeys.get(&campaign))
                .map(Journey::expires_at);
            if current != Some(at) {
                continue; // stale: the journey moved on, merged, converted or ended
            }
            let j = self.end_journey(person, &campaign)?;
            // A journey held open by a late touch ended, as far as training goes, when its
            // lookback passed.
            let at_us = at.min(j.lookback_ends_at());
            let touches: Vec<Touch> = j.touches.into();
            self.touches -= touches.len();
            for t in &touches {
                self.touch_person.remove(&t.id);
            }
            return Some(Ended {
                campaign_id: campaign,
                touches,
                at_us,
            });
        }
        None
    }

    /// Removes a journey (and its person, when it has no other one).
    fn end_journey(&mut self, person: PersonId, campaign: &Arc<str>) -> Option<Journey> {
        let p = self.persons.get_mut(&person)?;
        let j = p.journeys.remove(campaign)?;
        self.open -= 1;
        if p.journeys.is_empty() {
            let p = self.persons.remove(&person).expect("person exists");
            for k in p.keys {
                if self.key_person.get(&k) == Some(&person) {
                    self.key_person.remove(&k);
                }
            }
        }
        Some(j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn t(id: &str, aff: &str, at_us: i64) -> Touch {
        Touch {
            id: id.into(),
            affiliate_id: aff.into(),
            sub1: "".into(),
            at_us,
            impression: false,
        }
    }

    fn v(s: &str) -> Key {
        Key::Visitor(s.into())
    }

    fn ids(p: &Path) -> Vec<&str> {
        p.touches.iter().map(|t| &*t.id).collect()
    }

    #[test]
    fn one_visitor_three_partners_then_a_conversion() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        j.touch(&c, &[v("v1")], t("k1", "a", DAY), 30 * DAY);
        j.touch(
            &c,
            &[v("v1"), Key::Fingerprint(7)],
            t("k2", "b", 2 * DAY),
            30 * DAY,
        );
        j.touch(&c, &[v("v1")], t("k3", "c", 3 * DAY), 30 * DAY);
        assert_eq!((j.open(), j.touches()), (1, 3));
        let p = j.convert(&c, Some("k3"), None, 3 * DAY + 5, false).unwrap();
        assert_eq!(ids(&p), ["k1", "k2", "k3"]);
        assert_eq!((j.open(), j.touches()), (0, 0));
        // A second conversion finds nothing left.
        assert!(j
            .convert(&c, Some("k3"), None, 3 * DAY + 6, false)
            .is_none());
    }

    #[test]
    fn touches_after_the_matched_click_stay() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        j.touch(&c, &[v("v1")], t("k1", "a", DAY), 30 * DAY);
        j.touch(&c, &[v("v1")], t("k2", "b", 2 * DAY), 30 * DAY);
        let p = j.convert(&c, Some("k1"), None, 2 * DAY + 1, false).unwrap();
        assert_eq!(ids(&p), ["k1"]);
        assert_eq!(j.touches(), 1);
    }

    #[test]
    fn fingerprint_and_customer_join_persons() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        // Two cookies, one fingerprint: one person.
        j.touch(
            &c,
            &[v("v1"), Key::Fingerprint(9)],
            t("k1", "a", DAY),
            30 * DAY,
        );
        j.touch(
            &c,
            &[v("v2"), Key::Fingerprint(9)],
            t("k2", "b", 2 * DAY),
            30 * DAY,
        );
        // A third device, linked by the customer id of an earlier (lead) conversion.
        j.touch(&c, &[v("v3")], t("k3", "c", 3 * DAY), 30 * DAY);
        j.convert(&c, Some("k3"), Some("cust"), 3 * DAY + 1, true)
            .unwrap();
        let p = j
            .convert(&c, Some("k2"), Some("cust"), 4 * DAY, false)
            .unwrap();
        assert_eq!(ids(&p), ["k1", "k2"], "cut at the matched click k2");
        assert_eq!(j.touches(), 1, "k3 came after the matched click");
    }

    #[test]
    fn lookback_ends_journeys_unconverted_in_event_time() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        j.touch(&c, &[v("v1")], t("k1", "a", DAY), 7 * DAY);
        j.touch(&c, &[v("v1")], t("k2", "b", 2 * DAY), 7 * DAY);
        assert!(j.advance(9 * DAY - 1).is_empty());
        let ended = j.advance(9 * DAY);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].touches.len(), 2);
        assert_eq!(ended[0].at_us, 9 * DAY);
        assert_eq!((j.open(), j.touches()), (0, 0));
        assert!(j.key_person.is_empty() && j.persons.is_empty() && j.touch_person.is_empty());
    }

    #[test]
    fn bounds_drop_oldest_touches_and_evict_journeys() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(3, 2);
        for i in 0..5 {
            j.touch(&c, &[v("v1")], t(&format!("k{i}"), "a", DAY + i), 30 * DAY);
        }
        assert_eq!(j.touches(), 3);
        j.touch(&c, &[v("v2")], t("x", "a", DAY + 10), 30 * DAY);
        let ended = j.touch(&c, &[v("v3")], t("y", "a", DAY + 20), 30 * DAY);
        assert_eq!(ended.len(), 1, "the journey closest to ending goes");
        assert_eq!(ended[0].touches.len(), 3);
        assert_eq!((j.open(), j.evicted), (2, 1));
    }

    #[test]
    fn stale_expiry_entries_stay_bounded_by_the_open_journeys() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(4, 100);
        for i in 0..10_000 {
            j.touch(&c, &[v("v1")], t(&format!("k{i}"), "a", DAY + i), 30 * DAY);
        }
        assert_eq!(j.open(), 1);
        assert!(j.expiry.len() <= 2 + EXPIRY_SLACK + 1, "{}", j.expiry.len());
        // The journey still ends when its newest touch's window passes.
        assert!(j.advance(31 * DAY + 9_998).is_empty());
        assert_eq!(j.advance(31 * DAY + 9_999).len(), 1);
    }

    #[test]
    fn a_lead_is_remembered_for_the_sale() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        for (i, at) in [1, 2, 3, 4].iter().enumerate() {
            j.touch(&c, &[v("v1")], t(&format!("k{i}"), "a", at * DAY), 30 * DAY);
        }
        j.convert(&c, Some("k1"), None, 2 * DAY + 1, true).unwrap();
        let p = j.convert(&c, Some("k3"), None, 4 * DAY + 1, false).unwrap();
        assert_eq!(p.touches.len(), 4);
        assert_eq!(p.lead_index, Some(1));
    }

    /// Imported history: old touches arrive after the clock has passed their lookback.
    /// Their journey stays open (it does not end unconverted at the next event) until its
    /// conversion, which takes all of it; one never converted ends a day of event time
    /// later, as of its own lookback.
    #[test]
    fn late_touches_keep_their_journey_open_for_their_conversion() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        j.touch(&c, &[v("live")], t("now", "a", 100 * DAY), 30 * DAY);
        // Old clicks of one visitor, 99 and 98 days before, and live traffic between them.
        assert!(j
            .touch(&c, &[v("old")], t("k1", "a", DAY), 30 * DAY)
            .is_empty());
        j.touch(&c, &[v("live2")], t("now2", "a", 100 * DAY + 1), 30 * DAY);
        assert!(j
            .touch(&c, &[v("old")], t("k2", "b", 2 * DAY), 30 * DAY)
            .is_empty());
        assert!(j.advance(100 * DAY + 5).is_empty(), "still open");
        let p = j.convert(&c, Some("k2"), None, 2 * DAY + 3, false).unwrap();
        assert_eq!(
            ids(&p),
            ["k1", "k2"],
            "the whole old journey, not only its click"
        );
        // Never converted: ends a day later, dated by its own lookback.
        j.touch(&c, &[v("gone")], t("k3", "a", 3 * DAY), 30 * DAY);
        assert!(j.advance(101 * DAY + 4).is_empty());
        let ended = j.advance(101 * DAY + 5);
        assert_eq!(ended.len(), 1);
        assert_eq!(&*ended[0].touches[0].id, "k3");
        assert_eq!(ended[0].at_us, 33 * DAY);
    }

    #[test]
    fn consume_replays_a_written_attribution() {
        let c: Arc<str> = "camp".into();
        let mut j = Journeys::new(32, 100);
        j.touch(&c, &[v("v1")], t("k1", "a", DAY), 30 * DAY);
        j.touch(&c, &[v("v1")], t("k2", "b", 2 * DAY), 30 * DAY);
        j.touch(&c, &[v("v1")], t("k3", "b", 3 * DAY), 30 * DAY);
        j.consume(&c, &["k1", "k2"], None, false);
        assert_eq!(j.touches(), 1);
        let p = j.convert(&c, Some("k3"), None, 3 * DAY + 1, false).unwrap();
        assert_eq!(ids(&p), ["k3"]);
    }
}
