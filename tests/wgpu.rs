//! The GPU code path, run on whatever Vulkan adapter the machine has (in CI,
//! Mesa's software lavapipe): same weights give the same scores as flex, and
//! training steps run.
#![cfg(feature = "wgpu")]

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};

use recforge::config::experiment::ModelConfig;
use recforge::model::SasRecConfig;

fn config() -> SasRecConfig {
    let m = ModelConfig {
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        d_ff: 32,
        dropout: 0.1,
        ..ModelConfig::default()
    };
    recforge::train::sasrec::model_config(&m, 40, 8, &[])
}

/// burn's RNG is process-global: with both tests building models at once,
/// a seeded init would depend on thread timing (the two-tower test once
/// drew an init whose loss rose after one step).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wgpu_device() -> Device {
    let adapters = recforge::config::device::wgpu_adapters();
    assert!(
        !adapters.is_empty(),
        "no Vulkan adapter: this test needs one. {}",
        recforge::config::device::VULKAN_HINT
    );
    eprintln!("wgpu adapters: {adapters:?}");
    let kind = if adapters.iter().any(|a| a.hardware) {
        DeviceKind::DefaultDevice
    } else {
        DeviceKind::Cpu
    };
    Device::wgpu(kind)
}

fn inputs(device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = vec![
        0, 0, 0, 3, 7, 7, 1, 9, //
        5, 6, 7, 8, 9, 10, 11, 12, //
        0, 0, 0, 0, 0, 0, 0, 39,
    ];
    Tensor::from_data(TensorData::new(ids, [3, 8]), device)
}

/// Next-item scores of the fixed inputs, read back as f32.
fn scores(model: &recforge::model::SasRec, device: &Device) -> Vec<f32> {
    model
        .score_next(inputs(device))
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn wgpu_forward_matches_flex_and_training_steps_run() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = config();
    let flex = Device::flex();
    flex.seed(11);
    let model = cfg.init(&[], &flex);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    model.clone().save_file(&path).unwrap();
    let want = scores(&model, &flex);

    let gpu = wgpu_device();
    let on_gpu = cfg.init(&[], &gpu).load_file(&path);
    let got = scores(&on_gpu, &gpu);
    assert_eq!(want.len(), 3 * 39);
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "wgpu and flex differ by {worst}");

    // Two optimizer steps on the autodiff wgpu device.
    let ad = gpu.autodiff();
    let mut m = cfg.init(&[], &ad).load_file(&path);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..2 {
        let table = m.item_table();
        let h = m.encode(&table, inputs(&ad), 0).reshape([24, 16]);
        let targets: Vec<i64> = (0..24).map(|i| 1 + (i * 7) % 39).collect();
        let w = vec![1.0f32; 24];
        let loss = recforge::train::loss::full_softmax(h, &table, &targets, &w);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(1e-2, m, grads);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[1] < losses[0],
        "a step on the same batch should lower the loss: {losses:?}"
    );
}

/// The two-tower model on wgpu: the same weights give the same unit vectors
/// as on flex, and the in-batch loss trains.
#[test]
fn two_tower_on_wgpu_matches_flex_and_trains() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use recforge::config::experiment::HistoryPool;
    use recforge::model::{TwoTower, TwoTowerConfig};
    let cfg = TwoTowerConfig {
        d_model: 8,
        feature_dim: 4,
        hidden: 16,
        id_buckets: 50,
        id_dim: 4,
        dropout: 0.0,
        init_std: 0.3,
        item_features: vec![("a".into(), 6), ("b".into(), 9)],
        user_features: vec![("age".into(), 5)],
        history: HistoryPool::Recency,
    };
    // Six items; customers 0..4 with two-slot histories.
    let item_codes: Vec<i64> = vec![1, 6, 2, 7, 3, 8, 4, 9, 5, 10, 1, 11];
    let item_ids: Vec<i64> = vec![3, 14, 15, 9, 26, 5];
    let keep: Vec<f32> = vec![1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
    let hist: Vec<i64> = vec![0, 1, 2, 3, 4, 4, 5, 0];
    let weights: Vec<f32> = vec![0.5, 0.5, 0.3, 0.7, 1.0, 0.0, 0.2, 0.8];
    let user_codes: Vec<i64> = vec![1, 2, 3, 4];
    let vectors = |m: &TwoTower, dev: &Device| -> (Tensor<2>, Tensor<2>) {
        let items = m.item_embed(
            Tensor::from_data(TensorData::new(item_codes.clone(), [6, 2]), dev),
            Tensor::from_data(TensorData::new(item_ids.clone(), [6]), dev),
            Tensor::from_data(TensorData::new(keep.clone(), [6, 1]), dev),
        );
        let pooled = TwoTower::pool(
            items.clone(),
            Tensor::from_data(TensorData::new(hist.clone(), [8]), dev),
            Tensor::from_data(TensorData::new(weights.clone(), [4, 2]), dev),
        );
        let users = m.user_embed(
            Some(Tensor::from_data(
                TensorData::new(user_codes.clone(), [4, 1]),
                dev,
            )),
            Some(pooled),
        );
        (items, users)
    };
    let read = |t: Tensor<2>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };

    let flex = Device::flex();
    flex.seed(5);
    let model = cfg.init(&flex);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tt.bpk");
    model.clone().save_file(&path).unwrap();
    let (fi, fu) = vectors(&model, &flex);
    let gpu = wgpu_device();
    let (gi, gu) = vectors(&cfg.init(&gpu).load_file(&path), &gpu);
    for (a, b) in [(read(fi), read(gi)), (read(fu), read(gu))] {
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "wgpu and flex vectors differ by {worst}");
    }

    let ad = gpu.autodiff();
    let mut m = cfg.init(&ad).load_file(&path);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    // Customer r bought item targets[r]; items 0..6 are the columns.
    let targets = [0u32, 3, 5, 1];
    let columns: Vec<u32> = (0..6).collect();
    let mut cols: Vec<u32> = targets.to_vec();
    cols.extend(columns.iter().filter(|c| !targets.contains(c)));
    let order: Vec<i64> = cols.iter().map(|&c| c as i64).collect();
    for _ in 0..2 {
        let (items, users) = vectors(&m, &ad);
        let v = items.select(
            0,
            Tensor::from_data(TensorData::new(order.clone(), [6]), &ad),
        );
        let logits = users.matmul(v.transpose()).mul_scalar(5.0);
        let mask = recforge::train::loss::in_batch_accidental_hits(&targets, &cols);
        let log_q = vec![0.5f32; 6];
        let loss = recforge::train::loss::in_batch_softmax(logits, Some(&log_q), &mask, &[1.0; 4]);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        // Adam's first step moves every weight by about lr; a small lr keeps
        // "one step on the same batch lowers the loss" true for any init.
        m = optim.step(5e-3, m, grads);
    }
    eprintln!("two-tower on wgpu: losses {losses:?}");
    assert!(losses[1] < losses[0], "{losses:?}");
}

/// A batch of four fixed sequences for `data_parallel_step`: the loss of
/// rows `batch` is the mean full softmax over each row's first
/// `targets(r)` positions, a different number per row, so a split weighed
/// by rows would not give the whole batch's mean; weighed by targets
/// ([`Task::weight`]) it does.
struct FourRows {
    cfg: SasRecConfig,
    weights: std::path::PathBuf,
}

impl recforge::train::Task for FourRows {
    type Model = recforge::model::SasRec;
    const UNIT: &'static str = "rows";

    fn n_units(&self) -> usize {
        4
    }

    fn weight(&self, batch: &[usize]) -> f64 {
        batch.iter().map(|&r| targets_of(r) as f64).sum()
    }

    fn build(&self, device: &Device) -> Self::Model {
        self.cfg.init(&[], device).load_file(&self.weights)
    }

    fn loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        _rng: &mut recforge::util::rng::Rng,
        device: &Device,
    ) -> Tensor<1> {
        let ids: Vec<i64> = batch
            .iter()
            .flat_map(|&r| (0..8).map(move |j| 1 + ((r * 11 + j * 5) % 39) as i64))
            .collect();
        let n = batch.len();
        let inputs = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [n, 8]), device);
        let table = model.item_table();
        let h = model.encode(&table, inputs, 0).reshape([n * 8, 16]);
        let at: Vec<i64> = batch
            .iter()
            .enumerate()
            .flat_map(|(k, &r)| (0..targets_of(r)).map(move |j| (k * 8 + j) as i64))
            .collect();
        let targets: Vec<i64> = at.iter().map(|&p| 1 + (ids[p as usize] * 7) % 39).collect();
        let h = h.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(at.clone(), [at.len()]), device),
        );
        recforge::train::loss::full_softmax(h, &table, &targets, &vec![1.0; at.len()])
    }

    fn validate(&self, _: &Self::Model, _: &Device) -> recforge::train::evaluate::EvalResult {
        unreachable!("the step test never validates")
    }

    fn test(&self, _: &Self::Model, _: &Device) -> recforge::train::evaluate::EvalResult {
        unreachable!("the step test never tests")
    }
}

/// Row r's number of targets: 2, 4, 6, 8.
fn targets_of(r: usize) -> usize {
    2 * (r + 1)
}

/// Data parallelism: the batch split over two devices (flex listed twice,
/// and one wgpu adapter listed twice) gives the whole batch's loss and
/// gradients on one device.
#[test]
fn a_batch_split_over_two_devices_gives_the_one_device_gradients() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let m = ModelConfig {
        d_model: 16,
        n_heads: 2,
        n_layers: 1,
        d_ff: 32,
        // Dropout draws differ between one forward pass and two.
        dropout: 0.0,
        ..ModelConfig::default()
    };
    let cfg = recforge::train::sasrec::model_config(&m, 40, 8, &[]);
    let flex = Device::flex();
    flex.seed(3);
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.bpk");
    cfg.init(&[], &flex).save_file(&weights).unwrap();
    let task = FourRows { cfg, weights };
    let batch = [0usize, 1, 2, 3];
    for device in [flex.clone(), wgpu_device()] {
        let ad = device.clone().autodiff();
        let model = recforge::train::Task::build(&task, &ad);
        let mut rng = recforge::util::rng::Rng::new(1);
        let (one, g1) = recforge::train::data_parallel_step(
            &task,
            &model,
            &batch,
            &mut rng,
            std::slice::from_ref(&ad),
        );
        let (two, g2) = recforge::train::data_parallel_step(
            &task,
            &model,
            &batch,
            &mut rng,
            &[ad.clone(), ad.clone()],
        );
        assert!((one - two).abs() < 1e-5, "loss {one} against {two}");
        let read = |g: &GradientsParams, id| -> Vec<f32> {
            g.get::<2>(id)
                .unwrap()
                .into_data()
                .convert::<f32>()
                .try_into_vec()
                .unwrap()
        };
        for id in [
            model.item.weight.id,
            model.encoder.layers[0].pwff.linear_inner.weight.id,
        ] {
            let (a, b) = (read(&g1, id), read(&g2, id));
            let scale = a.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                scale > 0.0 && worst <= 1e-4 * scale,
                "{device:?}: {worst} of {scale}"
            );
        }
    }
}
