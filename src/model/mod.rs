//! burn models.

pub mod sasrec;

pub use sasrec::{SasRec, SasRecConfig};
