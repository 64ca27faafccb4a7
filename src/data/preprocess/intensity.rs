//! Intensity normalisation: CT the nnU-Net way (clip to the 0.5-99.5 percentiles of the
//! labelled foreground, z-score with the foreground's mean and standard deviation, the same
//! numbers for every scan), every other modality z-scored per volume (what SS-Net's LA files
//! were given), or nothing.

use serde::{Deserialize, Serialize};

/// How intensities are normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intensity {
    /// Left as stored.
    None,
    /// `(x - mean) / std` over each volume.
    ZScore,
    /// Clip to `[lo, hi]`, then `(x - mean) / std` (dataset-wide foreground statistics).
    Ct {
        lo: f64,
        hi: f64,
        mean: f64,
        std: f64,
    },
}

/// Foreground samples kept per case for the CT statistics (evenly strided).
pub const CT_SAMPLES_PER_CASE: usize = 100_000;

/// Up to [`CT_SAMPLES_PER_CASE`] image values at non-zero labels, evenly strided.
pub fn foreground_samples(image: &[f32], label: &[u8]) -> Vec<f32> {
    let n = label.iter().filter(|&&l| l != 0).count();
    let step = n.div_ceil(CT_SAMPLES_PER_CASE).max(1);
    image
        .iter()
        .zip(label)
        .filter(|(_, &l)| l != 0)
        .step_by(step)
        .map(|(&v, _)| v)
        .collect()
}

/// Linear-interpolated percentile (numpy's default) of sorted values.
fn percentile(sorted: &[f32], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    let a = sorted[i] as f64;
    let b = sorted[(i + 1).min(sorted.len() - 1)] as f64;
    a + (b - a) * f
}

/// The CT normalisation from foreground samples of every labelled case; `None` without any.
pub fn ct_from_samples(mut samples: Vec<f32>) -> Option<Intensity> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f32::total_cmp);
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    Some(Intensity::Ct {
        lo: percentile(&samples, 0.5),
        hi: percentile(&samples, 99.5),
        mean,
        std: var.sqrt().max(1e-8),
    })
}

impl Intensity {
    /// Normalise `v` in place.
    pub fn apply(&self, v: &mut [f32]) {
        match *self {
            Intensity::None => {}
            Intensity::ZScore => {
                let n = v.len().max(1) as f64;
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
                let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
                let std = var.sqrt().max(1e-8);
                for x in v {
                    *x = ((*x as f64 - mean) / std) as f32;
                }
            }
            Intensity::Ct { lo, hi, mean, std } => {
                for x in v {
                    *x = (((*x as f64).clamp(lo, hi) - mean) / std) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zscore_and_ct() {
        let mut v = vec![1.0f32, 2.0, 3.0, 4.0];
        Intensity::ZScore.apply(&mut v);
        let mean: f32 = v.iter().sum::<f32>() / 4.0;
        let var: f32 = v.iter().map(|x| x * x).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{v:?}");
        let samples: Vec<f32> = (0..=1000).map(|i| i as f32).collect();
        let Some(Intensity::Ct { lo, hi, mean, .. }) = ct_from_samples(samples) else {
            panic!("no CT statistics")
        };
        assert_eq!((lo, hi, mean), (5.0, 995.0, 500.0));
        let img = [0.0f32, 10.0, 20.0];
        let lab = [0u8, 1, 1];
        assert_eq!(foreground_samples(&img, &lab), vec![10.0, 20.0]);
    }
}
