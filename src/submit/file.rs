//! Kaggle H&M submission files: `customer_id,prediction` with 12
//! space-separated 10-digit article ids for every customer.

use std::io::{BufRead, BufReader};
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::data::{Dataset, Source};
use crate::error::{Error, Result};
use crate::util::fsutil::AtomicFile;

pub const K: usize = 12;

/// One of `count` parts of the customers (`index` in `0..count`), by a
/// stable hash of the customer id ([`recforge_infer::bundle::shard_of`]):
/// array jobs (Kubernetes indexed Jobs, Slurm arrays) each write one, and
/// [`merge`] joins them into the file one job would have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `I/N`, with I from 0 to N − 1 (as array-job indices count).
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || {
            Error::Config(format!(
                "--shard `{text}`: expected I/N with 0 <= I < N (e.g. 0/4)"
            ))
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    pub fn contains(&self, customer_id: &str) -> bool {
        recforge_infer::bundle::shard_of(customer_id, self.count) == self.index
    }
}

/// Writes the submission of every customer of `ds` (dense ids 1..) in
/// customer order, or of those in `shard`, atomically, `chunk` customers
/// at a time, each chunk's lists from `lists` (dataset item ids, at least
/// K each; extra ones are cut); then checks the file with [`check`] (its
/// shard's customers only, for a shard). Short lists are an error, never
/// padded silently.
pub fn write(
    ds: &Dataset,
    path: &Path,
    chunk: usize,
    shard: Option<Shard>,
    mut lists: impl FnMut(&[u32]) -> Result<Vec<Vec<u32>>>,
) -> Result<CheckReport> {
    if ds.meta.source != Source::Hm {
        return Err(Error::Data(
            "submissions are written for H&M-format data only".into(),
        ));
    }
    let mut f = AtomicFile::create(path)?;
    f.write_all(b"customer_id,prediction\n")?;
    let users: Vec<u32> = (1..ds.users.len() as u32)
        .filter(|&u| shard.is_none_or(|s| s.contains(&ds.users.ids[u as usize])))
        .collect();
    let mut progress = crate::util::progress::Counter::new("submission: customers", users.len());
    for chunk in users.chunks(chunk.max(1)) {
        let got = lists(chunk)?;
        progress.add(chunk.len());
        let mut text = String::with_capacity(chunk.len() * (65 + 11 * K));
        for (&u, list) in chunk.iter().zip(&got) {
            if list.len() < K {
                return Err(Error::invalid(
                    path,
                    format!(
                        "only {} servable articles for customer {}",
                        list.len(),
                        ds.users.ids[u as usize]
                    ),
                ));
            }
            text.push_str(&ds.users.ids[u as usize]);
            text.push(',');
            for (j, &i) in list.iter().take(K).enumerate() {
                if j > 0 {
                    text.push(' ');
                }
                text.push_str(&ds.items.ids[i as usize]);
            }
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
    }
    progress.finish();
    f.commit()?;
    check_part(ds, path, shard)
}

/// Checks a submission's first line.
fn header(path: &Path, line: &str) -> Result<()> {
    if line.trim_end() != "customer_id,prediction" {
        return Err(Error::bad_value(
            path,
            1,
            "header",
            format!("expected `customer_id,prediction`, found `{line}`"),
        ));
    }
    Ok(())
}

/// Each customer id's dense id (1..), to place a file's rows.
fn user_index(ds: &Dataset) -> FxHashMap<&str, u32> {
    ds.users
        .ids
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| (s.as_str(), i as u32))
        .collect()
}

/// The dense id of `cust`, read at `line` of `path`.
fn customer(users: &FxHashMap<&str, u32>, path: &Path, line: u64, cust: &str) -> Result<u32> {
    users.get(cust).copied().ok_or_else(|| {
        Error::bad_value(
            path,
            line,
            "customer_id",
            format!("unknown customer `{cust}`"),
        )
    })
}

/// Joins shard files (written with `--shard I/N` for every I) into the
/// submission, in customer order: byte for byte the file one unsharded
/// run writes. Every customer must be in exactly one shard; the joined
/// file is checked like any submission, and written only whole.
pub fn merge(ds: &Dataset, shards: &[std::path::PathBuf], out: &Path) -> Result<CheckReport> {
    let users = user_index(ds);
    let mut rows: Vec<Option<String>> = vec![None; ds.users.len()];
    for path in shards {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        for (n, l) in BufReader::new(file).lines().enumerate() {
            let line = n as u64 + 1;
            let l = l.map_err(|e| Error::io(path, e))?;
            if n == 0 {
                header(path, &l)?;
                continue;
            }
            let cust = l.split_once(',').map_or(l.as_str(), |(c, _)| c);
            let u = customer(&users, path, line, cust)?;
            if rows[u as usize].replace(l.clone()).is_some() {
                return Err(Error::bad_value(
                    path,
                    line,
                    "customer_id",
                    format!("customer `{cust}` is in another shard (or twice in this one)"),
                ));
            }
        }
    }
    if let Some(u) = rows.iter().skip(1).position(Option::is_none) {
        return Err(Error::Data(format!(
            "customer `{}` is in none of the {} shard files: give every shard (I/N for I in 0..N)",
            ds.users.ids[u + 1],
            shards.len()
        )));
    }
    let mut f = AtomicFile::create(out)?;
    f.write_all(b"customer_id,prediction\n")?;
    for r in rows.iter().skip(1).flatten() {
        f.write_all(r.as_bytes())?;
        f.write_all(b"\n")?;
    }
    f.commit()?;
    check(ds, out)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckReport {
    pub rows: usize,
    pub customers: usize,
}

/// Validates a submission against the dataset: header, every customer once,
/// exactly 12 distinct known 10-digit article ids per row.
// A list of independent line checks, each with its own error message.
pub fn check(ds: &Dataset, path: &Path) -> Result<CheckReport> {
    check_part(ds, path, None)
}

/// [`check`] of a shard file: every customer of the shard, and none other.
fn check_part(ds: &Dataset, path: &Path, shard: Option<Shard>) -> Result<CheckReport> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let items: FxHashMap<&str, ()> = ds
        .items
        .ids
        .iter()
        .skip(1)
        .map(|s| (s.as_str(), ()))
        .collect();
    let users = user_index(ds);
    let in_part = |u: usize| shard.is_none_or(|s| s.contains(&ds.users.ids[u]));
    let mut covered = vec![false; ds.users.len()];
    let mut rows = 0;
    for (n, l) in BufReader::new(file).lines().enumerate() {
        let line = n as u64 + 1;
        let l = l.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            header(path, &l)?;
            continue;
        }
        let (cust, pred) = l
            .split_once(',')
            .ok_or_else(|| Error::bad_value(path, line, "customer_id", "no comma"))?;
        let u = customer(&users, path, line, cust)?;
        if !in_part(u as usize) {
            return Err(Error::bad_value(
                path,
                line,
                "customer_id",
                format!("customer `{cust}` belongs to another shard"),
            ));
        }
        if std::mem::replace(&mut covered[u as usize], true) {
            return Err(Error::bad_value(
                path,
                line,
                "customer_id",
                format!("customer `{cust}` appears twice"),
            ));
        }
        let ids: Vec<&str> = pred.split(' ').collect();
        if ids.len() != K {
            return Err(Error::bad_value(
                path,
                line,
                "prediction",
                format!("{} ids, expected {K}", ids.len()),
            ));
        }
        for (j, id) in ids.iter().enumerate() {
            if id.len() != 10 || !items.contains_key(id) {
                return Err(Error::bad_value(
                    path,
                    line,
                    "prediction",
                    format!("`{id}` is not a known 10-digit article id"),
                ));
            }
            if ids[..j].contains(id) {
                return Err(Error::bad_value(
                    path,
                    line,
                    "prediction",
                    format!("`{id}` repeated"),
                ));
            }
        }
        rows += 1;
    }
    let expected = (1..ds.users.len()).filter(|&u| in_part(u)).count();
    if let Some(u) = (1..ds.users.len()).find(|&u| in_part(u) && !covered[u]) {
        return Err(Error::invalid(
            path,
            format!(
                "customer `{}` is missing ({} of {} covered)",
                ds.users.ids[u], rows, expected
            ),
        ));
    }
    Ok(CheckReport {
        rows,
        customers: expected,
    })
}
