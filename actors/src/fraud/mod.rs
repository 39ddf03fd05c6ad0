//! Fraud scorer: reads clicks and conversions from the ingest partitions and writes a
//! verdict (score, reasons, action) to `fraud-verdicts` for every record a rule flags. No
//! verdict means allowed: writing one per clean click would double the journal traffic of
//! the busiest path for nothing.
//!
//! Rules so far: a click whose user agent is empty or names a known bot or HTTP library is
//! sent to review. The fraud issue adds click floods, too-fast conversions, cookie stuffing,
//! self-referrals, anomaly models and the review queue on this same shell.

pub mod anomaly;
pub mod email;

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{Click, Conversion, FraudVerdict, VerdictAction};
use clicktrail_storage::{Kind, Record, RecordExt};

/// User-agent fragments (lower case) that mark automated clients.
const BOT_MARKERS: [&str; 10] = [
    "bot",
    "crawler",
    "spider",
    "curl/",
    "wget/",
    "python-requests",
    "go-http-client",
    "headlesschrome",
    "phantomjs",
    "scrapy",
];

/// Score given to a bot user agent, in parts per million.
pub const BOT_SCORE_PPM: u32 = 900_000;

/// Pure scoring of a user agent: (score, reasons).
pub fn score_user_agent(ua: &str) -> (u32, Vec<String>) {
    if ua.trim().is_empty() {
        return (BOT_SCORE_PPM, vec!["empty-user-agent".into()]);
    }
    let lower = ua.to_ascii_lowercase();
    match BOT_MARKERS.iter().find(|m| lower.contains(*m)) {
        Some(m) => (
            BOT_SCORE_PPM,
            vec![format!("bot-user-agent:{}", m.trim_end_matches('/'))],
        ),
        None => (0, Vec::new()),
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct FraudScorer {
    inputs: Vec<String>,
}

impl FraudScorer {
    pub fn new(inputs: Vec<String>) -> Self {
        FraudScorer { inputs }
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

    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        let (at_us, kind, id, (score_ppm, reasons)) = if let Some(c) = input.event::<Click>() {
            let s = score_user_agent(&c.user_agent);
            (c.at_us.to_native(), Kind::Click, c.click_id.as_str(), s)
        } else if let Some(c) = input.event::<Conversion>() {
            (
                c.at_us.to_native(),
                Kind::Conversion,
                c.conversion_id.as_str(),
                (0, Vec::new()),
            )
        } else {
            return Ok(()); // impressions and kinds this scorer does not judge
        };
        if score_ppm == 0 {
            return Ok(());
        }
        let action = if score_ppm >= BOT_SCORE_PPM {
            VerdictAction::Review
        } else {
            VerdictAction::Allow
        };
        out.push(Output::event(&FraudVerdict {
            at_us,
            subject_kind: kind as u16,
            subject_id: id.to_string(),
            score_ppm,
            reasons,
            action,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_user_agents_are_flagged_browsers_are_not() {
        assert_eq!(score_user_agent("").0, BOT_SCORE_PPM);
        assert_eq!(
            score_user_agent("curl/8.5.0").1,
            vec!["bot-user-agent:curl".to_string()]
        );
        assert_eq!(score_user_agent("Googlebot/2.1").0, BOT_SCORE_PPM);
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(score_user_agent(chrome), (0, vec![]));
    }
}
