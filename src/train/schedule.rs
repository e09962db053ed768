//! Learning rate as a pure function of the step, so a resumed run needs no
//! scheduler state to continue on the same curve.

use crate::config::experiment::{OptimConfig, Schedule};

pub fn lr_at(cfg: &OptimConfig, step: usize, total_steps: usize) -> f64 {
    let warm = cfg.warmup_steps;
    if warm > 0 && step < warm {
        return cfg.lr * (step + 1) as f64 / warm as f64;
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let span = total_steps.saturating_sub(warm).max(1) as f64;
            let t = ((step - warm) as f64 / span).min(1.0);
            let floor = cfg.lr * cfg.min_lr_ratio;
            floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let cfg = OptimConfig {
            lr: 1.0,
            warmup_steps: 10,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.1,
            ..OptimConfig::default()
        };
        assert!((lr_at(&cfg, 0, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 60, 110) - 0.55).abs() < 1e-12);
        assert!((lr_at(&cfg, 110, 110) - 0.1).abs() < 1e-12);
        assert!(lr_at(&cfg, 500, 110) >= 0.1 - 1e-12);
    }
}
