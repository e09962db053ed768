//! RecBole atomic files: `NAME.inter` (plus optional `NAME.item`, `NAME.user`,
//! and benchmark split files `NAME.train.inter` / `.valid.inter` / `.test.inter`).
//! Headers are typed (`item_id:token`, `timestamp:float`); fields are tab-separated.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;

use super::table::{column, encode_feature, for_each_chunk, id_column, read_all};
use crate::data::{Entities, Interactions, Part};
use crate::error::{Error, Result};

pub struct Files {
    pub name: String,
    pub inter: Vec<(PathBuf, Part)>,
    pub item: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

/// Finds the atomic files in `dir`; `None` if there is no `.inter` file.
pub fn find(dir: &Path) -> Result<Option<Files>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut inter = Vec::new();
    let mut base: Option<String> = None;
    for n in &names {
        let Some(stem) = n.strip_suffix(".inter") else {
            continue;
        };
        let (stem, part) = match stem.rsplit_once('.') {
            Some((s, "train")) => (s, Part::Train),
            Some((s, "valid")) => (s, Part::Valid),
            Some((s, "test")) => (s, Part::Test),
            _ => (stem, Part::Log),
        };
        if let Some(b) = &base
            && b != stem
        {
            return Err(Error::invalid(
                dir,
                format!(
                    "atomic files of two datasets (`{b}` and `{stem}`); keep one per directory"
                ),
            ));
        }
        base = Some(stem.to_string());
        inter.push((dir.join(n), part));
    }
    let Some(name) = base else { return Ok(None) };
    let opt = |ext: &str| Some(dir.join(format!("{name}.{ext}"))).filter(|p| p.exists());
    Ok(Some(Files {
        item: opt("item"),
        user: opt("user"),
        inter,
        name,
    }))
}

/// `name:type` header fields.
fn split_header(header: &[String]) -> Vec<(String, String)> {
    header
        .iter()
        .map(|h| match h.split_once(':') {
            Some((n, t)) => (n.to_string(), t.to_string()),
            None => (h.clone(), "token".to_string()),
        })
        .collect()
}

fn find_col(fields: &[(String, String)], name: &str) -> Option<usize> {
    fields.iter().position(|(n, _)| n == name)
}

/// Reads `.item` / `.user`: id column plus every `token` field as a feature.
/// Age (a `token` or `float` field named `age`) is also returned as numbers.
pub fn read_entities(
    path: &Path,
    id: &str,
) -> Result<(Entities, FxHashMap<String, u32>, Vec<f32>)> {
    let (header, df) = read_all(path, b'\t')?;
    let fields = split_header(&header);
    let id_pos = find_col(&fields, id).ok_or_else(|| Error::MissingColumn {
        file: path.to_path_buf(),
        column: format!("{id}:token"),
        found: header.join(", "),
    })?;
    let (ids, map) = id_column(
        path,
        column(&df, path, &header, &header[id_pos])?,
        id,
        |s| Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        "a non-empty token",
    )?;
    let mut features = Vec::new();
    let mut age = vec![f32::NAN; ids.len()];
    for (k, (name, ty)) in fields.iter().enumerate() {
        if k == id_pos {
            continue;
        }
        let col = column(&df, path, &header, &header[k])?;
        if name == "age" {
            for (row, v) in col.iter().enumerate() {
                age[row + 1] = v.and_then(|s| s.trim().parse().ok()).unwrap_or(f32::NAN);
            }
        }
        if ty == "token" {
            features.push(encode_feature(name, col));
        }
    }
    Ok((Entities { ids, features }, map, age))
}

/// Appends the interactions of one `.inter` file. Tokens not yet known are
/// added to `ids` unless `closed` (an `.item`/`.user` file defines the set).
// Long because it is one pass over the file's rows that checks and
// converts every column as it goes (so an error names the row); the
// per-column work is in `table`.
#[allow(clippy::too_many_arguments)]
pub fn read_inter(
    path: &Path,
    part: Part,
    users: &mut (Vec<String>, FxHashMap<String, u32>, bool),
    items: &mut (Vec<String>, FxHashMap<String, u32>, bool),
    chunk_bytes: usize,
    out: &mut Interactions,
) -> Result<()> {
    let header = super::table::read_header(path, b'\t')?;
    let fields = split_header(&header);
    let need = |n: &str| {
        find_col(&fields, n).ok_or_else(|| Error::MissingColumn {
            file: path.to_path_buf(),
            column: format!("{n}:token"),
            found: header.join(", "),
        })
    };
    let (u_pos, i_pos) = (need("user_id")?, need("item_id")?);
    let t_pos = find_col(&fields, "timestamp");
    let p_pos = find_col(&fields, "price");
    let lookup = |ent: &mut (Vec<String>, FxHashMap<String, u32>, bool),
                  v: &str,
                  line: u64,
                  col: &str,
                  what: &str| {
        if let Some(&x) = ent.1.get(v) {
            return Ok(x);
        }
        if ent.2 {
            return Err(Error::bad_value(
                path,
                line,
                col,
                format!("unknown {what} `{v}` (not in the .{what} file)"),
            ));
        }
        let x = ent.0.len() as u32;
        ent.0.push(v.to_string());
        ent.1.insert(v.to_string(), x);
        Ok(x)
    };
    for_each_chunk(path, b'\t', chunk_bytes, |df, first_line| {
        let ucol = column(df, path, &header, &header[u_pos])?;
        let icol = column(df, path, &header, &header[i_pos])?;
        let tcol = t_pos
            .map(|p| column(df, path, &header, &header[p]))
            .transpose()?;
        let pcol = p_pos
            .map(|p| column(df, path, &header, &header[p]))
            .transpose()?;
        for row in 0..df.height() {
            let line = first_line + row as u64;
            let u = ucol.get(row).unwrap_or("").trim();
            let i = icol.get(row).unwrap_or("").trim();
            if u.is_empty() || i.is_empty() {
                let c = if u.is_empty() { "user_id" } else { "item_id" };
                return Err(Error::bad_value(path, line, c, "missing value"));
            }
            let t = match &tcol {
                None => 0,
                Some(c) => {
                    let s = c.get(row).unwrap_or("").trim();
                    let t: f64 =
                        s.parse()
                            .ok()
                            .filter(|t: &f64| t.is_finite())
                            .ok_or_else(|| {
                                Error::bad_value(
                                    path,
                                    line,
                                    "timestamp",
                                    format!("`{s}` is not a number"),
                                )
                            })?;
                    t.floor() as i64
                }
            };
            let price = match &pcol {
                None => 0.0,
                Some(c) => {
                    let s = c.get(row).unwrap_or("").trim();
                    s.parse::<f32>()
                        .ok()
                        .filter(|p| p.is_finite() && *p >= 0.0)
                        .ok_or_else(|| {
                            Error::bad_value(
                                path,
                                line,
                                "price",
                                format!("`{s}` is not a non-negative number"),
                            )
                        })?
                }
            };
            out.user.push(lookup(users, u, line, "user_id", "user")?);
            out.item.push(lookup(items, i, line, "item_id", "item")?);
            out.time.push(t);
            out.price.push(price);
            out.channel.push(0);
            out.part.push(part as u8);
        }
        Ok(())
    })?;
    Ok(())
}
