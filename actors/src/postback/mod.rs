//! Postback dispatcher: reads conversions and ledger entries and will deliver signed
//! postbacks, writing every attempt to `postback-attempts` (the postbacks issue). With no
//! postback configured yet there is nothing to deliver.

use crate::worker::{Output, Processor};
use clicktrail_storage::Record;

/// See the module docs.
#[derive(Debug)]
pub struct Dispatcher {
    inputs: Vec<String>,
}

impl Dispatcher {
    pub fn new(mut ingest: Vec<String>) -> Self {
        ingest.push(crate::system::LEDGER.into());
        Dispatcher { inputs: ingest }
    }
}

impl Processor for Dispatcher {
    fn name(&self) -> &str {
        "postback-dispatcher"
    }

    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn output(&self) -> String {
        crate::system::POSTBACK_ATTEMPTS.into()
    }

    fn process(&mut self, _input: &Record<'_>, _out: &mut Vec<Output>) -> Result<(), String> {
        Ok(())
    }
}
