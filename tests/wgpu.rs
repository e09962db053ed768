//! The GPU code path, run on whatever Vulkan adapter the machine has (in CI,
//! Mesa's software lavapipe): same weights give the same scores as flex, and
//! training steps run.
#![cfg(feature = "wgpu")]

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};

use recforge::experiment::ModelConfig;
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
    SasRecConfig::new(&m, 40, 8, &[])
}

fn wgpu_device() -> Device {
    let adapters = recforge::device::wgpu_adapters();
    assert!(
        !adapters.is_empty(),
        "no Vulkan adapter: this test needs one. {}",
        recforge::device::VULKAN_HINT
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
