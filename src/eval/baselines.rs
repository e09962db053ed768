//! The classic baselines every model is compared with. All are fitted on a
//! set of history rows (never the target rows) and recommend per customer.

use serde::Serialize;

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

fn rank(scores: &[f64]) -> Vec<u32> {
    let mut items: Vec<u32> = (1..scores.len() as u32)
        .filter(|&i| scores[i as usize] > 0.0)
        .collect();
    // Ties broken by id so the order never depends on hashing or threads.
    items.sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    items
}

/// Baselines fitted on one history.
pub struct Fitted {
    params: Params,
    popular: Vec<u32>,
    recent: Vec<u32>,
    decayed: Vec<u32>,
    by_age: Vec<Vec<u32>>,
    user_bucket: Vec<u8>,
    /// The history fitted on (repurchase, masking, the candidates' own
    /// purchases).
    history: History,
    end_day: i64,
}

impl Fitted {
    /// `rows` must be in time order (as `split` returns them).
    pub fn fit(ds: &Dataset, rows: &[usize], params: Params) -> Self {
        let n_items = ds.items.len();
        let end_day = rows.iter().map(|&r| ds.day(r)).max().unwrap_or(0);
        let decay = |day: i64, half: f64| 0.5f64.powf((end_day - day) as f64 / half);
        let user_bucket: Vec<u8> = ds.age.iter().map(|&a| age_bucket(a) as u8).collect();
        let mut count = vec![0.0; n_items];
        let mut recent = vec![0.0; n_items];
        let mut decayed = vec![0.0; n_items];
        let mut by_age = vec![vec![0.0; n_items]; AGE_BUCKETS.len() + 2];
        for &r in rows {
            let (u, i, d) = (
                ds.inter.user[r] as usize,
                ds.inter.item[r] as usize,
                ds.day(r),
            );
            count[i] += 1.0;
            if d > end_day - params.recent_days {
                recent[i] += 1.0;
            }
            let w = decay(d, params.half_life_days);
            decayed[i] += w;
            by_age[user_bucket[u] as usize][i] += w;
        }
        Fitted {
            popular: rank(&count),
            recent: rank(&recent),
            decayed: rank(&decayed),
            by_age: by_age.iter().map(|s| rank(s)).collect(),
            user_bucket,
            history: History::build(ds, rows),
            end_day,
            params,
        }
    }

    /// Serve with or without the customer's already-bought items.
    pub fn set_mask_seen(&mut self, mask: bool) {
        self.params.mask_seen = mask;
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
        let mut own: Vec<(u32, f64)> = items
            .iter()
            .zip(days)
            .filter(|(_, d)| **d > self.end_day - self.params.repurchase_days)
            .map(|(&i, &d)| {
                (
                    i,
                    0.5f64.powf((self.end_day - d) as f64 / self.params.repurchase_half_life_days),
                )
            })
            .collect();
        own.sort_by_key(|p| p.0);
        let mut merged: Vec<(u32, f64)> = Vec::with_capacity(own.len());
        for (i, w) in own {
            match merged.last_mut() {
                Some(last) if last.0 == i => last.1 += w,
                _ => merged.push((i, w)),
            }
        }
        merged.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        merged.iter().map(|p| p.0).collect()
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
        match kind {
            Kind::Popular => push_from(&self.popular, out, true),
            Kind::RecentPopular => {
                push_from(&self.recent, out, true);
                push_from(&self.popular, out, true);
            }
            Kind::DecayedPopular => push_from(&self.decayed, out, true),
            Kind::RepurchasePopular => {
                let list = self.repurchase(user);
                push_from(&list, out, false);
                push_from(&self.decayed, out, true);
            }
            Kind::AgeBucketPopular => {
                let b = self
                    .user_bucket
                    .get(user as usize)
                    .copied()
                    .unwrap_or(AGE_BUCKETS.len() as u8 + 1);
                push_from(&self.by_age[b as usize], out, true);
                push_from(&self.decayed, out, true);
            }
        }
        // Tiny catalogues: never return fewer than k when items exist.
        push_from(&self.popular, out, false);
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

    #[test]
    fn age_buckets() {
        assert_eq!(age_bucket(19.0), 0);
        assert_eq!(age_bucket(25.0), 2);
        assert_eq!(age_bucket(80.0), 6);
        assert_eq!(age_bucket(f32::NAN), 7);
    }
}
