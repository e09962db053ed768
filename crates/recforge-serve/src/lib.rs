//! recforge-serve: an HTTP JSON server for recforge bundles.
//!
//! One process serves several clients (tenants), each with its own bundle
//! (and optionally a second one for an A/B test), on the burn-free
//! inference crate's [`Engine`]: a model bundle answers with its top K over
//! the pool, a ranking bundle with the whole two-stage system the trainer
//! evaluated (`source: "ranking"`). Recommendations read an `Arc` snapshot of the tenant's
//! models and item pool, so item updates and model reloads never block or
//! fail a request in flight. The API is described in `openapi.yaml`.

pub mod api;
pub mod attribution;
pub mod config;
pub mod http;
pub mod journal;
pub mod load;
pub mod metrics;
pub mod tenant;

use std::path::PathBuf;

pub use config::Config;
pub use http::{Server, StopSignals, start};
/// The serving engine, shared with the trainer's evaluation and submissions.
pub use recforge_infer::engine::{Engine, Purchase};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },
    #[error("{}, line {line}: {msg}", path.display())]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<recforge_infer::Error> for Error {
    fn from(e: recforge_infer::Error) -> Self {
        Error::Model(e.to_string())
    }
}

/// Reads a whole text file, naming it in the error.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
