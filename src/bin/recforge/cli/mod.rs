//! One file per command group; each command is an `Args` struct and a
//! function that calls one library function and prints its summary.

pub mod data;
pub mod evaluate;
pub mod run;
pub mod submit;
pub mod train;
