//! The two-stage ranking system's serving half: candidate sources
//! ([`sources`]), the second stage's features ([`features`]) and its linear
//! scorer ([`blend`]), fitted from a purchase log and kept as plain state,
//! so the trainer's evaluation and every serving path run the same code.
//!
//! The trainer fits this state on the rows before the day it serves (its
//! evaluation weeks, its submission) by lending its dataset's columns as a
//! [`Log`]; a server can refit the popularity lists and article statistics
//! from a newer log the same way, without retraining any model.

pub mod blend;
pub mod bundle;
pub mod engine;
pub mod features;
pub mod second;
pub mod sources;

/// Upper edges of the customer age buckets (the popularity-by-age source,
/// its feature and the two-tower age feature share them).
pub const AGE_BUCKETS: [f32; 6] = [20.0, 25.0, 30.0, 40.0, 50.0, 60.0];

/// The age bucket of `age` in years: `0..=AGE_BUCKETS.len()` for a known
/// age, `AGE_BUCKETS.len() + 1` for an unknown one (NaN).
pub fn age_bucket(age: f32) -> usize {
    if age.is_nan() {
        return AGE_BUCKETS.len() + 1;
    }
    AGE_BUCKETS
        .iter()
        .position(|&b| age < b)
        .unwrap_or(AGE_BUCKETS.len())
}

/// Age buckets including the unknown one (a per-bucket table's length).
pub const BUCKETS: usize = AGE_BUCKETS.len() + 2;

/// An article attribute the customer × category features count over and
/// the same-product source groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    ProductCode,
    ProductType,
    Department,
    Colour,
}

impl Attr {
    pub const ALL: [Attr; 4] = [
        Attr::ProductCode,
        Attr::ProductType,
        Attr::Department,
        Attr::Colour,
    ];

    /// The H&M articles column it reads.
    pub fn column(self) -> &'static str {
        match self {
            Attr::ProductCode => "product_code",
            Attr::ProductType => "product_type_no",
            Attr::Department => "department_no",
            Attr::Colour => "colour_group_code",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A purchase log, column-wise, as the ranking state is fitted on: row `r`
/// is one purchase. Items are dense ids `1..n_items` (0 is padding), the
/// id space every list and table of this module uses.
#[derive(Debug, Clone, Copy)]
pub struct Log<'a> {
    pub user: &'a [u32],
    pub item: &'a [u32],
    /// Timestamps, `per_day` units per day.
    pub time: &'a [i64],
    pub per_day: i64,
    /// Price paid (0 or NaN: unknown).
    pub price: &'a [f32],
    /// Sales channel (H&M: 1 store, 2 online).
    pub channel: &'a [u8],
    /// Per customer: age in years (NaN: unknown).
    pub age: &'a [f32],
    pub n_items: usize,
    /// Per [`Attr`] (by [`Attr::index`]): each item's code (0 = unknown),
    /// or None where the catalogue lacks the column.
    pub attrs: [Option<&'a [u32]>; 4],
}

impl Log<'_> {
    /// The day of row `r`.
    pub fn day(&self, r: usize) -> i64 {
        self.time[r].div_euclid(self.per_day)
    }

    pub fn len(&self) -> usize {
        self.item.len()
    }

    pub fn is_empty(&self) -> bool {
        self.item.is_empty()
    }

    /// Customer `u`'s age (NaN: unknown or beyond the table).
    pub fn age_of(&self, u: u32) -> f32 {
        self.age.get(u as usize).copied().unwrap_or(f32::NAN)
    }

    /// Every item's code of `attr` (zeros where the catalogue lacks it).
    pub fn attr(&self, attr: Attr) -> Vec<u32> {
        self.attrs[attr.index()]
            .map(<[u32]>::to_vec)
            .unwrap_or_else(|| vec![0; self.n_items])
    }
}

/// One customer as the ranking system receives them: purchases before the
/// served day, oldest first, with their days and channels, and their age.
#[derive(Debug, Clone, Copy)]
pub struct CustomerHistory<'a> {
    pub items: &'a [u32],
    pub days: &'a [i64],
    /// Aligned with `items`, or empty when the channel is unknown.
    pub channels: &'a [u8],
    /// Age in years (NaN: unknown).
    pub age: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_buckets() {
        assert_eq!(age_bucket(19.0), 0);
        assert_eq!(age_bucket(25.0), 2);
        assert_eq!(age_bucket(80.0), 6);
        assert_eq!(age_bucket(f32::NAN), 7);
        assert_eq!(BUCKETS, 8);
    }
}
