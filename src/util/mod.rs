//! Helpers every stage uses: atomic files and directories, seeded random
//! streams, calendar days, and the wall-time/peak-memory report.

/// Calendar days live in the inference crate, which the server shares.
pub use recforge_infer::dates;
pub mod fsutil;
pub mod progress;
pub mod resources;
pub mod rng;
