//! The fraud evaluation harness (see `traffic` for the model, `metrics` for the measures).
pub mod metrics;
pub mod traffic;
