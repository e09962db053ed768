//! The training loop shared by every model: epochs over shuffled training
//! units, validation after each epoch, checkpoints, TensorBoard curves,
//! early stopping, and test metrics of the selected model at the end.
//!
//! What differs between models (their data, loss, evaluation and result
//! rows) sits behind [`Task`]: [`sasrec`] for the SASRec ranker,
//! [`two_tower`] for the two-tower model.
//!
//! Resuming reproduces an uninterrupted run on the CPU: the data order of an
//! epoch and every dropout mask and negative sample of a step are drawn from
//! streams keyed by (seed, epoch) and (seed, step), the learning rate is a
//! function of the step, and model and optimizer state are restored exactly.

pub mod checkpoint;
pub mod evaluate;
pub mod loss;
pub mod parts;
pub mod progress;
pub mod sasrec;
pub mod schedule;
pub mod summary;
pub mod task;
pub mod tensorboard;
pub mod two_tower;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use serde::Serialize;

use crate::config::device::{self, Chosen};
use crate::config::experiment::{Experiment, ModelKind, OptimKind};
use crate::error::{Error, Result};
use crate::eval::report::Table;
use crate::util::rng::Rng;
use checkpoint::{EpochLog, TrainState};
use evaluate::EvalResult;
use progress::{Progress, clock};
pub use task::{Report, Task};
use tensorboard::EventWriter;

pub use sasrec::{build_model, proposal_cdf, step_loss};

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
    /// Split every batch over these devices (`--devices`; the first holds
    /// the model and evaluates): data parallelism. Empty: the experiment's
    /// one device.
    pub devices: Vec<String>,
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

/// Distinct stream ids so that no two uses of the seed share random numbers
/// (the initial weights' stream is `task::INIT`).
const ORDER: u64 = 0x006f_7264_6572;
const STEP: u64 = 0x7374_6570;
const DROPOUT: u64 = 0x0064_726f_706f_7574;

/// Trains the experiment's model.
pub fn train(exp: &Experiment, opt: &TrainOptions) -> Result<Outcome> {
    exp.validate()?;
    let mut devices = device::choose_many(&opt.devices)?;
    let chosen = match devices.len() {
        0 => device::choose(exp.device)?,
        _ => devices.remove(0),
    };
    eprintln!("device: {}", chosen.description);
    let mut chosen = chosen;
    if !devices.is_empty() {
        chosen.description = std::iter::once(chosen.description.as_str())
            .chain(devices.iter().map(|d| d.description.as_str()))
            .collect::<Vec<_>>()
            .join(" + ");
        eprintln!(
            "data parallel over {} devices: {}",
            devices.len() + 1,
            chosen.description
        );
    }
    let extra: Vec<Device> = devices.into_iter().map(|d| d.device.autodiff()).collect();
    match exp.model.kind {
        ModelKind::Sasrec => run(exp, opt, chosen, extra, sasrec::SasRecTask::prepare(exp)?),
        ModelKind::TwoTower => run(
            exp,
            opt,
            chosen,
            extra,
            two_tower::TwoTowerTask::prepare(exp)?,
        ),
    }
}

/// One step's loss value and gradients (on `devices[0]`, where `model`
/// lives) of the units `batch`, split into contiguous parts over
/// `devices`: part i runs forward and backward through a copy of the model
/// on device i, its loss weighted by its share of the batch's loss weight
/// ([`Task::weight`]: SASRec's target positions), and the gradients are
/// summed on the first device, so the parts add up to the whole batch's
/// mean loss. What differs from one device: sampled negatives are drawn per
/// part, in-batch negatives are the part's, and dropout masks come from
/// other calls. The parts draw from `rng` in order. With one device this
/// is the single-device step exactly.
pub fn data_parallel_step<T: Task>(
    task: &T,
    model: &T::Model,
    batch: &[usize],
    rng: &mut Rng,
    devices: &[Device],
) -> (f64, GradientsParams) {
    if devices.len() <= 1 {
        let loss = task.loss(model, batch, rng, &devices[0]);
        let value = loss.clone().into_scalar::<f32>() as f64;
        return (value, GradientsParams::from_grads(loss.backward(), model));
    }
    let per = batch.len().div_ceil(devices.len());
    let parts: Vec<&[usize]> = batch.chunks(per.max(1)).collect();
    let weights: Vec<f64> = parts.iter().map(|p| task.weight(p)).collect();
    // A weight adds up over units (a count, or a sum per unit), so the
    // whole batch's is its parts' sum: no third build of SASRec's batch.
    let total = weights.iter().sum::<f64>().max(1e-12);
    let mut acc = burn::optim::GradientsAccumulator::<T::Model>::new();
    let mut value = 0.0;
    for ((part, weight), device) in parts.into_iter().zip(&weights).zip(devices) {
        let share = weight / total;
        let replica = model.clone().fork(device);
        let loss = task
            .loss(&replica, part, rng, device)
            .mul_scalar(share as f32);
        value += loss.clone().into_scalar::<f32>() as f64;
        let grads =
            GradientsParams::from_grads(loss.backward(), &replica).to_device(&devices[0], model);
        acc.accumulate(model, grads);
    }
    (value, acc.grads())
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

/// The settings every step of a run's loop reads.
struct Loop<'a, T: Task> {
    exp: &'a Experiment,
    opt: &'a TrainOptions,
    chosen: &'a Chosen,
    task: &'a T,
    /// The autodiff device training runs on, then any others a batch is
    /// split over (`--devices`).
    devices: Vec<Device>,
    ckpt_dir: PathBuf,
    units_per_epoch: usize,
    steps_per_epoch: usize,
    /// `train.epochs`, or more where `train.min_steps` needs them.
    epochs: usize,
    total_steps: usize,
}

/// What one epoch of steps produced.
struct EpochSteps {
    loss: f64,
    lr: f64,
    units: usize,
    train_s: f64,
}

// The loop itself, read top to bottom: start, then per epoch the named
// steps (epoch, validate_and_select, checkpoint) and the stop rules.
fn run<T: Report>(
    exp: &Experiment,
    opt: &TrainOptions,
    chosen: Chosen,
    extra: Vec<Device>,
    task: T,
) -> Result<Outcome> {
    let started = Instant::now();
    let units_per_epoch = match exp.train.epoch_units {
        0 => task.n_units(),
        n => n.min(task.n_units()),
    };
    let steps_per_epoch = units_per_epoch.div_ceil(exp.train.batch_size);
    // A small dataset has few steps per epoch: the step floor, not an
    // epoch count tuned on another dataset, decides how long it trains.
    let epochs = exp
        .train
        .epochs
        .max(exp.train.min_steps.div_ceil(steps_per_epoch.max(1)));
    let lp = Loop {
        exp,
        opt,
        chosen: &chosen,
        task: &task,
        devices: std::iter::once(chosen.device.clone().autodiff())
            .chain(extra)
            .collect(),
        ckpt_dir: opt.run_dir.join("checkpoints"),
        units_per_epoch,
        steps_per_epoch,
        epochs,
        total_steps: steps_per_epoch * epochs,
    };
    let (mut model, mut optim, mut state) = lp.start()?;
    let mut tb = EventWriter::create(&opt.run_dir.join("tensorboard"))?;
    // Indented: a Markdown code block, as TensorBoard's text dashboard shows it.
    let config_text: String = exp
        .to_toml()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect();
    tb.text("config", state.step as u64, &config_text)?;
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
    while state.epoch < lp.epochs {
        if let Some(n) = opt.stop_after
            && state.epoch >= n
        {
            return Ok(outcome(opt, &chosen, &state, None, None));
        }
        if let Some(why) = over_budget(exp, &state).or_else(|| out_of_patience(exp, &state)) {
            stop_reason = Some(why);
            break;
        }
        let epoch = state.epoch + 1;
        let t0 = Instant::now();
        let steps;
        (model, steps) = lp.epoch(model, &mut optim, &mut state, &mut tb, epoch)?;
        let line = lp.validate_and_select(&model, &mut state, &mut tb, epoch, steps)?;
        state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
        let epoch_wall = t0.elapsed().as_secs_f64();
        if let Some(l) = state.history.last_mut() {
            // Checkpointing time is estimated by the previous epoch's share.
            l.wall_s = epoch_wall;
        }
        lp.checkpoint(&model, &optim, &state)?;
        summary::write_curves(&opt.run_dir, exp, &state)?;
        eprintln!("{line} [{} elapsed]", clock(state.elapsed_s));
        if let Some(why) = out_of_patience(exp, &state) {
            stop_reason = Some(why);
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
    write_projection(
        &opt.run_dir.join("tensorboard"),
        &task,
        &best,
        &chosen.device,
    )?;
    summary::write_curves(&opt.run_dir, exp, &state)?;
    // Last: its presence marks a finished run (sweeps skip such runs).
    summary::RunSummary::new(
        exp,
        &chosen.description,
        &state,
        test.clone(),
        stop_reason.as_deref(),
    )
    .write(&opt.run_dir)?;
    Ok(outcome(opt, &chosen, &state, Some(test), Some(table)))
}

/// At most this many items go to the projector (the most purchased), so a
/// 105k-article catalogue stays a file a browser loads.
const PROJECTOR_ITEMS: usize = 20_000;

/// The selected model's item vectors for TensorBoard's projector, with each
/// item's id, purchases and first categorical features as metadata.
fn write_projection<T: Report>(
    dir: &Path,
    task: &T,
    model: &T::Model,
    device: &Device,
) -> Result<()> {
    let ds = task.data();
    let table = task.item_vectors(model, device);
    let [n, dim] = table.dims();
    let values: Vec<f32> = table
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Runtime(format!("item vectors: {e:?}")))?;
    let mut bought = vec![0u64; n];
    for &i in &ds.inter.item {
        if let Some(c) = bought.get_mut(i as usize) {
            *c += 1;
        }
    }
    let mut items: Vec<usize> = (1..n).collect();
    if items.len() > PROJECTOR_ITEMS {
        items.sort_by_key(|&i| (std::cmp::Reverse(bought[i]), i));
        items.truncate(PROJECTOR_ITEMS);
        items.sort_unstable();
    }
    let features = &ds.items.features[..ds.items.features.len().min(3)];
    let mut columns = vec!["item", "purchases"];
    columns.extend(features.iter().map(|f| f.name.as_str()));
    let metadata = items
        .iter()
        .map(|&i| {
            let mut row = vec![ds.items.ids[i].clone(), bought[i].to_string()];
            row.extend(features.iter().map(|f| {
                let code = f.codes.get(i).copied().unwrap_or(0) as usize;
                f.vocab.get(code).cloned().unwrap_or_default()
            }));
            row
        })
        .collect();
    let rows: Vec<f32> = items
        .iter()
        .flat_map(|&i| values[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    tensorboard::write_projector(
        dir,
        &tensorboard::Projection {
            name: "item_embeddings",
            dim,
            values: &rows,
            columns: &columns,
            metadata,
        },
    )
}

/// Early stopping's rule, waiting for the step floor; checked after each
/// epoch and before the next, so a run resumed after it fired stops too.
fn out_of_patience(exp: &Experiment, state: &TrainState) -> Option<String> {
    (exp.train.patience > 0
        && state.bad_evals >= exp.train.patience
        && state.step >= exp.train.min_steps)
        .then(|| format!("no improvement in {} evaluations", state.bad_evals))
}

/// What a run reports back: without a test (and table) when it stopped
/// as asked before finishing.
fn outcome(
    opt: &TrainOptions,
    chosen: &Chosen,
    state: &TrainState,
    test: Option<EvalResult>,
    table: Option<Table>,
) -> Outcome {
    Outcome {
        run_dir: opt.run_dir.clone(),
        device: chosen.description.clone(),
        epochs: state.epoch,
        best_epoch: state.best_epoch,
        train_s: state.elapsed_s,
        test,
        table,
    }
}

/// Why the next epoch must not start: a budget is a promise about wall
/// time, so an epoch that would not finish inside it (judged by the last
/// one) never starts.
fn over_budget(exp: &Experiment, state: &TrainState) -> Option<String> {
    let last = state.history.last()?;
    (exp.train.time_budget_s > 0.0 && state.elapsed_s + last.wall_s > exp.train.time_budget_s).then(
        || {
            format!(
                "time budget of {}s: another epoch (~{:.0}s) would exceed it",
                exp.train.time_budget_s, last.wall_s
            )
        },
    )
}

impl<T: Report> Loop<'_, T> {
    /// A fresh model, optimizer and state (writing the run's files), or
    /// those of the newest checkpoint when resuming.
    fn start(&self) -> Result<(T::Model, ModuleOptimizer, TrainState)> {
        let model = self.task.build(&self.devices[0]);
        let optim = optimizer(self.exp);
        if !self.opt.resume {
            write_run_files(self.exp, &self.opt.run_dir, self.chosen, self.task)?;
            return Ok((model, optim, TrainState::default()));
        }
        // Runs started before bundle parts were recorded get them now, so
        // they can still be exported.
        if !self.opt.run_dir.join(parts::FILE).exists() {
            write_parts(&self.opt.run_dir, &self.task.bundle_parts())?;
        }
        let Some(last) = checkpoint::list(&self.ckpt_dir)?.pop() else {
            return Err(Error::Runtime(format!(
                "--resume: {} has no checkpoint to continue from",
                self.opt.run_dir.display()
            )));
        };
        let model = checkpoint::load_model(&last, model)?;
        let optim = checkpoint::load_optim(&last, optim)?;
        let state = checkpoint::read_state(&last)?;
        eprintln!(
            "resuming from {} (epoch {} done)",
            last.display(),
            state.epoch
        );
        Ok((model, optim, state))
    }
}

impl<T: Task> Loop<'_, T> {
    /// The optimizer steps of epoch `epoch` over a seeded shuffle of the
    /// units; a non-finite loss stops the run naming the last checkpoint.
    fn epoch(
        &self,
        mut model: T::Model,
        optim: &mut ModuleOptimizer,
        state: &mut TrainState,
        tb: &mut EventWriter,
        epoch: usize,
    ) -> Result<(T::Model, EpochSteps)> {
        let exp = self.exp;
        let mut order: Vec<usize> = (0..self.task.n_units()).collect();
        Rng::stream(exp.seed, ORDER ^ ((epoch as u64) << 32)).shuffle(&mut order);
        // A prefix of a fresh shuffle: a different seeded subset each epoch.
        order.truncate(self.units_per_epoch);
        let t0 = Instant::now();
        let mut prog = Progress::new(
            format!("epoch {epoch}/{}", self.epochs),
            self.steps_per_epoch,
            self.opt.progress,
        );
        let (mut loss_sum, mut loss_n, mut units) = (0.0f64, 0usize, 0usize);
        let mut lr = 0.0;
        for (bi, chunk) in order.chunks(exp.train.batch_size).enumerate() {
            let step = state.step;
            lr = schedule::lr_at(&exp.optim, step, self.total_steps);
            let mut rng = Rng::stream(exp.seed, STEP ^ ((step as u64) << 16));
            let seed = rng.next_u64();
            for d in &self.devices {
                d.seed(seed);
            }
            // Its own stream: the step's draws (negatives) stay as they were.
            crate::model::dropout::begin_step(
                Rng::stream(exp.seed, DROPOUT ^ ((step as u64) << 16)).next_u64(),
            );
            let (value, grads) =
                data_parallel_step(self.task, &model, chunk, &mut rng, &self.devices);
            if !value.is_finite() {
                prog.finish();
                let kept = checkpoint::list(&self.ckpt_dir)?
                    .pop()
                    .map(|c| format!("the last good checkpoint is {}", c.display()))
                    .unwrap_or_else(|| "no checkpoint was written yet".into());
                return Err(Error::Training(format!(
                    "the loss became {value} at epoch {epoch}, step {step}; {kept}. \
                     Lower optim.lr or set optim.clip_norm, then resume."
                )));
            }
            model = optim.step(lr, model, grads);
            state.step += 1;
            loss_sum += value;
            loss_n += 1;
            units += chunk.len();
            tb.scalar("train/loss_step", state.step as u64, value)?;
            prog.update(bi + 1, units, loss_sum / loss_n as f64);
        }
        prog.finish();
        let steps = EpochSteps {
            loss: loss_sum / loss_n.max(1) as f64,
            lr,
            units,
            train_s: t0.elapsed().as_secs_f64(),
        };
        Ok((model, steps))
    }

    /// The epoch's validation (every `eval.every` epochs and at the last),
    /// its log entry and TensorBoard scalars, and model selection; returns
    /// the epoch's log line.
    fn validate_and_select(
        &self,
        model: &T::Model,
        state: &mut TrainState,
        tb: &mut EventWriter,
        epoch: usize,
        steps: EpochSteps,
    ) -> Result<String> {
        let exp = self.exp;
        let last_epoch = epoch == self.epochs;
        let valid = if epoch.is_multiple_of(exp.eval.every.max(1)) || last_epoch {
            Some(self.task.validate(&model.valid(), &self.chosen.device))
        } else {
            None
        };
        let log = EpochLog {
            epoch,
            step: state.step,
            loss: steps.loss,
            lr: steps.lr,
            seqs_per_s: steps.units as f64 / steps.train_s.max(1e-9),
            train_s: steps.train_s,
            wall_s: 0.0,
            valid: valid.clone(),
        };
        log_epoch::<T>(tb, &log)?;
        let mut line = format!(
            "epoch {epoch}: loss {:.4}, {:.0} {}/s, {:.1}s",
            log.loss,
            log.seqs_per_s,
            T::UNIT,
            steps.train_s
        );
        state.epoch = epoch;
        state.history.push(log);
        if let Some(v) = &valid {
            line += &self.select(state, v);
        }
        Ok(line)
    }

    /// Model selection on a validation result: marks the epoch just run
    /// (`state.epoch`) the best when the selection metric improved, else
    /// counts a bad evaluation.
    /// Returns the log line's validation part.
    fn select(&self, state: &mut TrainState, v: &EvalResult) -> String {
        let exp = self.exp;
        let selection = exp.eval.metric;
        let value = v.get(exp.eval.select_masked, selection).unwrap_or(f64::NAN);
        let masked = if exp.eval.select_masked {
            " masked"
        } else {
            ""
        };
        // A refit trains on its validation rows: the figure is in-sample and
        // the log must not read as an estimate.
        let label = if exp.data.refit {
            "in-sample (refit)"
        } else {
            "valid"
        };
        let mut line = format!("; {label} {}{masked} {value:.4}", selection.column());
        if let Some(other) = v.get(!exp.eval.select_masked, selection) {
            line += &format!(
                " ({} {other:.4})",
                if exp.eval.select_masked {
                    "unmasked"
                } else {
                    "masked"
                }
            );
        }
        // A refit keeps its last epoch: its validation rows are training rows.
        if exp.data.refit || state.best_value.is_none_or(|b| value > b) {
            state.best_value = Some(value);
            state.best_epoch = Some(state.epoch);
            state.bad_evals = 0;
            line += " *";
        } else {
            state.bad_evals += 1;
        }
        line
    }

    /// The epoch's checkpoint (model, optimizer, state), and `best/` when
    /// this epoch is the selected one.
    fn checkpoint(
        &self,
        model: &T::Model,
        optim: &ModuleOptimizer,
        state: &TrainState,
    ) -> Result<()> {
        if state.best_epoch == Some(state.epoch) {
            checkpoint::save_best(&self.opt.run_dir.join("best"), &model.valid(), state)?;
        }
        checkpoint::save(
            &self.ckpt_dir,
            model,
            optim,
            state,
            self.exp.train.keep_checkpoints,
        )?;
        Ok(())
    }
}

/// Epoch scalars at the optimizer step the epoch ended on: the x-axis of
/// every curve is the step, as for `train/loss_step`, so TensorBoard lines
/// them up (`train/epoch` maps steps back to epochs).
fn log_epoch<T: Task>(tb: &mut EventWriter, log: &EpochLog) -> Result<()> {
    let step = log.step as u64;
    tb.scalar("train/epoch", step, log.epoch as f64)?;
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

fn write_run_files<T: Report>(
    exp: &Experiment,
    dir: &Path,
    chosen: &Chosen,
    task: &T,
) -> Result<()> {
    if dir.join("checkpoints").exists() {
        return Err(Error::Runtime(format!(
            "{} already holds a run; continue it with `--resume {0}`, or choose another --run-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::util::fsutil::write_atomic(dir.join("config.toml"), exp.to_toml().as_bytes())?;
    write_parts(dir, &task.bundle_parts())?;
    let mut info = task.run_info();
    info["device"] = serde_json::Value::String(chosen.description.clone());
    crate::util::fsutil::write_atomic(
        dir.join("run.json"),
        serde_json::to_vec_pretty(&info).expect("json").as_slice(),
    )
}

/// The bundle parts export reads (`RUN/bundle-parts.json`).
fn write_parts(dir: &Path, parts: &parts::BundleParts) -> Result<()> {
    crate::util::fsutil::write_atomic(
        dir.join(parts::FILE),
        serde_json::to_vec(parts)
            .expect("bundle parts serialise")
            .as_slice(),
    )
}

fn results_table<T: Report>(
    exp: &Experiment,
    task: &T,
    state: &TrainState,
    test: &EvalResult,
    chosen: &Chosen,
    stop: Option<&str>,
    started: Instant,
) -> Table {
    let best = state.best_epoch.unwrap_or(0);
    let selection = exp.eval.metric;
    let valid_best = state
        .history
        .iter()
        .find(|h| h.epoch == best)
        .and_then(|h| h.valid.as_ref())
        .and_then(|v| v.get(exp.eval.select_masked, selection));
    let refit = if exp.data.refit {
        "REFIT on every row: the validation and test periods were trained on, so their metrics are \
in-sample, not estimates; the last epoch is kept. "
    } else {
        ""
    };
    let protocol = format!(
        "{refit}Split `{:?}`; model selected on validation {} ({}) = {} at epoch {best} of {} ({}); \
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
    let selection = exp.eval.metric;
    let name = selection.measure.column();
    let k = selection.k;
    let mut s = format!(
        "## Training curve

| epoch | steps | train loss | lr | units/s | epoch s | valid {name}@{k} | valid {name}@{k} seen masked |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for h in &state.history {
        let v = |masked| {
            h.valid
                .as_ref()
                .and_then(|v| v.get(masked, selection))
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
