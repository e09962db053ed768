//! Text tables read by polars with every column as a string; the typed
//! conversion happens in our code so a bad value is reported with its line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use crate::error::{Error, Result};

/// Splits a header line; RecBole headers carry `name:type`, kept whole here.
pub fn read_header(path: &Path, sep: u8) -> Result<Vec<String>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut line = String::new();
    BufReader::new(file)
        .read_line(&mut line)
        .map_err(|e| Error::io(path, e))?;
    let line = line
        .trim_end_matches(['\n', '\r'])
        .trim_start_matches('\u{feff}');
    if line.trim().is_empty() {
        return Err(Error::EmptyFile {
            file: path.to_path_buf(),
        });
    }
    Ok(line
        .split(sep as char)
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect())
}

fn string_schema(header: &[String]) -> SchemaRef {
    Arc::new(
        header
            .iter()
            .map(|h| Field::new(h.as_str().into(), DataType::String))
            .collect(),
    )
}

fn options(header: &[String], sep: u8) -> CsvReadOptions {
    CsvReadOptions::default()
        .with_has_header(false)
        .with_schema(Some(string_schema(header)))
        .with_raise_if_empty(false)
        .map_parse_options(|o| {
            o.with_separator(sep)
                .with_quote_char(if sep == b'\t' { None } else { Some(b'"') })
        })
}

/// Reads a whole (small) file: every column a string. Line of row r = r + 2.
pub fn read_all(path: &Path, sep: u8) -> Result<(Vec<String>, DataFrame)> {
    let header = read_header(path, sep)?;
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let body_start = memchr::memchr(b'\n', &bytes)
        .map(|p| p + 1)
        .unwrap_or(bytes.len());
    let body = &bytes[body_start..];
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::EmptyFile {
            file: path.to_path_buf(),
        });
    }
    let df = options(&header, sep)
        .into_reader_with_file_handle(std::io::Cursor::new(body))
        .finish()
        .map_err(|e| Error::Csv {
            file: path.to_path_buf(),
            lines: None,
            source: e,
        })?;
    Ok((header, df))
}

/// Streams a large file in chunks of about `chunk_bytes`, cut at line ends.
/// `f` gets each chunk's frame and the file line number of its first row, so
/// memory stays bounded by one chunk however large the file is.
pub fn for_each_chunk(
    path: &Path,
    sep: u8,
    chunk_bytes: usize,
    mut f: impl FnMut(&DataFrame, u64) -> Result<()>,
) -> Result<(Vec<String>, u64)> {
    let header = read_header(path, sep)?;
    let mut file =
        BufReader::with_capacity(1 << 20, File::open(path).map_err(|e| Error::io(path, e))?);
    let mut skip = String::new();
    file.read_line(&mut skip).map_err(|e| Error::io(path, e))?;
    let opts = options(&header, sep);
    let mut buf: Vec<u8> = Vec::with_capacity(chunk_bytes + (1 << 16));
    let mut line = 2u64;
    let mut rows = 0u64;
    let mut eof = false;
    while !eof {
        let start = buf.len();
        // Read `chunk_bytes` new bytes after the carried partial line.
        buf.resize(start + chunk_bytes.max(1), 0);
        let mut filled = start;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .map_err(|e| Error::io(path, e))?;
            if n == 0 {
                eof = true;
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        let cut = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(p) => p + 1,
                None => continue, // one line longer than the chunk: read more
            }
        };
        let chunk = &buf[..cut];
        if chunk.iter().any(|b| !b.is_ascii_whitespace()) {
            let n_lines = memchr::memchr_iter(b'\n', chunk).count() as u64
                + u64::from(!chunk.ends_with(b"\n"));
            let df = opts
                .clone()
                .into_reader_with_file_handle(std::io::Cursor::new(chunk))
                .finish()
                .map_err(|e| Error::Csv {
                    file: path.to_path_buf(),
                    lines: Some((line, line + n_lines - 1)),
                    source: e,
                })?;
            f(&df, line)?;
            rows += df.height() as u64;
            line += n_lines;
        }
        buf.drain(..cut);
    }
    if rows == 0 {
        return Err(Error::EmptyFile {
            file: path.to_path_buf(),
        });
    }
    Ok((header, rows))
}

/// A required string column, or an error naming the file and the column.
pub fn column<'a>(
    df: &'a DataFrame,
    path: &Path,
    header: &[String],
    name: &str,
) -> Result<&'a StringChunked> {
    df.column(name)
        .and_then(|c| c.str())
        .map_err(|_| Error::MissingColumn {
            file: path.to_path_buf(),
            column: name.to_string(),
            found: header.join(", "),
        })
}

/// Checks that every required column is in the header before any work.
pub fn require(path: &Path, header: &[String], names: &[&str]) -> Result<()> {
    for n in names {
        if !header.iter().any(|h| h == n) {
            return Err(Error::MissingColumn {
                file: path.to_path_buf(),
                column: n.to_string(),
                found: header.join(", "),
            });
        }
    }
    Ok(())
}

/// Reads an entity file's id column: dense ids from 1 in file order (0 is
/// padding), every id passed through `normalize` and unique.
pub fn id_column(
    path: &Path,
    col: &StringChunked,
    name: &str,
    normalize: impl Fn(&str) -> Option<String>,
    rule: &str,
) -> Result<(Vec<String>, rustc_hash::FxHashMap<String, u32>)> {
    let mut ids = vec![String::new()];
    let mut map = rustc_hash::FxHashMap::default();
    for (row, v) in col.iter().enumerate() {
        let line = row as u64 + 2;
        let raw = v.unwrap_or("");
        let id = normalize(raw).ok_or_else(|| {
            Error::bad_value(
                path,
                line,
                name,
                format!("`{raw}` is not a valid id ({rule})"),
            )
        })?;
        if map.insert(id.clone(), ids.len() as u32).is_some() {
            return Err(Error::bad_value(
                path,
                line,
                name,
                format!("duplicate id `{id}`"),
            ));
        }
        ids.push(id);
    }
    Ok((ids, map))
}

/// A categorical feature from a column; row 0 of the codes is the padding entity.
pub fn encode_feature(name: &str, col: &StringChunked) -> crate::data::Feature {
    let mut enc = Encoder::new();
    let mut codes = vec![0];
    codes.extend(col.iter().map(|v| enc.code(v)));
    crate::data::Feature {
        name: name.to_string(),
        codes,
        vocab: enc.vocab,
    }
}

/// Dictionary-encodes raw values: code 0 for missing/empty, 1.. in first-seen order.
#[derive(Default)]
pub struct Encoder {
    map: rustc_hash::FxHashMap<String, u32>,
    pub vocab: Vec<String>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder {
            map: Default::default(),
            vocab: vec![String::new()],
        }
    }
    pub fn code(&mut self, v: Option<&str>) -> u32 {
        match v.map(str::trim) {
            None | Some("") => 0,
            Some(s) => {
                if let Some(&c) = self.map.get(s) {
                    return c;
                }
                let c = self.vocab.len() as u32;
                self.map.insert(s.to_string(), c);
                self.vocab.push(s.to_string());
                c
            }
        }
    }
}
