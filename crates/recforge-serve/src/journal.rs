//! A tenant's journal: every live change (articles added, availability,
//! customers' purchase events) appended to one file beside the server's
//! state and fsync'd before the call that made it returns, then replayed
//! at start, so a restart (or a crash) loses nothing that was answered.
//!
//! One record per line: the CRC-32 of the JSON text in hex, a space, the
//! JSON, a newline. A crash mid-append leaves at most the last line torn
//! (short, or failing its checksum); it is skipped with a log line and cut
//! off, so the next record starts on a clean line. A bad line anywhere
//! else is damage the server will not guess about: it refuses to start,
//! naming the file and line.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An article added from its features (as the items route takes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRecord {
    pub article_id: String,
    #[serde(default)]
    pub features: HashMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f32>,
}

/// One purchase, dated by its day (days since 1970-01-01), as resolved
/// when it arrived, so a replay does not depend on the clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    pub customer_id: String,
    pub article_id: String,
    pub day: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u8>,
}

/// One live change, as it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Items {
        items: Vec<ItemRecord>,
    },
    Availability {
        #[serde(default)]
        sold_out: Vec<String>,
        #[serde(default)]
        in_stock: Vec<String>,
    },
    Events {
        events: Vec<EventRecord>,
    },
}

/// The journal file, open for appending. Callers serialise appends (the
/// tenant holds it behind a mutex).
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes of whole records: where a failed append is cut back to.
    len: u64,
    /// A failed append could not be cut back: the file may end in a torn
    /// record, so nothing more is appended after it.
    broken: bool,
}

/// What opening a journal found.
pub struct Replay {
    pub records: Vec<Record>,
    /// The 1-based line of a torn last record that was skipped and cut off.
    pub torn: Option<usize>,
}

fn encode(r: &Record) -> String {
    let json = serde_json::to_string(r).expect("a record is plain data");
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

/// The record a line holds, or why not.
fn decode(line: &[u8]) -> std::result::Result<Record, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (crc, json) = text
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_string())?;
    let want = u32::from_str_radix(crc, 16).map_err(|_| format!("checksum `{crc}`"))?;
    if crc.len() != 8 || crc32fast::hash(json.as_bytes()) != want {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

impl Journal {
    /// Opens (or creates) the journal at `path` and reads every record in
    /// it; a torn last record is cut off (see the module's note).
    pub fn open(path: &Path) -> Result<(Journal, Replay)> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let created = !path.exists();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        // One server per journal: two appending at once would interleave.
        file.try_lock().map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; is another server using this state_dir?",
                path.display()
            ))
        })?;
        if created {
            // The new file's name must survive a crash too.
            sync_dir(path).map_err(io)?;
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let mut records = Vec::new();
        let mut good = 0usize;
        let mut torn = None;
        let mut lines = bytes
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .peekable();
        while let Some((i, line)) = lines.next() {
            let last = lines.peek().is_none();
            let whole = line.ends_with(b"\n");
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            let why = match (decode(body), whole) {
                (Ok(r), true) => {
                    records.push(r);
                    good += line.len();
                    continue;
                }
                (Ok(_), false) => "no end of line".to_string(),
                (Err(e), _) => e,
            };
            if !last {
                return Err(Error::Data {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: format!(
                        "damaged journal record ({why}); restore the file or move it aside"
                    ),
                });
            }
            eprintln!(
                "recforge-serve: {}, line {}: torn last record ({why}) skipped; \
the change it held was never confirmed",
                path.display(),
                i + 1
            );
            torn = Some(i + 1);
        }
        if torn.is_some() {
            file.set_len(good as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                len: good as u64,
                broken: false,
            },
            Replay { records, torn },
        ))
    }

    /// Appends `r` and waits until it is on disk. On failure the file is
    /// cut back to its last whole record and the change must not be
    /// applied.
    pub fn append(&mut self, r: &Record) -> Result<()> {
        if self.broken {
            return Err(Error::Invalid(format!(
                "{}: an earlier write failed and could not be undone; restart the server to recover",
                self.path.display()
            )));
        }
        let line = encode(r);
        let done = self
            .file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data());
        match done {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.broken = self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.sync_data())
                    .is_err();
                Err(Error::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        // Directories cannot be opened for syncing on every platform; where
        // they can, this makes the new entry durable.
        Some(dir) if cfg!(unix) => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("recforge-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn event(i: i64) -> Record {
        Record::Events {
            events: vec![EventRecord {
                customer_id: format!("c{i}"),
                article_id: "a".into(),
                day: 18_000 + i,
                price: Some(0.5),
                channel: None,
            }],
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut_off() {
        let d = dir("torn");
        let path = d.join("t.journal");
        {
            let (mut j, replay) = Journal::open(&path).unwrap();
            assert!(replay.records.is_empty());
            for i in 0..3 {
                j.append(&event(i)).unwrap();
            }
            j.append(&Record::Availability {
                sold_out: vec!["x".into()],
                in_stock: vec![],
            })
            .unwrap();
        }
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records.len(), 4);
        assert_eq!(replay.records[1], event(1));
        assert_eq!(replay.torn, None);

        // A crash halfway through a fifth append.
        let whole = std::fs::metadata(&path).unwrap().len();
        let half = encode(&event(4));
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&half.as_bytes()[..half.len() / 2]).unwrap();
        drop(f);
        let (mut j, replay) = Journal::open(&path).unwrap();
        assert_eq!((replay.records.len(), replay.torn), (4, Some(5)));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // The next record starts on a clean line.
        j.append(&event(5)).unwrap();
        drop(j);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.records.len(), 5);
        assert_eq!(replay.records[4], event(5));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_server_cannot_open_the_same_journal() {
        let d = dir("lock");
        let path = d.join("t.journal");
        let (first, _) = Journal::open(&path).unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(err.contains("another server"), "{err}");
        drop(first);
        assert!(Journal::open(&path).is_ok());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn damage_before_the_last_record_is_refused_with_its_line() {
        let d = dir("damage");
        let path = d.join("t.journal");
        {
            let (mut j, _) = Journal::open(&path).unwrap();
            for i in 0..3 {
                j.append(&event(i)).unwrap();
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // One flipped digit in the second record's JSON.
        let lines: Vec<&str> = text.lines().collect();
        let bad = lines[1].replacen("18001", "18009", 1);
        std::fs::write(&path, format!("{}\n{bad}\n{}\n", lines[0], lines[2])).unwrap();
        let err = Journal::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("t.journal, line 2") && err.contains("checksum"),
            "{err}"
        );
        // The same damage on the last line is a torn record instead.
        std::fs::write(&path, format!("{}\n{bad}\n", lines[0])).unwrap();
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!((replay.records.len(), replay.torn), (1, Some(2)));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
