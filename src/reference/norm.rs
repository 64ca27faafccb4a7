//! BatchNorm twins (f64), layout [N, C, S...] as the GPU op.

use crate::ops::norm::{Act, BnMode};

/// Everything a BatchNorm forward produces: the output, the statistics it normalised with
/// (mean and 1 / sqrt(var + eps) per channel) and the running statistics afterwards.
#[derive(Clone, Debug)]
pub struct BnOut {
    pub y: Vec<f64>,
    pub mean: Vec<f64>,
    pub invstd: Vec<f64>,
    pub running_mean: Vec<f64>,
    pub running_var: Vec<f64>,
}

fn slope(act: Act) -> Option<f64> {
    match act {
        Act::None => None,
        Act::Relu => Some(0.0),
        Act::LeakyRelu(s) => Some(s as f64),
    }
}

fn nc_s(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// BatchNorm forward with the fused activation. Train: batch mean and biased variance,
/// running statistics updated with momentum (unbiased variance); Eval: running statistics;
/// Frozen: batch statistics, running statistics unchanged.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &[f64],
    shape: &[usize],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    mode: BnMode,
    momentum: f64,
    eps: f64,
    act: Act,
) -> BnOut {
    let (n, c, s) = nc_s(shape);
    let m = (n * s) as f64;
    let mut rm = running_mean.to_vec();
    let mut rv = running_var.to_vec();
    let mut mean = vec![0.0; c];
    let mut invstd = vec![0.0; c];
    for ch in 0..c {
        let vals = || (0..n).flat_map(move |i| (0..s).map(move |j| x[(i * c + ch) * s + j]));
        if mode == BnMode::Eval {
            mean[ch] = rm[ch];
            invstd[ch] = 1.0 / (rv[ch] + eps).sqrt();
            continue;
        }
        let mu = vals().sum::<f64>() / m;
        let m2: f64 = vals().map(|v| (v - mu) * (v - mu)).sum();
        mean[ch] = mu;
        invstd[ch] = 1.0 / (m2 / m + eps).sqrt();
        if mode == BnMode::Train {
            rm[ch] = (1.0 - momentum) * rm[ch] + momentum * mu;
            rv[ch] = (1.0 - momentum) * rv[ch] + momentum * m2 / (m - 1.0);
        }
    }
    let sl = slope(act);
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / s) % c;
            let z = gamma[ch] * (v - mean[ch]) * invstd[ch] + beta[ch];
            match sl {
                Some(a) if z <= 0.0 => a * z,
                _ => z,
            }
        })
        .collect();
    BnOut {
        y,
        mean,
        invstd,
        running_mean: rm,
        running_var: rv,
    }
}

/// BatchNorm backward: (gx, ggamma, gbeta) for the upstream gradient `g`, given the
/// statistics the forward used. With batch statistics (Train, Frozen) gx includes their
/// dependence on x.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_bwd(
    x: &[f64],
    shape: &[usize],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    invstd: &[f64],
    g: &[f64],
    mode: BnMode,
    act: Act,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, s) = nc_s(shape);
    let m = (n * s) as f64;
    let sl = slope(act);
    let xh: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - mean[(i / s) % c]) * invstd[(i / s) % c])
        .collect();
    let gz: Vec<f64> = g
        .iter()
        .enumerate()
        .map(|(i, &gv)| {
            let ch = (i / s) % c;
            let z = gamma[ch] * xh[i] + beta[ch];
            match sl {
                Some(a) if z <= 0.0 => a * gv,
                _ => gv,
            }
        })
        .collect();
    let mut gbeta = vec![0.0; c];
    let mut ggamma = vec![0.0; c];
    for i in 0..x.len() {
        let ch = (i / s) % c;
        gbeta[ch] += gz[i];
        ggamma[ch] += gz[i] * xh[i];
    }
    let gx = (0..x.len())
        .map(|i| {
            let ch = (i / s) % c;
            let k = gamma[ch] * invstd[ch];
            if mode == BnMode::Eval {
                k * gz[i]
            } else {
                k * (gz[i] - gbeta[ch] / m - xh[i] * ggamma[ch] / m)
            }
        })
        .collect();
    (gx, ggamma, gbeta)
}

/// `ops::batch_norm_linear`: BatchNorm1d with its activation over rows h [M, C], then the
/// Linear `a·wᵀ + b` with w [O, C]. Returns y [M, O] and the BatchNorm's [`BnOut`] (its `y`
/// is the normalised activation a).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_linear(
    h: &[f64],
    m: usize,
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
    mode: BnMode,
    momentum: f64,
    eps: f64,
    act: Act,
    w: &[f64],
    b: Option<&[f64]>,
    o: usize,
) -> (Vec<f64>, BnOut) {
    let bn = batch_norm(
        h,
        &[m, c],
        gamma,
        beta,
        running_mean,
        running_var,
        mode,
        momentum,
        eps,
        act,
    );
    (super::matmul::linear(&bn.y, w, b, m, c, o), bn)
}

/// Gradients of [`batch_norm_linear`] for the upstream g [M, O], given the forward's
/// BatchNorm output `bn`: (gh, ggamma, gbeta, gw, gb).
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn batch_norm_linear_bwd(
    h: &[f64],
    m: usize,
    c: usize,
    gamma: &[f64],
    beta: &[f64],
    bn: &BnOut,
    mode: BnMode,
    act: Act,
    w: &[f64],
    o: usize,
    g: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    use super::matmul::{linear_bwd_bias, linear_bwd_input, linear_bwd_weight};
    let gw = linear_bwd_weight(g, &bn.y, m, c, o);
    let gb = linear_bwd_bias(g, m, o);
    let ga = linear_bwd_input(g, w, m, c, o);
    let (gh, ggamma, gbeta) = batch_norm_bwd(
        h,
        &[m, c],
        gamma,
        beta,
        &bn.mean,
        &bn.invstd,
        &ga,
        mode,
        act,
    );
    (gh, ggamma, gbeta, gw, gb)
}
