//! Commission ledger: reads attributions and will write double-entry ledger entries to
//! `ledger`. Commission plans (flat, percentage, tiered, recurring, bonus) arrive with the
//! commission issue; until then there is no plan to apply, so it writes nothing, but it
//! runs, tails its input and resumes under supervision like every other concern.

pub mod commission;

use crate::worker::{Output, Processor};
use clicktrail_storage::Record;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Ledger;

impl Processor for Ledger {
    fn name(&self) -> &str {
        "commission-ledger"
    }

    fn inputs(&self) -> Vec<String> {
        vec![crate::system::ATTRIBUTIONS.into()]
    }

    fn output(&self) -> String {
        crate::system::LEDGER.into()
    }

    fn process(&mut self, _input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        Ok(())
    }
}
