//! Each customer's purchases in time order: the one per-customer history
//! that SASRec's windows, the two-tower samples, the baselines, the
//! candidate sources and serving all read.

use crate::data::Dataset;

/// Every customer's purchases (item, day, price, channel), in time order, stored as
/// one flat array per field with per-customer offsets (CSR), so a
/// customer's history is two slice bounds.
#[derive(Debug, Clone)]
pub struct History {
    off: Vec<usize>,
    items: Vec<u32>,
    days: Vec<i64>,
    prices: Vec<f32>,
    channels: Vec<u8>,
}

impl History {
    /// The purchases in `rows`, which must be in time order (as `split`
    /// returns them); ties keep their order in `rows`.
    pub fn build(ds: &Dataset, rows: &[usize]) -> Self {
        let n = ds.users.len();
        let mut off = vec![0usize; n + 1];
        for &r in rows {
            off[ds.inter.user[r] as usize + 1] += 1;
        }
        for u in 0..n {
            off[u + 1] += off[u];
        }
        let mut fill = off.clone();
        let mut items = vec![0u32; rows.len()];
        let mut days = vec![0i64; rows.len()];
        let mut prices = vec![0f32; rows.len()];
        let mut channels = vec![0u8; rows.len()];
        for &r in rows {
            let u = ds.inter.user[r] as usize;
            items[fill[u]] = ds.inter.item[r];
            days[fill[u]] = ds.day(r);
            prices[fill[u]] = ds.inter.price[r];
            channels[fill[u]] = ds.inter.channel[r];
            fill[u] += 1;
        }
        History {
            off,
            items,
            days,
            prices,
            channels,
        }
    }

    /// Every purchase of the dataset, in time order.
    pub fn of_all(ds: &Dataset) -> Self {
        Self::build(ds, &crate::data::split::time_order(ds))
    }

    /// Customers (dense ids 0..n, 0 the padding entry).
    pub fn n_users(&self) -> usize {
        self.off.len() - 1
    }

    /// The slice bounds of `user`'s purchases; empty for an id beyond the
    /// dataset's customers.
    fn range(&self, user: u32) -> std::ops::Range<usize> {
        let u = user as usize;
        if u + 1 >= self.off.len() {
            return 0..0;
        }
        self.off[u]..self.off[u + 1]
    }

    pub fn items(&self, user: u32) -> &[u32] {
        &self.items[self.range(user)]
    }

    pub fn days(&self, user: u32) -> &[i64] {
        &self.days[self.range(user)]
    }

    pub fn prices(&self, user: u32) -> &[f32] {
        &self.prices[self.range(user)]
    }

    pub fn channels(&self, user: u32) -> &[u8] {
        &self.channels[self.range(user)]
    }

    /// Mean price over every purchase with one, for normalising revenue
    /// weights (1 when none has a price).
    pub fn mean_price(&self) -> f64 {
        let (s, n) = self
            .prices
            .iter()
            .filter(|p| **p > 0.0)
            .fold((0.0f64, 0usize), |(s, n), &p| (s + p as f64, n + 1));
        if n == 0 { 1.0 } else { s / n as f64 }
    }

    /// All of a customer's purchases: (items, days).
    pub fn all(&self, user: u32) -> (&[u32], &[i64]) {
        let r = self.range(user);
        (&self.items[r.clone()], &self.days[r])
    }

    /// What was known when serving on `day`: the purchases strictly before
    /// it (same-day purchases are the basket being predicted, never its
    /// context), as (items, days).
    pub fn as_of(&self, user: u32, day: i64) -> (&[u32], &[i64]) {
        let r = self.range(user);
        let end = r.start + self.days[r.clone()].partition_point(|&d| d < day);
        (&self.items[r.start..end], &self.days[r.start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::tests::toy;

    #[test]
    fn histories_keep_time_order_and_as_of_excludes_the_day_itself() {
        // Customer 1 buys on days 0, 2, 2 and 5 (rows out of time order);
        // customer 2 on day 1.
        let ds = toy(
            &[1, 2, 1, 1, 1],
            &[3, 4, 5, 6, 7],
            &[2, 1, 0, 5, 2],
            crate::data::TimeUnit::Day,
        );
        let h = History::of_all(&ds);
        for u in 1..ds.users.len() as u32 {
            let days = h.days(u);
            assert!(
                days.windows(2).all(|w| w[0] <= w[1]),
                "customer {u}: {days:?}"
            );
            assert_eq!(h.items(u).len(), days.len());
            assert_eq!(h.prices(u).len(), days.len());
            if let Some(&last) = days.last() {
                let (items, before) = h.as_of(u, last);
                assert!(before.iter().all(|&d| d < last));
                assert_eq!(items.len(), days.iter().filter(|&&d| d < last).count());
                assert_eq!(h.as_of(u, last + 1).0, h.items(u));
            }
        }
        assert_eq!(h.items(1), &[5, 3, 7, 6], "time order, ties in row order");
        assert_eq!(h.as_of(1, 2).0, &[5]);
        assert_eq!(h.as_of(1, 3).0, &[5, 3, 7]);
        assert!(
            h.items(ds.users.len() as u32 + 5).is_empty(),
            "unknown ids have none"
        );
    }
}
