//! Payout scheduler: reads the ledger and will write payout batches, intents and provider
//! results to `payouts` (Stripe Connect, PayPal, Wise; the payouts issue). It has nothing to
//! schedule until the ledger posts entries.

use crate::worker::{Output, Processor};
use clicktrail_storage::Record;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Scheduler;

impl Processor for Scheduler {
    fn name(&self) -> &str {
        "payout-scheduler"
    }

    fn inputs(&self) -> Vec<String> {
        vec![crate::system::LEDGER.into()]
    }

    fn output(&self) -> String {
        crate::system::PAYOUTS.into()
    }

    fn process(&mut self, _input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        Ok(())
    }
}
