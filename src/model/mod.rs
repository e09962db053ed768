//! burn models.

pub mod dropout;
pub mod encoder;
pub mod sasrec;
pub mod two_tower;

pub use sasrec::{SasRec, SasRecConfig};
pub use two_tower::{TwoTower, TwoTowerConfig};
