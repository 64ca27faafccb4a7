//! Dropout twins (f64): the exact masks of the GPU ops (same hash, shared with
//! `ops::dropout`), applied in f64.

use crate::ops::dropout::{dropout_keep, dropout_scale};

/// Element dropout: element i kept when `dropout_keep(seed, p, i)`, survivors × 1/(1-p)
/// (the f32 factor the kernel uses). p = 0 is the identity.
pub fn dropout(x: &[f64], p: f32, seed: u64) -> Vec<f64> {
    if p == 0.0 {
        return x.to_vec();
    }
    let sc = dropout_scale(p) as f64;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, p, i as u32) {
                v * sc
            } else {
                0.0
            }
        })
        .collect()
}

/// Channel dropout of x [N, C, S...]: channel n * C + c kept when `dropout_keep(seed, p,
/// n * C + c)`, survivors × 1/(1-p). p = 0 is the identity.
pub fn channel_dropout(x: &[f64], shape: &[usize], p: f32, seed: u64) -> Vec<f64> {
    if p == 0.0 {
        return x.to_vec();
    }
    let s: usize = shape[2..].iter().product::<usize>().max(1);
    let sc = dropout_scale(p) as f64;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, p, (i / s) as u32) {
                v * sc
            } else {
                0.0
            }
        })
        .collect()
}

/// Input gradients: the same masks on the upstream gradient.
pub fn dropout_bwd_input(g: &[f64], p: f32, seed: u64) -> Vec<f64> {
    dropout(g, p, seed)
}

pub fn channel_dropout_bwd_input(g: &[f64], shape: &[usize], p: f32, seed: u64) -> Vec<f64> {
    channel_dropout(g, shape, p, seed)
}
