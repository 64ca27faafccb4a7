//! Dropout: element-wise ([`dropout`]) and whole channels ([`channel_dropout`], PyTorch's
//! Dropout2d / Dropout3d), survivors scaled by 1 / (1 - p). Shader: `shaders/dropout.wgsl`.
//!
//! The mask is a pure function of (seed, unit index) computed on the GPU by a counter-based
//! hash ([`dropout_hash`], identical in WGSL and Rust), so the same seed gives the same mask,
//! nothing is stored for the backward (it regenerates the mask), and the CPU twin reproduces
//! the mask bit for bit. Callers draw a fresh seed per call to get fresh masks.

use super::{launch_pieces, u32_of, Part};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Mirrors `DoParams` in dropout.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DoParams {
    total: u32,
    s: u32,
    thr: u32,
    k0: u32,
    k1: u32,
    /// The global index of this launch's element 0 (a piece of a split launch).
    base: u32,
    scale: f32,
    _pad1: f32,
}

/// The "lowbias32" integer mixer (a bijection of u32), as in dropout.wgsl.
fn mix32(v: u32) -> u32 {
    let mut h = v;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// The two 32-bit hash keys of a 64-bit seed (distinct seeds give distinct key pairs).
pub fn dropout_keys(seed: u64) -> (u32, u32) {
    let (lo, hi) = (seed as u32, (seed >> 32) as u32);
    let k0 = mix32(lo ^ mix32(hi.wrapping_add(0x9e37_79b9)));
    let k1 = mix32(hi ^ mix32(lo.wrapping_add(0x85eb_ca6b)));
    (k0, k1)
}

/// The 32-bit hash of unit `index` under `keys`, as the shader computes it.
pub fn dropout_hash(keys: (u32, u32), index: u32) -> u32 {
    mix32(mix32(index ^ keys.0).wrapping_add(keys.1))
}

/// Units whose hash has top 24 bits below this are dropped: ceil(p * 2^24).
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * (1u64 << 24) as f64).ceil() as u32
}

/// Whether unit `index` survives dropout with probability `p` under `seed`.
pub fn dropout_keep(seed: u64, p: f32, index: u32) -> bool {
    dropout_hash(dropout_keys(seed), index) >> 8 >= dropout_threshold(p)
}

/// The factor survivors are multiplied by, in f32 as the kernel uses it.
pub fn dropout_scale(p: f32) -> f32 {
    (1.0 / (1.0 - p as f64)) as f32
}

fn check_p(op: &str, p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::op(
            op,
            format!("drop probability {p} outside [0, 1)"),
        ));
    }
    Ok(())
}

/// Apply the mask of (p, seed) with units of `s` consecutive elements. Off the tape.
fn apply(op: &str, x: &Tensor, p: f32, seed: u64, s: usize) -> Result<Tensor> {
    let (k0, k1) = dropout_keys(seed);
    let (thr, scale, s) = (
        dropout_threshold(p),
        dropout_scale(p),
        u32_of(op, s.max(1))?,
    );
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32, op)?;
    launch_pieces(
        x.gpu(),
        Shader::Dropout,
        "dropout_fwd",
        &[Part::Elems(x.buffer()), Part::Elems(y.buffer())],
        x.numel(),
        |base, total| DoParams {
            total,
            s,
            thr,
            k0,
            k1,
            base,
            scale,
            _pad1: 0.0,
        },
    )?;
    Ok(y)
}

/// Element dropout: each element is zeroed with probability `p` (drawn from `seed` and its
/// flat index), survivors multiplied by 1 / (1 - p). `p = 0` returns `x` itself; `p` outside
/// [0, 1) is an error.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "dropout";
    check_p(op, p)?;
    x.expect_dtype(op, DType::F32)?;
    if p == 0.0 {
        return Ok(x.clone());
    }
    let y = apply(op, x, p, seed, 1)?;
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(dropout_bwd_input(g, p, seed)?)])
    }))
}

/// Input gradient of [`dropout`]: the same mask and scale applied to `g`.
pub fn dropout_bwd_input(g: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "dropout_bwd_input";
    check_p(op, p)?;
    g.expect_dtype(op, DType::F32)?;
    if p == 0.0 {
        return Ok(g.clone());
    }
    apply(op, g, p, seed, 1)
}

/// Channel dropout of x [N, C, ...] (Dropout2d / Dropout3d): each (n, c) channel is zeroed
/// as a whole with probability `p` (drawn from `seed` and n * C + c), survivors multiplied
/// by 1 / (1 - p). `p = 0` returns `x` itself; `p` outside [0, 1) is an error.
pub fn channel_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "channel_dropout";
    check_p(op, p)?;
    x.expect_dtype(op, DType::F32)?;
    if x.shape().len() < 2 {
        return Err(Error::op(
            op,
            format!("expected [N, C, ...], got {:?}", x.shape()),
        ));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let s: usize = x.shape()[2..].iter().product();
    let y = apply(op, x, p, seed, s)?;
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(channel_dropout_bwd_input(g, p, seed)?)])
    }))
}

/// Input gradient of [`channel_dropout`]: the same channel mask and scale applied to `g`.
pub fn channel_dropout_bwd_input(g: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "channel_dropout_bwd_input";
    check_p(op, p)?;
    g.expect_dtype(op, DType::F32)?;
    if g.shape().len() < 2 {
        return Err(Error::op(
            op,
            format!("expected [N, C, ...], got {:?}", g.shape()),
        ));
    }
    if p == 0.0 {
        return Ok(g.clone());
    }
    let s: usize = g.shape()[2..].iter().product();
    apply(op, g, p, seed, s)
}
