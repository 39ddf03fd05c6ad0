//! `[fraud]`: the fraud engine's thresholds, range lists, memory bounds, anomaly model and
//! the program-wide settings of each rule (`[fraud.rules.<name>]`; campaigns override them
//! with `fraud-rules`). Every rule and its defaults: `clicktrail_actors::fraud::config::RULES`.

use clicktrail_actors::fraud::config::{
    parse_ranges, AnomalyConfig, Cidr, FraudConfig, RuleOverride, BOT_MARKERS_DEFAULT,
    SEARCH_ENGINES_DEFAULT,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Most entries of a range list (inline and file together).
pub const RANGES_MAX: usize = 100_000;

/// See the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct FraudSection {
    /// False switches every rule off (conversions are all allowed). Default: true.
    pub enabled: bool,
    /// Combined score from which a subject goes to review, ppm. Default: 500000.
    pub review_ppm: u32,
    /// Score from which a rule with `may-reject = true` rejects alone, ppm. Default: 900000.
    pub reject_ppm: u32,
    /// Data-centre ranges (CIDR), and a file of more (one per line, `#` comments).
    pub datacenter_ranges: Vec<String>,
    pub datacenter_ranges_file: Option<PathBuf>,
    /// Blocked ranges, and a file of more.
    pub blocked_ranges: Vec<String>,
    pub blocked_ranges_file: Option<PathBuf>,
    /// User-agent fragments (lower case) of automated clients. Default: a list of bots,
    /// crawlers and HTTP libraries.
    pub bot_markers: Vec<String>,
    /// Search engines' hosts (a trailing `.` matches any country domain).
    pub search_engines: Vec<String>,
    /// Memory bounds (see `FraudConfig`).
    pub clicks_max: usize,
    pub flagged_max: usize,
    pub window_keys_max: usize,
    pub verdicts_max: usize,
    pub anomaly: AnomalySection,
    pub rules: BTreeMap<String, RuleOverride>,
}

/// `[fraud.anomaly]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AnomalySection {
    pub trees: usize,
    pub sample_size: usize,
    pub samples_max: usize,
    pub samples_min: usize,
}

impl Default for AnomalySection {
    fn default() -> Self {
        let d = AnomalyConfig::default();
        AnomalySection {
            trees: d.trees,
            sample_size: d.sample_size,
            samples_max: d.samples_max,
            samples_min: d.samples_min,
        }
    }
}

impl Default for FraudSection {
    fn default() -> Self {
        let d = FraudConfig::default();
        FraudSection {
            enabled: true,
            review_ppm: d.review_ppm,
            reject_ppm: d.reject_ppm,
            datacenter_ranges: Vec::new(),
            datacenter_ranges_file: None,
            blocked_ranges: Vec::new(),
            blocked_ranges_file: None,
            bot_markers: BOT_MARKERS_DEFAULT.map(String::from).to_vec(),
            search_engines: SEARCH_ENGINES_DEFAULT.map(String::from).to_vec(),
            clicks_max: d.clicks_max,
            flagged_max: d.flagged_max,
            window_keys_max: d.window_keys_max,
            verdicts_max: d.verdicts_max,
            anomaly: AnomalySection::default(),
            rules: BTreeMap::new(),
        }
    }
}

/// Inline ranges and those of a file, parsed.
fn ranges(inline: &[String], file: Option<&PathBuf>, what: &str) -> Result<Vec<Cidr>, String> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("fraud.{what}-file {}: {e}", p.display()))?,
        None => String::new(),
    };
    let all: Vec<&str> = inline
        .iter()
        .map(String::as_str)
        .chain(text.lines())
        .collect();
    let parsed = parse_ranges(all).map_err(|e| format!("fraud.{what}: {e}"))?;
    if parsed.len() > RANGES_MAX {
        return Err(format!("fraud.{what}: at most {RANGES_MAX} ranges"));
    }
    Ok(parsed)
}

impl FraudSection {
    /// The engine's settings (range files read now), checked.
    pub fn to_config(&self, email_key: Vec<u8>) -> Result<FraudConfig, String> {
        for (what, n, min, max) in [
            ("clicks-max", self.clicks_max, 1_000, 100_000_000),
            ("flagged-max", self.flagged_max, 1_000, 100_000_000),
            ("window-keys-max", self.window_keys_max, 1_000, 100_000_000),
            ("verdicts-max", self.verdicts_max, 1_000, 100_000_000),
            (
                "anomaly.samples-max",
                self.anomaly.samples_max,
                100,
                10_000_000,
            ),
            ("anomaly.trees", self.anomaly.trees, 1, 1_000),
            ("anomaly.sample-size", self.anomaly.sample_size, 2, 65_536),
        ] {
            if !(min..=max).contains(&n) {
                return Err(format!("fraud.{what} must be {min}..={max}"));
            }
        }
        if self
            .bot_markers
            .iter()
            .any(|m| m.is_empty() || *m != m.to_lowercase())
        {
            return Err("fraud.bot-markers must be non-empty lower-case fragments".into());
        }
        let c = FraudConfig {
            enabled: self.enabled,
            rules: self.rules.clone(),
            review_ppm: self.review_ppm,
            reject_ppm: self.reject_ppm,
            datacenter_ranges: ranges(
                &self.datacenter_ranges,
                self.datacenter_ranges_file.as_ref(),
                "datacenter-ranges",
            )?,
            blocked_ranges: ranges(
                &self.blocked_ranges,
                self.blocked_ranges_file.as_ref(),
                "blocked-ranges",
            )?,
            bot_markers: self.bot_markers.clone(),
            search_engines: self
                .search_engines
                .iter()
                .map(|s| s.to_lowercase())
                .collect(),
            clicks_max: self.clicks_max,
            flagged_max: self.flagged_max,
            window_keys_max: self.window_keys_max,
            verdicts_max: self.verdicts_max,
            anomaly: AnomalyConfig {
                trees: self.anomaly.trees,
                sample_size: self.anomaly.sample_size,
                samples_max: self.anomaly.samples_max,
                samples_min: self.anomaly.samples_min,
            },
            email_key,
        };
        c.check()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_ranges_and_bounds_are_checked() {
        let s: FraudSection = toml::from_str(
            "datacenter-ranges = [\"192.0.2.0/24\"]\n[rules.click-flood-ip]\nlimit = 3\nmay-reject = true\n",
        )
        .unwrap();
        let c = s.to_config(b"k".to_vec()).unwrap();
        assert_eq!(c.settings("click-flood-ip", None).limit, 3);
        assert_eq!(c.datacenter_ranges.len(), 1);
        let bad: FraudSection = toml::from_str("[rules.nope]\nlimit = 3\n").unwrap();
        assert!(bad
            .to_config(vec![])
            .unwrap_err()
            .contains("unknown fraud rule"));
        let bad: FraudSection = toml::from_str("blocked-ranges = [\"10.0.0.0/99\"]\n").unwrap();
        assert!(bad.to_config(vec![]).is_err());
        let bad: FraudSection = toml::from_str("review-ppm = 950000\n").unwrap();
        assert!(bad.to_config(vec![]).is_err(), "review above reject");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("dc.txt");
        std::fs::write(&f, "# cloud\n198.51.100.0/24\n2001:db8::/32\n").unwrap();
        let s = FraudSection {
            datacenter_ranges_file: Some(f),
            ..FraudSection::default()
        };
        assert_eq!(s.to_config(vec![]).unwrap().datacenter_ranges.len(), 2);
        let s = FraudSection {
            datacenter_ranges_file: Some(dir.path().join("missing")),
            ..FraudSection::default()
        };
        assert!(s.to_config(vec![]).is_err());
    }
}
