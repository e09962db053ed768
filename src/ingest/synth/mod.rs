//! Synthetic purchase logs in exactly the H&M Kaggle schema. The generative
//! story and every knob are documented in `datasets/README.md`.

mod catalogue;
mod people;
mod shopping;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::util::fsutil::AtomicFile;
use crate::util::rng::Rng;

pub use catalogue::quote as csv_quote;

/// Generator settings. Every field has a default, so a config file only names
/// what it changes; unknown keys are rejected so a typo is not silently ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Number of customers written to customers.csv (all get an id; some never buy).
    pub customers: usize,
    /// Number of articles in articles.csv.
    pub articles: usize,
    /// Length of the transaction log in days.
    pub days: u32,
    /// Seed for every random draw: same seed and settings, same bytes.
    pub seed: u64,
    /// First day of the log (YYYY-MM-DD). The real log starts 2018-09-20.
    pub start_date: String,
    /// Expected transaction rows per customer per year (real data: about 11.5).
    pub purchases_per_customer_year: f64,
    /// Mean rows per shopping session (basket size, including repeated pieces).
    pub basket_mean: f64,
    /// Share of articles already on sale on day one; the rest arrive in weekly drops.
    pub initial_share: f64,
    /// Pareto shape of article appeal: lower means a heavier head.
    pub appeal_alpha: f64,
    /// Number of taste groups (each with a typical age).
    pub taste_groups: usize,
    /// Years around a taste group's typical age within which customers
    /// join it (a Gaussian's sigma): lower makes age predict taste more.
    pub age_spread: f64,
    /// How peaked each taste group's preferences are (0 = everyone alike).
    pub taste_strength: f64,
    /// Mean chance that a session starts by re-buying a recent purchase.
    pub repurchase: f64,
    /// Chance that a session starts from an item related to the last purchase.
    pub sequence: f64,
    /// Chance that a later item of a basket is another piece of the article
    /// before it (a second size or a gift): rows without a new article.
    pub same_piece: f64,
    /// Spread (lognormal sigma) of each session's basket size around
    /// `basket_mean`: above 0, a few large baskets and many small ones, as
    /// in the real log, where the mean buyer of a week has 3.5 rows and the
    /// median 2 distinct articles.
    pub basket_spread: f64,
    /// Spread (lognormal sigma, mean kept at 1) of customers' shopping rates:
    /// higher means more occasional customers and a heavier core.
    pub rate_spread: f64,
    /// Share of customers who join during the log (the rest are there on
    /// day one): the source of first-time buyers in every week.
    pub join_share: f64,
    /// Share of customers who stop shopping at a random day.
    pub churn_share: f64,
    /// Relative change of every customer's shopping rate from the first to
    /// the last day, the mean kept: -0.4 makes the last days' rate 0.8× the
    /// log's average (the real log ends below its average).
    pub trend: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            customers: 100_000,
            articles: 10_000,
            days: 365,
            seed: 42,
            start_date: "2018-09-20".into(),
            purchases_per_customer_year: 11.5,
            basket_mean: 2.6,
            initial_share: 0.35,
            appeal_alpha: 1.3,
            taste_groups: 12,
            age_spread: 9.0,
            taste_strength: 1.2,
            repurchase: 0.12,
            sequence: 0.25,
            same_piece: 0.12,
            basket_spread: 0.0,
            rate_spread: 1.0,
            join_share: 0.25,
            churn_share: 0.15,
            trend: 0.0,
        }
    }
}

impl SynthConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::invalid(path, e.to_string()))
    }

    fn validate(&self) -> Result<i32> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.customers == 0 || self.articles < 12 || self.days < 14 {
            return bad("need customers >= 1, articles >= 12 and days >= 14");
        }
        if self.customers > u32::MAX as usize / 2 || self.articles > 9_000_000 {
            return bad("customers or articles too large for 32-bit dense ids");
        }
        // Written so NaN fails too.
        let below = |v: f64, min: f64| v.is_nan() || v < min;
        if below(self.basket_mean, 1.0)
            || below(self.purchases_per_customer_year, f64::MIN_POSITIVE)
        {
            return bad("basket_mean must be >= 1 and purchases_per_customer_year > 0");
        }
        for (name, v) in [
            ("initial_share", self.initial_share),
            ("repurchase", self.repurchase),
            ("sequence", self.sequence),
            ("same_piece", self.same_piece),
            ("join_share", self.join_share),
            ("churn_share", self.churn_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::Config(format!("{name} must be in [0, 1], got {v}")));
            }
        }
        if self.taste_groups == 0
            || below(self.appeal_alpha, f64::MIN_POSITIVE)
            || below(self.age_spread, 0.5)
        {
            return bad("taste_groups must be >= 1, appeal_alpha > 0 and age_spread >= 0.5");
        }
        if !(0.0..=3.0).contains(&self.basket_spread) || !(0.0..=3.0).contains(&self.rate_spread) {
            return bad("basket_spread and rate_spread must be in [0, 3]");
        }
        // The rate multiplier is 1 + trend × (t − 1/2) over t in [0, 1]: it
        // stays positive for |trend| < 2.
        if !(-1.5..=1.5).contains(&self.trend) {
            return bad("trend must be in [-1.5, 1.5]");
        }
        crate::util::dates::parse_ymd(&self.start_date).ok_or_else(|| {
            Error::Config(format!(
                "start_date `{}` is not YYYY-MM-DD",
                self.start_date
            ))
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub customers: usize,
    pub articles: usize,
    pub transactions: u64,
    pub sessions: u64,
    pub repurchase_rows: u64,
    pub first_date: String,
    pub last_date: String,
}

/// Writes articles.csv, customers.csv, transactions_train.csv and
/// sample_submission.csv into `out`. Each file is written to a temp name and
/// renamed when complete.
// One function on purpose: it fixes the order in which the seeded
// streams are drawn and the files written, which the byte-identical output
// of a seed depends on.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<SynthSummary> {
    let start = cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let days = cfg.days as i32;

    let mut rng = Rng::stream(cfg.seed, 1);
    let (arts, ranges) = catalogue::generate(
        &catalogue::CatalogueParams {
            n_articles: cfg.articles,
            days,
            initial_share: cfg.initial_share,
            appeal_alpha: cfg.appeal_alpha,
        },
        &mut rng,
    );
    let mut rng = Rng::stream(cfg.seed, 2);
    let tastes = people::tastes(cfg.taste_groups, cfg.taste_strength, &mut rng);
    // Calibrated so the expected row count matches purchases_per_customer_year:
    // a joiner is active for half the log on average, and so is a churner
    // of the rest.
    let active = (1.0 - cfg.join_share / 2.0) * (1.0 - cfg.churn_share / 2.0);
    let sessions_per_day = cfg.purchases_per_customer_year / 365.0 / cfg.basket_mean / active;
    let customers = people::generate(
        &people::PeopleParams {
            n_customers: cfg.customers,
            days,
            sessions_per_day,
            repurchase: cfg.repurchase,
            rate_spread: cfg.rate_spread,
            age_spread: cfg.age_spread,
            join_share: cfg.join_share,
            churn_share: cfg.churn_share,
        },
        &tastes,
        &mut rng,
    );

    let mut f = AtomicFile::create(out.join("articles.csv"))?;
    catalogue::write_csv(&arts, f.writer()).map_err(|e| Error::io(out.join("articles.csv"), e))?;
    f.commit()?;

    let ids: Vec<[u8; 64]> = (0..customers.len())
        .map(|i| {
            let mut id = [0u8; 64];
            people::hex_id(cfg.seed, 1, i as u64, &mut id);
            id
        })
        .collect();
    let cpath = out.join("customers.csv");
    let mut f = AtomicFile::create(&cpath)?;
    people::write_csv(&customers, &ids, cfg.seed, f.writer()).map_err(|e| Error::io(&cpath, e))?;
    f.commit()?;

    let tpath = out.join("transactions_train.csv");
    let mut f = AtomicFile::create(&tpath)?;
    let art_ids: Vec<String> = arts.iter().map(|a| format!("{:010}", a.id)).collect();
    let dates: Vec<String> = (0..days)
        .map(|d| crate::util::dates::format_ymd(start + d))
        .collect();
    let mut sim = shopping::Simulator::new(&arts, &ranges, &tastes, &customers);
    let summary = {
        let w = f.writer();
        std::io::Write::write_all(w, b"t_dat,customer_id,article_id,price,sales_channel_id\n")
            .map_err(|e| Error::io(&tpath, e))?;
        sim.run(
            &shopping::ShopParams {
                days,
                start,
                basket_mean: cfg.basket_mean,
                sequence: cfg.sequence,
                same_piece: cfg.same_piece,
                basket_spread: cfg.basket_spread,
                trend: cfg.trend,
                seed: cfg.seed,
            },
            |day, c, a, price, ch| {
                shopping::write_row(
                    w,
                    dates[day as usize].as_bytes(),
                    &ids[c],
                    art_ids[a].as_bytes(),
                    price,
                    ch,
                )
            },
        )
        .map_err(|e| Error::io(&tpath, e))?
    };
    f.commit()?;

    // Like Kaggle's sample file: the same 12 articles (here the most
    // appealing ones on sale at the end) for every customer.
    let mut order: Vec<usize> = (0..arts.len()).collect();
    let last = days - 1;
    let key = |i: usize| arts[i].weight(last, 180.0);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let top: Vec<&str> = order
        .iter()
        .take(12)
        .map(|&i| art_ids[i].as_str())
        .collect();
    let line = top.join(" ");
    let spath = out.join("sample_submission.csv");
    let mut f = AtomicFile::create(&spath)?;
    f.write_all(b"customer_id,prediction\n")?;
    for id in &ids {
        f.write_all(id)?;
        f.write_all(b",")?;
        f.write_all(line.as_bytes())?;
        f.write_all(b"\n")?;
    }
    f.commit()?;

    Ok(SynthSummary {
        customers: cfg.customers,
        articles: arts.len(),
        transactions: summary.rows,
        sessions: summary.sessions,
        repurchase_rows: summary.repurchase_rows,
        first_date: dates[0].clone(),
        last_date: dates[days as usize - 1].clone(),
    })
}
