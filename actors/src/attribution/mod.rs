//! Attribution: which partners a conversion's credit goes to, and by how much.
//!
//! * [`journeys`]: each person's touches (clicks; impressions when the campaign counts
//!   them) per campaign, linked by the visitor cookie, the fingerprint (never for opted-out
//!   visitors) and the merchant's `customer_id`, inside the campaign's lookback window;
//!   bounded per journey and in total. Journeys that end unconverted train the models.
//! * [`models`]: the pure models: six rules (last click, first click, linear, time decay,
//!   position-based, W-shaped), the Markov chain with removal effects (order 1-4, solved
//!   exactly) and Shapley values of the conversion-rate game; ChannelAttribution's
//!   grouped-journeys format.
//! * [`credit`]: a converting journey and a model to touch weights (integer ppm adding up
//!   to exactly 1,000,000), shared by the actor and the comparison report.
//! * [`processor`]: the journal shell. Every attributed conversion becomes an
//!   [`AttributionV3`](clicktrail_storage::schema::AttributionV3) naming the model and its
//!   version, with the whole journey; every fit of a data-driven model an
//!   [`AttributionModelFit`](clicktrail_storage::schema::AttributionModelFit) (versioned
//!   per campaign and model; a campaign may pin a version; a refit never rewrites what
//!   was credited).
//! * [`view`]: the read model the HTTP layer queries (fitted models, figures) and the
//!   queue of fits asked for over the API.
//! * [`config`]: the `attribution` section of the configuration.
//!
//! A conversion is attributed when it names a click (matched by click id, cookie or
//! fingerprint at the edge); unmatched conversions are kept and reported as unattributed,
//! as before. The converting path is the person's journey up to that click; a click the
//! store does not hold (evicted, or made on another node) is the path's last touch.
//! Conversions of the campaign's `lead-event` are credited on their own and mark the lead
//! for W-shaped; they do not end the journey and do not train the models.

pub mod config;
pub mod credit;
pub mod journeys;
pub mod models;
pub mod processor;
pub mod view;

pub use config::AttributionConfig;
pub use processor::AttributionProcessor;
pub use view::{FitRequest, SharedAttribution};

/// The full weight of a conversion, in parts per million.
pub const WEIGHT_WHOLE_PPM: u32 = 1_000_000;
