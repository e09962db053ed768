//! The training loop shared by every model: epochs over shuffled training
//! units, validation after each epoch, checkpoints, TensorBoard curves,
//! early stopping, and test metrics of the selected model at the end.
//!
//! What differs between models (their data, loss, evaluation and result
//! rows) sits behind [`Task`]: [`sequential`] for the SASRec ranker,
//! [`retrieval`] for the two-tower model.
//!
//! Resuming reproduces an uninterrupted run on the CPU: the data order of an
//! epoch and every dropout mask and negative sample of a step are drawn from
//! streams keyed by (seed, epoch) and (seed, step), the learning rate is a
//! function of the step, and model and optimizer state are restored exactly.

pub mod checkpoint;
pub mod evaluate;
pub mod loss;
pub mod progress;
pub mod retrieval;
pub mod schedule;
pub mod sequential;
pub mod tensorboard;
pub mod tower_data;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::Serialize;

use crate::device::{self, Chosen};
use crate::error::{Error, Result};
use crate::experiment::{Experiment, ModelKind, OptimKind};
use crate::report::{Row, Table};
use crate::rng::Rng;
use checkpoint::{EpochLog, TrainState};
use evaluate::EvalResult;
use progress::{Progress, clock};
use tensorboard::EventWriter;

pub use sequential::{build_model, proposal_cdf, step_loss};

/// How to run, beyond the experiment itself.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
    /// Stop (as if killed) after this many epochs in total: for tests of resume.
    pub stop_after: Option<usize>,
    /// Also write the final table to this directory (e.g. `experiments/results`).
    pub results_dir: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub run_dir: PathBuf,
    pub device: String,
    pub epochs: usize,
    pub best_epoch: Option<usize>,
    pub train_s: f64,
    /// None when the run stopped early (`stop_after`).
    pub test: Option<EvalResult>,
    pub table: Option<Table>,
}

/// One model's side of training: its data, loss, evaluation and results.
pub trait Task {
    type Model: Module;
    /// What one training unit is, plural ("sequences", "samples").
    const UNIT: &'static str;
    /// Training units per epoch; an epoch visits each once, in shuffled order.
    fn n_units(&self) -> usize;
    /// The model as configured, initialised from the run's seed.
    fn build(&self, device: &Device) -> Self::Model;
    /// The loss `[1]` of the units `batch`, on the autodiff device; every
    /// random choice comes from `rng`.
    fn loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> Tensor<1>;
    /// Metrics on the validation period (the model is in inference mode).
    fn validate(&self, model: &Self::Model, device: &Device) -> EvalResult;
    /// Metrics on the test period.
    fn test(&self, model: &Self::Model, device: &Device) -> EvalResult;
    /// One line about the data and model, printed at the start.
    fn describe(&self, model: &Self::Model) -> String;
    /// Written to `run.json` at the start of a run.
    fn run_info(&self) -> serde_json::Value;
    /// The model's test rows and the baselines' on the same customers.
    fn result_rows(&self, test: &EvalResult) -> Vec<Row>;
    /// How the test was set up, for the results table.
    fn protocol(&self, test: &EvalResult) -> String;
    /// Markdown after the tables (e.g. extra metrics), and its JSON form.
    fn result_notes(&self, _test: &EvalResult) -> (String, serde_json::Value) {
        (String::new(), serde_json::Value::Null)
    }
    fn dataset_name(&self) -> &str;
    fn has_price(&self) -> bool;
}

/// The experiment's prepared data and its split, which must have a
/// validation part (model selection reads it).
pub(crate) fn load_split(exp: &Experiment) -> Result<(crate::data::Dataset, crate::split::Split)> {
    let ds = crate::cache::read(&exp.data.cache)?;
    let split = crate::split::split(&ds, exp.data.split, exp.data.target_days)?;
    if split.valid.is_empty() {
        return Err(Error::Config(format!(
            "the {:?} split of `{}` has no validation rows; model selection needs them",
            exp.data.split, ds.meta.name
        )));
    }
    Ok((ds, split))
}

/// Trains the experiment's model.
pub fn train(exp: &Experiment, opt: &TrainOptions) -> Result<Outcome> {
    exp.validate()?;
    let chosen = device::choose(exp.device)?;
    eprintln!("device: {}", chosen.description);
    match exp.model.kind {
        ModelKind::Sasrec => run(exp, opt, chosen, sequential::Sequential::prepare(exp)?),
        ModelKind::TwoTower => run(exp, opt, chosen, retrieval::Retrieval::prepare(exp)?),
    }
}

/// The configured optimizer.
pub fn optimizer(exp: &Experiment) -> ModuleOptimizer {
    let o = &exp.optim;
    let clip = (o.clip_norm > 0.0).then_some(GradientClippingConfig::Norm(o.clip_norm as f32));
    match o.kind {
        OptimKind::Adam => AdamConfig::new()
            .with_beta_1(o.beta1 as f32)
            .with_beta_2(o.beta2 as f32)
            .with_epsilon(1e-8)
            .with_weight_decay(
                (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32)),
            )
            .with_grad_clipping(clip)
            .init(),
        OptimKind::Adamw => AdamWConfig::new()
            .with_beta_1(o.beta1 as f32)
            .with_beta_2(o.beta2 as f32)
            .with_epsilon(1e-8)
            .with_weight_decay(o.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
    }
}

/// Distinct stream ids so that no two uses of the seed share random numbers.
const ORDER: u64 = 0x006f_7264_6572;
const STEP: u64 = 0x7374_6570;
pub(crate) const INIT: u64 = 0x696e_6974;

fn run<T: Task>(exp: &Experiment, opt: &TrainOptions, chosen: Chosen, task: T) -> Result<Outcome> {
    let started = Instant::now();
    let ad = chosen.device.clone().autodiff();

    let ckpt_dir = opt.run_dir.join("checkpoints");
    let mut model = task.build(&ad);
    let mut optim = optimizer(exp);
    let mut state = TrainState::default();
    if opt.resume {
        let Some(last) = checkpoint::list(&ckpt_dir)?.pop() else {
            return Err(Error::Config(format!(
                "--resume: {} has no checkpoint to continue from",
                opt.run_dir.display()
            )));
        };
        model = checkpoint::load_model(&last, model)?;
        optim = checkpoint::load_optim(&last, optim)?;
        state = checkpoint::read_state(&last)?;
        eprintln!(
            "resuming from {} (epoch {} done)",
            last.display(),
            state.epoch
        );
    } else {
        write_run_files(exp, &opt.run_dir, &chosen, task.run_info())?;
    }
    let mut tb = EventWriter::create(&opt.run_dir.join("tensorboard"))?;
    let (sel_name, sel_k) = exp.selection_metric()?;
    let units_per_epoch = match exp.train.epoch_units {
        0 => task.n_units(),
        n => n.min(task.n_units()),
    };
    let steps_per_epoch = units_per_epoch.div_ceil(exp.train.batch_size);
    let total_steps = steps_per_epoch * exp.train.epochs;
    eprintln!(
        "{}: {}, {} steps per epoch, {} parameters",
        exp.name,
        task.describe(&model),
        steps_per_epoch,
        model.num_params()
    );

    let session_start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut stop_reason = None;
    while state.epoch < exp.train.epochs {
        if let Some(n) = opt.stop_after
            && state.epoch >= n
        {
            return Ok(Outcome {
                run_dir: opt.run_dir.clone(),
                device: chosen.description.clone(),
                epochs: state.epoch,
                best_epoch: state.best_epoch,
                train_s: state.elapsed_s,
                test: None,
                table: None,
            });
        }
        // A budget is a promise about wall time: don't start an epoch that
        // would not finish inside it.
        if exp.train.time_budget_s > 0.0
            && let Some(last) = state.history.last()
            && state.elapsed_s + last.wall_s > exp.train.time_budget_s
        {
            stop_reason = Some(format!(
                "time budget of {}s: another epoch (~{:.0}s) would exceed it",
                exp.train.time_budget_s, last.wall_s
            ));
            break;
        }
        let epoch = state.epoch + 1;
        let mut order: Vec<usize> = (0..task.n_units()).collect();
        Rng::stream(exp.seed, ORDER ^ ((epoch as u64) << 32)).shuffle(&mut order);
        // A prefix of a fresh shuffle: a different seeded subset each epoch.
        order.truncate(units_per_epoch);
        let t0 = Instant::now();
        let mut prog = Progress::new(
            format!("epoch {epoch}/{}", exp.train.epochs),
            steps_per_epoch,
            opt.progress,
        );
        let (mut loss_sum, mut loss_n, mut units) = (0.0f64, 0usize, 0usize);
        let mut lr = 0.0;
        for (bi, chunk) in order.chunks(exp.train.batch_size).enumerate() {
            let step = state.step;
            lr = schedule::lr_at(&exp.optim, step, total_steps);
            let mut rng = Rng::stream(exp.seed, STEP ^ ((step as u64) << 16));
            ad.seed(rng.next_u64());
            let loss = task.loss(&model, chunk, &mut rng, &ad);
            let value: f64 = loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                prog.finish();
                let kept = checkpoint::list(&ckpt_dir)?
                    .pop()
                    .map(|c| format!("the last good checkpoint is {}", c.display()))
                    .unwrap_or_else(|| "no checkpoint was written yet".into());
                return Err(Error::Training(format!(
                    "the loss became {value} at epoch {epoch}, step {step}; {kept}. \
                     Lower optim.lr or set optim.clip_norm, then resume."
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            state.step += 1;
            loss_sum += value;
            loss_n += 1;
            units += chunk.len();
            tb.scalar("train/loss_step", state.step as u64, value)?;
            prog.update(bi + 1, units, loss_sum / loss_n as f64);
        }
        prog.finish();
        let train_s = t0.elapsed().as_secs_f64();
        let last_epoch = epoch == exp.train.epochs;
        let valid = if epoch % exp.eval.every.max(1) == 0 || last_epoch {
            Some(task.validate(&model.valid(), &chosen.device))
        } else {
            None
        };
        let log = EpochLog {
            epoch,
            step: state.step,
            loss: loss_sum / loss_n.max(1) as f64,
            lr,
            seqs_per_s: units as f64 / train_s.max(1e-9),
            train_s,
            wall_s: 0.0,
            valid: valid.clone(),
        };
        log_epoch::<T>(&mut tb, &log)?;
        let mut line = format!(
            "epoch {epoch}: loss {:.4}, {:.0} {}/s, {:.1}s",
            log.loss,
            log.seqs_per_s,
            T::UNIT,
            train_s
        );
        state.epoch = epoch;
        state.history.push(log);
        if let Some(v) = &valid {
            let value = v
                .get(exp.eval.select_masked, &sel_name, sel_k)
                .unwrap_or(f64::NAN);
            let masked = if exp.eval.select_masked {
                " masked"
            } else {
                ""
            };
            line += &format!("; valid {sel_name}@{sel_k}{masked} {value:.4}");
            if let Some(other) = v.get(!exp.eval.select_masked, &sel_name, sel_k) {
                line += &format!(
                    " ({} {other:.4})",
                    if exp.eval.select_masked {
                        "unmasked"
                    } else {
                        "masked"
                    }
                );
            }
            if state.best_value.is_none_or(|b| value > b) {
                state.best_value = Some(value);
                state.best_epoch = Some(epoch);
                state.bad_evals = 0;
                line += " *";
            } else {
                state.bad_evals += 1;
            }
        }
        state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
        let epoch_wall = t0.elapsed().as_secs_f64();
        if let Some(l) = state.history.last_mut() {
            // Checkpointing time is estimated by the previous epoch's share.
            l.wall_s = epoch_wall;
        }
        if state.best_epoch == Some(epoch) {
            checkpoint::save_best(&opt.run_dir.join("best"), &model.valid(), &state)?;
        }
        checkpoint::save(
            &ckpt_dir,
            &model,
            &optim,
            &state,
            exp.train.keep_checkpoints,
        )?;
        eprintln!("{line} [{} elapsed]", clock(state.elapsed_s));
        if exp.train.patience > 0 && state.bad_evals >= exp.train.patience {
            stop_reason = Some(format!("no improvement in {} evaluations", state.bad_evals));
            break;
        }
    }
    if let Some(r) = &stop_reason {
        eprintln!("stopped early: {r}");
    }
    tb.flush()?;

    // Test once, with the selected model.
    let best = checkpoint::load_model(&opt.run_dir.join("best"), task.build(&chosen.device))?;
    let test = task.test(&best, &chosen.device);
    let table = results_table(
        exp,
        &task,
        &state,
        &test,
        &chosen,
        stop_reason.as_deref(),
        started,
    );
    table.write(&opt.run_dir, "results")?;
    if let Some(dir) = &opt.results_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        table.write(dir, &exp.name)?;
    }
    Ok(Outcome {
        run_dir: opt.run_dir.clone(),
        device: chosen.description,
        epochs: state.epoch,
        best_epoch: state.best_epoch,
        train_s: state.elapsed_s,
        test: Some(test),
        table: Some(table),
    })
}

fn log_epoch<T: Task>(tb: &mut EventWriter, log: &EpochLog) -> Result<()> {
    let step = log.epoch as u64;
    tb.scalar("train/loss", step, log.loss)?;
    tb.scalar("train/lr", step, log.lr)?;
    tb.scalar(&format!("train/{}_per_s", T::UNIT), step, log.seqs_per_s)?;
    if let Some(v) = &log.valid {
        for (prefix, ms) in [("valid", &v.plain), ("valid_masked", &v.masked)] {
            for m in ms {
                for (name, value) in m.columns() {
                    tb.scalar(&format!("{prefix}/{name}"), step, value)?;
                }
            }
        }
        for (name, value) in &v.extra {
            tb.scalar(&format!("valid/{name}"), step, *value)?;
        }
    }
    tb.flush()
}

fn write_run_files(
    exp: &Experiment,
    dir: &Path,
    chosen: &Chosen,
    info: serde_json::Value,
) -> Result<()> {
    if dir.join("checkpoints").exists() {
        return Err(Error::Config(format!(
            "{} already holds a run; continue it with `--resume {0}`, or choose another --run-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::fsutil::write_atomic(dir.join("config.toml"), exp.to_toml().as_bytes())?;
    let mut info = info;
    info["device"] = serde_json::Value::String(chosen.description.clone());
    crate::fsutil::write_atomic(
        dir.join("run.json"),
        serde_json::to_vec_pretty(&info).expect("json").as_slice(),
    )
}

fn results_table<T: Task>(
    exp: &Experiment,
    task: &T,
    state: &TrainState,
    test: &EvalResult,
    chosen: &Chosen,
    stop: Option<&str>,
    started: Instant,
) -> Table {
    let best = state.best_epoch.unwrap_or(0);
    let (sel_name, sel_k) = exp.selection_metric().unwrap_or(("NDCG".into(), 10));
    let valid_best = state
        .history
        .iter()
        .find(|h| h.epoch == best)
        .and_then(|h| h.valid.as_ref())
        .and_then(|v| v.get(exp.eval.select_masked, &sel_name, sel_k));
    let protocol = format!(
        "Split `{:?}`; model selected on validation {} ({}) = {} at epoch {best} of {} ({}); \
trained {} on {}; {} Total wall time {:.0}s.",
        exp.data.split,
        exp.eval.metric,
        if exp.eval.select_masked {
            "seen masked"
        } else {
            "seen not masked"
        },
        valid_best
            .map(|v| format!("{v:.4}"))
            .unwrap_or_else(|| "n/a".into()),
        state.epoch,
        stop.unwrap_or("all epochs run"),
        clock(state.elapsed_s),
        chosen.description,
        task.protocol(test),
        started.elapsed().as_secs_f64(),
    );
    let (notes, extra) = task.result_notes(test);
    Table {
        title: format!("{} on {}", exp.name, task.dataset_name()),
        dataset: task.dataset_name().to_string(),
        protocol,
        rows: task.result_rows(test),
        has_price: task.has_price(),
        notes: notes + &epoch_table(exp, state),
        extra,
    }
}

/// The validation curve as a Markdown table.
fn epoch_table(exp: &Experiment, state: &TrainState) -> String {
    let (name, k) = exp.selection_metric().unwrap_or(("NDCG".into(), 10));
    let mut s = format!(
        "## Training curve

| epoch | steps | train loss | lr | units/s | epoch s | valid {name}@{k} | valid {name}@{k} seen masked |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for h in &state.history {
        let v = |masked| {
            h.valid
                .as_ref()
                .and_then(|v| v.get(masked, &name, k))
                .map(|x| format!("{x:.4}"))
                .unwrap_or_else(|| "-".into())
        };
        s += &format!(
            "| {} | {} | {:.4} | {:.2e} | {:.0} | {:.1} | {} | {} |\n",
            h.epoch,
            h.step,
            h.loss,
            h.lr,
            h.seqs_per_s,
            h.wall_s,
            v(false),
            v(true)
        );
    }
    s
}
