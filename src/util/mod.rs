//! Helpers every stage uses: atomic files and directories, seeded random
//! streams, calendar days, and the wall-time/peak-memory report.

pub mod dates;
pub mod fsutil;
pub mod resources;
pub mod rng;
