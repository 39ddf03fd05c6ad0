//! Commission arithmetic: exact integer money (minor units), rates in basis points,
//! rounding half to even, splits that add up to the cent.
//!
//! Choices (documented in the README):
//! * A rate in basis points applies as `amount * bps / 10_000`, rounded half to even once
//!   per computed amount (never per intermediate step).
//! * Tiers are counted per affiliate and campaign per calendar month (UTC). Two modes:
//!   `whole-month` — the bracket the month's volume has reached sets the rate for all of the
//!   month's sales, so crossing a bracket tops up the month's earlier sales (and a refund
//!   that drops back below it takes the top-up back); `bracket` — each unit of volume earns
//!   the rate of the bracket it falls in (marginal, like tax brackets). Either way the
//!   month's commission is computed from the month's totals and each event posts the
//!   difference, so rounding never drifts.
//! * A split over touchpoints gives each its floor share and the leftover cents to the
//!   largest remainders (earlier touchpoint first on ties): the parts add up exactly.
//! * Tier and bonus volume count for the conversion's primary (largest-weight) affiliate.
//! * A reversal takes back the same share of a conversion's commission as of its amount
//!   (everything once the whole amount is reversed); under a tiered plan the month is then
//!   priced again on what still stands and the difference goes to the month's affiliate. A
//!   monthly bonus, once reached, is not taken back, but reversed volume no longer counts
//!   towards reaching it.
//! * A returning customer's charge (same merchant and `customer_id`) earns the plan's
//!   recurring share inside its window instead of the acquisition commission.
//!
//! Not yet wired: the ledger actor that turns these credits into double-entry postings is
//! the next step of the commission issue.

use std::collections::BTreeMap;

/// `n / d` rounded to the nearest integer, ties to even. `d` must be positive.
pub fn div_round_half_even(n: i128, d: i128) -> i128 {
    assert!(d > 0, "division by a non-positive number");
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 != 0 => q + 1,
        _ => q,
    }
}

/// `amount * bps / 10_000`, rounded half to even.
pub fn percent_of(amount_minor: i64, bps: u32) -> i64 {
    to_i64(percent_of_wide(amount_minor as i128, bps))
}

/// [`percent_of`] of a sum (a month's revenue), which is kept as `i128` so that no number
/// of conversions can overflow it.
pub fn percent_of_wide(amount_minor: i128, bps: u32) -> i128 {
    div_round_half_even(amount_minor * bps as i128, 10_000)
}

/// Narrows a commission to the ledger's `i64`. Amounts are bounded at the edge
/// (`money::AMOUNT_MAJOR_MAX`) so this holds for any real program; if it does not, the
/// ledger must not pay a clamped or wrapped amount: the panic turns the input into a
/// dead letter (see `worker`), and the actor goes on with the next one.
fn to_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or_else(|_| panic!("commission {v} is outside i64 minor units"))
}

/// Splits `total` by `weights` into parts that add up to exactly `total` (largest
/// remainder; ties to the earlier weight). Negative totals split as the mirror image of
/// the positive ones, so a reversal undoes its commission's parts exactly.
pub fn split(total: i64, weights: &[u64]) -> Vec<i64> {
    let sum: u128 = weights.iter().map(|&w| w as u128).sum();
    if weights.is_empty() {
        return Vec::new();
    }
    assert!(sum > 0, "weights must not all be zero");
    let t = total.unsigned_abs() as u128;
    let mut parts: Vec<u128> = weights.iter().map(|&w| t * w as u128 / sum).collect();
    let mut order: Vec<(u128, usize)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| (t * w as u128 % sum, i))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = t - parts.iter().sum::<u128>();
    for &(_, i) in order.iter().take(left as usize) {
        parts[i] += 1;
    }
    parts
        .into_iter()
        .map(|p| if total < 0 { -(p as i64) } else { p as i64 })
        .collect()
}

/// What a tier bracket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierBasis {
    /// Conversions in the month.
    Conversions,
    /// Sale amounts in the month (minor units).
    Revenue,
}

/// How a tier's rate applies; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierMode {
    WholeMonth,
    Bracket,
}

/// Up to and including `up_to` (of the basis), the rate is `bps`; `None` for the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bracket {
    pub up_to: Option<u64>,
    pub bps: u32,
}

/// Tiered rates; brackets in rising order, the last open-ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tiers {
    pub basis: TierBasis,
    pub mode: TierMode,
    pub brackets: Vec<Bracket>,
}

impl Tiers {
    pub fn validate(&self) -> Result<(), String> {
        let n = self.brackets.len();
        if n == 0 || self.brackets[n - 1].up_to.is_some() {
            return Err("tiers need brackets, the last without an upper bound".into());
        }
        let bounds: Vec<u64> = self.brackets[..n - 1]
            .iter()
            .map(|b| b.up_to.unwrap_or(0))
            .collect();
        if self.brackets[..n - 1].iter().any(|b| b.up_to.is_none())
            || bounds.windows(2).any(|w| w[0] >= w[1])
            || bounds.first() == Some(&0)
        {
            return Err("tier bounds must rise and be above zero".into());
        }
        if self.brackets.iter().any(|b| b.bps > 100_000) {
            return Err("a tier rate above 1000% is a typo".into());
        }
        Ok(())
    }

    /// The rate of the bracket holding volume `v` (1-based for conversions).
    fn rate_at(&self, v: u64) -> u32 {
        self.brackets
            .iter()
            .find(|b| b.up_to.is_none_or(|u| v <= u))
            .map_or(0, |b| b.bps)
    }

    /// Commission owed for a month with `count` standing conversions totalling `revenue`;
    /// `amounts` are the month's conversions in order with whether each still stands (a
    /// fully reversed one gives up its place in the count), for the conversions basis in
    /// bracket mode.
    pub fn month_commission(&self, count: u64, revenue: i128, amounts: &[(i64, bool)]) -> i128 {
        let revenue_u = revenue.max(0) as u128;
        // Volume for the bracket lookup, which is in u64 (a revenue beyond it is in the top
        // bracket anyway).
        let volume = u64::try_from(revenue_u).unwrap_or(u64::MAX);
        match (self.mode, self.basis) {
            (TierMode::WholeMonth, TierBasis::Conversions) => {
                percent_of_wide(revenue, self.rate_at(count.max(1)))
            }
            (TierMode::WholeMonth, TierBasis::Revenue) => {
                percent_of_wide(revenue, self.rate_at(volume.max(1)))
            }
            (TierMode::Bracket, TierBasis::Conversions) => {
                let scaled: i128 = amounts
                    .iter()
                    .filter(|a| a.1)
                    .enumerate()
                    .map(|(i, &(a, _))| a as i128 * self.rate_at(i as u64 + 1) as i128)
                    .sum();
                div_round_half_even(scaled, 10_000)
            }
            (TierMode::Bracket, TierBasis::Revenue) => {
                let mut lower = 0u128;
                let mut scaled: i128 = 0;
                for b in &self.brackets {
                    let upper = b.up_to.map_or(u128::MAX, u128::from);
                    if revenue_u > lower {
                        let inside = revenue_u.min(upper) - lower;
                        scaled += inside as i128 * b.bps as i128;
                    }
                    lower = upper;
                    if revenue_u <= upper {
                        break;
                    }
                }
                div_round_half_even(scaled, 10_000)
            }
        }
    }
}

/// How a plan prices one conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// A fixed amount per conversion, by event (`sale`, `lead`, ...); events not listed
    /// earn `default` (or nothing).
    Flat {
        per_event: BTreeMap<String, i64>,
        default: Option<i64>,
    },
    /// A share of the sale.
    Percent {
        bps: u32,
    },
    Tiered(Tiers),
}

/// A share of later charges of the same customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurring {
    pub bps: u32,
    /// Calendar months after the customer's first conversion during which later charges
    /// earn; `None` for the customer's lifetime.
    pub months: Option<u32>,
}

/// A fixed amount once a partner passes `threshold` in a calendar month (once per month).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bonus {
    pub basis: TierBasis,
    pub threshold: u64,
    pub amount_minor: i64,
}

// ---- calendar (UTC) ----

/// (year, month 1-12, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAY_US: i64 = 86_400_000_000;

/// The calendar month (`year * 12 + month - 1`) of a UTC time.
pub fn month_of(at_us: i64) -> i64 {
    let (y, m, _) = civil_from_days(at_us.div_euclid(DAY_US));
    y * 12 + m as i64 - 1
}

/// `at_us` plus `n` calendar months (the day clamped to the target month's length).
pub fn add_months(at_us: i64, n: u32) -> i64 {
    let days = at_us.div_euclid(DAY_US);
    let time = at_us.rem_euclid(DAY_US);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + m as i64 - 1 + n as i64;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let last = days_from_civil(
        if nm == 12 { ny + 1 } else { ny },
        if nm == 12 { 1 } else { nm + 1 },
        1,
    ) - days_from_civil(ny, nm, 1);
    days_from_civil(ny, nm, d.min(last as u32)) * DAY_US + time
}

// ---- the stateful part: what each conversion earns ----

/// A commission plan: its pricing plus optional recurring share and monthly bonus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub pricing: Pricing,
    pub recurring: Option<Recurring>,
    pub bonus: Option<Bonus>,
}

/// Why an amount was credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CreditKind {
    /// The plan's amount for the conversion (with a whole-month tier top-up if it crossed
    /// a bracket).
    Commission,
    /// A share of a returning customer's later charge.
    Recurring,
    /// The monthly performance bonus.
    Bonus,
}

/// An amount owed to (positive) or taken back from (negative) an affiliate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    pub affiliate_id: String,
    pub kind: CreditKind,
    pub amount_minor: i64,
}

/// A conversion as the commission engine sees it.
#[derive(Debug, Clone)]
pub struct Sale<'a> {
    pub conversion_id: &'a str,
    pub campaign_id: &'a str,
    pub merchant_id: &'a str,
    pub event: &'a str,
    pub amount_minor: i64,
    pub occurred_at_us: i64,
    pub customer_id: Option<&'a str>,
    /// (affiliate, weight) of each credited touchpoint; weights need not be normalised.
    pub touchpoints: Vec<(&'a str, u64)>,
}

/// Sums are `i128`: a merchant key may post millions of the largest amounts into one
/// month, and a sum that overflowed would stop the ledger (it did: issue 15).
#[derive(Debug, Default, Clone)]
struct Month {
    count: u64,
    revenue: i128,
    /// Amounts in order and whether each still stands (for per-conversion brackets).
    amounts: Vec<(i64, bool)>,
    /// Tiered commission already credited for the month.
    credited: i128,
}

/// What one conversion was credited, for its reversals.
#[derive(Debug, Clone)]
struct Booked {
    credits: Vec<Credit>,
    amount_minor: i64,
    reversed_minor: i64,
    fully_reversed: bool,
    /// The tier month it counted in (primary affiliate, campaign, month) and its place in
    /// that month's amounts.
    month: Option<((String, String, i64), usize)>,
    /// The bonus month it counted in (primary affiliate, month).
    bonus: Option<(String, i64)>,
}

/// What each affiliate earns, conversion by conversion: tier state per (primary affiliate,
/// campaign, month), each customer's first conversion, bonuses given, and what each
/// conversion was credited (its reversals take that back).
#[derive(Debug, Default)]
pub struct Commissions {
    months: BTreeMap<(String, String, i64), Month>,
    /// (conversions, revenue) per (primary affiliate, month); revenue wide as in [`Month`].
    bonus_volume: BTreeMap<(String, i64), (u64, i128)>,
    bonus_given: std::collections::BTreeSet<(String, i64)>,
    first_seen: BTreeMap<(String, String), i64>,
    booked: BTreeMap<String, Booked>,
}

impl Commissions {
    /// The credits a new conversion earns under `plan` (none without touchpoints). The
    /// plan's amount is computed once for the conversion, then split over the touchpoints
    /// by weight; tier and bonus volume count for the primary (largest-weight) affiliate.
    /// A returning customer's charge earns the recurring share (inside its window) instead
    /// of the acquisition commission, when the plan has one.
    pub fn on_sale(&mut self, plan: &Plan, s: &Sale<'_>) -> Vec<Credit> {
        let weights: Vec<u64> = s.touchpoints.iter().map(|t| t.1).collect();
        if weights.iter().all(|&w| w == 0) || self.booked.contains_key(s.conversion_id) {
            return Vec::new();
        }
        let primary = s
            .touchpoints
            .iter()
            .enumerate()
            .max_by(|a, b| a.1 .1.cmp(&b.1 .1).then(b.0.cmp(&a.0)))
            .map(|(_, t)| t.0)
            .expect("not empty");
        let month = month_of(s.occurred_at_us);
        // The customer's first conversion, if this is a later one (processing order decides).
        let returning = s.customer_id.and_then(|c| {
            let key = (s.merchant_id.to_string(), c.to_string());
            match self.first_seen.get(&key) {
                Some(&first) => Some(first),
                None => {
                    self.first_seen.insert(key, s.occurred_at_us);
                    None
                }
            }
        });
        let mut wholes: Vec<(CreditKind, i64)> = Vec::new();
        let mut month_key = None;
        match (returning, plan.recurring) {
            (Some(first), Some(r)) => {
                if r.months
                    .is_none_or(|n| s.occurred_at_us < add_months(first, n))
                {
                    wholes.push((CreditKind::Recurring, percent_of(s.amount_minor, r.bps)));
                }
            }
            _ => {
                let key = (primary.to_string(), s.campaign_id.to_string(), month);
                let m = self.months.entry(key.clone()).or_default();
                m.count += 1;
                m.revenue += s.amount_minor as i128;
                m.amounts.push((s.amount_minor, true));
                let slot = m.amounts.len() - 1;
                let amount = match &plan.pricing {
                    Pricing::Flat { per_event, default } => {
                        per_event.get(s.event).copied().or(*default).unwrap_or(0)
                    }
                    Pricing::Percent { bps } => percent_of(s.amount_minor, *bps),
                    Pricing::Tiered(t) => {
                        let owed = t.month_commission(m.count, m.revenue, &m.amounts);
                        let delta = to_i64(owed - m.credited);
                        m.credited = owed;
                        delta
                    }
                };
                month_key = Some((key, slot));
                wholes.push((CreditKind::Commission, amount));
            }
        }
        let mut bonus_key = None;
        if let Some(b) = plan.bonus {
            bonus_key = Some((primary.to_string(), month));
            let v = self
                .bonus_volume
                .entry((primary.to_string(), month))
                .or_default();
            v.0 += 1;
            v.1 += s.amount_minor as i128;
            let reached = match b.basis {
                TierBasis::Conversions => v.0 >= b.threshold,
                TierBasis::Revenue => v.1 >= b.threshold as i128,
            };
            if reached && self.bonus_given.insert((primary.to_string(), month)) {
                wholes.push((CreditKind::Bonus, b.amount_minor));
            }
        }
        let mut credits = Vec::new();
        for (kind, whole) in wholes {
            for (part, t) in split(whole, &weights).into_iter().zip(&s.touchpoints) {
                if part != 0 {
                    credits.push(Credit {
                        affiliate_id: t.0.to_string(),
                        kind,
                        amount_minor: part,
                    });
                }
            }
        }
        self.booked.insert(
            s.conversion_id.to_string(),
            Booked {
                credits: credits.clone(),
                amount_minor: s.amount_minor,
                reversed_minor: 0,
                fully_reversed: false,
                month: month_key,
                bonus: bonus_key,
            },
        );
        credits
    }

    /// What reversing `reversed_minor` more of conversion `id` takes back: the same share of
    /// its commission and recurring credits as of its amount (everything once the whole
    /// amount is reversed; a conversion without an amount, such as a flat-priced lead, is
    /// reversed whole at once). Under a tiered plan the month is then priced again on what
    /// still stands, and the difference is credited to (or taken from) the month's
    /// affiliate, so a refund that drops the month below a bracket takes the top-up back.
    /// A monthly bonus, once reached, stays; the reversed volume no longer counts towards
    /// reaching it.
    pub fn on_reversal(&mut self, plan: &Plan, id: &str, reversed_minor: i64) -> Vec<Credit> {
        let Some(b) = self.booked.get_mut(id) else {
            return Vec::new();
        };
        if b.fully_reversed {
            return Vec::new();
        }
        let before = b.reversed_minor;
        let (after, full) = if b.amount_minor <= 0 {
            (0, true)
        } else {
            let after = (before + reversed_minor.max(0)).min(b.amount_minor);
            (after, after >= b.amount_minor)
        };
        if !full && after == before {
            return Vec::new();
        }
        b.reversed_minor = after;
        b.fully_reversed = full;
        let amount = b.amount_minor;
        // Cumulative share taken back at `reversed`; everything once full.
        let taken = |original: i64, reversed: i64, full: bool| -> i64 {
            if full {
                original
            } else if reversed <= 0 || amount <= 0 {
                0
            } else {
                to_i64(div_round_half_even(
                    original as i128 * reversed as i128,
                    amount as i128,
                ))
            }
        };
        let mut out: Vec<Credit> = b
            .credits
            .iter()
            .filter(|c| c.kind != CreditKind::Bonus)
            .filter_map(|c| {
                let back =
                    taken(c.amount_minor, after, full) - taken(c.amount_minor, before, false);
                (back != 0).then(|| Credit {
                    amount_minor: -back,
                    ..c.clone()
                })
            })
            .collect();
        let (month, bonus) = (b.month.clone(), b.bonus.clone());
        if let Some(key) = bonus {
            if let Some(v) = self.bonus_volume.get_mut(&key) {
                v.1 -= (after - before) as i128;
                if full {
                    v.0 = v.0.saturating_sub(1);
                }
            }
        }
        if let Some((key, slot)) = month {
            if let Some(m) = self.months.get_mut(&key) {
                m.revenue -= (after - before) as i128;
                if let Some(a) = m.amounts.get_mut(slot) {
                    a.0 -= after - before;
                    if full {
                        a.1 = false;
                    }
                }
                if full {
                    m.count = m.count.saturating_sub(1);
                }
                m.credited += out
                    .iter()
                    .filter(|c| c.kind == CreditKind::Commission)
                    .map(|c| c.amount_minor as i128)
                    .sum::<i128>();
                if let Pricing::Tiered(t) = &plan.pricing {
                    let owed = t.month_commission(m.count, m.revenue, &m.amounts);
                    let delta = to_i64(owed - m.credited);
                    m.credited = owed;
                    if delta != 0 {
                        out.push(Credit {
                            affiliate_id: key.0.clone(),
                            kind: CreditKind::Commission,
                            amount_minor: delta,
                        });
                    }
                }
            }
        }
        out
    }
}

impl Plan {
    /// Refuses rates and amounts no program means (a typo would pay out real money).
    pub fn validate(&self) -> Result<(), String> {
        const BPS_MAX: u32 = 100_000;
        match &self.pricing {
            Pricing::Percent { bps } if *bps > BPS_MAX => {
                return Err("a rate above 1000% is a typo".into())
            }
            Pricing::Flat { per_event, default }
                if per_event.values().chain(default.iter()).any(|&a| a < 0) =>
            {
                return Err("flat amounts cannot be negative".into())
            }
            Pricing::Tiered(t) => t.validate()?,
            _ => {}
        }
        if self.recurring.is_some_and(|r| r.bps > BPS_MAX) {
            return Err("a recurring rate above 1000% is a typo".into());
        }
        if self
            .bonus
            .is_some_and(|b| b.amount_minor < 0 || b.threshold == 0)
        {
            return Err("a bonus needs a threshold above zero and an amount not below zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    const DAY: i64 = DAY_US;

    fn sale<'a>(id: &'a str, amount: i64, at: i64, tps: Vec<(&'a str, u64)>) -> Sale<'a> {
        Sale {
            conversion_id: id,
            campaign_id: "c1",
            merchant_id: "m1",
            event: "sale",
            amount_minor: amount,
            occurred_at_us: at,
            customer_id: None,
            touchpoints: tps,
        }
    }

    fn plan(pricing: Pricing) -> Plan {
        Plan {
            pricing,
            recurring: None,
            bonus: None,
        }
    }

    /// Revenue tiers: 10% up to 100.00, 20% above.
    fn ten_then_twenty(mode: TierMode) -> Tiers {
        Tiers {
            basis: TierBasis::Revenue,
            mode,
            brackets: vec![
                Bracket {
                    up_to: Some(10_000),
                    bps: 1000,
                },
                Bracket {
                    up_to: None,
                    bps: 2000,
                },
            ],
        }
    }

    fn total(credits: &[Credit]) -> i64 {
        credits.iter().map(|c| c.amount_minor).sum()
    }

    #[test]
    fn rounding_is_half_to_even_both_signs() {
        for (n, d, want) in [
            (5, 2, 2),
            (7, 2, 4),
            (-5, 2, -2),
            (-7, 2, -4),
            (1, 3, 0),
            (2, 3, 1),
            (-2, 3, -1),
            (10, 5, 2),
            (0, 7, 0),
        ] {
            assert_eq!(div_round_half_even(n, d), want, "{n}/{d}");
        }
        assert_eq!(percent_of(4990, 1000), 499);
        assert_eq!(percent_of(5, 1000), 0, "0.5 rounds to even 0");
        assert_eq!(percent_of(15, 1000), 2, "1.5 rounds to even 2");
        assert_eq!(percent_of(25, 1000), 2, "2.5 rounds to even 2");
        assert_eq!(percent_of(-25, 1000), -2);
    }

    #[test]
    fn splits_add_up_exactly_and_mirror_for_negatives() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..20_000 {
            let n = rng.usize(1..8);
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(0..1_000_000)).collect();
            if weights.iter().all(|&w| w == 0) {
                continue;
            }
            let total = rng.i64(-1_000_000..1_000_000);
            let parts = split(total, &weights);
            assert_eq!(parts.iter().sum::<i64>(), total, "{weights:?} {total}");
            let neg = split(-total, &weights);
            assert!(parts.iter().zip(&neg).all(|(a, b)| *a == -*b));
            // Each part is within one cent of its exact share.
            let sum: f64 = weights.iter().map(|&w| w as f64).sum();
            for (p, &w) in parts.iter().zip(&weights) {
                assert!((*p as f64 - total as f64 * w as f64 / sum).abs() < 1.0 + 1e-6);
            }
        }
        assert_eq!(
            split(100, &[1, 1, 1]),
            vec![34, 33, 33],
            "leftover to the earliest on ties"
        );
        assert_eq!(split(2, &[1, 1, 1]), vec![1, 1, 0]);
    }

    #[test]
    fn tier_boundaries_per_conversion_and_revenue() {
        // 10% for the first 50, 15% to 200, 20% above (conversions per month).
        let tiers = |mode| Tiers {
            basis: TierBasis::Conversions,
            mode,
            brackets: vec![
                Bracket {
                    up_to: Some(50),
                    bps: 1000,
                },
                Bracket {
                    up_to: Some(200),
                    bps: 1500,
                },
                Bracket {
                    up_to: None,
                    bps: 2000,
                },
            ],
        };
        for mode in [TierMode::Bracket, TierMode::WholeMonth] {
            tiers(mode).validate().unwrap();
            let p = plan(Pricing::Tiered(tiers(mode)));
            let mut c = Commissions::default();
            let mut per: Vec<i64> = Vec::new();
            for i in 1..=201 {
                let id = format!("cv{i}");
                per.push(total(
                    &c.on_sale(&p, &sale(&id, 10_000, JAN + i * 1000, vec![("a", 1)])),
                ));
            }
            match mode {
                TierMode::Bracket => {
                    assert_eq!(
                        (per[48], per[49], per[50]),
                        (1000, 1000, 1500),
                        "49, 50 at 10%, 51 at 15%"
                    );
                    assert_eq!((per[199], per[200]), (1500, 2000), "200 at 15%, 201 at 20%");
                }
                TierMode::WholeMonth => {
                    assert_eq!((per[48], per[49]), (1000, 1000));
                    // The 51st lifts the whole month to 15%: its own 15% plus 5% on the 50 before.
                    assert_eq!(per[50], 1500 + 50 * 500);
                    assert_eq!(per[199], 1500);
                    assert_eq!(
                        per[200],
                        2000 + 200 * 500,
                        "the 201st lifts the month to 20%"
                    );
                    assert_eq!(
                        per.iter().sum::<i64>(),
                        201 * 2000,
                        "the month at 20% in all"
                    );
                }
            }
        }
        // Revenue basis, marginal: 10% up to 100.00, 20% above; a sale straddling the bound.
        let t = ten_then_twenty(TierMode::Bracket);
        let p = plan(Pricing::Tiered(t));
        let mut c = Commissions::default();
        assert_eq!(
            total(&c.on_sale(&p, &sale("r1", 8_000, JAN, vec![("a", 1)]))),
            800
        );
        assert_eq!(
            total(&c.on_sale(&p, &sale("r2", 4_000, JAN + 1, vec![("a", 1)]))),
            200 + 400
        );
        // A new month starts over.
        assert_eq!(
            total(&c.on_sale(&p, &sale("r3", 4_000, JAN + 31 * DAY, vec![("a", 1)]))),
            400
        );
        assert!(Tiers {
            basis: TierBasis::Revenue,
            mode: TierMode::Bracket,
            brackets: vec![Bracket {
                up_to: Some(5),
                bps: 1
            }]
        }
        .validate()
        .is_err());
        assert!(Tiers {
            basis: TierBasis::Revenue,
            mode: TierMode::Bracket,
            brackets: vec![
                Bracket {
                    up_to: Some(5),
                    bps: 1
                },
                Bracket {
                    up_to: Some(5),
                    bps: 1
                },
                Bracket {
                    up_to: None,
                    bps: 1
                }
            ]
        }
        .validate()
        .is_err());
    }

    #[test]
    fn recurring_stops_after_exactly_n_months() {
        let p = Plan {
            pricing: Pricing::Percent { bps: 3000 },
            recurring: Some(Recurring {
                bps: 1000,
                months: Some(3),
            }),
            bonus: None,
        };
        let first = JAN + 14 * DAY; // 2026-01-15
        let mut c = Commissions::default();
        let mut s = sale("first", 10_000, first, vec![("a", 1)]);
        s.customer_id = Some("cust");
        assert_eq!(
            c.on_sale(&p, &s)[0],
            Credit {
                affiliate_id: "a".into(),
                kind: CreditKind::Commission,
                amount_minor: 3000
            }
        );
        let april_15 = add_months(first, 3);
        assert_eq!(civil_from_days(april_15 / DAY), (2026, 4, 15));
        for (id, at, want) in [
            ("m1", first + 20 * DAY, 1000),
            ("m3", april_15 - 1, 1000),
            ("m3b", april_15, 0),
            ("m4", april_15 + 30 * DAY, 0),
        ] {
            let mut s = sale(id, 10_000, at, vec![("a", 1)]);
            s.customer_id = Some("cust");
            let got = c.on_sale(&p, &s);
            assert_eq!(total(&got), want, "{id}");
            assert!(got.iter().all(|c| c.kind == CreditKind::Recurring));
        }
        // Lifetime: no end.
        let p = Plan {
            recurring: Some(Recurring {
                bps: 1000,
                months: None,
            }),
            ..p
        };
        let mut c = Commissions::default();
        for (i, at) in [first, first + 3650 * DAY].into_iter().enumerate() {
            let id = format!("l{i}");
            let mut s = sale(&id, 10_000, at, vec![("a", 1)]);
            s.customer_id = Some("cust");
            assert_eq!(total(&c.on_sale(&p, &s)), if i == 0 { 3000 } else { 1000 });
        }
        // Month arithmetic clamps to the month's end.
        let jan31 = JAN + 30 * DAY;
        assert_eq!(civil_from_days(add_months(jan31, 1) / DAY), (2026, 2, 28));
        assert_eq!(civil_from_days(add_months(jan31, 13) / DAY), (2027, 2, 28));
        for d in [-800_000i64, -1, 0, 1, 59, 60, 20_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn a_bonus_fires_once_per_month() {
        let p = Plan {
            pricing: Pricing::Flat {
                per_event: BTreeMap::from([("sale".to_string(), 500)]),
                default: None,
            },
            recurring: None,
            bonus: Some(Bonus {
                basis: TierBasis::Conversions,
                threshold: 3,
                amount_minor: 10_000,
            }),
        };
        let mut c = Commissions::default();
        let bonuses = |credits: &[Credit]| {
            credits
                .iter()
                .filter(|c| c.kind == CreditKind::Bonus)
                .map(|c| c.amount_minor)
                .sum::<i64>()
        };
        let mut got = Vec::new();
        for i in 0..6 {
            let id = format!("b{i}");
            got.push(bonuses(
                &c.on_sale(&p, &sale(&id, 1, JAN + i, vec![("a", 1)])),
            ));
        }
        assert_eq!(got, vec![0, 0, 10_000, 0, 0, 0]);
        // Another affiliate has its own month; the next month starts over.
        assert_eq!(
            bonuses(&c.on_sale(&p, &sale("x1", 1, JAN, vec![("b", 1)]))),
            0
        );
        let feb = JAN + 31 * DAY;
        let got: Vec<i64> = (0..4)
            .map(|i| {
                let id = format!("f{i}");
                bonuses(&c.on_sale(&p, &sale(&id, 1, feb + i, vec![("a", 1)])))
            })
            .collect();
        assert_eq!(got, vec![0, 0, 10_000, 0]);
        // Events without a price earn nothing.
        let mut s = sale("lead", 1, JAN, vec![("z", 1)]);
        s.event = "lead";
        assert_eq!(total(&c.on_sale(&p, &s)), 0);
    }

    #[test]
    fn reversing_everything_returns_every_balance_to_zero() {
        let mut rng = fastrand::Rng::with_seed(7);
        let tiers = |basis, mode| {
            plan(Pricing::Tiered(Tiers {
                basis,
                mode,
                brackets: vec![
                    Bracket {
                        up_to: Some(if basis == TierBasis::Revenue {
                            50_000
                        } else {
                            5
                        }),
                        bps: 1000,
                    },
                    Bracket {
                        up_to: Some(if basis == TierBasis::Revenue {
                            200_000
                        } else {
                            12
                        }),
                        bps: 1500,
                    },
                    Bracket {
                        up_to: None,
                        bps: 2000,
                    },
                ],
            }))
        };
        let plans = [
            plan(Pricing::Percent { bps: 1000 }),
            plan(Pricing::Flat {
                per_event: BTreeMap::from([("sale".to_string(), 250)]),
                default: Some(40),
            }),
            Plan {
                pricing: Pricing::Percent { bps: 1000 },
                recurring: Some(Recurring {
                    bps: 500,
                    months: Some(2),
                }),
                bonus: None,
            },
            tiers(TierBasis::Revenue, TierMode::Bracket),
            tiers(TierBasis::Revenue, TierMode::WholeMonth),
            tiers(TierBasis::Conversions, TierMode::Bracket),
            tiers(TierBasis::Conversions, TierMode::WholeMonth),
        ];
        for (pi, p) in plans.iter().enumerate() {
            p.validate().unwrap();
            for round in 0..25 {
                let mut c = Commissions::default();
                let mut balance: BTreeMap<String, i64> = BTreeMap::new();
                let mut book = |credits: Vec<Credit>| {
                    for k in credits {
                        *balance.entry(k.affiliate_id).or_default() += k.amount_minor;
                    }
                };
                // (id, amount, left to reverse)
                let mut open: Vec<(String, i64, i64)> = Vec::new();
                let affiliates = ["a", "b", "c"];
                // Sales and (partial) reversals interleaved, then everything left reversed.
                for i in 0..60 {
                    if !open.is_empty() && rng.u8(0..3) == 0 {
                        let k = rng.usize(0..open.len());
                        let left = open[k].2;
                        let part = if left <= 0 || rng.bool() {
                            left.max(1)
                        } else {
                            rng.i64(1..=left)
                        };
                        book(c.on_reversal(p, &open[k].0.clone(), part));
                        open[k].2 -= part;
                        if open[k].2 <= 0 {
                            open.swap_remove(k);
                        }
                        continue;
                    }
                    let id = format!("p{pi}-{round}-{i}");
                    let n = rng.usize(1..4);
                    let tps: Vec<(&str, u64)> = (0..n)
                        .map(|k| (affiliates[(k + i) % 3], rng.u64(1..1_000_000)))
                        .collect();
                    // Some leads without an amount (flat plans price them anyway).
                    let amount = if rng.u8(0..8) == 0 {
                        0
                    } else {
                        rng.i64(1..100_000)
                    };
                    let mut s = sale(&id, amount, JAN + rng.i64(0..60) * DAY, tps);
                    let cust = format!("cust{}", rng.u8(0..5));
                    s.customer_id = rng.bool().then_some(cust.as_str());
                    book(c.on_sale(p, &s));
                    open.push((id, amount, amount));
                }
                rng.shuffle(&mut open);
                for (id, _, left) in &open {
                    book(c.on_reversal(p, id, (*left).max(1)));
                    assert!(
                        c.on_reversal(p, id, 1).is_empty(),
                        "nothing left to reverse"
                    );
                }
                assert!(
                    balance.values().all(|&b| b == 0),
                    "plan {pi} round {round}: {balance:?}"
                );
            }
        }
    }

    #[test]
    fn a_refund_that_drops_the_month_below_a_bracket_takes_the_top_up_back() {
        let t = ten_then_twenty(TierMode::WholeMonth);
        let p = plan(Pricing::Tiered(t));
        let mut c = Commissions::default();
        assert_eq!(
            total(&c.on_sale(&p, &sale("x1", 8_000, JAN, vec![("a", 1)]))),
            800
        );
        // 120.00 in the month: all of it at 20% = 24.00, so +16.00 for this one.
        assert_eq!(
            total(&c.on_sale(&p, &sale("x2", 4_000, JAN + 1, vec![("a", 1)]))),
            1600
        );
        // Refunding x2 leaves 80.00 at 10% = 8.00: 16.00 comes back, no more, no less.
        assert_eq!(total(&c.on_reversal(&p, "x2", 4_000)), -1600);
        // A later sale in the month is priced on what stands.
        assert_eq!(
            total(&c.on_sale(&p, &sale("x3", 1_000, JAN + 2, vec![("a", 1)]))),
            100
        );
        // Bracket mode, conversions: a fully refunded sale gives up its place.
        let t = Tiers {
            basis: TierBasis::Conversions,
            mode: TierMode::Bracket,
            brackets: vec![
                Bracket {
                    up_to: Some(1),
                    bps: 1000,
                },
                Bracket {
                    up_to: None,
                    bps: 2000,
                },
            ],
        };
        let p = plan(Pricing::Tiered(t));
        let mut c = Commissions::default();
        assert_eq!(
            total(&c.on_sale(&p, &sale("y1", 10_000, JAN, vec![("a", 1)]))),
            1000
        );
        assert_eq!(total(&c.on_reversal(&p, "y1", 10_000)), -1000);
        assert_eq!(
            total(&c.on_sale(&p, &sale("y2", 10_000, JAN + 1, vec![("a", 1)]))),
            1000,
            "first standing sale of the month"
        );
        assert_eq!(
            total(&c.on_sale(&p, &sale("y3", 10_000, JAN + 2, vec![("a", 1)]))),
            2000
        );
        // A flat-priced lead without an amount is reversed whole, once.
        let p = plan(Pricing::Flat {
            per_event: BTreeMap::from([("lead".to_string(), 300)]),
            default: None,
        });
        let mut c = Commissions::default();
        let mut lead = sale("z1", 0, JAN, vec![("a", 1)]);
        lead.event = "lead";
        assert_eq!(total(&c.on_sale(&p, &lead)), 300);
        assert_eq!(total(&c.on_reversal(&p, "z1", 0)), -300);
        assert!(c.on_reversal(&p, "z1", 0).is_empty());
        assert!(Plan {
            pricing: Pricing::Percent { bps: 100_001 },
            recurring: None,
            bonus: None
        }
        .validate()
        .is_err());
    }
}
