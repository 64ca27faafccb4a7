//! Loss twins on [N, C, S] with labels [N, S] or soft targets [N, C, S].

pub fn cross_entropy(x: &[f64], labels: &[u32], n: usize, c: usize, s: usize) -> f64 {
    let mut l = 0.0;
    for nn in 0..n {
        for ss in 0..s {
            let at = |k: usize| (nn * c + k) * s + ss;
            let m = (0..c).map(|k| x[at(k)]).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..c).map(|k| (x[at(k)] - m).exp()).sum();
            l += z.ln() + m - x[at(labels[nn * s + ss] as usize)];
        }
    }
    l / (n * s) as f64
}

pub fn cross_entropy_bwd(
    x: &[f64],
    labels: &[u32],
    g: f64,
    n: usize,
    c: usize,
    s: usize,
) -> Vec<f64> {
    let p = super::softmax::softmax(x, n, c, s);
    let mut gx = vec![0.0; x.len()];
    for nn in 0..n {
        for ss in 0..s {
            for k in 0..c {
                let i = (nn * c + k) * s + ss;
                let t = if labels[nn * s + ss] as usize == k {
                    1.0
                } else {
                    0.0
                };
                gx[i] = (p[i] - t) * g / (n * s) as f64;
            }
        }
    }
    gx
}

/// Soft or one-hot target as [N, C, S].
pub fn one_hot(labels: &[u32], n: usize, c: usize, s: usize) -> Vec<f64> {
    let mut t = vec![0.0; n * c * s];
    for nn in 0..n {
        for ss in 0..s {
            t[(nn * c + labels[nn * s + ss] as usize) * s + ss] = 1.0;
        }
    }
    t
}

/// Dice statistics per class: (I, P, T) with power k.
fn stats(p: &[f64], t: &[f64], n: usize, c: usize, s: usize, k: i32) -> Vec<(f64, f64, f64)> {
    let mut st = vec![(0.0, 0.0, 0.0); c];
    for nn in 0..n {
        for (cc, e) in st.iter_mut().enumerate() {
            for ss in 0..s {
                let i = (nn * c + cc) * s + ss;
                e.0 += p[i] * t[i];
                e.1 += p[i].powi(k);
                e.2 += t[i].powi(k);
            }
        }
    }
    st
}

/// Kinds as in `ops::DiceKind`: 0 binary foreground, 1 whole, 2 mean over classes.
pub fn dice_loss(p: &[f64], t: &[f64], n: usize, c: usize, s: usize, kind: u32) -> f64 {
    match kind {
        0 => {
            let st = stats(p, t, n, c, s, 1);
            1.0 - (2.0 * st[1].0 + 1e-8) / (st[1].1 + st[1].2 + 1e-8)
        }
        1 => {
            let st = stats(p, t, n, c, s, 1);
            let (i, a, b) = st.iter().fold((0.0, 0.0, 0.0), |acc, e| {
                (acc.0 + e.0, acc.1 + e.1, acc.2 + e.2)
            });
            1.0 - (2.0 * i + 1e-8) / (a + b + 1e-8)
        }
        _ => {
            let st = stats(p, t, n, c, s, 2);
            st.iter()
                .map(|e| 1.0 - (2.0 * e.0 + 1e-10) / (e.1 + e.2 + 1e-10))
                .sum::<f64>()
                / c as f64
        }
    }
}

/// Gradient of [`dice_loss`] with respect to p, times the upstream g.
pub fn dice_loss_bwd(
    p: &[f64],
    t: &[f64],
    g: f64,
    n: usize,
    c: usize,
    s: usize,
    kind: u32,
) -> Vec<f64> {
    let k = if kind == 2 { 2 } else { 1 };
    let st = stats(p, t, n, c, s, k);
    let coef: Vec<(f64, f64)> = match kind {
        0 => (0..c)
            .map(|cc| {
                if cc != 1 {
                    return (0.0, 0.0);
                }
                let d = st[1].1 + st[1].2 + 1e-8;
                (-2.0 / d, (2.0 * st[1].0 + 1e-8) / (d * d))
            })
            .collect(),
        1 => {
            let (i, a, b) = st.iter().fold((0.0, 0.0, 0.0), |acc, e| {
                (acc.0 + e.0, acc.1 + e.1, acc.2 + e.2)
            });
            let d = a + b + 1e-8;
            vec![(-2.0 / d, (2.0 * i + 1e-8) / (d * d)); c]
        }
        _ => st
            .iter()
            .map(|e| {
                let d = e.1 + e.2 + 1e-10;
                (
                    -2.0 / (c as f64 * d),
                    (2.0 * e.0 + 1e-10) / (c as f64 * d * d),
                )
            })
            .collect(),
    };
    let mut gp = vec![0.0; p.len()];
    for nn in 0..n {
        for (cc, &(di, dp)) in coef.iter().enumerate() {
            for ss in 0..s {
                let i = (nn * c + cc) * s + ss;
                let dpk = if k == 2 { 2.0 * p[i] } else { 1.0 };
                gp[i] = g * (di * t[i] + dp * dpk);
            }
        }
    }
    gp
}

/// The fused `ops::softmax_dice_loss`: [`dice_loss`] of the softmax of `x` against the
/// one-hot of `labels` (every label < c).
pub fn softmax_dice_loss(
    x: &[f64],
    labels: &[u32],
    n: usize,
    c: usize,
    s: usize,
    kind: u32,
) -> f64 {
    let p = super::softmax::softmax(x, n, c, s);
    dice_loss(&p, &one_hot(labels, n, c, s), n, c, s, kind)
}

/// Gradient of [`softmax_dice_loss`] with respect to the logits, times the upstream g: the
/// Dice backward followed by the softmax backward.
pub fn softmax_dice_loss_bwd(
    x: &[f64],
    labels: &[u32],
    g: f64,
    n: usize,
    c: usize,
    s: usize,
    kind: u32,
) -> Vec<f64> {
    let p = super::softmax::softmax(x, n, c, s);
    let gp = dice_loss_bwd(&p, &one_hot(labels, n, c, s), g, n, c, s, kind);
    super::softmax::softmax_bwd_input(&p, &gp, n, c, s)
}
