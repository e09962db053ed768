//! `recforge bench retrieval`: how fast the two-tower model trains (samples
//! per second, the real task on a prepared cache: batch assembly, both
//! towers, in-batch loss, backward and Adam) and how fast exact top-K
//! retrieval serves (customers per second against an H&M-sized catalogue),
//! on one thread and on all, side by side in one run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::GradientsParams;

use recforge::config::device;
use recforge::config::experiment::{Experiment, ModelKind};
use recforge::train::two_tower::TwoTowerTask;
use recforge::train::{Task, optimizer};
use recforge::util::rng::Rng;
use recforge_infer::ItemIndex;

/// Random unit vectors, `n` rows of `d`.
fn unit_vectors(rng: &mut Rng, n: usize, d: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    for row in v.chunks_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// (samples/s, ms/step) of `steps` training steps after 2 warm-up steps.
fn train_speed(exp: &Experiment, steps: usize) -> Result<(f64, f64, String, usize)> {
    let chosen = device::choose(exp.device)?;
    let task = TwoTowerTask::prepare(exp)?;
    let ad = chosen.device.clone().autodiff();
    let mut model = task.build(&ad);
    let mut optim = optimizer(exp);
    let b = exp.train.batch_size;
    let mut order: Vec<usize> = (0..task.n_units()).collect();
    Rng::new(exp.seed).shuffle(&mut order);
    let mut chunks = order.chunks(b).cycle();
    let mut rng = Rng::new(1);
    let mut t0 = Instant::now();
    for i in 0..steps + 2 {
        if i == 2 {
            chosen.device.sync()?;
            t0 = Instant::now();
        }
        let batch = chunks.next().expect("cycle");
        let loss = task.loss(&model, batch, &mut rng, &ad);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(exp.optim.lr, model, grads);
    }
    // Reading a weight forces every queued kernel to finish.
    let _ = model.item_mlp.out.weight.val().sum().into_scalar::<f32>();
    let secs = t0.elapsed().as_secs_f64();
    Ok((
        (steps * b) as f64 / secs,
        secs * 1e3 / steps as f64,
        chosen.description,
        model.num_params(),
    ))
}

/// Customers per second of exact top-`k` over `items` random vectors.
fn retrieval_speed(index: &ItemIndex, queries: &[f32], k: usize, threads: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let n_q = queries.len() / index.dim();
    let t0 = Instant::now();
    let found = pool.install(|| index.search(queries, k, false))?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(found.len() == n_q && found.iter().all(|f| f.len() == k));
    Ok(n_q as f64 / secs)
}

pub fn run(
    config: &Path,
    steps: usize,
    items: usize,
    customers: usize,
    k: usize,
    out: &PathBuf,
) -> Result<()> {
    let exp = Experiment::load(config, &[])?;
    anyhow::ensure!(
        exp.model.kind == ModelKind::TwoTower,
        "{}: not a two-tower experiment (model.kind)",
        config.display()
    );
    let profile = if cfg!(debug_assertions) {
        "debug build, dependencies optimised"
    } else {
        "release build"
    };
    let cores = rayon::current_num_threads();
    eprintln!("training {steps} steps of {} ...", exp.name);
    let (sps, ms, dev, params) = train_speed(&exp, steps)
        .with_context(|| format!("timing training of {}", config.display()))?;
    eprintln!("  {sps:.0} samples/s ({ms:.0} ms/step)");

    let d = exp.model.d_model;
    let mut rng = Rng::new(9);
    let vecs = unit_vectors(&mut rng, items, d);
    let index = ItemIndex::new(d, (1..=items as u32).collect(), vecs)?;
    let queries = unit_vectors(&mut rng, customers, d);
    eprintln!("retrieving top-{k} of {items} items for {customers} customers ...");
    // Untimed pass: first touches of the item matrix fault its pages in.
    retrieval_speed(&index, &queries[..d * 256.min(customers)], k, cores)?;
    let one = retrieval_speed(&index, &queries, k, 1)?;
    let all = retrieval_speed(&index, &queries, k, cores)?;
    eprintln!("  {one:.0} customers/s on 1 thread, {all:.0} on {cores}");

    let flop = 2.0 * items as f64 * d as f64;
    let table = format!(
        "# Two-tower benchmark\n\n`recforge bench retrieval` ({profile}, {cores} CPU threads).\n\n\
## Training\n\n`{}` on `{}`: batch {}, {} parameters, history of up to {} purchases, {} mixed negatives; \
{steps} timed steps after 2 warm-up steps (real batches of the task: assembly, both towers, loss, backward, Adam).\n\n\
| device | ms/step | samples/s |\n|---|---:|---:|\n| {dev} | {ms:.0} | {sps:.0} |\n\n\
## Exact retrieval\n\nTop-{k} of {items} items (d = {d}) for {customers} customers, \
blocked matrix product and running threshold (`recforge_infer::ItemIndex::search`), no exclusions.\n\n\
Scoring is 2·items·d = {:.1} MFLOP per customer; GFLOP/s is that times customers/s.\n\n| threads | customers/s | speed-up | GFLOP/s |\n|---:|---:|---:|---:|\n| 1 | {one:.0} | 1.00 | {:.1} |\n| {cores} | {all:.0} | {:.2} | {:.1} |\n",
        config.display(),
        exp.data.cache.display(),
        exp.train.batch_size,
        params,
        exp.tower.history_len,
        exp.loss.mixed_negatives,
        flop / 1e6,
        one * flop / 1e9,
        all / one,
        all * flop / 1e9,
    );
    recforge::util::fsutil::write_atomic(out, table.as_bytes())?;
    println!("{table}\nwritten to {}", out.display());
    Ok(())
}
