//! Dropout whose masks come from a counter-based hash of (the step's key,
//! the call's number in the step, the element's index).
//!
//! burn's `Dropout` draws one ChaCha20 float per element through a
//! per-element sampler: on the CPU backend that was about a fifth of a
//! SASRec training step (benches/README.md). A SplitMix64 finaliser of a
//! counter gives each element its bit in a few instructions
//! ([`recforge_infer::bernoulli`]), the mask is built in parallel, and it
//! depends only on the key, so a resumed run draws the same masks (the
//! training loop sets the key for each step from the step's own random
//! stream, see [`begin_step`]).

use std::cell::Cell;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use recforge_infer::bernoulli::{keep_mask, mix};

thread_local! {
    /// (key of the step, dropout calls made in it so far).
    static STEP: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Starts a training step's masks: every dropout until the next call draws
/// from `key` in call order (a forward pass makes its calls in a fixed order).
pub fn begin_step(key: u64) {
    STEP.with(|s| s.set((key, 0)));
}

fn next_call() -> u64 {
    STEP.with(|s| {
        let (key, n) = s.get();
        s.set((key, n + 1));
        mix(key ^ mix(n.wrapping_add(0x6472_6f70)))
    })
}

/// Dropout with probability `prob`, active only on an autodiff device
/// (training), as burn's; kept values are scaled by 1 / (1 − prob).
#[derive(Module, Debug)]
pub struct FastDropout {
    pub prob: f64,
}

impl FastDropout {
    pub fn new(prob: f64) -> Self {
        FastDropout { prob }
    }

    /// Shapes: `[...]` → the same.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        let device = input.device();
        if self.prob == 0.0 || !device.is_autodiff() {
            return input;
        }
        let shape = input.shape();
        let keep = 1.0 - self.prob;
        let m = keep_mask(next_call(), shape.num_elements(), keep, (1.0 / keep) as f32);
        input * Tensor::<D>::from_data(TensorData::new(m, shape), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calls_of_a_step_differ_and_repeat_with_its_key() {
        begin_step(42);
        let (a, b) = (next_call(), next_call());
        begin_step(42);
        assert_eq!((a, b), (next_call(), next_call()));
        assert_ne!(a, b);
        begin_step(43);
        assert_ne!(a, next_call());
    }

    #[test]
    fn dropout_only_trains() {
        let dev = burn::tensor::Device::flex();
        let x = Tensor::<2>::ones([64, 64], &dev);
        let d = FastDropout::new(0.5);
        assert_eq!(
            d.forward(x.clone()).into_data(),
            x.into_data(),
            "inference: identity"
        );
        let ad = dev.autodiff();
        begin_step(1);
        let y: Vec<f32> = d
            .forward(Tensor::<2>::ones([64, 64], &ad))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = y.iter().filter(|&&v| v == 2.0).count();
        assert!((1800..2300).contains(&kept), "{kept} of 4096 kept");
    }
}
