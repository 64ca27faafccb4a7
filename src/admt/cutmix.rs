//! CutMix of the weak unlabelled view and the teacher maps (ADMT.md §5; MX:72-108 in 2D,
//! 181-215 in 3D): a permutation π of the batch, λ ~ Beta(4, 4) (one per call), the box side
//! ⌊D·√(1−λ)⌋ on every axis (also in 3D: the volume fraction is (1−λ)^1.5), a centre per
//! sample and axis uniform in `[⌊D/8⌋, D)`, the box `[clip(c − ⌊s/2⌋), clip(c + ⌊s/2⌋))`;
//! sample i keeps its own values outside its box and takes sample π(i)'s inside (the same
//! place). Draw order as the official code: permutation, λ, then the centres axis by axis.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Beta, Distribution};
use rand_pcg::Pcg32;

/// One draw of CutMix for a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct CutMix {
    /// Sample i takes its box from sample `perm[i]`.
    pub perm: Vec<usize>,
    pub lambda: f64,
    /// Per sample, per spatial axis: the box `[lo, hi)`.
    pub boxes: Vec<Vec<(usize, usize)>>,
}

impl CutMix {
    /// Draw for `n` samples of spatial shape `dims` (2 or 3 axes).
    pub fn draw(n: usize, dims: &[usize], rng: &mut Pcg32) -> CutMix {
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(rng);
        let lambda: f64 = Beta::new(4.0, 4.0).expect("valid Beta(4, 4)").sample(rng);
        let centres: Vec<Vec<usize>> = dims
            .iter()
            .map(|&d| {
                let lo_c = d / 8;
                (0..n)
                    .map(|_| {
                        if lo_c < d {
                            rng.random_range(lo_c..d)
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect();
        Self::from_centres(perm, lambda, &centres, dims)
    }

    /// The boxes of a draw given its permutation, λ and centres (`centres[axis][sample]`):
    /// side `⌊D·√(1−λ)⌋` per axis, box `[clip(c − ⌊s/2⌋), clip(c + ⌊s/2⌋))`.
    pub fn from_centres(
        perm: Vec<usize>,
        lambda: f64,
        centres: &[Vec<usize>],
        dims: &[usize],
    ) -> CutMix {
        let r = (1.0 - lambda).sqrt();
        let mut boxes = vec![Vec::with_capacity(dims.len()); perm.len()];
        for (&d, cs) in dims.iter().zip(centres) {
            let half = (d as f64 * r).floor() as usize / 2;
            for (b, &c) in boxes.iter_mut().zip(cs) {
                b.push((c.saturating_sub(half).min(d), (c + half).min(d)));
            }
        }
        CutMix {
            perm,
            lambda,
            boxes,
        }
    }

    /// The mixed batch: `data` is `[n, channels, dims...]`, row-major.
    pub fn apply<T: Copy>(&self, data: &[T], channels: usize, dims: &[usize]) -> Vec<T> {
        let n = self.perm.len();
        let vox: usize = dims.iter().product();
        assert_eq!(
            data.len(),
            n * channels * vox,
            "CutMix: data of another shape"
        );
        let mut out = data.to_vec();
        let mut idx = vec![0usize; dims.len()];
        for i in 0..n {
            let src = self.perm[i];
            for v in 0..vox {
                // The voxel's coordinates, last axis fastest.
                let mut rest = v;
                for a in (0..dims.len()).rev() {
                    idx[a] = rest % dims[a];
                    rest /= dims[a];
                }
                let inside = idx
                    .iter()
                    .zip(&self.boxes[i])
                    .all(|(&x, &(lo, hi))| lo <= x && x < hi);
                if inside {
                    for c in 0..channels {
                        out[(i * channels + c) * vox + v] = data[(src * channels + c) * vox + v];
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn boxes_follow_the_official_rule() {
        let mut rng = Pcg32::seed_from_u64(5);
        let dims = [16usize, 12, 8];
        let mut lambdas = vec![];
        for _ in 0..500 {
            let m = CutMix::draw(3, &dims, &mut rng);
            let mut p = m.perm.clone();
            p.sort();
            assert_eq!(p, vec![0, 1, 2]);
            let r = (1.0 - m.lambda).sqrt();
            for b in &m.boxes {
                for (a, &(lo, hi)) in b.iter().enumerate() {
                    let d = dims[a];
                    let half = (d as f64 * r).floor() as usize / 2;
                    assert!(lo <= hi && hi <= d);
                    // The centre is in [d/8, d): the box is [c - half, c + half) clipped.
                    assert!(hi - lo <= 2 * half);
                    assert!(hi >= d / 8);
                }
            }
            lambdas.push(m.lambda);
        }
        // Beta(4, 4): mean 1/2, variance 1/36.
        let mean = lambdas.iter().sum::<f64>() / lambdas.len() as f64;
        let var = lambdas.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lambdas.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!((var - 1.0 / 36.0).abs() < 0.006, "variance {var}");
    }

    #[test]
    fn paste_takes_the_permuted_sample_inside_the_box_only() {
        let m = CutMix {
            perm: vec![1, 0],
            lambda: 0.5,
            boxes: vec![vec![(1, 3), (0, 2)], vec![(0, 0), (0, 4)]],
        };
        // Two samples, one channel, 4x4: sample 0 all 0, sample 1 all 1.
        let data: Vec<u8> = [vec![0u8; 16], vec![1u8; 16]].concat();
        let out = m.apply(&data, 1, &[4, 4]);
        for y in 0..4 {
            for x in 0..4 {
                let inside = (1..3).contains(&y) && x < 2;
                assert_eq!(out[y * 4 + x], inside as u8, "({y}, {x})");
            }
        }
        // Sample 1's box is empty on axis 0: unchanged.
        assert!(out[16..].iter().all(|&v| v == 1));
    }
}
