//! Kaggle H&M submission files: `customer_id,prediction` with 12
//! space-separated 10-digit article ids for every customer.

use std::io::{BufRead, BufReader};
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::data::{Dataset, Source};
use crate::error::{Error, Result};
use crate::util::fsutil::AtomicFile;

pub const K: usize = 12;

/// Writes the submission of every customer of `ds` (dense ids 1..) in
/// customer order, atomically, `chunk` customers at a time, each chunk's
/// lists from `lists` (dataset item ids, at least K each; extra ones are
/// cut); then checks the file with [`check`]. Short lists are an error,
/// never padded silently.
pub fn write(
    ds: &Dataset,
    path: &Path,
    chunk: usize,
    mut lists: impl FnMut(&[u32]) -> Result<Vec<Vec<u32>>>,
) -> Result<CheckReport> {
    if ds.meta.source != Source::Hm {
        return Err(Error::Data(
            "submissions are written for H&M-format data only".into(),
        ));
    }
    let mut f = AtomicFile::create(path)?;
    f.write_all(b"customer_id,prediction\n")?;
    let users: Vec<u32> = (1..ds.users.len() as u32).collect();
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
    check(ds, path)
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
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let items: FxHashMap<&str, ()> = ds
        .items
        .ids
        .iter()
        .skip(1)
        .map(|s| (s.as_str(), ()))
        .collect();
    let users: FxHashMap<&str, u32> = ds
        .users
        .ids
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, s)| (s.as_str(), i as u32))
        .collect();
    let mut covered = vec![false; ds.users.len()];
    let mut rows = 0;
    for (n, l) in BufReader::new(file).lines().enumerate() {
        let line = n as u64 + 1;
        let l = l.map_err(|e| Error::io(path, e))?;
        if n == 0 {
            if l.trim_end() != "customer_id,prediction" {
                return Err(Error::bad_value(
                    path,
                    1,
                    "header",
                    format!("expected `customer_id,prediction`, found `{l}`"),
                ));
            }
            continue;
        }
        let (cust, pred) = l
            .split_once(',')
            .ok_or_else(|| Error::bad_value(path, line, "customer_id", "no comma"))?;
        let u = *users.get(cust).ok_or_else(|| {
            Error::bad_value(
                path,
                line,
                "customer_id",
                format!("unknown customer `{cust}`"),
            )
        })?;
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
    if let Some(u) = covered.iter().skip(1).position(|c| !c) {
        return Err(Error::invalid(
            path,
            format!(
                "customer `{}` is missing ({} of {} covered)",
                ds.users.ids[u + 1],
                rows,
                ds.users.len() - 1
            ),
        ));
    }
    Ok(CheckReport {
        rows,
        customers: ds.users.len() - 1,
    })
}
