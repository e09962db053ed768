//! recforge-infer: serving recforge models on the CPU, without burn or polars.
//!
//! A trained model arrives as a bundle (`model.safetensors` +
//! `manifest.json`, see `models/README.md`). [`Bundle::load`] checks it
//! against its manifest; [`SasRecModel`] and [`TwoTowerModel`] run the
//! forward passes with the same math as burn's layers; [`ItemPool`] holds
//! the servable items and takes new, sold-out and removed articles while
//! readers keep going; [`ItemIndex`] finds exact top-K lists; [`Engine`]
//! puts them together: one bundle, its pool, and the query a customer's
//! history and attributes make, for every serving path. [`rank`] holds the
//! whole two-stage system: candidate sources, the second stage's features
//! and scorers, the [`rank::engine::RankingEngine`] that runs them, and the
//! ranking bundle ([`rank::bundle`]) that ships it.
//!
//! The trainer uses the same code for its retrieval evaluation, so what is
//! measured in training is what is served.

pub mod bernoulli;
pub mod bundle;
pub mod dates;
pub mod engine;
pub mod nn;
pub mod pool;
mod quant;
mod quickscorer;
pub mod rank;
pub mod retrieve;
pub mod sasrec;
pub mod topk;
pub mod towers;
pub mod trees;

use std::path::PathBuf;

pub use bundle::{Bundle, Manifest};
pub use engine::{Engine, Objective};
pub use pool::{ItemPool, PoolSnapshot};
pub use retrieve::ItemIndex;
pub use sasrec::SasRecModel;
pub use towers::TwoTowerModel;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bundle that does not match its manifest, or a manifest this
    /// version cannot read.
    #[error("bundle {}: {msg}", dir.display())]
    Bundle { dir: PathBuf, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
