//! Attribution aggregator: turns each attributed conversion into an attribution record
//! (conversion -> weighted touchpoints, with the conversion's facts the ledger prices) in
//! `attributions`.
//!
//! Until the attribution issue brings multi-touch models, a conversion matched to a click
//! gets that one touchpoint with the whole weight (last click); unmatched conversions get
//! no attribution (they are kept and reported as unattributed).

pub mod models;

use crate::worker::{Output, Processor};
use clicktrail_storage::schema::{AttributionV2, Conversion, Touchpoint};
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
        out.push(Output::event(&AttributionV2 {
            at_us: c.at_us.to_native(),
            conversion_id: c.conversion_id.to_string(),
            model: "last-click".into(),
            touchpoints: vec![Touchpoint {
                click_id: click_id.to_string(),
                affiliate_id: affiliate_id.to_string(),
                at_us: c.occurred_at_us.to_native(),
                weight_ppm: WEIGHT_WHOLE_PPM,
            }],
            merchant_id: c.merchant_id.to_string(),
            campaign_id: c.campaign_id.to_string(),
            order_id: c.order_id.to_string(),
            event: c.event.to_string(),
            amount: clicktrail_storage::schema::Money {
                amount_minor: c.amount.amount_minor.to_native(),
                currency: clicktrail_storage::schema::Currency(c.amount.currency.0),
            },
            customer_id: c.customer_id.as_ref().map(|s| s.to_string()),
            occurred_at_us: c.occurred_at_us.to_native(),
        }));
        Ok(())
    }
}
