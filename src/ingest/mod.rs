//! `recforge prepare`: raw files → validated dataset → Parquet cache.

pub mod generic;
pub mod hm;
pub mod recbole;
pub mod synth;
pub mod table;

use std::path::Path;

use crate::data::{
    CACHE_FORMAT_VERSION, Dataset, Entities, Interactions, Meta, Part, Source, TimeUnit,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// H&M if transactions_train.csv is present, else RecBole atomic files.
    Auto,
    Hm,
    Recbole,
    /// Any CSV/Parquet log with a column map (`--map user=..,item=..,time=..`).
    Table,
}

/// Transactions are parsed in chunks of this many bytes (bounded memory).
pub const CHUNK_BYTES: usize = 64 << 20;

pub fn load(dir: &Path, format: Format) -> Result<Dataset> {
    let hm = dir.join("transactions_train.csv").exists();
    match format {
        Format::Hm => load_hm(dir),
        Format::Auto if hm => load_hm(dir),
        Format::Auto | Format::Recbole => match recbole::find(dir)? {
            Some(files) => load_recbole(files),
            None => Err(Error::invalid(
                dir,
                "no transactions_train.csv (H&M) and no .inter file (RecBole) in this directory",
            )),
        },
        Format::Table => Err(Error::Config(
            "--format table reads one file with a column map: pass --map user=COL,item=COL,time=COL".into(),
        )),
    }
}

/// A CSV/Parquet log through its column map (`--format table`).
pub fn load_table(spec: &generic::TableSpec) -> Result<Dataset> {
    let l = generic::load(spec)?;
    Ok(finish(
        l.name,
        Source::Table,
        l.time_unit,
        l.has_price,
        false,
        l.users,
        l.age,
        l.items,
        l.inter,
    ))
}

fn name_of(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "dataset".into())
}

fn load_hm(dir: &Path) -> Result<Dataset> {
    let (items, art_map) = hm::read_articles(dir)?;
    let (users, age, cust_map) = hm::read_customers(dir)?;
    let mut inter = Interactions::default();
    let mut explicit = false;
    for (file, part) in [
        ("transactions_train.csv", Part::Log),
        ("transactions_valid.csv", Part::Valid),
        ("transactions_test.csv", Part::Test),
    ] {
        let path = dir.join(file);
        if part != Part::Log {
            if !path.exists() {
                continue;
            }
            explicit = true;
        }
        hm::read_transactions(&path, part, &cust_map, &art_map, CHUNK_BYTES, &mut inter)?;
    }
    Ok(finish(
        name_of(dir),
        Source::Hm,
        TimeUnit::Day,
        true,
        explicit,
        users,
        age,
        items,
        inter,
    ))
}

fn load_recbole(files: recbole::Files) -> Result<Dataset> {
    let (mut users, mut age, umap) = match &files.user {
        Some(p) => {
            let (e, m, a) = recbole::read_entities(p, "user_id")?;
            (e, a, Some(m))
        }
        None => (
            Entities {
                ids: vec![String::new()],
                features: vec![],
            },
            vec![f32::NAN],
            None,
        ),
    };
    let (mut items, imap) = match &files.item {
        Some(p) => {
            let (e, m, _) = recbole::read_entities(p, "item_id")?;
            (e, Some(m))
        }
        None => (
            Entities {
                ids: vec![String::new()],
                features: vec![],
            },
            None,
        ),
    };
    // An .item/.user file closes the set of ids; without one, ids come from the log.
    let (closed_users, closed_items) = (umap.is_some(), imap.is_some());
    let mut u = (
        std::mem::take(&mut users.ids),
        umap.unwrap_or_default(),
        closed_users,
    );
    let mut i = (
        std::mem::take(&mut items.ids),
        imap.unwrap_or_default(),
        closed_items,
    );
    let mut inter = Interactions::default();
    let explicit = files.inter.iter().any(|(_, p)| *p != Part::Log);
    if explicit && files.inter.iter().any(|(_, p)| *p == Part::Log) {
        let dir = files.inter[0].0.parent().unwrap_or(Path::new("."));
        return Err(Error::invalid(
            dir,
            "both a plain .inter file and .train/.valid/.test.inter files; keep one of the two layouts",
        ));
    }
    for (path, part) in &files.inter {
        recbole::read_inter(path, *part, &mut u, &mut i, CHUNK_BYTES, &mut inter)?;
    }
    users.ids = u.0;
    items.ids = i.0;
    age.resize(users.ids.len(), f32::NAN);
    let has_price = inter.price.iter().any(|&p| p > 0.0);
    Ok(finish(
        files.name,
        Source::Recbole,
        TimeUnit::Second,
        has_price,
        explicit,
        users,
        age,
        items,
        inter,
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    name: String,
    source: Source,
    time_unit: TimeUnit,
    has_price: bool,
    explicit_split: bool,
    mut users: Entities,
    age: Vec<f32>,
    mut items: Entities,
    inter: Interactions,
) -> Dataset {
    // Entities first seen in the log (no .user/.item file) have no feature rows.
    for e in [&mut users, &mut items] {
        let n = e.ids.len();
        for f in &mut e.features {
            f.codes.resize(n, 0);
        }
    }
    Dataset {
        meta: Meta {
            format_version: CACHE_FORMAT_VERSION,
            name,
            source,
            time_unit,
            has_price,
            explicit_split,
            n_users: users.len(),
            n_items: items.len(),
            n_interactions: inter.len(),
        },
        users,
        age,
        items,
        inter,
    }
}
