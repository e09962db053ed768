//! `recforge submit --bundle` with a ranking bundle: the whole two-stage
//! system the bundle holds (candidate sources → features → second stage),
//! for every customer of the data, as of the bundle's day.

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;

use recforge_infer::rank::CustomerHistory;
use recforge_infer::rank::bundle::RankingBundle;
use recforge_infer::rank::engine::{Prepared, RankCustomer};

use crate::data::Dataset;
use crate::data::history::History;
use crate::error::{Error, Result};
use crate::export::serve::UserCodes;
use crate::submit::{SubmitOptions, SubmitReport, file};

/// A customer's purchases translated into the bundle's item ids (articles
/// the bundle does not know are left out).
struct Owned {
    items: Vec<u32>,
    days: Vec<i64>,
    channels: Vec<u8>,
    age: f32,
    codes: Vec<u32>,
}

/// The bundle's data-side translation: dataset items to bundle items and
/// back, and the two-tower customer codes.
pub struct Translation {
    to_bundle: Vec<u32>,
    to_data: Vec<u32>,
    user_codes: Option<UserCodes>,
}

impl Translation {
    pub fn new(b: &RankingBundle, ds: &Dataset) -> Self {
        let index: HashMap<&str, u32> = b
            .articles
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, a)| (a.as_str(), i as u32))
            .collect();
        let to_bundle: Vec<u32> = ds
            .items
            .ids
            .iter()
            .map(|a| index.get(a.as_str()).copied().unwrap_or(u32::MAX))
            .collect();
        let mut to_data = vec![u32::MAX; b.articles.len()];
        for (di, &bi) in to_bundle.iter().enumerate().skip(1) {
            if bi != u32::MAX {
                to_data[bi as usize] = di as u32;
            }
        }
        let user_codes = b
            .engine
            .retrieval
            .as_ref()
            .map(|r| UserCodes::new(&r.engine.bundle, ds));
        Translation {
            to_bundle,
            to_data,
            user_codes,
        }
    }

    fn customer(&self, ds: &Dataset, hist: &History, user: u32, day: i64) -> Owned {
        let (items, days) = hist.as_of(user, day);
        let channels = &hist.channels(user)[..items.len()];
        let mut o = Owned {
            items: Vec::with_capacity(items.len()),
            days: Vec::with_capacity(items.len()),
            channels: Vec::with_capacity(items.len()),
            age: ds.age.get(user as usize).copied().unwrap_or(f32::NAN),
            codes: self
                .user_codes
                .as_ref()
                .map_or_else(Vec::new, |c| c.codes(ds, user)),
        };
        for ((&i, &d), &c) in items.iter().zip(days).zip(channels) {
            let b = self.to_bundle.get(i as usize).copied().unwrap_or(u32::MAX);
            if b != u32::MAX {
                o.items.push(b);
                o.days.push(d);
                o.channels.push(c);
            }
        }
        o
    }

    /// The candidates and features of `users` as of the bundle's day.
    pub fn prepare(
        &self,
        b: &RankingBundle,
        ds: &Dataset,
        hist: &History,
        users: &[u32],
    ) -> Result<Vec<Prepared>> {
        Ok(self.prepared(b, ds, hist, users)?.0)
    }

    /// [`prepare`](Self::prepare), and how many customers had no purchase
    /// the bundle knows.
    fn prepared(
        &self,
        b: &RankingBundle,
        ds: &Dataset,
        hist: &History,
        users: &[u32],
    ) -> Result<(Vec<Prepared>, usize)> {
        let day = b.manifest.day;
        let owned: Vec<Owned> = users
            .iter()
            .map(|&u| self.customer(ds, hist, u, day))
            .collect();
        let cold = owned.iter().filter(|o| o.items.is_empty()).count();
        let customers: Vec<RankCustomer> = owned
            .iter()
            .map(|o| RankCustomer {
                history: CustomerHistory {
                    items: &o.items,
                    days: &o.days,
                    channels: &o.channels,
                    age: o.age,
                },
                codes: &o.codes,
            })
            .collect();
        Ok((b.engine.prepare(&customers, 0)?, cold))
    }

    /// The served lists of `users` (dataset ids in and out), as of the
    /// bundle's day, from their purchases in `hist` before it; and how many
    /// had no purchase the bundle knows.
    pub fn lists(
        &self,
        b: &RankingBundle,
        ds: &Dataset,
        hist: &History,
        users: &[u32],
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let (prepared, cold) = self.prepared(b, ds, hist, users)?;
        let scorer = b.served.scorer();
        // The second stage is half of a customer's time: on every core.
        let lists = prepared
            .par_iter()
            .map(|p| {
                b.engine
                    .order(p, scorer)
                    .into_iter()
                    .filter_map(|i| {
                        let d = *self.to_data.get(i as usize)?;
                        (d != u32::MAX).then_some(d)
                    })
                    .collect()
            })
            .collect();
        Ok((lists, cold))
    }
}

/// Writes the submission of the ranking bundle `opt.bundle` for every
/// customer of `ds`.
pub fn submit(opt: &SubmitOptions, ds: &Dataset, t0: Instant) -> Result<SubmitReport> {
    let b = RankingBundle::load(&opt.bundle)?;
    let hist = History::of_all(ds);
    let tr = Translation::new(&b, ds);
    let unavailable = mark_stale(&b, ds, opt.stale_days)?;
    if tr.to_data.iter().skip(1).all(|&d| d == u32::MAX) {
        return Err(Error::Data(format!(
            "{}: no article of the data is in the ranking bundle {}",
            opt.data.display(),
            opt.bundle.display()
        )));
    }
    let mut cold_n = 0;
    let check = file::write(ds, &opt.out, opt.chunk, opt.shard, |chunk| {
        let (lists, cold) = tr.lists(&b, ds, &hist, chunk)?;
        cold_n += cold;
        Ok(lists)
    })?;
    Ok(SubmitReport {
        customers: check.customers,
        cold_start: cold_n,
        new_articles: b.engine.ranker.new_articles,
        unavailable,
        seconds: t0.elapsed().as_secs_f64(),
        check,
    })
}

/// Marks articles with no sale in the `days` days before the bundle's day
/// (but some before) sold out in both model pools; returns how many.
fn mark_stale(b: &RankingBundle, ds: &Dataset, days: u32) -> Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let day = b.manifest.day;
    let mut last = vec![i64::MIN; ds.items.len()];
    for r in 0..ds.inter.len() {
        let d = ds.day(r);
        if d < day {
            let i = ds.inter.item[r] as usize;
            last[i] = last[i].max(d);
        }
    }
    let stale: Vec<&str> = (1..ds.items.len())
        .filter(|&i| last[i] != i64::MIN && last[i] < day - i64::from(days))
        .map(|i| ds.items.ids[i].as_str())
        .collect();
    let pools = std::iter::once(&b.engine.ranker).chain(b.engine.retrieval.as_ref());
    for engine in pools {
        engine.engine.pool.update(|s| {
            // An article this model's pool lacks has nothing to withhold.
            for a in &stale {
                if s.id_of(a).is_some() {
                    s.set_available(a, false)?;
                }
            }
            Ok(())
        })?;
    }
    Ok(stale.len())
}
