//! recforge: a trainer for neural recommender models.
//!
//! ```text
//!  raw files ──ingest──▶ Dataset ──split──▶ train / validation / test rows
//!                          │                        │
//!                          │               features (item codes, windows,
//!                          │                 two-tower samples)
//!                          │                        │
//!                          │                  model + train ──▶ run directory
//!                          │                        │
//!                          └──▶ eval (metrics, baselines) ◀──┘
//!                                                   │
//!                              export ──▶ bundle (served by recforge-infer)
//!                                                   │
//!                 rank (candidate sources → ranker score → second stage)
//!                                                   │
//!                                submit ──▶ checked Kaggle file
//! ```
//!
//! Modules are listed in the order data flows; each imports only modules
//! above it.
//! - [`util`]: atomic files, seeded random streams, calendar days, resources.
//! - [`data`]: the in-memory dataset every stage reads, the one
//!   per-customer purchase history, time splits, the cache.
//! - [`ingest`]: raw files (H&M CSVs, RecBole atomic files) into a dataset,
//!   and the synthetic H&M generator.
//! - [`eval`]: exact metrics, the classic baselines, result tables, paired
//!   A/B tests and charts. It comes before the models because every later
//!   stage is measured with it (validation, reports, A/B).
//! - [`config`]: experiment files (naming a split, a metric, a device) and
//!   the device a run uses.
//! - [`features`]: what models consume: item feature codes, SASRec windows,
//!   two-tower samples and customer inputs.
//! - [`model`]: the burn models, SASRec and the two-tower model.
//! - [`train`]: the shared training loop (epochs, validation, checkpoints,
//!   TensorBoard, resume) and each model's task.
//! - [`export`]: run directories into bundles, and serving bundles on a
//!   dataset through the inference crate.
//! - [`rank`]: candidate sources, the second-stage blender and the ranking
//!   of a test period.
//! - [`submit`]: Kaggle submissions from a bundle, the one file writer and
//!   checker.
//! - [`pipeline`]: `recforge run`'s content-hashed steps, and the CLI's
//!   other commands as library functions.

pub mod error;
pub mod util;

pub mod data;
pub mod ingest;

pub mod eval;

pub mod config;

pub mod features;

pub mod model;
pub mod train;

pub mod export;

pub mod rank;
pub mod submit;

pub mod pipeline;

pub use error::{Error, Result};
/// Exact top-K selection, shared with the inference crate.
pub use recforge_infer::topk;
