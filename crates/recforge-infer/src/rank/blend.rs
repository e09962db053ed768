//! The linear second stage's scoring half: a logistic regression over each
//! candidate's ranker score, the sources that proposed it and a few simple
//! features, read off the full feature row. The trainer fits it (Newton's
//! method, corrected for the negative sampling); serving evaluates it here.

// Small dense formulas over the N inputs read as the textbook ones when
// indexed.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use super::features;
use super::sources::Source;

/// The features of one (customer, candidate) pair; a [`Row`] holds them in
/// this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    RankerScore,
    RankerLogSoftmax,
    FromRepurchase,
    FromPopular,
    FromAgePopular,
    FromCoPurchase,
    FromSameProduct,
    FromTwoTower,
    FromSasrec,
    TwoTowerReciprocalRank,
    OwnPurchases,
    OwnRecency,
    RecentSales,
    RelativeLnPrice,
    DaysOnSale,
}

impl Feature {
    /// Every feature, in row order.
    pub const ALL: [Feature; 15] = [
        Feature::RankerScore,
        Feature::RankerLogSoftmax,
        Feature::FromRepurchase,
        Feature::FromPopular,
        Feature::FromAgePopular,
        Feature::FromCoPurchase,
        Feature::FromSameProduct,
        Feature::FromTwoTower,
        Feature::FromSasrec,
        Feature::TwoTowerReciprocalRank,
        Feature::OwnPurchases,
        Feature::OwnRecency,
        Feature::RecentSales,
        Feature::RelativeLnPrice,
        Feature::DaysOnSale,
    ];

    /// What the report calls it (and how it is computed).
    pub fn name(self) -> &'static str {
        match self {
            Feature::RankerScore => "ranker score",
            Feature::RankerLogSoftmax => "ranker log-softmax over the candidates",
            Feature::FromRepurchase => "source: repurchase",
            Feature::FromPopular => "source: popular",
            Feature::FromAgePopular => "source: age-popular",
            Feature::FromCoPurchase => "source: co-purchase",
            Feature::FromSameProduct => "source: same-product",
            Feature::FromTwoTower => "source: two-tower",
            Feature::FromSasrec => "source: sasrec",
            Feature::TwoTowerReciprocalRank => "two-tower reciprocal rank",
            Feature::OwnPurchases => "ln(1 + own purchases of it)",
            Feature::OwnRecency => "own purchase recency: 0.5^(days / 14)",
            Feature::RecentSales => "ln(1 + its sales in the last 7 days)",
            Feature::RelativeLnPrice => "ln price - customer's mean ln price",
            Feature::DaysOnSale => "ln(1 + days since its first sale)",
        }
    }

    /// The flag that says `source` proposed the candidate.
    pub fn flag(source: Source) -> Feature {
        match source {
            Source::Repurchase => Feature::FromRepurchase,
            Source::Popular => Feature::FromPopular,
            Source::AgePopular => Feature::FromAgePopular,
            Source::CoPurchase => Feature::FromCoPurchase,
            Source::SameProduct => Feature::FromSameProduct,
            Source::TwoTower => Feature::FromTwoTower,
            Source::Sasrec => Feature::FromSasrec,
        }
    }

    /// Its slot in a [`Row`].
    pub const fn slot(self) -> usize {
        self as usize
    }
}

pub const N: usize = Feature::ALL.len();

pub type Row = [f32; N];

/// The blender's inputs, read off a candidate's full feature row (the
/// registry's missing values become the neutral 0 a linear model needs).
pub fn inputs(f: &features::Row) -> Row {
    use features::Feature as F;
    let get = |x: F| f[x.slot()];
    let or0 = |v: f32| if v.is_finite() { v } else { 0.0 };
    let mut r = [0.0f32; N];
    r[Feature::RankerScore.slot()] = get(F::SasrecScore);
    r[Feature::RankerLogSoftmax.slot()] = get(F::SasrecLogSoftmax);
    for source in Source::ALL {
        r[Feature::flag(source).slot()] = f32::from(u8::from(get(F::rank_of(source)).is_finite()));
    }
    r[Feature::TwoTowerReciprocalRank.slot()] = or0(1.0 / get(F::RankTwoTower));
    r[Feature::OwnPurchases.slot()] = get(F::OwnCountAll).ln_1p();
    r[Feature::OwnRecency.slot()] = or0(0.5f32.powf(get(F::OwnDaysSince) / 14.0));
    r[Feature::RecentSales.slot()] = get(F::Sales7).ln_1p();
    r[Feature::RelativeLnPrice.slot()] = or0(get(F::PriceGap));
    r[Feature::DaysOnSale.slot()] = or0(get(F::DaysOnSale).max(0.0).ln_1p());
    r
}

/// A fitted logistic regression on standardised features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blender {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// Coefficients of the standardised features.
    pub weights: Vec<f64>,
    /// Corrected for the negative sampling rate.
    pub intercept: f64,
    pub rows: usize,
    pub positives: usize,
}

impl Blender {
    /// The log-odds of a purchase.
    pub fn logit(&self, r: &Row) -> f64 {
        let mut s = self.intercept;
        for j in 0..N {
            if self.scale[j] > 0.0 {
                s += self.weights[j] * (r[j] as f64 - self.mean[j]) / self.scale[j];
            }
        }
        s
    }

    /// ln P(purchase).
    pub fn log_prob(&self, r: &Row) -> f64 {
        let eta = self.logit(r);
        // -ln(1 + e^-eta), stable both ways.
        -((-eta).max(0.0) + (-eta.abs()).exp().ln_1p())
    }

    /// The coefficients as a Markdown table (per standard deviation of
    /// each feature, so their sizes compare).
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Logistic regression fitted on {} candidate rows ({} bought) of the week before the test week; \
coefficients per standard deviation of each feature.\n\n| feature | coefficient | mean | sd |\n|---|---:|---:|---:|\n",
            self.rows, self.positives
        );
        for j in 0..N {
            s += &format!(
                "| {} | {:+.3} | {:.3} | {:.3} |\n",
                Feature::ALL[j].name(),
                self.weights[j],
                self.mean[j],
                self.scale[j]
            );
        }
        s += &format!("| intercept | {:+.3} | | |\n", self.intercept);
        s
    }
}
