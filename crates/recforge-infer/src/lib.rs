//! recforge-infer: serving-side computations of recforge models on the CPU.
//!
//! The trainer uses the same code for its evaluation, so what is measured in
//! training is what is served.

pub mod retrieve;
pub mod topk;

pub use retrieve::ItemIndex;

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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
