//! The second stage's gradient-boosted trees, trained with LightGBM through
//! its C API (`lightgbm3-sys`) and saved in LightGBM's text format. Scores
//! come from `recforge_infer::trees`, which reads that text back, so what
//! the report measures is what the serving crates evaluate.
//!
//! The safe `lightgbm3` wrapper has no query groups (which lambdarank needs)
//! and no rollback to the best iteration on a metric we choose, so this
//! module calls the handful of C functions it needs itself; each call is
//! checked and its error text read from `LGBM_GetLastError`.

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rank::features::{Feature, N};
use recforge_infer::trees::Trees;

/// What the trees are trained to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum TreeObjective {
    /// Log-loss on bought / not bought: calibrated (after the negative
    /// sampling's correction), so it can be ranked by expected revenue.
    Binary,
    /// LightGBM's lambdarank over each customer's candidates (NDCG-driven).
    Lambdarank,
}

impl TreeObjective {
    pub const ALL: [TreeObjective; 2] = [TreeObjective::Binary, TreeObjective::Lambdarank];

    pub fn name(self) -> &'static str {
        match self {
            TreeObjective::Binary => "binary",
            TreeObjective::Lambdarank => "lambdarank",
        }
    }
}

/// The trees' settings (`[trees]` in a pipeline config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TreeConfig {
    /// Train the trees (false: the logistic blender, if enabled, orders
    /// the candidates).
    pub enabled: bool,
    /// The objectives trained; the one with the best validation MAP@12 is
    /// served.
    pub objectives: Vec<TreeObjective>,
    /// Consecutive weeks of candidates the trees train on (before the
    /// validation week, which early-stops them).
    pub weeks: u32,
    /// Negatives kept per customer in the training weeks (every positive
    /// is kept; the validation week keeps all).
    pub negatives: usize,
    pub max_rounds: u32,
    /// Rounds without a better validation MAP@12 before stopping.
    pub patience: u32,
    pub learning_rate: f64,
    pub num_leaves: u32,
    pub min_data_in_leaf: u32,
    pub feature_fraction: f64,
    pub lambda_l2: f64,
    /// Train the ablations (without each feature group, and the logistic
    /// blender on the same weeks) for the report.
    pub ablations: bool,
    /// Write the training and validation rows as Parquet beside the run
    /// (`second-stage-rows-REPORT/`), to study or train on elsewhere
    /// (`benches/second_stage_libs.py` reads them). Left out of the config's
    /// hash when off, so earlier runs' steps are still reused.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub export_rows: bool,
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            enabled: true,
            objectives: TreeObjective::ALL.to_vec(),
            weeks: 3,
            negatives: 50,
            max_rounds: 1000,
            patience: 50,
            learning_rate: 0.05,
            num_leaves: 63,
            min_data_in_leaf: 50,
            feature_fraction: 0.8,
            lambda_l2: 1.0,
            ablations: true,
            export_rows: false,
        }
    }
}

/// Candidate rows of several customers: features row-major, a label per
/// row, and each customer's row count (their rows are contiguous).
#[derive(Debug, Clone, Default)]
pub struct RowSet {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub groups: Vec<i32>,
    /// Share of negatives kept when the rows were sampled (1 = all).
    pub negative_rate: f64,
}

impl RowSet {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    pub fn positives(&self) -> usize {
        self.y.iter().filter(|&&v| v > 0.5).count()
    }

    /// The same rows with `blank` features set missing (an ablation).
    fn blanked(&self, blank: &[Feature]) -> Vec<f32> {
        let mut x = self.x.clone();
        if !blank.is_empty() {
            for row in x.chunks_mut(N) {
                for f in blank {
                    row[f.slot()] = f32::NAN;
                }
            }
        }
        x
    }
}

/// A trained model: its text (what is saved and served), the parsed
/// trees, and how it was chosen.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub objective: TreeObjective,
    pub text: String,
    pub trees: Trees,
    /// Rounds kept (the best on validation).
    pub rounds: u32,
    /// LightGBM's MAP@12 on the validation rows at that round (over the
    /// validation customers' candidates, so not the report's MAP@12); NaN
    /// for a refit, which has no validation.
    pub valid_map: f64,
    /// Total split gain per feature, in [`Feature::ALL`] order.
    pub gain: Vec<f64>,
}

fn check(code: c_int, what: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: LightGBM returns a pointer to its thread-local, NUL-terminated
    // error buffer, valid until the next call on this thread.
    let msg = unsafe { CStr::from_ptr(lightgbm3_sys::LGBM_GetLastError()) }
        .to_string_lossy()
        .into_owned();
    Err(Error::Training(format!("LightGBM {what}: {msg}")))
}

/// A LightGBM dataset handle, freed on drop.
struct Dataset(lightgbm3_sys::DatasetHandle);

impl Drop for Dataset {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is
        // freed once.
        unsafe { lightgbm3_sys::LGBM_DatasetFree(self.0) };
    }
}

/// A LightGBM booster handle, freed on drop.
struct Booster(lightgbm3_sys::BoosterHandle);

impl Drop for Booster {
    fn drop(&mut self) {
        // SAFETY: the handle came from LGBM_BoosterCreate and is freed once.
        unsafe { lightgbm3_sys::LGBM_BoosterFree(self.0) };
    }
}

fn dataset(x: &[f32], rows: &RowSet, params: &str, reference: Option<&Dataset>) -> Result<Dataset> {
    let n = i32::try_from(rows.len())
        .map_err(|_| Error::Training(format!("{} rows exceed LightGBM's limit", rows.len())))?;
    let params = CString::new(params).expect("no NUL in parameters");
    let mut handle = std::ptr::null_mut();
    // SAFETY: `x` holds n × N f32 values, row-major, alive for the call
    // (LightGBM copies them into its bins).
    check(
        unsafe {
            lightgbm3_sys::LGBM_DatasetCreateFromMat(
                x.as_ptr() as *const c_void,
                lightgbm3_sys::C_API_DTYPE_FLOAT32 as c_int,
                n,
                N as i32,
                1,
                params.as_ptr(),
                reference.map_or(std::ptr::null_mut(), |r| r.0),
                &mut handle,
            )
        },
        "dataset",
    )?;
    let ds = Dataset(handle);
    let set = |field: &str, data: *const c_void, len: usize, dtype: u32| {
        let name = CString::new(field).expect("field name");
        // SAFETY: `data` points at `len` values of `dtype`, alive for the
        // call (LightGBM copies them).
        check(
            unsafe {
                lightgbm3_sys::LGBM_DatasetSetField(
                    ds.0,
                    name.as_ptr(),
                    data,
                    len as c_int,
                    dtype as c_int,
                )
            },
            field,
        )
    };
    set(
        "label",
        rows.y.as_ptr() as *const c_void,
        rows.y.len(),
        lightgbm3_sys::C_API_DTYPE_FLOAT32,
    )?;
    set(
        "group",
        rows.groups.as_ptr() as *const c_void,
        rows.groups.len(),
        lightgbm3_sys::C_API_DTYPE_INT32,
    )?;
    let names: Vec<CString> = Feature::ALL
        .iter()
        .map(|f| CString::new(f.name()).expect("feature names have no NUL"))
        .collect();
    let mut ptrs: Vec<*const c_char> = names.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: N valid C strings, alive for the call.
    check(
        unsafe { lightgbm3_sys::LGBM_DatasetSetFeatureNames(ds.0, ptrs.as_mut_ptr(), N as c_int) },
        "feature names",
    )?;
    Ok(ds)
}

/// Trains one model on `train`, early-stopped on `valid`'s MAP@12, with
/// the `blank` features missing everywhere (an ablation). Deterministic for
/// a given seed.
pub fn train(
    train: &RowSet,
    valid: &RowSet,
    cfg: &TreeConfig,
    objective: TreeObjective,
    blank: &[Feature],
    seed: u64,
) -> Result<Fitted> {
    fit(
        train,
        Some(valid),
        cfg,
        objective,
        blank,
        cfg.max_rounds,
        seed,
    )
}

/// Trains exactly `rounds` rounds on `train`, no validation: the refit on
/// the latest weeks, with the rounds an early-stopped training chose.
pub fn train_rounds(
    train: &RowSet,
    cfg: &TreeConfig,
    objective: TreeObjective,
    rounds: u32,
    seed: u64,
) -> Result<Fitted> {
    fit(train, None, cfg, objective, &[], rounds, seed)
}

fn fit(
    train: &RowSet,
    valid: Option<&RowSet>,
    cfg: &TreeConfig,
    objective: TreeObjective,
    blank: &[Feature],
    max_rounds: u32,
    seed: u64,
) -> Result<Fitted> {
    if train.positives() == 0 || train.positives() == train.len() {
        return Err(Error::Training(format!(
            "the trees need bought and not-bought candidates; {} of {} training rows were bought",
            train.positives(),
            train.len()
        )));
    }
    if valid.is_some_and(|v| v.positives() == 0) {
        return Err(Error::Training(
            "no bought candidate in the validation week to early-stop on".into(),
        ));
    }
    let threads = rayon::current_num_threads();
    // Bins are fitted on the training rows; the validation set reuses them.
    let ds_params = format!("max_bin=255 min_data_in_bin=3 verbosity=-1 num_threads={threads}");
    let xt = train.blanked(blank);
    let dtrain = dataset(&xt, train, &ds_params, None)?;
    let xv = valid.map(|v| v.blanked(blank));
    let dvalid = match (valid, &xv) {
        (Some(v), Some(x)) => Some(dataset(x, v, &ds_params, Some(&dtrain))?),
        _ => None,
    };
    let params = format!(
        "objective={} metric=map eval_at=12 learning_rate={} num_leaves={} min_data_in_leaf={} \
feature_fraction={} bagging_fraction=0.8 bagging_freq=1 lambda_l2={} seed={} deterministic=true \
force_col_wise=true num_threads={threads} verbosity=-1",
        objective.name(),
        cfg.learning_rate,
        cfg.num_leaves,
        cfg.min_data_in_leaf,
        cfg.feature_fraction,
        cfg.lambda_l2,
        seed % (i32::MAX as u64),
    );
    let params = CString::new(params).expect("no NUL in parameters");
    let mut handle = std::ptr::null_mut();
    // SAFETY: a valid dataset handle and C string; `handle` receives the booster.
    check(
        unsafe { lightgbm3_sys::LGBM_BoosterCreate(dtrain.0, params.as_ptr(), &mut handle) },
        "booster",
    )?;
    let booster = Booster(handle);
    if let Some(dv) = &dvalid {
        // SAFETY: both handles are valid; the booster keeps a reference to
        // the validation set, which outlives it (dropped after `booster`).
        check(
            unsafe { lightgbm3_sys::LGBM_BoosterAddValidData(booster.0, dv.0) },
            "validation set",
        )?;
    }
    let (mut best, mut best_round, mut since) = (f64::NEG_INFINITY, 0u32, 0u32);
    for round in 1..=max_rounds {
        let mut finished = 0;
        // SAFETY: valid booster handle.
        check(
            unsafe { lightgbm3_sys::LGBM_BoosterUpdateOneIter(booster.0, &mut finished) },
            "boosting round",
        )?;
        if finished != 0 {
            break;
        }
        if dvalid.is_none() {
            (best, best_round) = (f64::NAN, round);
            continue;
        }
        let mut out = [0f64; 4];
        let mut len = 0;
        // SAFETY: the one metric (map@12) fits the buffer.
        check(
            unsafe { lightgbm3_sys::LGBM_BoosterGetEval(booster.0, 1, &mut len, out.as_mut_ptr()) },
            "validation metric",
        )?;
        let map = out[0];
        if map > best + 1e-9 {
            (best, best_round, since) = (map, round, 0);
        } else {
            since += 1;
            if since >= cfg.patience {
                break;
            }
        }
    }
    let best_round = best_round.max(1);
    let text = save(&booster, best_round)?;
    let mut gain = vec![0f64; N];
    // SAFETY: `gain` holds one value per feature.
    check(
        unsafe {
            lightgbm3_sys::LGBM_BoosterFeatureImportance(
                booster.0,
                best_round as c_int,
                lightgbm3_sys::C_API_FEATURE_IMPORTANCE_GAIN as c_int,
                gain.as_mut_ptr(),
            )
        },
        "feature importance",
    )?;
    let trees = Trees::parse(&text)
        .map_err(|e| Error::Training(format!("reading back LightGBM's model: {e}")))?;
    drop(booster);
    drop(dvalid);
    Ok(Fitted {
        objective,
        text,
        trees,
        rounds: best_round,
        valid_map: best,
        gain,
    })
}

/// The model's first `rounds` iterations in LightGBM's text format.
fn save(booster: &Booster, rounds: u32) -> Result<String> {
    let mut len: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: `buf` has `buf.len()` writable bytes; LightGBM writes at
        // most that many and reports the full length in `len`.
        check(
            unsafe {
                lightgbm3_sys::LGBM_BoosterSaveModelToString(
                    booster.0,
                    0,
                    rounds as c_int,
                    lightgbm3_sys::C_API_FEATURE_IMPORTANCE_GAIN as c_int,
                    buf.len() as i64,
                    &mut len,
                    buf.as_mut_ptr() as *mut c_char,
                )
            },
            "saving the model",
        )?;
        if (len as usize) <= buf.len() {
            break;
        }
        buf = vec![0u8; len as usize];
    }
    let text = CStr::from_bytes_until_nul(&buf)
        .map_err(|_| Error::Training("LightGBM's model text is not terminated".into()))?;
    Ok(text.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// Groups of 20 candidates; bought with probability rising in feature
    /// 0, falling in feature 3, the rest noise.
    fn synthetic(groups: usize, seed: u64) -> RowSet {
        let mut rng = Rng::new(seed);
        let mut s = RowSet {
            negative_rate: 1.0,
            ..RowSet::default()
        };
        for _ in 0..groups {
            for _ in 0..20 {
                let mut r = [0f32; N];
                for v in r.iter_mut() {
                    *v = rng.normal() as f32;
                }
                let eta = 2.0 * f64::from(r[0]) - f64::from(r[3]) - 3.0;
                s.y.push(f32::from(u8::from(rng.f64() < 1.0 / (1.0 + (-eta).exp()))));
                s.x.extend_from_slice(&r);
            }
            s.groups.push(20);
        }
        s
    }

    #[test]
    fn trees_learn_the_signal_and_read_back_as_lightgbm_predicts() {
        let (tr, va) = (synthetic(400, 1), synthetic(200, 2));
        let cfg = TreeConfig {
            max_rounds: 60,
            patience: 20,
            num_leaves: 15,
            min_data_in_leaf: 20,
            ..TreeConfig::default()
        };
        for objective in TreeObjective::ALL {
            let m = train(&tr, &va, &cfg, objective, &[], 7).unwrap();
            assert!(m.rounds >= 1 && m.rounds <= 60);
            // The informative features carry most of the gain.
            let total: f64 = m.gain.iter().sum();
            assert!(
                (m.gain[0] + m.gain[3]) / total > 0.5,
                "{objective:?}: {:?}",
                m.gain
            );
            assert!(m.valid_map > 0.3, "{objective:?}: {}", m.valid_map);
            // Our reader scores as LightGBM does (loaded from the same text).
            let booster = Booster::from_text(&m.text);
            let rows = &va.x[..N * 50];
            let theirs = booster.predict_raw(rows, 50);
            for (k, row) in rows.chunks(N).enumerate() {
                let ours = m.trees.raw(row).unwrap();
                assert!((ours - theirs[k]).abs() < 1e-9, "{ours} vs {}", theirs[k]);
            }
            // Missing values go where LightGBM sends them.
            let mut nan = rows[..N].to_vec();
            nan[0] = f32::NAN;
            let theirs = booster.predict_raw(&nan, 1);
            assert!((m.trees.raw(&nan).unwrap() - theirs[0]).abs() < 1e-9);
        }
        // Blanking the signal leaves nothing to learn from it.
        let m = train(
            &tr,
            &va,
            &cfg,
            TreeObjective::Binary,
            &[Feature::ALL[0], Feature::ALL[3]],
            7,
        )
        .unwrap();
        assert!(m.gain[0] == 0.0 && m.gain[3] == 0.0);
    }

    #[test]
    fn same_seed_same_model() {
        let (tr, va) = (synthetic(100, 3), synthetic(50, 4));
        let cfg = TreeConfig {
            max_rounds: 20,
            ..TreeConfig::default()
        };
        let a = train(&tr, &va, &cfg, TreeObjective::Lambdarank, &[], 5).unwrap();
        let b = train(&tr, &va, &cfg, TreeObjective::Lambdarank, &[], 5).unwrap();
        assert_eq!(a.text, b.text);
    }

    #[test]
    fn one_class_is_an_error_not_a_panic() {
        let mut tr = synthetic(10, 1);
        tr.y.iter_mut().for_each(|v| *v = 0.0);
        let e = train(
            &tr,
            &synthetic(10, 2),
            &TreeConfig::default(),
            TreeObjective::Binary,
            &[],
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bought and not-bought"), "{e}");
    }

    impl Booster {
        fn from_text(text: &str) -> Booster {
            let c = CString::new(text).unwrap();
            let (mut iters, mut handle) = (0, std::ptr::null_mut());
            // SAFETY: a valid C string; outputs written by LightGBM.
            let code = unsafe {
                lightgbm3_sys::LGBM_BoosterLoadModelFromString(c.as_ptr(), &mut iters, &mut handle)
            };
            check(code, "load").unwrap();
            Booster(handle)
        }

        fn predict_raw(&self, x: &[f32], rows: usize) -> Vec<f64> {
            let mut out = vec![0f64; rows];
            let mut len = 0i64;
            let params = CString::new("num_threads=1").unwrap();
            // SAFETY: `x` holds rows × N values; `out` one per row.
            let code = unsafe {
                lightgbm3_sys::LGBM_BoosterPredictForMat(
                    self.0,
                    x.as_ptr() as *const c_void,
                    lightgbm3_sys::C_API_DTYPE_FLOAT32 as c_int,
                    rows as i32,
                    N as i32,
                    1,
                    lightgbm3_sys::C_API_PREDICT_RAW_SCORE as c_int,
                    0,
                    -1,
                    params.as_ptr(),
                    &mut len,
                    out.as_mut_ptr(),
                )
            };
            check(code, "predict").unwrap();
            out
        }
    }
}
