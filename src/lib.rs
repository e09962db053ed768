//! recforge: a trainer for neural recommender models.
//!
//! Data flows one way: [`ingest`] → [`split`] → (features/sequences → train)
//! → [`eval`] → export → infer. This crate holds the data side, the exact
//! metrics and the baselines; [`pipeline`] wires them into the CLI's commands.

pub mod baseline;
pub mod blend;
pub mod cache;
pub mod candidates;
pub mod compare;
pub mod data;
pub mod dates;
pub mod device;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod features;
pub mod fsutil;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod plot;
pub mod rank;
pub mod report;
pub mod resources;
pub mod rng;
pub mod run;
pub mod seq;
pub mod serve;
pub mod serving_data;
pub mod split;
pub mod submission;
pub mod submit;
pub mod synth;
pub mod train;

pub use error::{Error, Result};
/// Exact top-K selection, shared with the inference crate.
pub use recforge_infer::topk;
