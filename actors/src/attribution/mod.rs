//! Attribution aggregator: turns each attributed conversion into an attribution record
//! (conversion -> weighted touchpoints) in `attributions`.
//!
//! Until the attribution issue brings multi-touch models, a conversion matched to a click
//! gets that one touchpoint with the whole weight (last click); unmatched conversions get
//! no attribution (they are kept and reported as unattributed).

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{Attribution, Conversion, Touchpoint};
use clicktrail_storage::{Record, RecordExt};

/// The full weight of a conversion, in parts per million.
pub const WEIGHT_WHOLE_PPM: u32 = 1_000_000;

/// See the module docs.
#[derive(Debug)]
pub struct Aggregator {
    inputs: Vec<String>,
}

impl Aggregator {
    pub fn new(inputs: Vec<String>) -> Self {
        Aggregator { inputs }
    }
}

impl Processor for Aggregator {
    fn name(&self) -> &str {
        "attribution-aggregator"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::ATTRIBUTIONS.into()
    }

    fn process(&mut self, input: &Record<'_>, out: &mut Vec<Output>) -> Result<(), String> {
        let Some(c) = input.event::<Conversion>() else {
            return Ok(());
        };
        let (Some(click_id), Some(affiliate_id)) = (c.click_id.as_ref(), c.affiliate_id.as_ref())
        else {
            return Ok(());
        };
        out.push(Output::event(&Attribution {
            at_us: c.at_us.to_native(),
            conversion_id: c.conversion_id.to_string(),
            model: "last-click".into(),
            touchpoints: vec![Touchpoint {
                click_id: click_id.to_string(),
                affiliate_id: affiliate_id.to_string(),
                at_us: c.occurred_at_us.to_native(),
                weight_ppm: WEIGHT_WHOLE_PPM,
            }],
        }));
        Ok(())
    }
}
