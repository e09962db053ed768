//! The second stage's features. The typed registry ([`Feature`], its
//! [`Group`]s) and the [`Context`] the rows are computed from live in
//! `recforge_infer::rank::features`, so the trainer's evaluation and every
//! serving path compute the same rows; the trainer fits the context on a
//! dataset cut with `split::before` (`Context::fit(&past.log(), day)`).

pub use recforge_infer::rank::Attr;
pub use recforge_infer::rank::features::*;
