//! Float64 twins of AD-MT's per-voxel maths (ADMT.md §4 steps 2, 5, 7, 8; §8), for the GPU
//! kernels to come and their tests. Layouts: probabilities and logits `[n, c, vox]`, label
//! and confidence maps `[n, vox]`, row-major; the teachers' EMA.

/// How the two teachers' softmaxes are fused (ADMT.md §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// The released code: weights ∝ exp(−H) with H the base-2 entropy (ε 1e-10).
    Entropy,
    /// The earlier variant the published logs come from: after renormalisation, the mean.
    Mean,
}

/// `−Σ_c p_c · log2(p_c + 1e-10)` at every voxel: `[n, vox]`.
pub fn entropy2(p: &[f64], n: usize, c: usize) -> Vec<f64> {
    let vox = p.len() / (n * c).max(1);
    let mut h = vec![0.0; n * vox];
    for s in 0..n {
        for v in 0..vox {
            h[s * vox + v] = -(0..c)
                .map(|k| {
                    let q = p[(s * c + k) * vox + v];
                    q * (q + 1e-10).log2()
                })
                .sum::<f64>();
        }
    }
    h
}

/// The fused distribution q `[n, c, vox]`: w1 = e^(−H1)/(e^(−H1) + e^(−H2)),
/// q = w1·p1 + (1 − w1)·p2 (or the mean), then q^(1/τ) renormalised over the classes.
pub fn fuse(p1: &[f64], p2: &[f64], n: usize, c: usize, mode: Fusion, tau: f64) -> Vec<f64> {
    assert_eq!(p1.len(), p2.len());
    let vox = p1.len() / (n * c).max(1);
    let (h1, h2) = (entropy2(p1, n, c), entropy2(p2, n, c));
    let mut q = vec![0.0; p1.len()];
    for s in 0..n {
        for v in 0..vox {
            let w1 = match mode {
                // 1 / (1 + e^(H1 − H2)): the same number without overflow.
                Fusion::Entropy => 1.0 / (1.0 + (h1[s * vox + v] - h2[s * vox + v]).exp()),
                Fusion::Mean => 0.5,
            };
            let mut z = 0.0;
            for k in 0..c {
                let i = (s * c + k) * vox + v;
                q[i] = (w1 * p1[i] + (1.0 - w1) * p2[i]).powf(1.0 / tau);
                z += q[i];
            }
            for k in 0..c {
                q[(s * c + k) * vox + v] /= z;
            }
        }
    }
    q
}

/// Per voxel: (the largest probability, its class: the first on ties, as `torch.max`).
pub fn max_argmax(p: &[f64], n: usize, c: usize) -> (Vec<f64>, Vec<u32>) {
    let vox = p.len() / (n * c).max(1);
    let mut conf = vec![f64::NEG_INFINITY; n * vox];
    let mut label = vec![0u32; n * vox];
    for s in 0..n {
        for k in 0..c {
            for v in 0..vox {
                let q = p[(s * c + k) * vox + v];
                if q > conf[s * vox + v] {
                    conf[s * vox + v] = q;
                    label[s * vox + v] = k as u32;
                }
            }
        }
    }
    (conf, label)
}

/// The compromise (TU:144-165, pixel_confidence): where the fused label differs from the
/// student's, the teachers disagree (`conflict`), and the student is strictly more confident,
/// the student's label and confidence replace the fused ones. In place.
pub fn compromise(
    label: &mut [u32],
    conf: &mut [f64],
    conflict: &[bool],
    student_label: &[u32],
    student_conf: &[f64],
) {
    for i in 0..label.len() {
        if label[i] != student_label[i] && conflict[i] && student_conf[i] > conf[i] {
            label[i] = student_label[i];
            conf[i] = student_conf[i];
        }
    }
}

/// Cross-entropy of `logits` against `labels` averaged over the voxels where `valid` is set
/// (ignore-index CE), and its gradient `(softmax − onehot)/|V|` on them, 0 elsewhere. With no
/// valid voxel PyTorch returns 0/0 = NaN, which would poison the weights: here the loss is 0
/// with a zero gradient (ADMT.md §7.7).
pub fn masked_ce(
    logits: &[f64],
    labels: &[u32],
    valid: &[bool],
    n: usize,
    c: usize,
) -> (f64, Vec<f64>) {
    let vox = logits.len() / (n * c).max(1);
    let count = valid.iter().filter(|&&b| b).count();
    let mut grad = vec![0.0; logits.len()];
    if count == 0 {
        return (0.0, grad);
    }
    let mut loss = 0.0;
    for s in 0..n {
        for v in 0..vox {
            if !valid[s * vox + v] {
                continue;
            }
            let at = |k: usize| logits[(s * c + k) * vox + v];
            let m = (0..c).map(at).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..c).map(|k| (at(k) - m).exp()).sum();
            let y = labels[s * vox + v] as usize;
            loss += z.ln() + m - at(y);
            for k in 0..c {
                let p = (at(k) - m).exp() / z;
                grad[(s * c + k) * vox + v] = (p - (k == y) as u32 as f64) / count as f64;
            }
        }
    }
    (loss / count as f64, grad)
}

/// AD-MT's Dice loss (LS:170-193) of probabilities `p` against `labels` over the voxels where
/// `valid` is set: per class, pooled over the batch, `1 − (2Σ p·t + 1e-5)/(Σ p² + Σ t² + 1e-5)`,
/// averaged over all classes (background included), and d loss / d p.
pub fn masked_dice(
    p: &[f64],
    labels: &[u32],
    valid: &[bool],
    n: usize,
    c: usize,
) -> (f64, Vec<f64>) {
    let vox = p.len() / (n * c).max(1);
    let mut loss = 0.0;
    let mut grad = vec![0.0; p.len()];
    for k in 0..c {
        let (mut inter, mut ysum, mut zsum) = (0.0, 0.0, 0.0);
        for s in 0..n {
            for v in 0..vox {
                if valid[s * vox + v] {
                    let q = p[(s * c + k) * vox + v];
                    let t = (labels[s * vox + v] as usize == k) as u32 as f64;
                    inter += q * t;
                    ysum += t * t;
                    zsum += q * q;
                }
            }
        }
        let num = 2.0 * inter + 1e-5;
        let den = zsum + ysum + 1e-5;
        loss += 1.0 - num / den;
        for s in 0..n {
            for v in 0..vox {
                if valid[s * vox + v] {
                    let i = (s * c + k) * vox + v;
                    let t = (labels[s * vox + v] as usize == k) as u32 as f64;
                    // d(1 − num/den)/dq = −(2t·den − num·2q)/den²
                    grad[i] = -(2.0 * t * den - num * 2.0 * p[i]) / (den * den) / c as f64;
                }
            }
        }
    }
    (loss / c as f64, grad)
}

/// The EMA of a teacher tensor towards the student's (ADMT.md §4 step 11):
/// `α·t + (1 − α)·s`, element by element.
pub fn ema(t: &[f64], s: &[f64], alpha: f64) -> Vec<f64> {
    assert_eq!(t.len(), s.len());
    t.iter()
        .zip(s)
        .map(|(a, b)| alpha * a + (1.0 - alpha) * b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(z: &[f64], n: usize, c: usize) -> Vec<f64> {
        let vox = z.len() / (n * c);
        let mut p = z.to_vec();
        for s in 0..n {
            for v in 0..vox {
                let m = (0..c)
                    .map(|k| z[(s * c + k) * vox + v])
                    .fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = (0..c)
                    .map(|k| (z[(s * c + k) * vox + v] - m).exp())
                    .collect();
                let t: f64 = e.iter().sum();
                for k in 0..c {
                    p[(s * c + k) * vox + v] = e[k] / t;
                }
            }
        }
        p
    }

    fn data(n: usize, c: usize, vox: usize, seed: u64) -> (Vec<f64>, Vec<u32>, Vec<bool>) {
        let z = crate::reference::normal(seed, n * c * vox)
            .iter()
            .map(|&x| x * 2.0)
            .collect();
        let u = crate::reference::normal(seed + 1, n * vox);
        let labels = u
            .iter()
            .map(|&x| ((x.abs() * 7.0) as u32) % c as u32)
            .collect();
        let valid = u.iter().map(|&x| x > -0.8).collect();
        (z, labels, valid)
    }

    #[test]
    fn fusion_weights_favour_the_surer_teacher_and_sum_to_one() {
        // One voxel, two classes: teacher 1 sure of class 0, teacher 2 unsure.
        let p1 = [0.99, 0.01];
        let p2 = [0.4, 0.6];
        let q = fuse(&p1, &p2, 1, 2, Fusion::Entropy, 1.0);
        let (h1, h2) = (entropy2(&p1, 1, 2)[0], entropy2(&p2, 1, 2)[0]);
        let w1 = (-h1).exp() / ((-h1).exp() + (-h2).exp());
        assert!((q[0] - (w1 * 0.99 + (1.0 - w1) * 0.4)).abs() < 1e-12);
        assert!(w1 > 0.5 && (q[0] + q[1] - 1.0).abs() < 1e-12);
        let m = fuse(&p1, &p2, 1, 2, Fusion::Mean, 1.0);
        assert!((m[0] - 0.695).abs() < 1e-12);
        // The earlier exp(−(H1+H2))·(p1+p2), renormalised, is the mean.
        let e = (-(h1 + h2)).exp();
        let old: Vec<f64> = (0..2).map(|k| e * (p1[k] + p2[k])).collect();
        assert!((old[0] / (old[0] + old[1]) - m[0]).abs() < 1e-12);
    }

    #[test]
    fn compromise_takes_the_more_confident_student_where_teachers_disagree() {
        let mut label = vec![0, 1, 1, 2];
        let mut conf = vec![0.5, 0.9, 0.6, 0.7];
        let conflict = [true, true, false, true];
        let (sl, sc) = ([1, 0, 0, 2], [0.6, 0.95, 0.99, 0.9]);
        compromise(&mut label, &mut conf, &conflict, &sl, &sc);
        assert_eq!(label, vec![1, 0, 1, 2]);
        assert_eq!(conf, vec![0.6, 0.95, 0.6, 0.7]);
    }

    #[test]
    fn masked_losses_match_finite_differences() {
        let (n, c, vox) = (2, 3, 7);
        let (z, labels, valid) = data(n, c, vox, 21);
        let (_, g) = masked_ce(&z, &labels, &valid, n, c);
        let p = softmax(&z, n, c);
        let (_, gd) = masked_dice(&p, &labels, &valid, n, c);
        let h = 1e-6;
        for i in 0..z.len() {
            let mut zp = z.clone();
            zp[i] += h;
            let mut zm = z.clone();
            zm[i] -= h;
            let fd = (masked_ce(&zp, &labels, &valid, n, c).0
                - masked_ce(&zm, &labels, &valid, n, c).0)
                / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-8, "ce {i}: {fd} vs {}", g[i]);
            let mut pp = p.clone();
            pp[i] += h;
            let mut pm = p.clone();
            pm[i] -= h;
            let fd = (masked_dice(&pp, &labels, &valid, n, c).0
                - masked_dice(&pm, &labels, &valid, n, c).0)
                / (2.0 * h);
            assert!((fd - gd[i]).abs() < 1e-8, "dice {i}: {fd} vs {}", gd[i]);
        }
        // Ignored voxels get no gradient; nothing valid is a zero loss, not NaN.
        let none = vec![false; n * vox];
        let (l, g0) = masked_ce(&z, &labels, &none, n, c);
        assert_eq!(l, 0.0);
        assert!(g0.iter().all(|&x| x == 0.0));
        let (ld, _) = masked_dice(&p, &labels, &none, n, c);
        assert_eq!(ld, 0.0);
    }

    #[test]
    fn max_argmax_takes_the_first_of_ties() {
        let p = [0.5, 0.2, 0.5, 0.8];
        let (conf, label) = max_argmax(&p, 1, 2);
        assert_eq!(label, vec![0, 1]);
        assert_eq!(conf, vec![0.5, 0.8]);
    }
}
