//! H&M Kaggle files: articles.csv, customers.csv, transactions_train.csv
//! (plus optional transactions_valid.csv / transactions_test.csv when the user
//! gives the split as files).

use std::path::Path;

use polars::prelude::StringChunked;
use rustc_hash::FxHashMap;

use super::table::{column, encode_feature, for_each_chunk, id_column, read_all, require};
use crate::data::{Entities, Interactions, Part};
use crate::error::{Error, Result};

/// Article columns kept as categorical features (codes, not names: the names
/// are one-to-one with them).
pub const ARTICLE_FEATURES: &[&str] = &[
    "product_code",
    "product_type_no",
    "product_group_name",
    "graphical_appearance_no",
    "colour_group_code",
    "perceived_colour_value_id",
    "perceived_colour_master_id",
    "department_no",
    "index_code",
    "index_group_no",
    "section_no",
    "garment_group_no",
];

pub const CUSTOMER_FEATURES: &[&str] = &[
    "FN",
    "Active",
    "club_member_status",
    "fashion_news_frequency",
    "postal_code",
];

const TX_COLUMNS: &[&str] = &[
    "t_dat",
    "customer_id",
    "article_id",
    "price",
    "sales_channel_id",
];

/// Article ids are 10-digit integers written with leading zeros; a file that
/// lost them (an integer column saved by pandas) is padded back.
pub fn normalize_article_id(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if s.len() < 10 {
        format!("{s:0>10}")
    } else {
        s.to_string()
    })
}

fn is_customer_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An id-keyed file read whole: its entities, id → dense id, and the raw
/// frame and header for the columns a caller converts itself.
struct EntityTable {
    entities: Entities,
    map: FxHashMap<String, u32>,
    df: polars::prelude::DataFrame,
    header: Vec<String>,
}

fn entities(
    path: &Path,
    id_col: &str,
    feature_cols: &[&str],
    normalize: impl Fn(&str) -> Option<String>,
    id_rule: &str,
) -> Result<EntityTable> {
    let (header, df) = read_all(path, b',')?;
    let mut required = vec![id_col];
    required.extend_from_slice(feature_cols);
    require(path, &header, &required)?;
    let (ids, map) = id_column(
        path,
        column(&df, path, &header, id_col)?,
        id_col,
        normalize,
        id_rule,
    )?;
    let features = feature_cols
        .iter()
        .map(|name| Ok(encode_feature(name, column(&df, path, &header, name)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(EntityTable {
        entities: Entities { ids, features },
        map,
        df,
        header,
    })
}

pub fn read_articles(dir: &Path) -> Result<(Entities, FxHashMap<String, u32>)> {
    let path = dir.join("articles.csv");
    let EntityTable {
        entities: e, map, ..
    } = entities(
        &path,
        "article_id",
        ARTICLE_FEATURES,
        normalize_article_id,
        "digits, e.g. 0108775015",
    )?;
    Ok((e, map))
}

pub fn read_customers(dir: &Path) -> Result<(Entities, Vec<f32>, CustomerIndex)> {
    let path = dir.join("customers.csv");
    let EntityTable {
        entities: e,
        df,
        header,
        ..
    } = entities(
        &path,
        "customer_id",
        CUSTOMER_FEATURES,
        |s| is_customer_id(s.trim()).then(|| s.trim().to_ascii_lowercase()),
        "64 hexadecimal characters",
    )?;
    require(&path, &header, &["age"])?;
    let mut age = vec![f32::NAN];
    for (row, v) in column(&df, &path, &header, "age")?.iter().enumerate() {
        let a = match v.map(str::trim) {
            None | Some("") => f32::NAN,
            Some(s) => match s.parse::<f32>() {
                Ok(a) if (0.0..=130.0).contains(&a) => a,
                _ => {
                    return Err(Error::bad_value(
                        &path,
                        row as u64 + 2,
                        "age",
                        format!("`{s}` is not an age in years"),
                    ));
                }
            },
        };
        age.push(a);
    }
    let index = CustomerIndex::build(&e.ids);
    Ok((e, age, index))
}

/// Appends the rows of one transactions file, checking every value.
/// Customer ids are 64 hex digits. Keyed by their 32 decoded bytes, the map
/// holds no pointers, so a lookup in 1.4M customers costs one cache miss
/// instead of two; it also makes the lookup case-insensitive.
pub struct CustomerIndex(FxHashMap<[u8; 32], u32>);

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

impl CustomerIndex {
    pub fn build(ids: &[String]) -> Self {
        // ids[0] is padding; the rest were validated as 64 hex characters.
        CustomerIndex(
            ids.iter()
                .enumerate()
                .skip(1)
                .filter_map(|(i, id)| decode_hex32(id).map(|k| (k, i as u32)))
                .collect(),
        )
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        decode_hex32(id).and_then(|k| self.0.get(&k).copied())
    }
}

/// Converts rows `cols[*][..]` whose first row is on file line `first_line`.
fn convert_rows(
    path: &Path,
    cols: &[StringChunked],
    first_line: u64,
    part: Part,
    customers: &CustomerIndex,
    articles: &FxHashMap<String, u32>,
) -> Result<Interactions> {
    let n = cols[0].len();
    let mut out = Interactions::with_capacity(n);
    let mut its: Vec<_> = cols.iter().map(|c| c.iter()).collect();
    for row in 0..n {
        let line = first_line + row as u64;
        let mut vals = [""; 5];
        for (k, it) in its.iter_mut().enumerate() {
            vals[k] = it.next().flatten().map(str::trim).unwrap_or("");
            if vals[k].is_empty() {
                return Err(Error::bad_value(path, line, TX_COLUMNS[k], "missing value"));
            }
        }
        let [date, cust, art, price, channel] = vals;
        let bad = |col: &str, msg: String| Error::bad_value(path, line, col, msg);
        let day = crate::util::dates::parse_ymd(date).ok_or_else(|| {
            bad(
                "t_dat",
                format!("`{date}` is not a date (expected YYYY-MM-DD)"),
            )
        })?;
        let user = customers.get(cust).ok_or_else(|| {
            bad(
                "customer_id",
                format!("unknown customer `{cust}` (not in customers.csv)"),
            )
        })?;
        let item = match articles.get(art) {
            Some(&i) => i,
            None => normalize_article_id(art)
                .and_then(|n| articles.get(&n).copied())
                .ok_or_else(|| {
                    bad(
                        "article_id",
                        format!("unknown article `{art}` (not in articles.csv)"),
                    )
                })?,
        };
        let p: f64 = price
            .parse()
            .ok()
            .filter(|p: &f64| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| bad("price", format!("`{price}` is not a non-negative number")))?;
        let ch: u8 = channel
            .parse()
            .ok()
            .filter(|c| (1..=2).contains(c))
            .ok_or_else(|| bad("sales_channel_id", format!("`{channel}` is not 1 or 2")))?;
        out.user.push(user);
        out.item.push(item);
        out.time.push(day as i64);
        out.price.push(p as f32);
        out.channel.push(ch);
        out.part.push(part as u8);
    }
    Ok(out)
}

/// Appends the rows of one transactions file, checking every value.
/// Each chunk's rows are converted on all cores, in contiguous slices, and
/// appended in order; of several bad rows the first in the file is reported.
pub fn read_transactions(
    path: &Path,
    part: Part,
    customers: &CustomerIndex,
    articles: &FxHashMap<String, u32>,
    chunk_bytes: usize,
    out: &mut Interactions,
) -> Result<()> {
    let header = super::table::read_header(path, b',')?;
    require(path, &header, TX_COLUMNS)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for_each_chunk(path, b',', chunk_bytes, |df, first_line| {
        let cols: Vec<&StringChunked> = TX_COLUMNS
            .iter()
            .map(|c| column(df, path, &header, c))
            .collect::<Result<_>>()?;
        let n = df.height();
        let parts = threads.min(n / 10_000 + 1);
        let results: Vec<Result<Interactions>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..parts)
                .map(|p| {
                    let (a, b) = (n * p / parts, n * (p + 1) / parts);
                    let cols = &cols;
                    s.spawn(move || {
                        let slices: Vec<StringChunked> =
                            cols.iter().map(|c| c.slice(a as i64, b - a)).collect();
                        convert_rows(
                            path,
                            &slices,
                            first_line + a as u64,
                            part,
                            customers,
                            articles,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::invalid(
                            path,
                            "internal error: a conversion thread panicked",
                        ))
                    })
                })
                .collect()
        });
        for r in results {
            out.append(r?);
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_stay_exact_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transactions_train.csv");
        let cust = "a".repeat(64);
        let mut text = String::from("t_dat,customer_id,article_id,price,sales_channel_id\n");
        for line in 2..=120 {
            let date = if line == 97 {
                "2020-9-01"
            } else {
                "2020-09-01"
            };
            text.push_str(&format!("{date},{cust},0108775015,0.0{line},2\n"));
        }
        std::fs::write(&path, text).unwrap();
        let customers = CustomerIndex::build(&[String::new(), cust.clone()]);
        let articles: FxHashMap<String, u32> =
            [("0108775015".to_string(), 1)].into_iter().collect();
        let mut out = Interactions::default();
        // ~100-byte rows in 300-byte chunks: the bad row is deep in a later chunk.
        let err =
            read_transactions(&path, Part::Log, &customers, &articles, 300, &mut out).unwrap_err();
        assert!(err.to_string().contains("line 97, column `t_dat`"), "{err}");
        // Chunks before the failing one were appended, in file order; the
        // failing chunk is dropped whole (prepare discards everything anyway).
        assert!((85..=95).contains(&out.len()), "{}", out.len());
        assert!((out.price[0] - 0.02).abs() < 1e-6 && (out.price[7] - 0.09).abs() < 1e-6);
    }

    #[test]
    fn article_ids_without_leading_zero_are_padded() {
        assert_eq!(
            normalize_article_id("108775015").as_deref(),
            Some("0108775015")
        );
        assert_eq!(
            normalize_article_id("0108775015").as_deref(),
            Some("0108775015")
        );
        assert_eq!(normalize_article_id("10877501x"), None);
    }
}
