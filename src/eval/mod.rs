//! Evaluation: ground truth of a split's target rows, exact ranking metrics
//! ([`metrics`]), the classic baselines ([`baselines`]), result tables
//! ([`report`]), paired A/B tests ([`compare`]) and SVG charts ([`plot`]).

pub mod baselines;
pub mod compare;
pub mod metrics;
pub mod plot;
pub mod report;
pub mod stats;

use crate::data::Dataset;
pub use metrics::{Accumulator, Metrics, Truth};

/// The customers scored on a target period and what each bought there.
pub struct Targets {
    pub users: Vec<u32>,
    pub truth: Vec<Truth>,
}

impl Targets {
    /// Groups target rows by customer; customers appear in first-row order.
    pub fn from_rows(ds: &Dataset, rows: &[usize]) -> Self {
        let mut slot: Vec<u32> = vec![u32::MAX; ds.users.len()];
        let mut users = Vec::new();
        let mut pairs: Vec<Vec<(u32, f64)>> = Vec::new();
        for &r in rows {
            let u = ds.inter.user[r];
            if slot[u as usize] == u32::MAX {
                slot[u as usize] = users.len() as u32;
                users.push(u);
                pairs.push(Vec::new());
            }
            pairs[slot[u as usize] as usize].push((ds.inter.item[r], ds.inter.price[r] as f64));
        }
        Targets {
            users,
            truth: pairs.into_iter().map(Truth::new).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Scores `recommend(user, k, out)` on every target customer at each k.
pub fn evaluate(
    targets: &Targets,
    ks: &[usize],
    n_items: usize,
    mut recommend: impl FnMut(u32, usize, &mut Vec<u32>),
) -> Vec<Metrics> {
    let k_max = ks.iter().copied().max().unwrap_or(0);
    let mut accs: Vec<Accumulator> = ks.iter().map(|&k| Accumulator::new(k, n_items)).collect();
    let mut buf = Vec::with_capacity(k_max);
    for (u, truth) in targets.users.iter().zip(&targets.truth) {
        buf.clear();
        recommend(*u, k_max, &mut buf);
        for a in &mut accs {
            a.add(truth, &buf);
        }
    }
    accs.iter().map(Accumulator::finish).collect()
}
