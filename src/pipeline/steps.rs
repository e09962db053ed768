//! Content-hashed steps: a step whose inputs hash as when it last ran,
//! and whose outputs are all still there, is reused instead of rerun.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What a step recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record<T> {
    hash: String,
    wall_s: f64,
    /// Peak resident memory while the step ran (or of the whole process
    /// up to its end, where `own_peak` is false).
    #[serde(default)]
    peak_rss_mib: Option<f64>,
    #[serde(default)]
    own_peak: bool,
    value: T,
}

/// One line of the stage report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub reused: bool,
    pub wall_s: f64,
    pub peak_rss_mib: Option<f64>,
    /// Whether the peak is the step's own (the counter was reset at its start).
    pub own_peak: bool,
}

pub(super) fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hash of every regular file directly in `dir`, by name and content.
pub(super) fn hash_dir(dir: &Path) -> Result<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut h = Sha256::new();
    for p in &names {
        h.update(
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        std::io::copy(&mut f, &mut h).map_err(|e| Error::io(p, e))?;
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) struct Steps {
    pub(super) dir: PathBuf,
    pub(super) reports: Vec<StepReport>,
}

impl Steps {
    /// Runs `f` unless `name` already ran with inputs hashing to `h` and
    /// its `outputs` are all still there.
    pub(super) fn run<T: Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
        h: &str,
        outputs: &[&Path],
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let path = self.dir.join(format!("{name}.json"));
        if let Ok(bytes) = std::fs::read(&path)
            && let Ok(rec) = serde_json::from_slice::<Record<T>>(&bytes)
            && rec.hash == h
            && outputs.iter().all(|o| o.exists())
        {
            eprintln!(
                "[{name}] unchanged, reused ({:.1}s when it ran)",
                rec.wall_s
            );
            self.reports.push(StepReport {
                step: name.into(),
                reused: true,
                wall_s: rec.wall_s,
                peak_rss_mib: rec.peak_rss_mib,
                own_peak: rec.own_peak,
            });
            return Ok(rec.value);
        }
        eprintln!("[{name}] running");
        let own_peak = crate::util::resources::reset_peak_rss();
        let t = Instant::now();
        let value = f()?;
        let wall_s = t.elapsed().as_secs_f64();
        let rec = Record {
            hash: h.to_string(),
            wall_s,
            peak_rss_mib: crate::util::resources::peak_rss_mib(),
            own_peak,
            value,
        };
        let bytes =
            serde_json::to_vec_pretty(&rec).map_err(|e| Error::invalid(&path, e.to_string()))?;
        crate::util::fsutil::write_atomic(&path, &bytes)?;
        self.reports.push(StepReport {
            step: name.into(),
            reused: false,
            wall_s,
            peak_rss_mib: rec.peak_rss_mib,
            own_peak,
        });
        Ok(rec.value)
    }
}
