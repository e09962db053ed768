//! H&M Kaggle files: articles.csv, customers.csv, transactions_train.csv
//! (plus optional transactions_valid.csv / transactions_test.csv when the user
//! gives the split as files).

use std::path::Path;

use rustc_hash::FxHashMap;

use super::table::{Encoder, column, for_each_chunk, read_all, require};
use crate::data::{Entities, Feature, Interactions, Part};
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
    let ids_col = column(&df, path, &header, id_col)?;
    let mut ids = vec![String::new()];
    let mut map = FxHashMap::default();
    for (row, v) in ids_col.iter().enumerate() {
        let line = row as u64 + 2;
        let raw = v.unwrap_or("");
        let id = normalize(raw).ok_or_else(|| {
            Error::bad_value(
                path,
                line,
                id_col,
                format!("`{raw}` is not a valid id ({id_rule})"),
            )
        })?;
        if map.insert(id.clone(), ids.len() as u32).is_some() {
            return Err(Error::bad_value(
                path,
                line,
                id_col,
                format!("duplicate id `{id}`"),
            ));
        }
        ids.push(id);
    }
    let mut features = Vec::new();
    for name in feature_cols {
        let col = column(&df, path, &header, name)?;
        let mut enc = Encoder::new();
        let mut codes = vec![0];
        codes.extend(col.iter().map(|v| enc.code(v)));
        features.push(Feature {
            name: name.to_string(),
            codes,
            vocab: enc.vocab,
        });
    }
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

pub fn read_customers(dir: &Path) -> Result<(Entities, Vec<f32>, FxHashMap<String, u32>)> {
    let path = dir.join("customers.csv");
    let EntityTable {
        entities: e,
        map,
        df,
        header,
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
    Ok((e, age, map))
}

/// Appends the rows of one transactions file, checking every value.
pub fn read_transactions(
    path: &Path,
    part: Part,
    customers: &FxHashMap<String, u32>,
    articles: &FxHashMap<String, u32>,
    chunk_bytes: usize,
    out: &mut Interactions,
) -> Result<()> {
    let header = super::table::read_header(path, b',')?;
    require(path, &header, TX_COLUMNS)?;
    let mut norm = String::new();
    for_each_chunk(path, b',', chunk_bytes, |df, first_line| {
        let cols: Vec<_> = TX_COLUMNS
            .iter()
            .map(|c| column(df, path, &header, c))
            .collect::<Result<_>>()?;
        let mut its: Vec<_> = cols.iter().map(|c| c.iter()).collect();
        for row in 0..df.height() {
            let line = first_line + row as u64;
            let mut vals = [""; 5];
            for (k, it) in its.iter_mut().enumerate() {
                vals[k] = it.next().flatten().map(str::trim).unwrap_or("");
                if vals[k].is_empty() {
                    return Err(Error::bad_value(path, line, TX_COLUMNS[k], "missing value"));
                }
            }
            let [date, cust, art, price, channel] = vals;
            let day = crate::dates::parse_ymd(date).ok_or_else(|| {
                Error::bad_value(
                    path,
                    line,
                    "t_dat",
                    format!("`{date}` is not a date (expected YYYY-MM-DD)"),
                )
            })?;
            let user = match customers.get(cust) {
                Some(&u) => u,
                None => {
                    // Real ids are lowercase; accept other cases before calling it unknown.
                    let lower = cust.to_ascii_lowercase();
                    *customers.get(&lower).ok_or_else(|| {
                        Error::bad_value(
                            path,
                            line,
                            "customer_id",
                            format!("unknown customer `{cust}` (not in customers.csv)"),
                        )
                    })?
                }
            };
            let item = match articles.get(art) {
                Some(&i) => i,
                None => {
                    norm.clear();
                    if let Some(n) = normalize_article_id(art) {
                        norm.push_str(&n);
                    }
                    *articles.get(norm.as_str()).ok_or_else(|| {
                        Error::bad_value(
                            path,
                            line,
                            "article_id",
                            format!("unknown article `{art}` (not in articles.csv)"),
                        )
                    })?
                }
            };
            let p: f64 = price
                .parse()
                .ok()
                .filter(|p: &f64| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| {
                    Error::bad_value(
                        path,
                        line,
                        "price",
                        format!("`{price}` is not a non-negative number"),
                    )
                })?;
            let ch: u8 = channel
                .parse()
                .ok()
                .filter(|c| (1..=2).contains(c))
                .ok_or_else(|| {
                    Error::bad_value(
                        path,
                        line,
                        "sales_channel_id",
                        format!("`{channel}` is not 1 or 2"),
                    )
                })?;
            out.user.push(user);
            out.item.push(item);
            out.time.push(day as i64);
            out.price.push(p as f32);
            out.channel.push(ch);
            out.part.push(part as u8);
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
        let customers: FxHashMap<String, u32> = [(cust.clone(), 1)].into_iter().collect();
        let articles: FxHashMap<String, u32> =
            [("0108775015".to_string(), 1)].into_iter().collect();
        let mut out = Interactions::default();
        // ~100-byte rows in 300-byte chunks: the bad row is deep in a later chunk.
        let err =
            read_transactions(&path, Part::Log, &customers, &articles, 300, &mut out).unwrap_err();
        assert!(err.to_string().contains("line 97, column `t_dat`"), "{err}");
        assert_eq!(out.len(), 95, "rows before the bad one were read in order");
        assert!((out.price[94] - 0.096).abs() < 1e-6);
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
