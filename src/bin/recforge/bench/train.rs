//! `recforge bench train`: milliseconds per training step and sequences per
//! second of the sequential ranker, per device, on fixed shapes: the
//! MovieLens-100k shape of the notes (batch 128, length 50, d 64, 1,683
//! items, full softmax) and H&M shapes (105,542 articles with features,
//! sampled softmax; and the real length distribution of short histories).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::Device;

use recforge::config::device::{self, DeviceChoice};
use recforge::config::experiment::{Experiment, LossKind};
use recforge::features::ItemFeature;
use recforge::features::seq::Batch;
use recforge::train::{build_model, proposal_cdf, step_loss};
use recforge::util::rng::Rng;

pub struct Shape {
    pub name: &'static str,
    pub batch: usize,
    pub len: usize,
    pub n_items: usize,
    pub n_features: usize,
    pub loss: LossKind,
    pub negatives: usize,
}

/// Only for dry runs of `benches/gpu.sh` on a software Vulkan driver:
/// selected by `--only tiny`, never by default.
pub const TINY: &str = "tiny dry-run";

pub const SHAPES: &[Shape] = &[
    Shape {
        name: "tiny dry-run (batch 8, length 8, 101 items)",
        batch: 8,
        len: 8,
        n_items: 101,
        n_features: 1,
        loss: LossKind::Full,
        negatives: 0,
    },
    Shape {
        name: "ml-100k (full softmax)",
        batch: 128,
        len: 50,
        n_items: 1_683,
        n_features: 0,
        loss: LossKind::Full,
        negatives: 0,
    },
    Shape {
        name: "H&M 105k articles, 10 features, sampled softmax 1024 negatives",
        batch: 256,
        len: 50,
        n_items: 105_543,
        n_features: 10,
        loss: LossKind::Sampled,
        negatives: 1024,
    },
    Shape {
        name: "H&M 105k articles, 10 features, gBCE 256 negatives, length 16",
        batch: 256,
        len: 16,
        n_items: 105_543,
        n_features: 10,
        loss: LossKind::Gbce,
        negatives: 256,
    },
];

fn synthetic_batch(rng: &mut Rng, s: &Shape) -> Batch {
    let n = s.batch * s.len;
    let draw = |rng: &mut Rng| 1 + rng.below(s.n_items as u64 - 1) as i64;
    Batch {
        rows: s.batch,
        len: s.len,
        inputs: (0..n).map(|_| draw(rng)).collect(),
        targets: (0..n).map(|_| draw(rng)).collect(),
        weights: vec![1.0; n],
    }
}

/// (ms per step, sequences per second) over `steps` timed steps after `warmup`.
pub fn time_steps(device: &Device, s: &Shape, warmup: usize, steps: usize) -> Result<(f64, f64)> {
    let mut exp = Experiment::default();
    exp.data.max_len = s.len;
    exp.loss.kind = s.loss;
    exp.loss.negatives = s.negatives.max(1);
    let mut rng = Rng::new(3);
    let feats: Vec<ItemFeature> = (0..s.n_features)
        .map(|f| ItemFeature {
            name: format!("f{f}"),
            vocab: 50,
            codes: (0..s.n_items)
                .map(|i| if i == 0 { 0 } else { 1 + rng.below(49) as u32 })
                .collect(),
        })
        .collect();
    let ad = device.clone().autodiff();
    let mut model = build_model(&exp, s.n_items, &feats, &ad);
    let mut optim = burn::optim::AdamConfig::new().init();
    let counts: Vec<f64> = (0..s.n_items).map(|i| 1.0 / (i as f64 + 1.0)).collect();
    let proposal = proposal_cdf(&counts, 0.5, s.loss == LossKind::Gbce);
    let batch = synthetic_batch(&mut rng, s);
    let mut t0 = Instant::now();
    for i in 0..warmup + steps {
        if i == warmup {
            device.sync()?;
            t0 = Instant::now();
        }
        let loss = step_loss(&model, &exp, &batch, &proposal, &mut rng, &ad);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    // Reading a weight forces every queued kernel to finish.
    let _ = model.item.weight.val().sum().into_scalar::<f32>();
    let secs = t0.elapsed().as_secs_f64();
    Ok((secs * 1e3 / steps as f64, (steps * s.batch) as f64 / secs))
}

pub fn run(devices: &[DeviceChoice], steps: usize, only: &str, out: &PathBuf) -> Result<()> {
    let profile = if cfg!(debug_assertions) {
        "debug (dependencies optimised)"
    } else {
        "release"
    };
    let cores = rayon::current_num_threads();
    let mut table = format!(
        "# Training-step benchmark\n\n`recforge bench train` ({profile} build, {cores} CPU threads). \
One step = forward, backward and Adam update of a 2-layer, 2-head, d=64 SASRec; \
{steps} timed steps after 2 warm-up steps, same batch each step.\n\n\
| shape | device | ms/step | sequences/s |\n|---|---|---:|---:|\n"
    );
    for &d in devices {
        let chosen = device::choose(d)?;
        let tiny_asked = TINY.contains(only) && !only.is_empty();
        for s in SHAPES
            .iter()
            .filter(|s| s.name.contains(only) && (s.name.starts_with(TINY) == tiny_asked))
        {
            eprintln!("{} on {} ...", s.name, chosen.description);
            let (ms, sps) = time_steps(&chosen.device, s, 2, steps)?;
            eprintln!("  {ms:.1} ms/step, {sps:.0} seq/s");
            table += &format!(
                "| {} | {} | {ms:.1} | {sps:.0} |\n",
                s.name, chosen.description
            );
        }
    }
    recforge::util::fsutil::write_atomic(out, table.as_bytes())?;
    println!("{table}\nwritten to {}", out.display());
    Ok(())
}
