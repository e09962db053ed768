//! TensorBoard event files: scalar and text summaries as TFRecord-framed
//! `Event` protocol buffers, and the files of TensorBoard's embedding
//! projector.
//!
//! Written by hand instead of through a crate: the format is a few fields of
//! four protobuf messages and a CRC, while the crates that do it pull in a
//! protobuf code generator and an image stack.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::util::fsutil::write_atomic;

/// How long a written event may sit in the buffer: TensorBoard shows a long
/// epoch's step losses while it runs, not only at its end.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
    flushed: Instant,
    flush_every: Duration,
}

impl EventWriter {
    /// Creates a new event file in `dir` (TensorBoard reads every
    /// `*tfevents*` file there, so a resumed run simply adds one).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        // A resumed run adds a file; never truncate an earlier session's,
        // even one started in the same second by the same process.
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!(
                "events.out.tfevents.{}.{}.{}.{n}",
                now.as_secs(),
                host.trim().replace(['/', ' '], "_"),
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(&path, e)),
            }
        };
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
            flushed: Instant::now(),
            flush_every: FLUSH_EVERY,
        };
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes after `every` instead of [`FLUSH_EVERY`] (tests).
    pub fn with_flush_every(mut self, every: Duration) -> Self {
        self.flush_every = every;
        self
    }

    /// One scalar at `step` under `tag` (e.g. `valid/NDCG@10`).
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        // simple_value: field 2, fixed32.
        put_key(&mut val, 2, 5);
        val.extend_from_slice(&(value as f32).to_le_bytes());
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        self.summary(step, &summary)
    }

    /// Text (Markdown) at `step` under `tag`, for TensorBoard's text
    /// dashboard: a scalar string tensor marked for the `text` plugin.
    pub fn text(&mut self, tag: &str, step: u64, text: &str) -> Result<()> {
        let mut plugin = Vec::new();
        put_bytes(&mut plugin, 1, b"text");
        let mut metadata = Vec::new();
        put_bytes(&mut metadata, 1, &plugin);
        // TensorProto: dtype DT_STRING (7), an empty shape (a scalar), one string_val.
        let mut tensor = Vec::new();
        put_key(&mut tensor, 1, 0);
        put_varint(&mut tensor, 7);
        put_bytes(&mut tensor, 2, &[]);
        put_bytes(&mut tensor, 8, text.as_bytes());
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        put_bytes(&mut val, 8, &tensor);
        put_bytes(&mut val, 9, &metadata);
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        self.summary(step, &summary)?;
        self.flush()
    }

    fn summary(&mut self, step: u64, summary: &[u8]) -> Result<()> {
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_key(&mut ev, 2, 0);
        put_varint(&mut ev, step);
        put_bytes(&mut ev, 5, summary);
        self.record(&ev)?;
        if self.flushed.elapsed() >= self.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.flushed = Instant::now();
        self.out.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out
            .write_all(&buf)
            .map_err(|e| Error::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, ((field << 3) | wire) as u64);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_f64(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

/// Vectors for TensorBoard's embedding projector: one row per item.
pub struct Projection<'a> {
    /// The projector's name for the tensor, e.g. `item_embeddings`.
    pub name: &'a str,
    pub dim: usize,
    /// `rows × dim`, row-major.
    pub values: &'a [f32],
    /// Column heads of the metadata (the first is the item id).
    pub columns: &'a [&'a str],
    /// One metadata row per vector row, aligned with `columns`.
    pub metadata: Vec<Vec<String>>,
}

/// Writes `NAME.tsv` (the vectors), `NAME_metadata.tsv` and
/// `projector_config.pbtxt` into `dir` (the run's TensorBoard directory,
/// where the projector plugin looks for its config). Each file is written
/// whole or not at all.
pub fn write_projector(dir: &Path, p: &Projection) -> Result<()> {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let mut vectors = String::with_capacity(p.values.len() * 10);
    for row in p.values.chunks(p.dim.max(1)) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        vectors += &cells.join("\t");
        vectors.push('\n');
    }
    let mut meta = p.columns.join("\t") + "\n";
    for row in &p.metadata {
        meta += &row.iter().map(|c| clean(c)).collect::<Vec<_>>().join("\t");
        meta.push('\n');
    }
    let (tensor, metadata) = (
        format!("{}.tsv", p.name),
        format!("{}_metadata.tsv", p.name),
    );
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(dir.join(&tensor), vectors.as_bytes())?;
    write_atomic(dir.join(&metadata), meta.as_bytes())?;
    let config = format!(
        "embeddings {{\n  tensor_name: \"{}\"\n  tensor_path: \"{tensor}\"\n  metadata_path: \"{metadata}\"\n}}\n",
        p.name
    );
    write_atomic(dir.join("projector_config.pbtxt"), config.as_bytes())
}

/// Reads back (tag, step, text) of every text summary in an event file (the
/// test oracle for [`EventWriter::text`]).
pub fn read_texts(path: &Path) -> Result<Vec<(String, u64, String)>> {
    let mut out = Vec::new();
    for (step, val) in summary_values(path)? {
        let mut tag = String::new();
        let mut text = None;
        for (f, v) in fields(&val).ok_or_else(|| Error::invalid(path, "bad value"))? {
            match (f, v) {
                (1, Field::Bytes(t)) => tag = String::from_utf8_lossy(t).into_owned(),
                (8, Field::Bytes(tensor)) => {
                    for (tf, tv) in
                        fields(tensor).ok_or_else(|| Error::invalid(path, "bad tensor"))?
                    {
                        if let (8, Field::Bytes(s)) = (tf, tv) {
                            text = Some(String::from_utf8_lossy(s).into_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = text {
            out.push((tag, step, t));
        }
    }
    Ok(out)
}

/// Reads back (tag, step, value) of every scalar in an event file, checking
/// both CRCs of every record: the test oracle for the writer, and what
/// `recforge` uses to summarise a run's curves.
pub fn read_scalars(path: &Path) -> Result<Vec<(String, u64, f32)>> {
    let mut out = Vec::new();
    for (step, val) in summary_values(path)? {
        let mut tag = String::new();
        let mut value = None;
        for (f, v) in fields(&val).ok_or_else(|| Error::invalid(path, "bad value"))? {
            match (f, v) {
                (1, Field::Bytes(t)) => tag = String::from_utf8_lossy(t).into_owned(),
                (2, Field::Fixed32(x)) => value = Some(f32::from_bits(x)),
                _ => {}
            }
        }
        if let Some(v) = value {
            out.push((tag, step, v));
        }
    }
    Ok(out)
}

/// (step, encoded `Summary.Value`) of every summary value in an event file,
/// both CRCs of every record checked.
fn summary_values(path: &Path) -> Result<Vec<(u64, Vec<u8>)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: &str| Error::invalid(path, m);
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| bad("truncated record header"))?;
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes")) as usize;
        if masked_crc(&header[..8]) != u32::from_le_bytes(header[8..12].try_into().expect("4")) {
            return Err(bad("bad length CRC"));
        }
        let data = bytes
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| bad("truncated record"))?;
        let crc = bytes
            .get(at + 12 + len..at + 16 + len)
            .ok_or_else(|| bad("truncated CRC"))?;
        if masked_crc(data) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("bad data CRC"));
        }
        let mut step = 0u64;
        let mut summary = None;
        for (field, v) in fields(data).ok_or_else(|| bad("bad event"))? {
            match (field, v) {
                (2, Field::Varint(s)) => step = s,
                (5, Field::Bytes(b)) => summary = Some(b),
                _ => {}
            }
        }
        if let Some(s) = summary {
            for (f, v) in fields(s).ok_or_else(|| bad("bad summary"))? {
                if let (1, Field::Bytes(val)) = (f, v) {
                    out.push((step, val.to_vec()));
                }
            }
        }
        at += 16 + len;
    }
    Ok(out)
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn fields(mut b: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&x, rest) = b.split_first()?;
            *b = rest;
            v |= ((x & 0x7f) as u64) << shift;
            if x < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let field = (key >> 3) as u32;
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut b)?),
            1 => {
                b = b.get(8..)?;
                Field::Fixed64
            }
            2 => {
                let n = varint(&mut b)? as usize;
                let (x, rest) = (b.get(..n)?, b.get(n..)?);
                b = rest;
                Field::Bytes(x)
            }
            5 => {
                let x = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
                b = &b[4..];
                Field::Fixed32(x)
            }
            _ => return None,
        };
        out.push((field, f));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_round_trip_with_valid_crcs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalar("train/loss", 1, 7.25).unwrap();
        w.scalar("valid/NDCG@10", 2, 0.0625).unwrap();
        w.flush().unwrap();
        let got = read_scalars(w.path()).unwrap();
        assert_eq!(
            got,
            vec![
                ("train/loss".to_string(), 1, 7.25),
                ("valid/NDCG@10".to_string(), 2, 0.0625)
            ]
        );
        // A flipped byte is caught by the CRC.
        let mut bytes = std::fs::read(w.path()).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(w.path(), bytes).unwrap();
        assert!(read_scalars(w.path()).is_err());
    }

    #[test]
    fn events_reach_the_file_on_the_timer_and_text_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::create(dir.path())
            .unwrap()
            .with_flush_every(Duration::from_secs(3600));
        let mut w = w;
        w.scalar("train/loss_step", 1, 3.0).unwrap();
        // Buffered: not on disk yet, with no flush called.
        assert!(read_scalars(w.path()).unwrap().is_empty());
        // Once the interval has passed, the next event flushes both.
        let mut w = w.with_flush_every(Duration::ZERO);
        w.scalar("train/loss_step", 2, 2.5).unwrap();
        assert_eq!(
            read_scalars(w.path()).unwrap().len(),
            2,
            "the timer flushed without an epoch end"
        );
        w.text("config", 0, "name = \"x\"\n[model]\nd_model = 8")
            .unwrap();
        assert_eq!(
            read_texts(w.path()).unwrap(),
            vec![(
                "config".into(),
                0,
                "name = \"x\"\n[model]\nd_model = 8".into()
            )]
        );
        assert_eq!(
            read_scalars(w.path()).unwrap().len(),
            2,
            "text is no scalar"
        );
    }

    #[test]
    fn the_projector_files_agree_with_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let values = [0.5f32, -1.0, 2.0, 0.25];
        write_projector(
            dir.path(),
            &Projection {
                name: "item_embeddings",
                dim: 2,
                values: &values,
                columns: &["item", "colour"],
                metadata: vec![
                    vec!["a".into(), "red\tdark".into()],
                    vec!["b".into(), "blue".into()],
                ],
            },
        )
        .unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("item_embeddings.tsv"), "0.5\t-1\n2\t0.25\n");
        assert_eq!(
            read("item_embeddings_metadata.tsv"),
            "item\tcolour\na\tred dark\nb\tblue\n"
        );
        assert!(read("projector_config.pbtxt").contains("tensor_path: \"item_embeddings.tsv\""));
    }

    #[test]
    fn crc32c_matches_the_known_vector() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }
}
