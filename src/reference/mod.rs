//! CPU twins of every GPU kernel, in f64, with the same names as the ops (`relu`,
//! `relu_bwd_input`, ...). They are the reference the GPU kernels are tested against, and
//! their backwards are checked by central finite differences ([`gradcheck`]).
//! Layouts are the GPU ops' layouts (row-major, [N, C, spatial...]).

pub mod admt;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod resample;
pub mod rows;
pub mod softmax;

pub use conv::*;
pub use dropout::*;
pub use elementwise::*;
pub use loss::*;
pub use matmul::*;
pub use norm::*;
pub use optim::*;
pub use reduce::*;
pub use resample::*;
pub use rows::*;
pub use softmax::*;

use rand::{Rng, SeedableRng};

/// Deterministic uniform values in [lo, hi) for tests and examples.
pub fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut r = rand_pcg::Pcg64::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// Deterministic standard-normal values.
pub fn normal(seed: u64, n: usize) -> Vec<f64> {
    let mut r = rand_pcg::Pcg64::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller on (0,1] uniforms.
            let u1: f64 = 1.0 - r.random::<f64>();
            let u2: f64 = r.random::<f64>();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Central finite differences of the scalar `f` at `x`, compared with the analytic gradient
/// `grad`. Returns the worst relative error `|fd - g| / max(|fd|, |g|, floor)` over the
/// probed coordinates (all of them, or an evenly spread subset of `max_probes`).
pub fn gradcheck(
    f: &dyn Fn(&[f64]) -> f64,
    x: &[f64],
    grad: &[f64],
    h: f64,
    max_probes: usize,
) -> f64 {
    assert_eq!(x.len(), grad.len());
    let n = x.len();
    let step = (n / max_probes.max(1)).max(1);
    let mut worst = 0f64;
    let mut xp = x.to_vec();
    let scale = grad.iter().fold(0f64, |m, g| m.max(g.abs())).max(1e-8);
    for i in (0..n).step_by(step) {
        let orig = xp[i];
        xp[i] = orig + h;
        let fp = f(&xp);
        xp[i] = orig - h;
        let fm = f(&xp);
        xp[i] = orig;
        let fd = (fp - fm) / (2.0 * h);
        let e = (fd - grad[i]).abs() / fd.abs().max(grad[i].abs()).max(1e-3 * scale);
        worst = worst.max(e);
    }
    worst
}

/// `sum(out * dout)`: the scalar whose gradient is the backward with upstream `dout`.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// (N, C, S) of a [N, C, spatial...] shape.
pub fn ncs(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}
