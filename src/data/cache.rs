//! The prepared-data cache: Parquet tables with dense ids plus JSON metadata.
//!
//! ```text
//! CACHE/meta.json             Meta (format version, counts, time unit)
//! CACHE/interactions.parquet  user u32, item u32, time i64, price f32, channel u8, part u8
//! CACHE/items.parquet         item_id str (original, e.g. 0108775015), one u32 code column per feature
//! CACHE/users.parquet         user_id str, age_years f32 (null = unknown), one u32 code column per feature
//! CACHE/vocab.json            {"items": [{"name": feature, "values": [raw value of each code]}], "users": [...]}
//! ```
//! Row i of items/users is dense id i; row 0 is padding.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::data::{CACHE_FORMAT_VERSION, Dataset, Entities, Feature, Interactions, Meta};
use crate::error::{Error, Result};
use crate::util::fsutil::{AtomicDir, write_atomic};

/// Feature vocabularies in feature order (order matters: models index features by position).
#[derive(serde::Serialize, serde::Deserialize)]
struct VocabEntry {
    name: String,
    values: Vec<String>,
}

type Vocab = BTreeMap<String, Vec<VocabEntry>>;

/// Writes `columns` as one Parquet table at `path` (LZ4), as the cache's.
pub(crate) fn write_parquet(path: &Path, columns: Vec<Column>) -> Result<()> {
    let height = columns.first().map(|c| c.len()).unwrap_or(0);
    let pq = |e| Error::Parquet {
        file: path.to_path_buf(),
        source: e,
    };
    let mut df = DataFrame::new(height, columns).map_err(pq)?;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Lz4Raw)
        .finish(&mut df)
        .map_err(pq)?;
    Ok(())
}

fn entity_columns(id_col: &str, e: &Entities) -> Vec<Column> {
    let mut cols = vec![Column::new(id_col.into(), e.ids.clone())];
    for f in &e.features {
        cols.push(Column::new(f.name.as_str().into(), f.codes.clone()));
    }
    cols
}

fn json_err(path: &Path, e: serde_json::Error) -> Error {
    Error::invalid(path, e.to_string())
}

/// Writes the cache to a temp directory and swaps it in whole.
pub fn write(ds: &Dataset, out: &Path) -> Result<()> {
    let dir = AtomicDir::create(out)?;
    let p = dir.path();
    let i = &ds.inter;
    write_parquet(
        &p.join("interactions.parquet"),
        vec![
            Column::new("user".into(), i.user.clone()),
            Column::new("item".into(), i.item.clone()),
            Column::new("time".into(), i.time.clone()),
            Column::new("price".into(), i.price.clone()),
            Column::new("channel".into(), i.channel.clone()),
            Column::new("part".into(), i.part.clone()),
        ],
    )?;
    write_parquet(
        &p.join("items.parquet"),
        entity_columns("item_id", &ds.items),
    )?;
    let mut ucols = entity_columns("user_id", &ds.users);
    let ages: Vec<Option<f32>> = ds.age.iter().map(|a| (!a.is_nan()).then_some(*a)).collect();
    ucols.insert(1, Column::new("age_years".into(), ages));
    write_parquet(&p.join("users.parquet"), ucols)?;

    let mut vocab: Vocab = BTreeMap::new();
    for (kind, e) in [("items", &ds.items), ("users", &ds.users)] {
        let list = e
            .features
            .iter()
            .map(|f| VocabEntry {
                name: f.name.clone(),
                values: f.vocab.clone(),
            })
            .collect();
        vocab.insert(kind.into(), list);
    }
    let vp = p.join("vocab.json");
    write_atomic(
        &vp,
        &serde_json::to_vec(&vocab).map_err(|e| json_err(&vp, e))?,
    )?;
    let mp = p.join("meta.json");
    write_atomic(
        &mp,
        &serde_json::to_vec_pretty(&ds.meta).map_err(|e| json_err(&mp, e))?,
    )?;
    dir.commit()
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| Error::Parquet {
            file: path.to_path_buf(),
            source: e,
        })
}

fn col_vec<T, F>(df: &DataFrame, path: &Path, name: &str, get: F) -> Result<Vec<T>>
where
    F: Fn(&Column) -> PolarsResult<Vec<T>>,
{
    let c = df
        .column(name)
        .map_err(|_| Error::invalid(path, format!("cache column `{name}` is missing")))?;
    get(c).map_err(|e| Error::Parquet {
        file: path.to_path_buf(),
        source: e,
    })
}

fn no_null<T: PolarsNumericType>(ca: &ChunkedArray<T>) -> Vec<T::Native> {
    ca.iter().map(|v| v.unwrap_or_default()).collect()
}

fn read_entities(
    path: &Path,
    id_col: &str,
    vocab: Option<&[VocabEntry]>,
) -> Result<(Entities, DataFrame)> {
    let df = read_parquet(path)?;
    let ids = col_vec(&df, path, id_col, |c| {
        Ok(c.str()?
            .iter()
            .map(|s| s.unwrap_or("").to_string())
            .collect())
    })?;
    let mut features = Vec::new();
    if let Some(v) = vocab {
        for entry in v {
            let codes = col_vec(&df, path, &entry.name, |c| Ok(no_null(c.u32()?)))?;
            features.push(Feature {
                name: entry.name.clone(),
                codes,
                vocab: entry.values.clone(),
            });
        }
    }
    Ok((Entities { ids, features }, df))
}

pub fn read(dir: &Path) -> Result<Dataset> {
    let mp = dir.join("meta.json");
    let meta_bytes = std::fs::read(&mp).map_err(|e| {
        Error::invalid(
            &mp,
            format!("{e}; is this a cache written by `recforge prepare`?"),
        )
    })?;
    let meta: Meta = serde_json::from_slice(&meta_bytes).map_err(|e| json_err(&mp, e))?;
    if meta.format_version != CACHE_FORMAT_VERSION {
        return Err(Error::invalid(
            &mp,
            format!(
                "cache format {} but this recforge reads {}; run `recforge prepare` again",
                meta.format_version, CACHE_FORMAT_VERSION
            ),
        ));
    }
    let vp = dir.join("vocab.json");
    let vocab: Vocab = serde_json::from_slice(&std::fs::read(&vp).map_err(|e| Error::io(&vp, e))?)
        .map_err(|e| json_err(&vp, e))?;
    let ip = dir.join("items.parquet");
    let (items, _) = read_entities(&ip, "item_id", vocab.get("items").map(Vec::as_slice))?;
    let up = dir.join("users.parquet");
    let (users, udf) = read_entities(&up, "user_id", vocab.get("users").map(Vec::as_slice))?;
    let age = col_vec(&udf, &up, "age_years", |c| {
        Ok(c.f32()?.iter().map(|a| a.unwrap_or(f32::NAN)).collect())
    })?;

    let xp = dir.join("interactions.parquet");
    let df = read_parquet(&xp)?;
    let inter = Interactions {
        user: col_vec(&df, &xp, "user", |c| Ok(no_null(c.u32()?)))?,
        item: col_vec(&df, &xp, "item", |c| Ok(no_null(c.u32()?)))?,
        time: col_vec(&df, &xp, "time", |c| Ok(no_null(c.i64()?)))?,
        price: col_vec(&df, &xp, "price", |c| Ok(no_null(c.f32()?)))?,
        channel: col_vec(&df, &xp, "channel", |c| Ok(no_null(c.u8()?)))?,
        part: col_vec(&df, &xp, "part", |c| Ok(no_null(c.u8()?)))?,
    };
    let n_users = users.len();
    let n_items = items.len();
    if inter.user.iter().any(|&u| u as usize >= n_users)
        || inter.item.iter().any(|&i| i as usize >= n_items)
    {
        return Err(Error::invalid(
            &xp,
            "interaction ids out of range of users/items; the cache is corrupt",
        ));
    }
    Ok(Dataset {
        meta,
        users,
        age,
        items,
        inter,
    })
}
