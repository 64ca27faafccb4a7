//! SS-Net's training objective on top of the networks: VAT smoothness (LDS), the prototype
//! memory, the class-to-class contrastive loss, the consistency ramp-up and the SGD step.
//! What each piece computes, quirks included, is specified by `shared/design/SSNET.md` and
//! checked by the golden fixtures `ssnet/*`.

pub mod contrastive;
pub mod memory;
pub mod step;
pub mod vat;

pub use memory::{MemoryOrder, PrototypeMemory};
pub use step::{StepInputs, StepLosses, Trainer, TrainerConfig};

/// The reference's sigmoid ramp-up: `exp(-5 (1 - clip(t, 0, R)/R)²)` (1 when R = 0).
pub fn sigmoid_rampup(t: f64, length: f64) -> f64 {
    if length == 0.0 {
        return 1.0;
    }
    let c = t.clamp(0.0, length);
    let phase = 1.0 - c / length;
    (-5.0 * phase * phase).exp()
}

/// The consistency weight at iteration counter `iter` (the reference uses `iter // 150`).
pub fn consistency_weight(consistency: f64, rampup: f64, iter: u64) -> f64 {
    consistency * sigmoid_rampup((iter / 150) as f64, rampup)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn rampup_matches_the_reference_formula() {
        assert_eq!(sigmoid_rampup(5.0, 0.0), 1.0);
        assert!((sigmoid_rampup(0.0, 40.0) - (-5.0f64).exp()).abs() < 1e-15);
        assert!((sigmoid_rampup(40.0, 40.0) - 1.0).abs() < 1e-15);
        assert!((sigmoid_rampup(100.0, 40.0) - 1.0).abs() < 1e-15);
        assert!((sigmoid_rampup(20.0, 40.0) - (-1.25f64).exp()).abs() < 1e-15);
        assert!(
            (consistency_weight(0.1, 200.0, 299) - 0.1 * sigmoid_rampup(1.0, 200.0)).abs() < 1e-15
        );
    }
}
