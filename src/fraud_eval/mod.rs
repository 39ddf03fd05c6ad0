//! placeholder (design doc below, written after the first measurements)
pub mod metrics;
pub mod run;
pub mod traffic;

pub use run::{run, Options};
