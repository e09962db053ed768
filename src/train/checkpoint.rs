//! Checkpoints: model weights, optimizer state and the loop's own state,
//! written together into a temp directory and renamed into place, so a
//! checkpoint on disk is always whole.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::evaluate::EvalResult;
use crate::util::fsutil::{AtomicDir, write_atomic};

/// What an epoch did, as logged and checkpointed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    /// Training units (sequences, samples) per second.
    pub seqs_per_s: f64,
    pub train_s: f64,
    /// Wall seconds of the whole epoch: training, evaluation, checkpoint.
    pub wall_s: f64,
    pub valid: Option<EvalResult>,
}

/// The training loop's state after a completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Wall seconds spent so far (training and evaluation), over all sessions.
    pub elapsed_s: f64,
    pub best_epoch: Option<usize>,
    pub best_value: Option<f64>,
    /// Evaluations since the best one.
    pub bad_evals: usize,
    pub history: Vec<EpochLog>,
}

pub const MODEL: &str = "model.bpk";
pub const OPTIM: &str = "optim.bpk";
pub const STATE: &str = "state.json";

fn record_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(path, format!("could not write or read the record: {e}"))
}

/// Writes `<dir>/epoch-NNNN/` and keeps only the newest `keep` of them.
pub fn save<M: Module>(
    dir: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let target = dir.join(format!("epoch-{:04}", state.epoch));
    let tmp = AtomicDir::create(&target)?;
    let m = tmp.path().join(MODEL);
    model.clone().save_file(&m).map_err(|e| record_err(&m, e))?;
    let o = tmp.path().join(OPTIM);
    optim.save(&o).map_err(|e| record_err(&o, e))?;
    write_state(&tmp.path().join(STATE), state)?;
    tmp.commit()?;
    let all = list(dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(target)
}

/// Saves the selected model as `<run>/best/` (weights and state).
pub fn save_best<M: Module>(dir: &Path, model: &M, state: &TrainState) -> Result<()> {
    let tmp = AtomicDir::create(dir)?;
    let m = tmp.path().join(MODEL);
    model.clone().save_file(&m).map_err(|e| record_err(&m, e))?;
    write_state(&tmp.path().join(STATE), state)?;
    tmp.commit()
}

fn write_state(path: &Path, state: &TrainState) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(state).map_err(|e| Error::invalid(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(&path, e.to_string()))
}

/// The run's whole history: the newest checkpoint's state (epochs after the
/// selected one included), or `best/`'s where no checkpoint is kept.
pub fn read_latest_state(run_dir: &Path) -> Result<TrainState> {
    match list(&run_dir.join("checkpoints"))?.pop() {
        Some(last) => read_state(&last),
        None => read_state(&run_dir.join("best")),
    }
}

/// Checkpoint directories, oldest first.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("epoch-"))
        })
        .collect();
    v.sort();
    Ok(v)
}

pub fn load_model<M: Module>(dir: &Path, model: M) -> Result<M> {
    let m = dir.join(MODEL);
    model.try_load_file(&m).map_err(|e| record_err(&m, e))
}

pub fn load_optim(dir: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
    let o = dir.join(OPTIM);
    optim.load(&o).map_err(|e| record_err(&o, e))
}
