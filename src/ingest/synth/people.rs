//! Synthetic customers and the taste groups that tie age to what they buy.

use std::io::Write;

use super::catalogue::{Article, COLOURS, INDEXES, TYPES};
use crate::util::rng::Rng;

/// A taste group: a typical age and preferences over product types, colours
/// and indexes. Articles' observable features carry the signal, so a
/// feature-based model can learn it and plain popularity cannot.
pub struct Taste {
    pub mean_age: f64,
    pub type_pref: Vec<f64>,
    pub colour_pref: Vec<f64>,
    pub index_pref: Vec<f64>,
}

pub fn tastes(n: usize, strength: f64, rng: &mut Rng) -> Vec<Taste> {
    (0..n)
        .map(|g| {
            // Spread typical ages over 18..70 so age buckets separate groups.
            let mean_age = 18.0 + 52.0 * (g as f64 + rng.f64()) / n as f64;
            let softmax = |len: usize, rng: &mut Rng| -> Vec<f64> {
                let v: Vec<f64> = (0..len)
                    .map(|_| libm::exp(strength * rng.normal()))
                    .collect();
                let s: f64 = v.iter().sum();
                v.into_iter().map(|x| x / s).collect()
            };
            let type_pref = softmax(TYPES.len(), rng);
            let colour_pref = softmax(COLOURS.len(), rng);
            // Each group shops mostly in two or three indexes; parents (30-45)
            // lean on the children's indexes, the young on Divided.
            let mut index_pref: Vec<f64> =
                (0..INDEXES.len()).map(|_| 0.05 + 0.1 * rng.f64()).collect();
            let main = rng.below(INDEXES.len() as u64) as usize;
            index_pref[main] += 2.0;
            let ladies_or_mens = if rng.chance(0.7) { 0 } else { 4 };
            index_pref[ladies_or_mens] += 1.5;
            if mean_age < 28.0 {
                index_pref[3] += 1.5;
            }
            if (30.0..46.0).contains(&mean_age) {
                index_pref[5] += 0.8;
                index_pref[6] += 0.8;
            }
            Taste {
                mean_age,
                type_pref,
                colour_pref,
                index_pref,
            }
        })
        .collect()
}

impl Taste {
    /// Static affinity of this taste for an article (popularity excluded).
    pub fn affinity(&self, a: &Article) -> f64 {
        libm::pow(self.colour_pref[a.colour] * COLOURS.len() as f64, 0.8) * self.index_pref[a.index]
    }
}

pub const PRICE_CLASSES: usize = 3;
/// Price elasticity per class: weight multiplies price^(-beta).
pub const PRICE_BETA: [f64; PRICE_CLASSES] = [1.5, 0.5, -0.4];

pub struct Customer {
    pub age: Option<u32>,
    pub taste: u16,
    pub price_class: u8,
    /// Expected shopping sessions per day while active.
    pub rate: f32,
    pub online: f32,
    pub repurchase: f32,
    pub first_day: i32,
    pub last_day: i32,
    pub fn_flag: bool,
    pub active: bool,
    pub club: u8,
    pub news: u8,
    pub region: u32,
}

pub struct PeopleParams {
    pub n_customers: usize,
    pub days: i32,
    pub sessions_per_day: f64,
    pub repurchase: f64,
    pub rate_spread: f64,
    pub age_spread: f64,
    pub join_share: f64,
    pub churn_share: f64,
}

pub fn generate(p: &PeopleParams, tastes: &[Taste], rng: &mut Rng) -> Vec<Customer> {
    (0..p.n_customers)
        .map(|_| {
            let true_age = match rng.weighted(&[0.38, 0.34, 0.28]) {
                0 => 18.0 + 12.0 * rng.f64(),
                1 => 30.0 + 20.0 * rng.f64(),
                _ => 50.0 + 25.0 * rng.f64(),
            };
            let tw: Vec<f64> = tastes
                .iter()
                .map(|t| {
                    let d = true_age - t.mean_age;
                    libm::exp(-d * d / (2.0 * p.age_spread * p.age_spread)) + 0.01
                })
                .collect();
            let taste = rng.weighted(&tw) as u16;
            let price_class = if true_age < 25.0 {
                rng.weighted(&[0.6, 0.35, 0.05])
            } else if true_age < 45.0 {
                rng.weighted(&[0.3, 0.5, 0.2])
            } else {
                rng.weighted(&[0.2, 0.5, 0.3])
            } as u8;
            let fn_flag = rng.chance(0.35);
            // Newsletter readers shop more: a customer feature with signal.
            let s = p.rate_spread;
            let rate = p.sessions_per_day
                * rng.lognormal(-s * s / 2.0, s)
                * if fn_flag { 1.4 } else { 0.8 };
            let first_day = if rng.chance(p.join_share) {
                rng.below(p.days as u64) as i32
            } else {
                0
            };
            let last_day = if rng.chance(p.churn_share) {
                first_day + rng.below((p.days - first_day).max(1) as u64) as i32
            } else {
                p.days
            };
            Customer {
                age: (!rng.chance(0.012)).then_some(true_age as u32),
                taste,
                price_class,
                rate: rate as f32,
                online: if rng.chance(0.6) { 0.85 } else { 0.2 },
                repurchase: (p.repurchase * rng.lognormal(-0.2, 0.6)).min(0.8) as f32,
                first_day,
                last_day,
                fn_flag,
                active: fn_flag && rng.chance(0.97),
                club: rng.weighted(&[0.928, 0.066, 0.001, 0.005]) as u8,
                news: rng.weighted(&[0.635, 0.35, 0.0005, 0.0145]) as u8,
                // Heavy-tailed regions: the most common postal code holds ~5% of customers.
                region: (20.0 * rng.pareto(1.1)).min(1e9) as u32,
            }
        })
        .collect()
}

/// 64 lowercase hex characters derived from (seed, index), like the
/// anonymised ids of the real data.
pub fn hex_id(seed: u64, kind: u64, index: u64, out: &mut [u8; 64]) {
    let mut r = Rng::stream(seed ^ 0x05ee_d1d5, kind.wrapping_mul(1 << 40) ^ index);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for chunk in out.chunks_mut(16) {
        let v = r.next_u64();
        for (i, c) in chunk.iter_mut().enumerate() {
            *c = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
}

pub fn write_csv(
    customers: &[Customer],
    ids: &[[u8; 64]],
    seed: u64,
    w: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(
        w,
        "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"
    )?;
    let mut postal = [0u8; 64];
    for (c, id) in customers.iter().zip(ids) {
        hex_id(seed, 2, c.region as u64, &mut postal);
        w.write_all(id)?;
        let club = ["ACTIVE", "PRE-CREATE", "LEFT CLUB", ""][c.club as usize];
        let news = ["NONE", "Regularly", "Monthly", ""][c.news as usize];
        write!(
            w,
            ",{},{},{},{},{},",
            if c.fn_flag { "1.0" } else { "" },
            if c.active { "1.0" } else { "" },
            club,
            news,
            c.age.map(|a| a.to_string()).unwrap_or_default()
        )?;
        w.write_all(&postal)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}
