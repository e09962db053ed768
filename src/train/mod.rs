//! The training loop of the sequential ranker: one pass over every
//! customer's training sequence per epoch, validation with full ranking after
//! each epoch, checkpoints, TensorBoard curves, early stopping, and test
//! metrics of the selected model at the end.
//!
//! Resuming reproduces an uninterrupted run on the CPU: the data order of an
//! epoch and every dropout mask and negative sample of a step are drawn from
//! streams keyed by (seed, epoch) and (seed, step), the learning rate is a
//! function of the step, and model and optimizer state are restored exactly.

pub mod checkpoint;
pub mod evaluate;
pub mod loss;
pub mod progress;
pub mod schedule;
pub mod tensorboard;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;

use crate::baseline::{self, Fitted, Kind};
use crate::data::Dataset;
use crate::device::{self, Chosen};
use crate::error::{Error, Result};
use crate::eval::{Metrics, Targets};
use crate::experiment::{Experiment, LossKind, OptimKind};
use crate::features::{ItemFeature, item_features};
use crate::model::{SasRec, SasRecConfig};
use crate::report::{Row, Table};
use crate::rng::Rng;
use crate::seq::{Sequences, Window, train_batch};
use crate::split::{Split, SplitKind, split};
use checkpoint::{EpochLog, TrainState};
use evaluate::EvalResult;
use progress::{Progress, clock};
use tensorboard::EventWriter;

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

/// Everything derived from the data that a run needs.
struct Prepared {
    ds: Dataset,
    split: Split,
    train: Sequences,
    /// Inputs when scoring the test period (train + validation).
    test_history: Sequences,
    valid: Targets,
    test: Targets,
    windows: Vec<Window>,
    feats: Vec<ItemFeature>,
    /// Item frequencies in training, for the negative samplers.
    counts: Vec<f64>,
}

fn prepare(exp: &Experiment) -> Result<Prepared> {
    let ds = crate::cache::read(&exp.data.cache)?;
    let split = split(&ds, exp.data.split, exp.data.target_days)?;
    if split.valid.is_empty() {
        return Err(Error::Config(format!(
            "the {:?} split of `{}` has no validation rows; model selection needs them",
            exp.data.split, ds.meta.name
        )));
    }
    let train = Sequences::build(&ds, &split.train);
    let test_history = Sequences::build(&ds, &split.history());
    let valid = Targets::from_rows(&ds, &split.valid);
    let test = Targets::from_rows(&ds, &split.test);
    let windows = train.windows(exp.data.max_len, exp.data.window_stride());
    if windows.is_empty() {
        return Err(Error::Config(format!(
            "no customer of `{}` has two training interactions: nothing to learn from",
            ds.meta.name
        )));
    }
    let feats = item_features(&ds, &split.train, &exp.model)?;
    let mut counts = vec![0.0; ds.items.len()];
    for &r in &split.train {
        counts[ds.inter.item[r] as usize] += 1.0;
    }
    Ok(Prepared {
        ds,
        split,
        train,
        test_history,
        valid,
        test,
        windows,
        feats,
        counts,
    })
}

fn optimizer(exp: &Experiment) -> ModuleOptimizer {
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
const INIT: u64 = 0x696e_6974;

/// The model as configured, initialised from the run's seed on `device`.
pub fn build_model(
    exp: &Experiment,
    n_items: usize,
    feats: &[ItemFeature],
    device: &Device,
) -> SasRec {
    device.seed(Rng::stream(exp.seed, INIT).next_u64());
    SasRecConfig::new(&exp.model, n_items, exp.data.max_len, feats).init(feats, device)
}

pub fn train(exp: &Experiment, opt: &TrainOptions) -> Result<Outcome> {
    exp.validate()?;
    let started = Instant::now();
    let chosen = device::choose(exp.device)?;
    eprintln!("device: {}", chosen.description);
    let p = prepare(exp)?;
    let n_items = p.ds.items.len();
    let ad = chosen.device.clone().autodiff();

    let ckpt_dir = opt.run_dir.join("checkpoints");
    let mut model = build_model(exp, n_items, &p.feats, &ad);
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
        write_run_files(exp, &opt.run_dir, &chosen, &p)?;
    }
    let mut tb = EventWriter::create(&opt.run_dir.join("tensorboard"))?;
    let (sel_name, sel_k) = exp.selection_metric()?;
    let steps_per_epoch = p.windows.len().div_ceil(exp.train.batch_size);
    let total_steps = steps_per_epoch * exp.train.epochs;
    let revenue = exp.loss.revenue_weight.then(|| p.train.mean_price());
    let proposal = proposal_cdf(&p.counts, exp.loss.alpha, exp.loss.kind == LossKind::Gbce);
    let valid_fallback = fallback(&p.ds, &p.split.train, &exp.eval.ks);
    let test_fallback = fallback(&p.ds, &p.split.history(), &exp.eval.ks);
    eprintln!(
        "{}: {} training windows from {} customers, {} steps per epoch, {} items, {} item features, {} parameters",
        exp.name,
        p.windows.len(),
        p.train.n_users(),
        steps_per_epoch,
        n_items - 1,
        p.feats.len(),
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
        let mut order = p.windows.clone();
        Rng::stream(exp.seed, ORDER ^ ((epoch as u64) << 32)).shuffle(&mut order);
        let t0 = Instant::now();
        let mut prog = Progress::new(
            format!("epoch {epoch}/{}", exp.train.epochs),
            steps_per_epoch,
            opt.progress,
        );
        let (mut loss_sum, mut loss_n, mut seqs) = (0.0f64, 0usize, 0usize);
        let mut lr = 0.0;
        for (bi, chunk) in order.chunks(exp.train.batch_size).enumerate() {
            let step = state.step;
            lr = schedule::lr_at(&exp.optim, step, total_steps);
            let mut rng = Rng::stream(exp.seed, STEP ^ ((step as u64) << 16));
            ad.seed(rng.next_u64());
            let batch = train_batch(&p.train, chunk, revenue);
            let loss = step_loss(&model, exp, &batch, &proposal, &mut rng, &ad);
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
            seqs += chunk.len();
            tb.scalar("train/loss_step", state.step as u64, value)?;
            prog.update(bi + 1, seqs, loss_sum / loss_n as f64);
        }
        prog.finish();
        let train_s = t0.elapsed().as_secs_f64();
        let last_epoch = epoch == exp.train.epochs;
        let valid = if epoch % exp.eval.every.max(1) == 0 || last_epoch {
            Some(evaluate::evaluate(
                &model.valid(),
                &chosen.device,
                &p.valid,
                &p.train,
                &valid_fallback,
                &exp.eval.ks,
                exp.eval.batch_size,
            ))
        } else {
            None
        };
        let log = EpochLog {
            epoch,
            step: state.step,
            loss: loss_sum / loss_n.max(1) as f64,
            lr,
            seqs_per_s: seqs as f64 / train_s.max(1e-9),
            train_s,
            wall_s: 0.0,
            valid: valid.clone(),
        };
        log_epoch(&mut tb, &log)?;
        let mut line = format!(
            "epoch {epoch}: loss {:.4}, {:.0} seq/s, {:.1}s",
            log.loss, log.seqs_per_s, train_s
        );
        state.epoch = epoch;
        state.history.push(log);
        if let Some(v) = &valid {
            let value = v
                .get(exp.eval.select_masked, &sel_name, sel_k)
                .expect("selection metric validated");
            line += &format!(
                "; valid {sel_name}@{sel_k} {} {value:.4} ({} {:.4})",
                if exp.eval.select_masked {
                    "masked"
                } else {
                    "unmasked"
                },
                if exp.eval.select_masked {
                    "unmasked"
                } else {
                    "masked"
                },
                v.get(!exp.eval.select_masked, &sel_name, sel_k)
                    .unwrap_or(f64::NAN)
            );
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
    let best_dir = opt.run_dir.join("best");
    let best = checkpoint::load_model(
        &best_dir,
        build_model(exp, n_items, &p.feats, &chosen.device),
    )?;
    let test = evaluate::evaluate(
        &best,
        &chosen.device,
        &p.test,
        &p.test_history,
        &test_fallback,
        &exp.eval.ks,
        exp.eval.batch_size,
    );
    let table = results_table(
        exp,
        &p,
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

/// The loss of one batch `[1]`, on the autodiff device (public for the
/// training benchmark).
pub fn step_loss(
    model: &SasRec,
    exp: &Experiment,
    batch: &crate::seq::Batch,
    proposal: &[f64],
    rng: &mut Rng,
    device: &Device,
) -> Tensor<1> {
    let (idx, targets, w) = batch.targeted();
    let (b, l) = (batch.rows, batch.len);
    let inputs = Tensor::<2, Int>::from_data(TensorData::new(batch.inputs.clone(), [b, l]), device);
    let n_idx = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n_idx]), device);
    let pos = batch.pos_offset(exp.data.max_len);
    let d = exp.model.d_model;
    match exp.loss.kind {
        LossKind::Full => {
            let table = model.item_table();
            let h = model
                .encode(&table, inputs, pos)
                .reshape([b * l, d])
                .select(0, idx);
            loss::full_softmax(h, &table, &targets, &w)
        }
        LossKind::Sampled | LossKind::Gbce => {
            let x = model
                .item_repr(inputs.clone().reshape([b * l]))
                .reshape([b, l, d]);
            let h = model
                .encode_embedded(x, inputs, pos)
                .reshape([b * l, d])
                .select(0, idx);
            let s = exp.loss.negatives;
            let negs = loss::draw_negatives(rng, proposal, s);
            if exp.loss.kind == LossKind::Sampled {
                let pos_q = loss::target_log_q(proposal, &targets, s);
                loss::sampled_softmax(model, h, &targets, &w, &negs, &pos_q)
            } else {
                let beta = loss::gbce_beta(s, model.n_items(), exp.loss.gbce_t);
                loss::gbce(model, h, &targets, &w, &negs.ids, beta)
            }
        }
    }
}

/// Cumulative proposal weights over item ids: count^alpha (uniform over real
/// items for gBCE or alpha = 0), with a floor so unsold items can be drawn.
pub fn proposal_cdf(counts: &[f64], alpha: f64, uniform: bool) -> Vec<f64> {
    let mut acc = 0.0;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if i > 0 {
                acc += if uniform || alpha == 0.0 {
                    1.0
                } else {
                    (c + 0.5).powf(alpha)
                };
            }
            acc
        })
        .collect()
}

/// What customers without history are shown: time-decayed popularity over
/// `rows` (the strongest history-free baseline), as the model has nothing
/// to condition on.
fn fallback(ds: &Dataset, rows: &[usize], ks: &[usize]) -> Vec<u32> {
    let k = ks.iter().copied().max().unwrap_or(12);
    let fitted = Fitted::fit(ds, rows, baseline::Params::default());
    let mut out = Vec::with_capacity(k);
    // User 0 is the padding customer: no history, so nothing is masked.
    fitted.recommend(Kind::DecayedPopular, 0, k, &mut out);
    out
}

fn log_epoch(tb: &mut EventWriter, log: &EpochLog) -> Result<()> {
    let step = log.epoch as u64;
    tb.scalar("train/loss", step, log.loss)?;
    tb.scalar("train/lr", step, log.lr)?;
    tb.scalar("train/sequences_per_s", step, log.seqs_per_s)?;
    if let Some(v) = &log.valid {
        for (prefix, ms) in [("valid", &v.plain), ("valid_masked", &v.masked)] {
            for m in ms {
                for (name, value) in m.columns() {
                    tb.scalar(&format!("{prefix}/{name}"), step, value)?;
                }
            }
        }
    }
    tb.flush()
}

fn write_run_files(exp: &Experiment, dir: &Path, chosen: &Chosen, p: &Prepared) -> Result<()> {
    if dir.join("checkpoints").exists() {
        return Err(Error::Config(format!(
            "{} already holds a run; continue it with `--resume {0}`, or choose another --run-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::fsutil::write_atomic(dir.join("config.toml"), exp.to_toml().as_bytes())?;
    let model = SasRecConfig::new(&exp.model, p.ds.items.len(), exp.data.max_len, &p.feats);
    let info = serde_json::json!({
        "device": chosen.description,
        "dataset": p.ds.meta.name,
        "model": model,
        "train_rows": p.split.train.len(),
        "valid_rows": p.split.valid.len(),
        "test_rows": p.split.test.len(),
        "windows": p.windows.len(),
    });
    crate::fsutil::write_atomic(
        dir.join("run.json"),
        serde_json::to_vec_pretty(&info).expect("json").as_slice(),
    )
}

fn results_table(
    exp: &Experiment,
    p: &Prepared,
    state: &TrainState,
    test: &EvalResult,
    chosen: &Chosen,
    stop: Option<&str>,
    started: Instant,
) -> Table {
    let mut rows = vec![
        Row {
            name: format!("{} (seen not masked)", exp.name),
            metrics: test.plain.clone(),
        },
        Row {
            name: format!("{} (seen masked)", exp.name),
            metrics: test.masked.clone(),
        },
    ];
    // The classic baselines on the same targets, fitted on what the model saw.
    let history = match exp.data.split {
        SplitKind::LastWeek => p.split.history(),
        _ => p.split.train.clone(),
    };
    let mut fitted = Fitted::fit(&p.ds, &history, baseline::Params::default());
    for mask in [false, true] {
        // Masking changes what is served, not what was fitted.
        fitted.set_mask_seen(mask);
        for kind in Kind::ALL {
            let metrics: Vec<Metrics> =
                crate::eval::evaluate(&p.test, &exp.eval.ks, p.ds.items.len(), |u, k, out| {
                    fitted.recommend(kind, u, k, out)
                });
            rows.push(Row {
                name: format!(
                    "{} ({})",
                    kind.name(),
                    if mask {
                        "seen masked"
                    } else {
                        "seen not masked"
                    }
                ),
                metrics,
            });
        }
    }
    let best = state.best_epoch.unwrap_or(0);
    let valid_best = state
        .history
        .iter()
        .find(|h| h.epoch == best)
        .and_then(|h| h.valid.as_ref())
        .and_then(|v| {
            v.get(
                exp.eval.select_masked,
                &exp.selection_metric().ok()?.0,
                exp.selection_metric().ok()?.1,
            )
        });
    let protocol = format!(
        "Split `{:?}`; model selected on validation {} ({}) = {} at epoch {best} of {} ({}); \
trained {} on {}; test inputs are each customer's history before the test period (train + validation), \
full ranking over {} items; {} test customers ({} without history, served time-decayed popularity). \
Baselines are fitted on the same history. Total wall time {:.0}s.",
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
        p.ds.items.len() - 1,
        p.test.len(),
        test.cold_users,
        started.elapsed().as_secs_f64(),
    );
    Table {
        title: format!("{} on {}", exp.name, p.ds.meta.name),
        dataset: p.ds.meta.name.clone(),
        protocol,
        rows,
        has_price: p.ds.meta.has_price,
        notes: epoch_table(exp, state),
    }
}

/// The validation curve as a Markdown table.
fn epoch_table(exp: &Experiment, state: &TrainState) -> String {
    let (name, k) = exp.selection_metric().unwrap_or(("NDCG".into(), 10));
    let mut s = format!(
        "## Training curve

| epoch | steps | train loss | lr | sequences/s | epoch s | valid {name}@{k} | valid {name}@{k} seen masked |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
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
