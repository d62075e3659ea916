//! What every training loop shares: the learning-rate schedule and the progress bar.

/// Linear warm-up to `lr`, then cosine decay to a tenth of it at `steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub warmup: u64,
    pub steps: u64,
}

impl Schedule {
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.warmup.max(1);
        if step < warmup {
            return self.lr * (step + 1) as f64 / warmup as f64;
        }
        let t = (step - warmup) as f64 / (self.steps.saturating_sub(warmup).max(1)) as f64;
        self.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
    }
}

/// A progress bar over `steps`, starting at `at` (`None` when disabled).
pub fn progress_bar(enabled: bool, steps: u64, at: u64) -> Option<indicatif::ProgressBar> {
    enabled.then(|| {
        let b = indicatif::ProgressBar::new(steps).with_position(at);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_to_a_tenth() {
        let s = Schedule {
            lr: 1.0,
            warmup: 10,
            steps: 110,
        };
        assert!((s.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12);
    }
}
