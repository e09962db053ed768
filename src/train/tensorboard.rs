//! TensorBoard event files: scalar summaries as TFRecord-framed `Event`
//! protocol buffers.
//!
//! Written by hand instead of through a crate: the format is four fields of
//! two protobuf messages and a CRC, while the crates that do it pull in a
//! protobuf code generator and an image stack.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
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

    /// One scalar at `step` under `tag` (e.g. `valid/NDCG@10`).
    pub fn scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        let mut val = Vec::new();
        put_bytes(&mut val, 1, tag.as_bytes());
        // simple_value: field 2, fixed32.
        put_key(&mut val, 2, 5);
        val.extend_from_slice(&(value as f32).to_le_bytes());
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, &val);
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_key(&mut ev, 2, 0);
        put_varint(&mut ev, step);
        put_bytes(&mut ev, 5, &summary);
        self.record(&ev)
    }

    pub fn flush(&mut self) -> Result<()> {
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

/// Reads back (tag, step, value) of every scalar in an event file, checking
/// both CRCs of every record: the test oracle for the writer, and what
/// `recforge` uses to summarise a run's curves.
pub fn read_scalars(path: &Path) -> Result<Vec<(String, u64, f32)>> {
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
                let (1, Field::Bytes(val)) = (f, v) else {
                    continue;
                };
                let mut tag = String::new();
                let mut value = None;
                for (f2, v2) in fields(val).ok_or_else(|| bad("bad value"))? {
                    match (f2, v2) {
                        (1, Field::Bytes(t)) => tag = String::from_utf8_lossy(t).into_owned(),
                        (2, Field::Fixed32(x)) => value = Some(f32::from_bits(x)),
                        _ => {}
                    }
                }
                if let Some(v) = value {
                    out.push((tag, step, v));
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
    fn crc32c_matches_the_known_vector() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
    }
}
