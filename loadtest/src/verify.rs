//! `--verify DATA_DIR`: after the run, every event the server acknowledged must be in its
//! journal, and no acknowledged conversion or reversal twice. Reads the journal files
//! read-only (the server may still be running; records it appends meanwhile are extra).

use crate::engine::Acks;
use clicktrail_storage::schema::{self, Click, Conversion, ConversionV2, Impression};
use clicktrail_storage::{scan_records, Kind, RecordExt};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

#[derive(Debug, Default)]
pub struct Verdict {
    pub clicks_acked: usize,
    pub clicks_missing: usize,
    pub impressions_acked: u64,
    pub impressions_in_journal: u64,
    pub conversions_acked: usize,
    pub conversions_missing: usize,
    pub conversions_twice: usize,
    pub reversals_acked: usize,
    pub reversals_missing: usize,
    pub reversals_twice: usize,
    pub corrupt: Vec<String>,
    /// A few of the missing ids, to look for.
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.clicks_missing == 0
            && self.conversions_missing == 0
            && self.conversions_twice == 0
            && self.reversals_missing == 0
            && self.reversals_twice == 0
            && self.impressions_in_journal >= self.impressions_acked
            && self.corrupt.is_empty()
    }

    pub fn json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "clicks": { "acknowledged": self.clicks_acked, "missing": self.clicks_missing },
            "impressions": { "acknowledged": self.impressions_acked, "in_journal": self.impressions_in_journal },
            "conversions": { "acknowledged": self.conversions_acked, "missing": self.conversions_missing, "twice": self.conversions_twice },
            "reversals": { "acknowledged": self.reversals_acked, "missing": self.reversals_missing, "twice": self.reversals_twice },
            "corrupt": self.corrupt,
            "examples": self.examples,
        })
    }

    pub fn line(&self) -> String {
        format!(
            "verify: {} · clicks {} acknowledged, {} missing · impressions {} acknowledged, {} in the journal (all runs: a weak check) · conversions {} acknowledged, {} missing, {} twice · reversals {} acknowledged, {} missing, {} twice{}",
            if self.ok() { "OK" } else { "FAILED" },
            self.clicks_acked, self.clicks_missing, self.impressions_acked, self.impressions_in_journal,
            self.conversions_acked, self.conversions_missing, self.conversions_twice,
            self.reversals_acked, self.reversals_missing, self.reversals_twice,
            if self.corrupt.is_empty() { String::new() } else { format!(" · corrupt: {}", self.corrupt.join("; ")) }
        )
    }
}

/// Compares what was acknowledged with what `data_dir`'s journal holds.
pub fn verify(data_dir: &Path, acks: &Acks) -> Result<Verdict, String> {
    let want_clicks: HashSet<&str> = acks.clicks.iter().map(String::as_str).collect();
    let want_orders: HashSet<&str> = acks.conversions.iter().map(String::as_str).collect();
    let want_reversals: HashSet<&str> = acks.reversals.iter().map(String::as_str).collect();
    let mut clicks: HashSet<String> = HashSet::new();
    let mut orders: HashMap<String, usize> = HashMap::new();
    let mut reversals: HashMap<String, usize> = HashMap::new();
    let mut impressions = 0u64;
    let reports = scan_records(data_dir, &mut |_, rec| match Kind::from_u16(rec.kind) {
        Some(Kind::Click) => {
            if let Some(c) = rec.event::<Click>() {
                if want_clicks.contains(c.click_id.as_str()) {
                    clicks.insert(c.click_id.as_str().to_string());
                }
            }
        }
        Some(Kind::Impression) if rec.event::<Impression>().is_some() => impressions += 1,
        Some(Kind::Conversion) => {
            // Zero-copy, either version.
            let order = rec
                .event::<Conversion>()
                .map(|c| c.order_id.as_str())
                .or_else(|| rec.event::<ConversionV2>().map(|c| c.order_id.as_str()));
            if let Some(order) = order.filter(|o| want_orders.contains(o)) {
                *orders.entry(order.to_string()).or_default() += 1;
            }
        }
        Some(Kind::ConversionReversal) => {
            if let Some(r) = schema::reversal(rec) {
                if want_reversals.contains(r.reversal_id.as_str()) {
                    *reversals.entry(r.reversal_id).or_default() += 1;
                }
            }
        }
        _ => {}
    })
    .map_err(|e| format!("cannot read the journal under {}: {e}", data_dir.display()))?;
    let mut v = Verdict {
        clicks_acked: want_clicks.len(),
        clicks_missing: want_clicks.len() - clicks.len(),
        impressions_acked: acks.impressions,
        impressions_in_journal: impressions,
        conversions_acked: want_orders.len(),
        conversions_missing: want_orders.len() - orders.len(),
        conversions_twice: orders.values().filter(|&&n| n > 1).count(),
        reversals_acked: want_reversals.len(),
        reversals_missing: want_reversals.len() - reversals.len(),
        reversals_twice: reversals.values().filter(|&&n| n > 1).count(),
        ..Verdict::default()
    };
    for p in &reports {
        // A scan of a live journal can end at a frame being written: only a problem when
        // it is not the newest segment's tail.
        for (path, why) in &p.bad_segments {
            v.corrupt.push(format!("{}: {why}", path.display()));
        }
        let n = p.segments.len();
        for (i, s) in p.segments.iter().enumerate() {
            if let Some((at, why)) = &s.problem {
                if i + 1 < n {
                    v.corrupt
                        .push(format!("{} at {at}: {why}", s.path.display()));
                }
            }
        }
    }
    v.examples.extend(
        want_clicks
            .iter()
            .filter(|c| !clicks.contains(**c))
            .take(3)
            .map(|c| format!("click {c}")),
    );
    v.examples.extend(
        want_orders
            .iter()
            .filter(|o| !orders.contains_key(**o))
            .take(3)
            .map(|o| format!("order {o}")),
    );
    v.examples.extend(
        want_reversals
            .iter()
            .filter(|r| !reversals.contains_key(**r))
            .take(3)
            .map(|r| format!("reversal {r}")),
    );
    Ok(v)
}
