//! Week-by-week shopping simulation. Each week rebuilds one cumulative
//! weight table per (taste group, price class) over the whole catalogue;
//! every customer active that week shops in Poisson-many sessions. Only the
//! week's rows and a short purchase history per customer are held in memory,
//! so the full H&M size streams in bounded memory.

use std::io::Write;

use super::catalogue::{Article, TYPES};
use super::people::{Customer, PRICE_BETA, PRICE_CLASSES, Taste};
use crate::util::rng::{Rng, draw_cumulative};

const HIST: usize = 8;

pub struct ShopParams {
    pub days: i32,
    /// Day number (since 1970-01-01) of simulation day 0.
    pub start: i32,
    pub basket_mean: f64,
    pub sequence: f64,
    pub same_piece: f64,
    pub basket_spread: f64,
    pub trend: f64,
    pub seed: u64,
}

struct Tables {
    /// `cum[(taste * PRICE_CLASSES + class) * n + a]`: running sum of weights.
    cum: Vec<f64>,
    n: usize,
}

impl Tables {
    fn slice(&self, taste: usize, class: usize) -> &[f64] {
        let o = (taste * PRICE_CLASSES + class) * self.n;
        &self.cum[o..o + self.n]
    }
}

pub struct Simulator<'a> {
    pub arts: &'a [Article],
    pub ranges: &'a [std::ops::Range<usize>],
    pub tastes: &'a [Taste],
    pub customers: &'a [Customer],
    /// Static part of each article's weight per (taste, price class).
    static_w: Vec<f64>,
    tables: Tables,
    hist: Vec<u32>,
    hist_n: Vec<u32>,
    week_w: Vec<f64>,
    sequence: f64,
}

#[derive(Debug, Default, Clone)]
pub struct ShopSummary {
    pub rows: u64,
    pub sessions: u64,
    pub repurchase_rows: u64,
}

impl<'a> Simulator<'a> {
    pub fn new(
        arts: &'a [Article],
        ranges: &'a [std::ops::Range<usize>],
        tastes: &'a [Taste],
        customers: &'a [Customer],
    ) -> Self {
        let n = arts.len();
        let mut static_w = vec![0.0; tastes.len() * PRICE_CLASSES * n];
        for (t, taste) in tastes.iter().enumerate() {
            for (c, beta) in PRICE_BETA.iter().enumerate() {
                let o = (t * PRICE_CLASSES + c) * n;
                for (a, art) in arts.iter().enumerate() {
                    static_w[o + a] =
                        taste.affinity(art) * libm::pow(art.price * 590.0 / 20.0, -beta);
                }
            }
        }
        Simulator {
            arts,
            ranges,
            tastes,
            customers,
            tables: Tables {
                cum: vec![0.0; static_w.len()],
                n,
            },
            static_w,
            hist: vec![0; customers.len() * HIST],
            hist_n: vec![0; customers.len()],
            week_w: vec![0.0; n],
            sequence: 0.0,
        }
    }

    fn rebuild(&mut self, day: i32, day_of_year: f64) {
        for (w, a) in self.week_w.iter_mut().zip(self.arts) {
            *w = a.weight(day, day_of_year);
        }
        let n = self.arts.len();
        for block in 0..self.tastes.len() * PRICE_CLASSES {
            let o = block * n;
            let mut acc = 0.0;
            for a in 0..n {
                acc += self.week_w[a] * self.static_w[o + a];
                self.tables.cum[o + a] = acc;
            }
        }
    }

    fn draw_in_type(&self, rng: &mut Rng, cust: &Customer, ptype: usize) -> Option<usize> {
        let r = &self.ranges[ptype];
        if r.is_empty() {
            return None;
        }
        let cum = self
            .tables
            .slice(cust.taste as usize, cust.price_class as usize);
        draw_cumulative(rng, cum, r.start, r.end)
    }

    fn draw_taste(&self, rng: &mut Rng, cust: &Customer) -> usize {
        let pref = &self.tastes[cust.taste as usize].type_pref;
        for _ in 0..8 {
            let ptype = rng.weighted(pref);
            if let Some(a) = self.draw_in_type(rng, cust, ptype) {
                return a;
            }
        }
        let cum = self
            .tables
            .slice(cust.taste as usize, cust.price_class as usize);
        draw_cumulative(rng, cum, 0, cum.len()).unwrap_or(0)
    }

    /// An article related to `prev`: another colour of the same product, or
    /// one from a complementary product type.
    fn draw_related(&self, rng: &mut Rng, cust: &Customer, prev: usize) -> usize {
        if rng.chance(0.4) {
            let code = self.arts[prev].product_code;
            let lo = (0..prev)
                .rev()
                .take_while(|&i| self.arts[i].product_code == code)
                .last()
                .unwrap_or(prev);
            let hi = (prev..self.arts.len())
                .take_while(|&i| self.arts[i].product_code == code)
                .last()
                .unwrap_or(prev)
                + 1;
            if hi - lo > 1 {
                let cum = self
                    .tables
                    .slice(cust.taste as usize, cust.price_class as usize);
                if let Some(a) = draw_cumulative(rng, cum, lo, hi).filter(|&a| a != prev) {
                    return a;
                }
            }
        }
        let comps = TYPES[self.arts[prev].ptype].complements;
        let t = comps[rng.below(comps.len() as u64) as usize];
        self.draw_in_type(rng, cust, t)
            .unwrap_or_else(|| self.draw_taste(rng, cust))
    }

    fn first_item(&self, rng: &mut Rng, ci: usize, summary: &mut ShopSummary) -> usize {
        let cust = &self.customers[ci];
        let n = (self.hist_n[ci] as usize).min(HIST);
        if n > 0 {
            if rng.chance(cust.repurchase as f64) {
                // Recent purchases are far likelier to be bought again.
                let w: Vec<f64> = (0..n).map(|k| libm::pow(0.6, k as f64)).collect();
                let back = rng.weighted(&w);
                let slot = (self.hist_n[ci] as usize + HIST - 1 - back) % HIST;
                let a = self.hist[ci * HIST + slot] as usize;
                if self.week_w[a] > 0.0 {
                    summary.repurchase_rows += 1;
                    return a;
                }
            }
            if rng.chance(self.sequence) {
                let slot = (self.hist_n[ci] as usize + HIST - 1) % HIST;
                let last = self.hist[ci * HIST + slot] as usize;
                return self.draw_related(rng, cust, last);
            }
        }
        self.draw_taste(rng, cust)
    }

    fn remember(&mut self, ci: usize, a: usize) {
        let slot = self.hist_n[ci] as usize % HIST;
        self.hist[ci * HIST + slot] = a as u32;
        self.hist_n[ci] += 1;
    }

    /// Runs the whole period, calling `emit(day, customer, article, price, channel)`
    /// for each transaction row in date order.
    pub fn run(
        &mut self,
        p: &ShopParams,
        mut emit: impl FnMut(i32, usize, usize, f64, u8) -> std::io::Result<()>,
    ) -> std::io::Result<ShopSummary> {
        self.sequence = p.sequence;
        let mut summary = ShopSummary::default();
        let mut rng = Rng::stream(p.seed, 3);
        let mut rows: Vec<(i32, u32, u32, f64, u8)> = Vec::new();
        let weeks = (p.days + 6) / 7;
        let mut progress =
            crate::util::progress::Counter::new("data: synthetic weeks", weeks as usize);
        for week in 0..weeks {
            let ws = week * 7;
            let dw = (p.days - ws).min(7);
            let (_, m, d) = crate::util::dates::civil_from_days(p.start + ws);
            let doy = (m as f64 - 1.0) * 30.4 + d as f64;
            self.rebuild(ws, doy);
            rows.clear();
            let trend = 1.0 + p.trend * ((ws as f64 + dw as f64 / 2.0) / p.days as f64 - 0.5);
            for ci in 0..self.customers.len() {
                let cust = &self.customers[ci];
                if cust.last_day <= ws || cust.first_day >= ws + dw {
                    continue;
                }
                let sessions = rng.poisson(cust.rate as f64 * trend * dw as f64);
                for _ in 0..sessions {
                    let day = ws + rng.below(dw as u64) as i32;
                    if day < cust.first_day || day >= cust.last_day {
                        continue;
                    }
                    summary.sessions += 1;
                    let channel = if rng.chance(cust.online as f64) { 2 } else { 1 };
                    let spread = p.basket_spread;
                    // No draw without a spread, so such a config's bytes do
                    // not depend on the knob's existence.
                    let scale = if spread > 0.0 {
                        rng.lognormal(-spread * spread / 2.0, spread)
                    } else {
                        1.0
                    };
                    let size = 1 + rng.poisson((p.basket_mean - 1.0) * scale);
                    let mut prev = self.first_item(&mut rng, ci, &mut summary);
                    for j in 0..size {
                        if j > 0 {
                            prev = if rng.chance(p.same_piece) {
                                prev // a second piece of the same article
                            } else if rng.chance(0.35) {
                                self.draw_related(&mut rng, cust, prev)
                            } else {
                                self.draw_taste(&mut rng, cust)
                            };
                        }
                        let art = &self.arts[prev];
                        let mut price = art.price;
                        if day - art.arrival > 90 && rng.chance(0.5) {
                            price *= if rng.chance(0.5) { 0.5 } else { 0.7 };
                        }
                        rows.push((day, ci as u32, prev as u32, price, channel));
                        self.remember(ci, prev);
                    }
                }
            }
            // Stable: within a day rows stay grouped by customer as generated.
            rows.sort_by_key(|r| r.0);
            for &(day, c, a, price, ch) in &rows {
                emit(day, c as usize, a as usize, price, ch)?;
            }
            summary.rows += rows.len() as u64;
            progress.add(1);
        }
        progress.finish();
        Ok(summary)
    }
}

/// Writes one `transactions_train.csv` row.
pub fn write_row(
    w: &mut impl Write,
    date: &[u8],
    customer: &[u8],
    article: &[u8],
    price: f64,
    channel: u8,
) -> std::io::Result<()> {
    w.write_all(date)?;
    w.write_all(b",")?;
    w.write_all(customer)?;
    w.write_all(b",")?;
    w.write_all(article)?;
    writeln!(w, ",{price},{channel}")
}
