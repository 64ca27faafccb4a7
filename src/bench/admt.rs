//! The AD-MT rows of the benchmark: one full [`AdmtTrainer::step`] (both teachers' forwards
//! on the weak unlabelled view, the fusion, CutMix or the intensity view, the student's
//! single pass over L + 2U samples with its backward, SGD, the teacher's EMA and the one
//! readback), timed as the SS-Net iterations are ([`super::step`]): warm-up steps first,
//! then each timed step ends with a device sync inside the timed region and is a GPU timing
//! session. LA settings with VNet (`admt3d`), ACDC settings with UNet (`admt2d`); the batch
//! is the official one split U + L = half + half (LA 2 + 2 at 112×112×80, ACDC 12 + 12 at
//! 256×256), the `batch` field the sampled batch [U + L, 1, ...] as in the SS-Net rows.
//!
//! Which teacher a step updates follows the run's own alternation (random periods), so the
//! timed steps mix the intensity view and CutMix as a run does; the EMA is the warm-up copy
//! (α = 0) at these early iterations, the same work as α > 0.
//!
//! GFLOP (convolutions only, as everywhere in the bench): the two teachers' forwards on U
//! samples, the student's forward on L + 2U, its backward = the weight gradients (one
//! forward's worth) plus the input gradients (another, less the first convolution's: the
//! images need none): `2·F(U) + 3·F(L + 2U) − F₁(L + 2U)`. VNet at 112×112×80, 2 + 2:
//! 1759 GFLOP; UNet at 256×256, 12 + 12: 778 GFLOP.

use super::step::{forward_gflop, Timing};
use crate::admt::{AdmtConfig, AdmtInputs, AdmtTrainer};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Arch, ModelConfig};
use std::sync::Arc;
use std::time::Instant;

/// Forward FLOPs of the network's first convolution (the one whose input gradient a
/// training step does not compute), in GFLOP, on input `shape` [N, C, ...].
pub fn first_conv_gflop(arch: Arch, shape: &[usize]) -> f64 {
    let vox: f64 = shape[2..].iter().map(|&s| s as f64).product();
    let k = match arch {
        Arch::VNet => 27.0,
        Arch::UNet => 9.0,
    };
    2.0 * shape[0] as f64 * vox * 16.0 * shape[1] as f64 * k / 1e9
}

/// GFLOP of one AD-MT step with `u` unlabelled and `l` labelled samples of `sample`
/// [1, C, ...] (see the module documentation).
pub fn admt_gflop(arch: Arch, sample: &[usize], u: usize, l: usize, classes: usize) -> f64 {
    let at = |n: usize| [&[n][..], &sample[1..]].concat();
    let student = at(l + 2 * u);
    2.0 * forward_gflop(arch, &at(u), classes) + 3.0 * forward_gflop(arch, &student, classes)
        - first_conv_gflop(arch, &student)
}

/// Time AD-MT steps on a batch of `shape` = [U + L, 1, ...] (U = L = half). Returns the
/// timing and the peak of the engine's pool over the timed steps.
pub fn time_admt(
    gpu: &Arc<Gpu>,
    arch: Arch,
    shape: &[usize],
    classes: usize,
    warmup: usize,
    reps: usize,
) -> Result<(Timing, u64)> {
    let n = shape[0];
    if n < 2 || !n.is_multiple_of(2) {
        return Err(Error::op(
            "bench admt",
            format!("batch {shape:?}: needs an even batch of at least 2 (half labelled, half unlabelled)"),
        ));
    }
    let (u, l) = (n / 2, n / 2);
    let mcfg = ModelConfig {
        arch,
        in_channels: shape[1],
        num_classes: classes,
    };
    let cfg = match arch {
        Arch::VNet => AdmtConfig::la(),
        Arch::UNet => AdmtConfig::acdc(),
    };
    let mut trainer = AdmtTrainer::init(gpu, mcfg, cfg, 1337)?;
    let at = |n: usize| [&[n][..], &shape[1..]].concat();
    let (labeled, labels) = super::step::batch(gpu, &at(l), l, classes, 7)?;
    let weak = crate::ops::uniform(gpu, &at(u), 8)?;
    let strong = crate::ops::uniform(gpu, &at(u), 9)?;
    let inputs = AdmtInputs {
        labeled: &labeled,
        labels: &labels,
        weak: &weak,
        strong: &strong,
    };
    let step = |t: &mut AdmtTrainer| -> Result<()> { t.step(&inputs).map(drop) };
    for _ in 0..warmup {
        step(&mut trainer)?;
    }
    gpu.sync()?;
    gpu.reset_peak();
    let (mut ms, mut gt) = (vec![], vec![]);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        gpu.timing_begin();
        let r = step(&mut trainer).and_then(|_| gpu.sync());
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let g = gpu.timing_end();
        r?;
        gt.push(g?);
    }
    let gflop = admt_gflop(arch, &at(1), u, l, classes);
    let peak = gpu.pool_stats().peak_allocated;
    Ok((Timing::from_samples(gflop, shape, &ms, &gt), peak))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented totals: the teachers on U, the student's forward and backward on L + 2U
    /// less the first convolution's input gradient.
    #[test]
    fn admt_gflop_counts_teachers_student_and_backward() {
        let v = admt_gflop(Arch::VNet, &[1, 1, 112, 112, 80], 2, 2, 2);
        let f1 = forward_gflop(Arch::VNet, &[1, 1, 112, 112, 80], 2);
        assert!(
            (v - (4.0 * f1 + 18.0 * f1 - 6.0 * 0.86704128)).abs() < 1e-6,
            "{v}"
        );
        assert!((v - 1759.2).abs() < 0.5, "{v}");
        let u = admt_gflop(Arch::UNet, &[1, 1, 256, 256], 12, 12, 4);
        assert!((u - 778.1).abs() < 0.5, "{u}");
    }
}
