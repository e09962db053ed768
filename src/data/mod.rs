//! The one in-memory view of a prepared dataset. Every later stage (splits,
//! baselines, models) reads this; ingestion and the cache produce it.
//!
//! Dense ids: index 0 of users and items is the padding entry (id ""), so
//! real ids start at 1 and a model may use 0 as padding without collision.

pub mod cache;
pub mod history;
pub mod split;

use serde::{Deserialize, Serialize};

pub const CACHE_FORMAT_VERSION: u32 = 1;

/// Where an interaction came from when the user gave the split as files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Part {
    /// The main log, no explicit role.
    Log = 0,
    Train = 1,
    Valid = 2,
    Test = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Day numbers since 1970-01-01 (H&M `t_dat`).
    Day,
    /// Seconds since the epoch (RecBole `timestamp`).
    Second,
}

impl TimeUnit {
    pub fn per_day(self) -> i64 {
        match self {
            TimeUnit::Day => 1,
            TimeUnit::Second => 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Hm,
    Recbole,
    /// Any CSV/Parquet log read with a column map (`--format table`).
    Table,
}

/// A categorical feature: `codes[i]` is entity i's code, 0 = missing/padding,
/// `vocab[c]` the raw value of code c (`vocab[0] == ""`).
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: String,
    pub codes: Vec<u32>,
    pub vocab: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entities {
    /// Original ids, index 0 = padding "".
    pub ids: Vec<String>,
    pub features: Vec<Feature>,
}

impl Entities {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.len() <= 1
    }
    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// Interactions in file order (row i is the i-th data row read), which is
/// what "ties in time keep file order" refers to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interactions {
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    pub time: Vec<i64>,
    /// Price paid (H&M scale); 0 where the source has none.
    pub price: Vec<f32>,
    /// H&M sales channel (1 or 2); 0 where the source has none.
    pub channel: Vec<u8>,
    pub part: Vec<u8>,
}

impl Interactions {
    pub fn with_capacity(n: usize) -> Self {
        Interactions {
            user: Vec::with_capacity(n),
            item: Vec::with_capacity(n),
            time: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            channel: Vec::with_capacity(n),
            part: Vec::with_capacity(n),
        }
    }

    pub fn append(&mut self, mut other: Interactions) {
        self.user.append(&mut other.user);
        self.item.append(&mut other.item);
        self.time.append(&mut other.time);
        self.price.append(&mut other.price);
        self.channel.append(&mut other.channel);
        self.part.append(&mut other.part);
    }

    pub fn len(&self) -> usize {
        self.user.len()
    }
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub format_version: u32,
    pub name: String,
    pub source: Source,
    pub time_unit: TimeUnit,
    pub has_price: bool,
    /// Whether some rows came from explicit train/valid/test files.
    pub explicit_split: bool,
    pub n_users: usize,
    pub n_items: usize,
    pub n_interactions: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub meta: Meta,
    pub users: Entities,
    /// Customer age in years (NaN = unknown), index-aligned with `users`.
    pub age: Vec<f32>,
    pub items: Entities,
    pub inter: Interactions,
}

impl Dataset {
    pub fn day(&self, row: usize) -> i64 {
        self.inter.time[row].div_euclid(self.meta.time_unit.per_day())
    }

    /// The purchase log as the ranking state is fitted on (its columns
    /// lent, not copied).
    pub fn log(&self) -> recforge_infer::rank::Log<'_> {
        use recforge_infer::rank::Attr;
        recforge_infer::rank::Log {
            user: &self.inter.user,
            item: &self.inter.item,
            time: &self.inter.time,
            per_day: self.meta.time_unit.per_day(),
            price: &self.inter.price,
            channel: &self.inter.channel,
            age: &self.age,
            n_items: self.items.len(),
            attrs: Attr::ALL.map(|a| self.items.feature(a.column()).map(|f| f.codes.as_slice())),
        }
    }
}

/// The customer age buckets (the popularity-by-age baseline, the age
/// candidate source and the two-tower age feature share them), defined
/// with the serving code that buckets a request's age.
pub use recforge_infer::rank::{AGE_BUCKETS, age_bucket};
