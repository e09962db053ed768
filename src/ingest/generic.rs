//! Any interaction log as a CSV, TSV or Parquet file: the user names which
//! column holds the user, the item, the time (and optionally the price and
//! the channel), and may add item and user attribute files with their own
//! column maps. Every value is checked row by row, so a bad one is reported
//! with its file, line (row for Parquet) and column.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use rustc_hash::FxHashMap;

use super::table::{encode_feature, for_each_chunk, read_all};
use crate::data::{Entities, Interactions, Part, TimeUnit};
use crate::error::{Error, Result};

/// How the interaction log's columns map onto recforge's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMap {
    pub user: String,
    pub item: String,
    pub time: String,
    pub price: Option<String>,
    /// A small integer per row (H&M: 1 in store, 2 online).
    pub channel: Option<String>,
}

impl LogMap {
    /// Parses `user=COL,item=COL,time=COL[,price=COL][,channel=COL]`.
    pub fn parse(spec: &str) -> Result<LogMap> {
        let pairs = pairs(spec, "--map")?;
        let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let need = |v: Option<String>, key: &str| {
            v.ok_or_else(|| {
                Error::Config(format!(
                    "--map needs `{key}=COLUMN` (it has: {spec}); required: user, item, time; optional: price, channel"
                ))
            })
        };
        let map = LogMap {
            user: need(get("user"), "user")?,
            item: need(get("item"), "item")?,
            time: need(get("time"), "time")?,
            price: get("price"),
            channel: get("channel"),
        };
        if let Some((k, _)) = pairs
            .iter()
            .find(|(k, _)| !["user", "item", "time", "price", "channel"].contains(&k.as_str()))
        {
            return Err(Error::Config(format!(
                "--map: unknown field `{k}` (known: user, item, time, price, channel)"
            )));
        }
        Ok(map)
    }
}

/// How an attribute file's columns map: `id` names the id column, `age`
/// (user files) a numeric age, and `NAME=COL` files column COL as feature
/// NAME (e.g. `product_code=style` to feed the ranker's same-product
/// features). Every other column is kept as a categorical feature under its
/// own name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityMap {
    pub id: String,
    pub age: Option<String>,
    pub rename: Vec<(String, String)>,
}

impl EntityMap {
    pub fn parse(spec: &str, flag: &str) -> Result<EntityMap> {
        let mut id = None;
        let mut age = None;
        let mut rename = Vec::new();
        for (k, v) in pairs(spec, flag)? {
            match k.as_str() {
                "id" => id = Some(v),
                "age" => age = Some(v),
                _ => rename.push((k, v)),
            }
        }
        let id = id.ok_or_else(|| Error::Config(format!("{flag} needs `id=COLUMN`")))?;
        Ok(EntityMap { id, age, rename })
    }
}

fn pairs(spec: &str, flag: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| Error::Config(format!("{flag}: `{part}` is not FIELD=COLUMN")))?;
        if out.iter().any(|(o, _)| o == k) {
            return Err(Error::Config(format!("{flag}: `{k}` is given twice")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// What `recforge prepare --format table` reads.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub log: PathBuf,
    pub map: LogMap,
    pub items: Option<(PathBuf, EntityMap)>,
    pub users: Option<(PathBuf, EntityMap)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv(u8),
    Parquet,
}

fn kind_of(path: &Path) -> Result<Kind> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => Ok(Kind::Csv(b',')),
        "tsv" | "tab" => Ok(Kind::Csv(b'\t')),
        "parquet" | "pq" => Ok(Kind::Parquet),
        _ => Err(Error::invalid(
            path,
            "unknown file type: expected .csv, .tsv or .parquet",
        )),
    }
}

/// Where a value sits, for the error: a text file's line or a Parquet row.
#[derive(Clone, Copy)]
enum At {
    Line(u64),
    Row(u64),
}

fn bad(path: &Path, at: At, column: &str, msg: String) -> Error {
    match at {
        At::Line(line) => Error::bad_value(path, line, column, msg),
        At::Row(row) => Error::BadRow {
            file: path.to_path_buf(),
            row,
            column: column.to_string(),
            msg,
        },
    }
}

/// One column of a chunk, in whatever type the file stored it.
enum Values {
    Text(StringChunked),
    Int(Int64Chunked),
    Float(Float64Chunked),
    /// Parquet dates: days since 1970-01-01.
    Days(Int32Chunked),
    /// Parquet timestamps in units of 1/`per_second` s.
    Stamp(Int64Chunked, i64),
}

impl Values {
    fn of(df: &DataFrame, path: &Path, name: &str) -> Result<Values> {
        let s = df
            .column(name)
            .map_err(|_| Error::MissingColumn {
                file: path.to_path_buf(),
                column: name.to_string(),
                found: df
                    .get_column_names()
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?
            .as_materialized_series();
        let pq = |e| Error::Parquet {
            file: path.to_path_buf(),
            source: e,
        };
        Ok(match s.dtype() {
            DataType::String => Values::Text(s.str().map_err(pq)?.clone()),
            DataType::Date => Values::Days(s.to_physical_repr().i32().map_err(pq)?.clone()),
            DataType::Datetime(tu, _) => {
                let per_second = match tu {
                    polars::prelude::TimeUnit::Nanoseconds => 1_000_000_000,
                    polars::prelude::TimeUnit::Microseconds => 1_000_000,
                    polars::prelude::TimeUnit::Milliseconds => 1_000,
                };
                Values::Stamp(s.to_physical_repr().i64().map_err(pq)?.clone(), per_second)
            }
            DataType::Float32 | DataType::Float64 => Values::Float(
                s.cast(&DataType::Float64)
                    .map_err(pq)?
                    .f64()
                    .map_err(pq)?
                    .clone(),
            ),
            d if d.is_integer() => Values::Int(
                s.cast(&DataType::Int64)
                    .map_err(pq)?
                    .i64()
                    .map_err(pq)?
                    .clone(),
            ),
            d => {
                return Err(Error::invalid(
                    path,
                    format!("column `{name}` has type {d}, which cannot be read as a value"),
                ));
            }
        })
    }

    /// The value as text (ids, channel, price); `None` when missing.
    fn text(&self, row: usize) -> Option<Cow<'_, str>> {
        match self {
            Values::Text(c) => c
                .get(row)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Cow::Borrowed),
            Values::Int(c) => c.get(row).map(|v| Cow::Owned(v.to_string())),
            Values::Float(c) => c.get(row).map(|v| Cow::Owned(v.to_string())),
            Values::Days(c) => c
                .get(row)
                .map(|d| Cow::Owned(crate::util::dates::format_ymd(d))),
            Values::Stamp(c, _) => c.get(row).map(|v| Cow::Owned(v.to_string())),
        }
    }

    fn time(&self, row: usize) -> std::result::Result<Time, String> {
        match self {
            Values::Days(c) => c.get(row).map(Time::Day).ok_or_else(missing),
            Values::Stamp(c, per) => c
                .get(row)
                .map(|v| Time::Second(v.div_euclid(*per)))
                .ok_or_else(missing),
            Values::Int(c) => c.get(row).ok_or_else(missing).and_then(epoch),
            Values::Float(c) => {
                let v = c.get(row).ok_or_else(missing)?;
                if !v.is_finite() {
                    return Err(format!("`{v}` is not a time"));
                }
                epoch(v.floor() as i64)
            }
            Values::Text(c) => parse_time(c.get(row).map(str::trim).unwrap_or("")),
        }
    }
}

fn missing() -> String {
    "missing value".into()
}

/// Epoch seconds from 1971 on; a value in milliseconds or microseconds
/// (what many exporters write) would land thousands of years ahead and is
/// refused rather than silently misread.
fn epoch(v: i64) -> std::result::Result<Time, String> {
    if v > 100_000_000_000 {
        return Err(format!(
            "`{v}` is too large for epoch seconds (milliseconds? divide by 1000)"
        ));
    }
    // A date written as a number (20200922) would read as August 1970.
    if v < 31_536_000 {
        return Err(format!(
            "`{v}` is before 1971 as epoch seconds (a YYYYMMDD date? write it as YYYY-MM-DD)"
        ));
    }
    Ok(Time::Second(v))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Time {
    Day(i32),
    Second(i64),
}

/// A date (`YYYY-MM-DD`), a datetime (`YYYY-MM-DD[T ]HH:MM[:SS[.fff]]`,
/// optionally with `Z` or `±HH:MM`, converted to UTC) or epoch seconds.
fn parse_time(s: &str) -> std::result::Result<Time, String> {
    if s.is_empty() {
        return Err(missing());
    }
    if !s.is_ascii() {
        return Err(format!("`{s}` is not a time"));
    }
    let help = || {
        format!("`{s}` is not a time (expected YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or epoch seconds)")
    };
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s[1..].contains('-')
    {
        let v: f64 = s.parse().map_err(|_| help())?;
        return epoch(v.floor() as i64);
    }
    if s.len() == 10 {
        return crate::util::dates::parse_ymd(s)
            .map(Time::Day)
            .ok_or_else(help);
    }
    if s.len() < 16 || !matches!(s.as_bytes()[10], b' ' | b'T') {
        return Err(help());
    }
    let day = crate::util::dates::parse_ymd(&s[..10]).ok_or_else(help)? as i64;
    let rest = &s[11..];
    let (clock, offset) = match rest.find(['Z', '+', '-']) {
        Some(p) => (&rest[..p], &rest[p..]),
        None => (rest, ""),
    };
    let num = |t: &str, max: u32| t.parse::<u32>().ok().filter(|&v| v <= max && t.len() == 2);
    let mut parts = clock.split(':');
    let h = parts.next().and_then(|t| num(t, 23)).ok_or_else(help)?;
    let m = parts.next().and_then(|t| num(t, 59)).ok_or_else(help)?;
    let sec = match parts.next() {
        None => 0,
        Some(t) => {
            let whole = t.split_once('.').map_or(t, |(w, frac)| {
                if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    ""
                } else {
                    w
                }
            });
            num(whole, 60).ok_or_else(help)?
        }
    };
    if parts.next().is_some() {
        return Err(help());
    }
    let offset_s = match offset {
        "" | "Z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').unwrap_or((&o[1..], "00"));
            let oh = num(oh, 23).ok_or_else(help)?;
            let om = num(om, 59).ok_or_else(help)?;
            sign * (oh as i64 * 3600 + om as i64 * 60)
        }
    };
    Ok(Time::Second(
        day * 86_400 + h as i64 * 3600 + m as i64 * 60 + sec as i64 - offset_s,
    ))
}

/// Ids seen so far; `closed` when an attribute file defines the set.
struct Ids {
    ids: Vec<String>,
    map: FxHashMap<String, u32>,
    closed: bool,
}

impl Ids {
    fn open() -> Ids {
        Ids {
            ids: vec![String::new()],
            map: FxHashMap::default(),
            closed: false,
        }
    }

    fn get(&mut self, v: &str) -> Option<u32> {
        if let Some(&x) = self.map.get(v) {
            return Some(x);
        }
        if self.closed {
            return None;
        }
        let x = self.ids.len() as u32;
        self.ids.push(v.to_string());
        self.map.insert(v.to_string(), x);
        Some(x)
    }
}

/// Everything `load` produces, for `ingest::finish`.
pub struct Loaded {
    pub name: String,
    pub time_unit: TimeUnit,
    pub has_price: bool,
    pub users: Entities,
    pub age: Vec<f32>,
    pub items: Entities,
    pub inter: Interactions,
}

pub fn load(spec: &TableSpec) -> Result<Loaded> {
    let (mut items, item_ids) = match &spec.items {
        Some((path, map)) => {
            let (e, ids, _) = read_entities(path, map, false)?;
            (e, ids)
        }
        None => (empty_entities(), Ids::open()),
    };
    let (mut users, user_ids, mut age) = match &spec.users {
        Some((path, map)) => read_entities(path, map, true)?,
        None => (empty_entities(), Ids::open(), vec![f32::NAN]),
    };
    let mut reader = LogReader {
        path: &spec.log,
        map: &spec.map,
        users: user_ids,
        items: item_ids,
        unit: None,
        inter: Interactions::default(),
    };
    match kind_of(&spec.log)? {
        Kind::Csv(sep) => {
            for_each_chunk(&spec.log, sep, super::CHUNK_BYTES, |df, first_line| {
                reader.chunk(df, |row| At::Line(first_line + row as u64))
            })?;
        }
        Kind::Parquet => {
            let df = read_parquet(&spec.log)?;
            if df.height() == 0 {
                return Err(Error::EmptyFile {
                    file: spec.log.clone(),
                });
            }
            reader.chunk(&df, |row| At::Row(row as u64 + 1))?;
        }
    }
    let unit = reader.unit.unwrap_or(TimeUnit::Second);
    users.ids = reader.users.ids;
    items.ids = reader.items.ids;
    age.resize(users.ids.len(), f32::NAN);
    let name = spec
        .log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "table".into());
    Ok(Loaded {
        name,
        time_unit: unit,
        has_price: spec.map.price.is_some(),
        users,
        age,
        items,
        inter: reader.inter,
    })
}

fn empty_entities() -> Entities {
    Entities {
        ids: vec![String::new()],
        features: vec![],
    }
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

struct LogReader<'a> {
    path: &'a Path,
    map: &'a LogMap,
    users: Ids,
    items: Ids,
    /// Fixed by the first row: dates give day numbers, anything with a
    /// clock gives seconds; a column mixing the two is refused.
    unit: Option<TimeUnit>,
    inter: Interactions,
}

impl LogReader<'_> {
    fn chunk(&mut self, df: &DataFrame, at: impl Fn(usize) -> At) -> Result<()> {
        let path = self.path;
        let m = self.map;
        let user = Values::of(df, path, &m.user)?;
        let item = Values::of(df, path, &m.item)?;
        let time = Values::of(df, path, &m.time)?;
        let price = m
            .price
            .as_ref()
            .map(|c| Values::of(df, path, c))
            .transpose()?;
        let channel = m
            .channel
            .as_ref()
            .map(|c| Values::of(df, path, c))
            .transpose()?;
        for row in 0..df.height() {
            let at = at(row);
            let err = |col: &str, msg: String| bad(path, at, col, msg);
            let u = user.text(row).ok_or_else(|| err(&m.user, missing()))?;
            let u = self.users.get(&u).ok_or_else(|| {
                err(
                    &m.user,
                    format!("unknown user `{u}` (not in the users file)"),
                )
            })?;
            let i = item.text(row).ok_or_else(|| err(&m.item, missing()))?;
            let i = self.items.get(&i).ok_or_else(|| {
                err(
                    &m.item,
                    format!("unknown item `{i}` (not in the items file)"),
                )
            })?;
            let t = time.time(row).map_err(|msg| err(&m.time, msg))?;
            let (unit, t) = match t {
                Time::Day(d) => (TimeUnit::Day, d as i64),
                Time::Second(s) => (TimeUnit::Second, s),
            };
            match self.unit {
                None => self.unit = Some(unit),
                Some(u) if u != unit => {
                    let (was, is) = match u {
                        TimeUnit::Day => ("dates", "a date and time"),
                        TimeUnit::Second => ("dates and times", "a date without a time"),
                    };
                    return Err(err(
                        &m.time,
                        format!(
                            "the column's first rows are {was}, this one is {is}; use one form"
                        ),
                    ));
                }
                Some(_) => {}
            }
            let p = match (&price, &m.price) {
                (Some(v), Some(col)) => {
                    let s = v.text(row).ok_or_else(|| err(col, missing()))?;
                    s.parse::<f32>()
                        .ok()
                        .filter(|p| p.is_finite() && *p >= 0.0)
                        .ok_or_else(|| err(col, format!("`{s}` is not a non-negative number")))?
                }
                _ => 0.0,
            };
            let ch = match (&channel, &m.channel) {
                (Some(v), Some(col)) => {
                    let s = v.text(row).ok_or_else(|| err(col, missing()))?;
                    s.parse::<u8>()
                        .ok()
                        .ok_or_else(|| err(col, format!("`{s}` is not an integer 0..=255")))?
                }
                _ => 0,
            };
            self.inter.user.push(u);
            self.inter.item.push(i);
            self.inter.time.push(t);
            self.inter.price.push(p);
            self.inter.channel.push(ch);
            self.inter.part.push(Part::Log as u8);
        }
        Ok(())
    }
}

/// An attribute file: ids in file order (closing the id set), every other
/// column a categorical feature; `age` (users) parsed as years.
fn read_entities(path: &Path, map: &EntityMap, users: bool) -> Result<(Entities, Ids, Vec<f32>)> {
    let kind = kind_of(path)?;
    let (header, df) = match kind {
        Kind::Csv(sep) => read_all(path, sep)?,
        Kind::Parquet => {
            let df = read_parquet(path)?;
            if df.height() == 0 {
                return Err(Error::EmptyFile {
                    file: path.to_path_buf(),
                });
            }
            let header = df
                .get_column_names()
                .iter()
                .map(|c| c.to_string())
                .collect();
            (header, df)
        }
    };
    let at = |row: usize| match kind {
        Kind::Parquet => At::Row(row as u64 + 1),
        Kind::Csv(_) => At::Line(row as u64 + 2),
    };
    if !users && map.age.is_some() {
        return Err(Error::Config("--item-map: `age` is a user field".into()));
    }
    let known: Vec<&str> = std::iter::once(map.id.as_str())
        .chain(map.age.as_deref())
        .chain(map.rename.iter().map(|(_, c)| c.as_str()))
        .collect();
    for c in &known {
        if !header.iter().any(|h| h == c) {
            return Err(Error::MissingColumn {
                file: path.to_path_buf(),
                column: c.to_string(),
                found: header.join(", "),
            });
        }
    }
    let id_col = Values::of(&df, path, &map.id)?;
    let mut ids = Ids::open();
    for row in 0..df.height() {
        let id = id_col
            .text(row)
            .ok_or_else(|| bad(path, at(row), &map.id, missing()))?;
        if ids.map.contains_key(id.as_ref()) {
            return Err(bad(path, at(row), &map.id, format!("duplicate id `{id}`")));
        }
        ids.get(&id);
    }
    ids.closed = true;
    let mut age = vec![f32::NAN; ids.ids.len()];
    if let Some(col) = &map.age {
        let v = Values::of(&df, path, col)?;
        for (row, a) in age[1..].iter_mut().enumerate() {
            *a = match v.text(row) {
                None => f32::NAN,
                Some(s) => s
                    .parse::<f32>()
                    .ok()
                    .filter(|a| (0.0..=130.0).contains(a))
                    .ok_or_else(|| {
                        bad(path, at(row), col, format!("`{s}` is not an age in years"))
                    })?,
            };
        }
    }
    let mut features = Vec::new();
    for h in &header {
        if h == &map.id || map.age.as_ref() == Some(h) {
            continue;
        }
        let name = map
            .rename
            .iter()
            .find(|(_, c)| c == h)
            .map_or(h.as_str(), |(n, _)| n.as_str());
        let text = df
            .column(h)
            .and_then(|c| c.cast(&DataType::String))
            .map_err(|e| Error::Parquet {
                file: path.to_path_buf(),
                source: e,
            })?;
        let text = text.str().map_err(|e| Error::Parquet {
            file: path.to_path_buf(),
            source: e,
        })?;
        features.push(encode_feature(name, text));
    }
    Ok((
        Entities {
            ids: vec![String::new()],
            features,
        },
        ids,
        age,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let day = crate::util::dates::parse_ymd("2020-09-22").unwrap();
        assert_eq!(parse_time("2020-09-22"), Ok(Time::Day(day)));
        let s = day as i64 * 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(parse_time("2020-09-22 13:05:09"), Ok(Time::Second(s)));
        assert_eq!(parse_time("2020-09-22T13:05:09.250Z"), Ok(Time::Second(s)));
        assert_eq!(parse_time("2020-09-22T15:05:09+02:00"), Ok(Time::Second(s)));
        assert_eq!(parse_time("2020-09-22 13:05"), Ok(Time::Second(s - 9)));
        assert_eq!(parse_time(&s.to_string()), Ok(Time::Second(s)));
        assert_eq!(parse_time(&format!("{s}.75")), Ok(Time::Second(s)));
        for bad in [
            "2020-02-30",
            "2020-09-22 25:00:00",
            "yesterday",
            "",
            "1600000000000",
            "20200922",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn maps_name_their_mistakes() {
        let m = LogMap::parse("user=u, item=i,time=t,price=p").unwrap();
        assert_eq!((m.user.as_str(), m.price.as_deref()), ("u", Some("p")));
        let e = LogMap::parse("user=u,item=i").unwrap_err().to_string();
        assert!(e.contains("time=COLUMN"), "{e}");
        let e = LogMap::parse("user=u,item=i,time=t,colour=c")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`colour`"), "{e}");
        let e = LogMap::parse("user=u,item,time=t").unwrap_err().to_string();
        assert!(e.contains("`item`"), "{e}");
        let e = EntityMap::parse("product_code=style", "--item-map").unwrap_err();
        assert!(e.to_string().contains("id=COLUMN"));
    }
}
