//! The clicktrail binary's library half: configuration, command line, the HTTP edge and the
//! wiring that starts the journal, the supervised actors and the server, and stops them.

pub mod api;
pub mod attribution_api;
pub mod attribution_cmd;
pub mod attribution_export;
pub mod cli;
pub mod config;
pub mod convert;
pub mod dead_letter_api;
pub mod edge;
pub mod fraud_api;
pub mod fraud_eval;
pub mod http;
pub mod import;
pub mod journal_cmd;
pub mod keys_cmd;
pub mod ledger_api;
pub mod metrics;
pub mod server;
