//! Train/validation/test splits over a dataset's interaction rows.
//!
//! Rows are ordered by time; rows with equal time keep file order (a stable
//! sort), so "last" and "second to last" are well defined for ties.

use crate::data::{Dataset, Part};
use crate::error::{Error, Result};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SplitKind {
    /// H&M style: the last `target_days` days are the test period, the
    /// `target_days` before them validation, everything earlier training.
    LastWeek,
    /// RecBole leave-one-out: per user, the last interaction is test, the
    /// second-to-last validation (at least one stays in training).
    Loo,
    /// The files the user gave: `.train/.valid/.test.inter` or
    /// `transactions_{valid,test}.csv` next to the training log.
    Explicit,
}

impl SplitKind {
    /// The name configs and file names use.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::LastWeek => "last-week",
            SplitKind::Loo => "loo",
            SplitKind::Explicit => "explicit",
        }
    }
}

/// Row indices (into `Dataset::inter`) of each part, each in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub kind: SplitKind,
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    pub test: Vec<usize>,
    /// First day of the test period (last-week split), for time-aware baselines.
    pub test_start_day: Option<i64>,
}

impl Split {
    /// Everything known before the test period: train + validation.
    pub fn history(&self) -> Vec<usize> {
        let mut h = self.train.clone();
        h.extend_from_slice(&self.valid);
        h
    }
}

/// Row indices sorted by time, ties in file order.
pub fn time_order(ds: &Dataset) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..ds.inter.len()).collect();
    rows.sort_by_key(|&r| ds.inter.time[r]);
    rows
}

/// The rows of each part of `kind` (time order within each), with the
/// first test day for time splits.
// One arm per split kind, each short; kept in one match so the three
// definitions read side by side.
pub fn split(ds: &Dataset, kind: SplitKind, target_days: u32) -> Result<Split> {
    let order = time_order(ds);
    let empty = |what: &str| {
        Error::Data(format!(
            "the {what} split leaves a part empty on `{}`",
            ds.meta.name
        ))
    };
    let mut s = Split {
        kind,
        train: vec![],
        valid: vec![],
        test: vec![],
        test_start_day: None,
    };
    match kind {
        SplitKind::LastWeek => {
            if target_days == 0 {
                return Err(Error::Config("target_days must be at least 1".into()));
            }
            let last = order
                .last()
                .map(|&r| ds.day(r))
                .ok_or_else(|| empty("last-week"))?;
            let test_start = last - target_days as i64 + 1;
            let valid_start = test_start - target_days as i64;
            for r in order {
                let d = ds.day(r);
                if d >= test_start {
                    s.test.push(r)
                } else if d >= valid_start {
                    s.valid.push(r)
                } else {
                    s.train.push(r)
                }
            }
            s.test_start_day = Some(test_start);
            if s.train.is_empty() || s.test.is_empty() {
                return Err(empty("last-week"));
            }
        }
        SplitKind::Loo => {
            let mut per_user: Vec<Vec<usize>> = vec![Vec::new(); ds.users.len()];
            for r in order {
                per_user[ds.inter.user[r] as usize].push(r);
            }
            for rows in per_user {
                // As RecBole: hold out up to two, but never a user's only row.
                let held = 2.min(rows.len().saturating_sub(1));
                let cut = rows.len() - held;
                s.train.extend_from_slice(&rows[..cut]);
                match held {
                    2 => {
                        s.valid.push(rows[cut]);
                        s.test.push(rows[cut + 1]);
                    }
                    1 => s.test.push(rows[cut]),
                    _ => {}
                }
            }
            let key = |r: &usize| (ds.inter.time[*r], *r);
            s.train.sort_by_key(key);
            s.valid.sort_by_key(key);
            s.test.sort_by_key(key);
            if s.test.is_empty() {
                return Err(empty("leave-one-out"));
            }
        }
        SplitKind::Explicit => {
            if !ds.meta.explicit_split {
                return Err(Error::Data(format!(
                    "`{}` has no explicit split files (.train/.valid/.test.inter or transactions_test.csv)",
                    ds.meta.name
                )));
            }
            for r in order {
                match ds.inter.part[r] {
                    p if p == Part::Valid as u8 => s.valid.push(r),
                    p if p == Part::Test as u8 => s.test.push(r),
                    _ => s.train.push(r),
                }
            }
            if s.test.is_empty() {
                return Err(empty("explicit"));
            }
        }
    }
    Ok(s)
}

/// The day of the latest purchase (None: no purchases).
pub fn last_day(ds: &Dataset) -> Option<i64> {
    (0..ds.inter.len()).map(|r| ds.day(r)).max()
}

/// Interaction rows before `day` only: what was known when serving on it.
pub fn before(ds: &Dataset, day: i64) -> Dataset {
    let mut past = ds.clone();
    let keep: Vec<bool> = (0..ds.inter.len()).map(|r| ds.day(r) < day).collect();
    let it = &mut past.inter;
    macro_rules! retain {
        ($($f:ident),*) => {$({
            let mut k = keep.iter();
            it.$f.retain(|_| *k.next().expect("aligned"));
        })*};
    }
    retain!(user, item, time, price, channel, part);
    past.meta.n_interactions = past.inter.len();
    past
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::*;

    pub fn toy(users: &[u32], items: &[u32], times: &[i64], unit: TimeUnit) -> Dataset {
        let n_users = *users.iter().max().unwrap() as usize + 1;
        let n_items = *items.iter().max().unwrap() as usize + 1;
        let ent = |n: usize| Entities {
            ids: (0..n)
                .map(|i| {
                    if i == 0 {
                        String::new()
                    } else {
                        format!("{i}")
                    }
                })
                .collect(),
            features: vec![],
        };
        Dataset {
            meta: Meta {
                format_version: CACHE_FORMAT_VERSION,
                name: "toy".into(),
                source: Source::Recbole,
                time_unit: unit,
                has_price: false,
                explicit_split: false,
                n_users,
                n_items,
                n_interactions: users.len(),
            },
            users: ent(n_users),
            age: vec![f32::NAN; n_users],
            items: ent(n_items),
            inter: Interactions {
                user: users.to_vec(),
                item: items.to_vec(),
                time: times.to_vec(),
                price: vec![0.0; users.len()],
                channel: vec![0; users.len()],
                part: vec![0; users.len()],
            },
        }
    }

    #[test]
    fn loo_holds_out_last_two_with_ties_in_file_order() {
        // User 1: rows 0..4, rows 2 and 3 tie at time 5 → row 3 is "last".
        let ds = toy(
            &[1, 1, 1, 1, 2, 2],
            &[1, 2, 3, 4, 1, 2],
            &[1, 2, 5, 5, 1, 1],
            TimeUnit::Second,
        );
        let s = split(&ds, SplitKind::Loo, 7).unwrap();
        // User 2 has two rows: only one is held out (test), as RecBole does.
        assert_eq!(s.test, vec![5, 3]);
        assert_eq!(s.valid, vec![2]);
        assert_eq!(s.train, vec![0, 4, 1]);
    }

    #[test]
    fn last_week_uses_days() {
        let day = 86_400;
        let ds = toy(
            &[1, 1, 2, 2],
            &[1, 2, 1, 3],
            &[0, 20 * day, 13 * day, 14 * day],
            TimeUnit::Second,
        );
        let s = split(&ds, SplitKind::LastWeek, 7).unwrap();
        assert_eq!(s.test_start_day, Some(14));
        assert_eq!(s.test, vec![3, 1]);
        assert_eq!(s.valid, vec![2]);
        assert_eq!(s.train, vec![0]);
    }

    #[test]
    fn explicit_needs_files() {
        let ds = toy(&[1, 1], &[1, 2], &[0, 1], TimeUnit::Day);
        assert!(split(&ds, SplitKind::Explicit, 7).is_err());
    }
}
