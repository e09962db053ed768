//! The classic baselines every model is compared with. All are fitted on a
//! set of history rows (never the target rows) and recommend per customer.

use serde::Serialize;

use recforge_infer::rank::sources::{self, Popularity, PopularityParams, RepurchaseParams};

use crate::data::Dataset;
use crate::data::history::History;
use crate::data::{AGE_BUCKETS, age_bucket};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Most bought items over the whole history ("most popular").
    Popular,
    /// Most bought items over the last `recent_days` of history.
    RecentPopular,
    /// Popularity with each purchase weighted by 0.5^(age / half-life).
    DecayedPopular,
    /// The customer's own recent purchases (recency- and frequency-weighted),
    /// then decayed popularity.
    RepurchasePopular,
    /// Decayed popularity among customers of the same age bucket.
    AgeBucketPopular,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Popular,
        Kind::RecentPopular,
        Kind::DecayedPopular,
        Kind::RepurchasePopular,
        Kind::AgeBucketPopular,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Popular => "popular",
            Kind::RecentPopular => "recent-popular",
            Kind::DecayedPopular => "decayed-popular",
            Kind::RepurchasePopular => "repurchase+popular",
            Kind::AgeBucketPopular => "age-bucket-popular",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Window of `recent-popular`, in days before the end of history.
    pub recent_days: i64,
    /// Half-life of the popularity decay, in days.
    pub half_life_days: f64,
    /// Only purchases this recent are repurchase candidates.
    pub repurchase_days: i64,
    /// Half-life of a past purchase's repurchase weight, in days.
    pub repurchase_half_life_days: f64,
    /// Drop items the customer already bought (not for repurchase, which is
    /// made of them).
    pub mask_seen: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            recent_days: 7,
            half_life_days: 7.0,
            repurchase_days: 28,
            repurchase_half_life_days: 14.0,
            mask_seen: false,
        }
    }
}

/// Baselines fitted on one history.
pub struct Fitted {
    params: Params,
    /// The popularity lists (shared with the candidate sources).
    pop: Popularity,
    user_bucket: Vec<u8>,
    /// The history fitted on (repurchase, masking, the candidates' own
    /// purchases).
    history: History,
}

impl Fitted {
    /// `rows` must be in time order (as `split` returns them).
    pub fn fit(ds: &Dataset, rows: &[usize], params: Params) -> Self {
        let pop = Popularity::fit(
            &ds.log(),
            rows,
            &PopularityParams {
                recent_days: params.recent_days,
                half_life_days: params.half_life_days,
            },
        );
        Fitted {
            pop,
            user_bucket: ds.age.iter().map(|&a| age_bucket(a) as u8).collect(),
            history: History::build(ds, rows),
            params,
        }
    }

    /// Serve with or without the customer's already-bought items.
    pub fn set_mask_seen(&mut self, mask: bool) {
        self.params.mask_seen = mask;
    }

    /// The popularity lists.
    pub fn popularity(&self) -> &Popularity {
        &self.pop
    }

    /// Every customer's purchases the baselines were fitted on.
    pub fn histories(&self) -> &History {
        &self.history
    }

    /// The customer's purchases in the fitted history, in time order:
    /// (items, days).
    pub fn history(&self, user: u32) -> (&[u32], &[i64]) {
        self.history.all(user)
    }

    /// The customer's own purchases of the last `repurchase_days`, best
    /// first by recency- and frequency-weighted score (ties by id).
    pub fn repurchase(&self, user: u32) -> Vec<u32> {
        let (items, days) = self.history(user);
        let p = RepurchaseParams {
            days: self.params.repurchase_days,
            half_life_days: self.params.repurchase_half_life_days,
        };
        sources::repurchase(items, days, self.pop.end_day, &p)
    }

    /// Fills `out` with up to `k` distinct items for `user`.
    pub fn recommend(&self, kind: Kind, user: u32, k: usize, out: &mut Vec<u32>) {
        out.clear();
        let seen: Vec<u32> = if self.params.mask_seen {
            let mut s: Vec<u32> = self.history(user).0.to_vec();
            s.sort_unstable();
            s.dedup();
            s
        } else {
            Vec::new()
        };
        let push_from = |list: &[u32], out: &mut Vec<u32>, masked: bool| {
            for &i in list {
                if out.len() >= k {
                    break;
                }
                if (masked && seen.binary_search(&i).is_ok()) || out.contains(&i) {
                    continue;
                }
                out.push(i);
            }
        };
        let pop = &self.pop;
        match kind {
            Kind::Popular => push_from(&pop.popular, out, true),
            Kind::RecentPopular => {
                push_from(&pop.recent, out, true);
                push_from(&pop.popular, out, true);
            }
            Kind::DecayedPopular => push_from(&pop.decayed, out, true),
            Kind::RepurchasePopular => {
                let list = self.repurchase(user);
                push_from(&list, out, false);
                push_from(&pop.decayed, out, true);
            }
            Kind::AgeBucketPopular => {
                let b = self
                    .user_bucket
                    .get(user as usize)
                    .copied()
                    .unwrap_or(AGE_BUCKETS.len() as u8 + 1);
                push_from(&pop.by_age[b as usize], out, true);
                push_from(&pop.decayed, out, true);
            }
        }
        // Tiny catalogues: never return fewer than k when items exist.
        push_from(&pop.popular, out, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TimeUnit;
    use crate::data::split::tests::toy;

    #[test]
    fn popularity_counts_history_and_breaks_ties_by_id() {
        let ds = toy(
            &[1, 2, 3, 1, 2],
            &[3, 3, 2, 2, 1],
            &[0, 1, 2, 3, 4],
            TimeUnit::Day,
        );
        let f = Fitted::fit(&ds, &[0, 1, 2, 3, 4], Params::default());
        let mut out = Vec::new();
        f.recommend(Kind::Popular, 1, 3, &mut out);
        assert_eq!(out, vec![2, 3, 1]);
    }

    #[test]
    fn repurchase_puts_own_recent_items_first_and_masking_hides_seen() {
        let ds = toy(
            &[1, 2, 2, 3, 3],
            &[1, 2, 2, 2, 3],
            &[10, 10, 10, 10, 10],
            TimeUnit::Day,
        );
        let f = Fitted::fit(&ds, &[0, 1, 2, 3, 4], Params::default());
        let mut out = Vec::new();
        f.recommend(Kind::RepurchasePopular, 1, 2, &mut out);
        assert_eq!(out, vec![1, 2]);
        let masked = Fitted::fit(
            &ds,
            &[0, 1, 2, 3, 4],
            Params {
                mask_seen: true,
                ..Params::default()
            },
        );
        masked.recommend(Kind::Popular, 2, 1, &mut out);
        assert_eq!(
            out,
            vec![1],
            "item 2 is the most popular but user 2 bought it"
        );
    }
}
