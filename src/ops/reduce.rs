//! Sums and means over all elements or chosen axes, as deterministic reduction trees (no
//! float atomics). Shader: `shaders/reduce.wgsl`.
//!
//! Every reduction is a sum over the middle axis of a [A, R, B] view. Long sums with few
//! outputs are split into K chunks (one workgroup each) and the K partial sums summed
//! again, always in the same order.

use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Mirrors `RedParams` in reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RedParams {
    a: u32,
    r: u32,
    b: u32,
    k: u32,
    chunk: u32,
    _pad0: u32,
    alpha: f32,
    _pad1: f32,
}

/// Below this many summed elements per output, one invocation per output does the loop.
const SMALL_R: usize = 64;
/// Aim for at least this many workgroups in a reduction when splitting R into chunks.
const TARGET_GROUPS: usize = 512;
/// A chunk is never shorter than this (keeps the second pass short).
const MIN_CHUNK: usize = 4096;

/// `alpha * sum over r of x[a, r, b]`: out [A, B]. Off the tape.
pub(crate) fn sum_mid_raw(x: &Tensor, a: usize, r: usize, b: usize, alpha: f32) -> Result<Tensor> {
    let op = "sum";
    let gpu = x.gpu().clone();
    let p = |a, r, b, k, chunk, alpha| -> Result<RedParams> {
        Ok(RedParams {
            a: u32_of(op, a)?,
            r: u32_of(op, r)?,
            b: u32_of(op, b)?,
            k: u32_of(op, k)?,
            chunk: u32_of(op, chunk)?,
            _pad0: 0,
            alpha,
            _pad1: 0.0,
        })
    };
    let out = Tensor::empty(&gpu, &[a * b], DType::F32, op)?;
    if r <= SMALL_R || a * b >= 4 * TARGET_GROUPS && r <= 4 * SMALL_R {
        launch(
            &gpu,
            Shader::Reduce,
            "reduce_small",
            &p(a, r, b, 1, r, alpha)?,
            &[x.buffer(), out.buffer()],
            a * b,
        )?;
        return Ok(out);
    }
    // Chunks so that there are enough workgroups, each chunk at least MIN_CHUNK long.
    let mut k = TARGET_GROUPS.div_ceil(a * b).max(1);
    k = k.min(r.div_ceil(MIN_CHUNK)).max(1);
    let chunk = r.div_ceil(k);
    let k = r.div_ceil(chunk);
    if k == 1 {
        let groups = gpu.grid((a * b) as u64, 1)?;
        gpu.dispatch(
            Shader::Reduce,
            "reduce_wg",
            &p(a, r, b, 1, chunk, alpha)?,
            &[x.buffer(), out.buffer()],
            groups,
        )?;
        return Ok(out);
    }
    let partial = Tensor::empty(&gpu, &[a * k * b], DType::F32, op)?;
    let groups = gpu.grid((a * k * b) as u64, 1)?;
    gpu.dispatch(
        Shader::Reduce,
        "reduce_wg",
        &p(a, r, b, k, chunk, 1.0)?,
        &[x.buffer(), partial.buffer()],
        groups,
    )?;
    launch(
        &gpu,
        Shader::Reduce,
        "reduce_small",
        &p(a, k, b, 1, k, alpha)?,
        &[partial.buffer(), out.buffer()],
        a * b,
    )?;
    Ok(out)
}

/// `alpha * g[a, b]` broadcast to [A, R, B]. Off the tape.
fn broadcast_mid_raw(g: &Tensor, a: usize, r: usize, b: usize, alpha: f32) -> Result<Tensor> {
    let op = "broadcast";
    let out = Tensor::empty(g.gpu(), &[a * r * b], DType::F32, op)?;
    let p = RedParams {
        a: u32_of(op, a)?,
        r: u32_of(op, r)?,
        b: u32_of(op, b)?,
        k: 1,
        chunk: 1,
        _pad0: 0,
        alpha,
        _pad1: 0.0,
    };
    launch(
        g.gpu(),
        Shader::Reduce,
        "broadcast_mid",
        &p,
        &[g.buffer(), out.buffer()],
        a * r * b,
    )?;
    Ok(out)
}

/// Sum over axes `start..end` (contiguous) times `alpha`, removing them. On the tape.
fn sum_run(x: &Tensor, start: usize, end: usize, alpha: f32) -> Result<Tensor> {
    let sh = x.shape().to_vec();
    let a: usize = sh[..start].iter().product();
    let r: usize = sh[start..end].iter().product();
    let b: usize = sh[end..].iter().product();
    let mut oshape: Vec<usize> = sh[..start].to_vec();
    oshape.extend_from_slice(&sh[end..]);
    if oshape.is_empty() {
        oshape.push(1);
    }
    let out = sum_mid_raw(x, a, r, b, alpha)?.reshape(&oshape)?;
    Ok(record("sum", out, &[x], move |g, _| {
        Ok(vec![Some(
            broadcast_mid_raw(g, a, r, b, alpha)?.reshape(&sh)?,
        )])
    }))
}

/// Sum of every element: shape `[1]`.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("sum_all", DType::F32)?;
    let flat = x.reshape(&[x.numel()])?;
    sum_run(&flat, 0, 1, 1.0)
}

/// Mean of every element: shape `[1]`.
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("mean_all", DType::F32)?;
    if x.numel() == 0 {
        return Err(Error::op("mean_all", "mean of an empty tensor"));
    }
    let flat = x.reshape(&[x.numel()])?;
    sum_run(&flat, 0, 1, 1.0 / x.numel() as f32)
}

/// Sum over `axes` (any order, no repeats), removing them (a scalar becomes shape `[1]`).
pub fn sum_axes(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    reduce_axes(x, axes, false)
}

/// Mean over `axes`, removing them.
pub fn mean_axes(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    reduce_axes(x, axes, true)
}

fn reduce_axes(x: &Tensor, axes: &[usize], mean: bool) -> Result<Tensor> {
    let op = if mean { "mean_axes" } else { "sum_axes" };
    x.expect_dtype(op, DType::F32)?;
    let rank = x.shape().len();
    let mut ax = axes.to_vec();
    ax.sort_unstable();
    ax.dedup();
    if ax.len() != axes.len() || ax.iter().any(|&a| a >= rank) {
        return Err(Error::op(
            op,
            format!("axes {axes:?} for shape {:?}", x.shape()),
        ));
    }
    if ax.is_empty() {
        return Ok(x.clone());
    }
    let count: usize = ax.iter().map(|&a| x.shape()[a]).product();
    if mean && count == 0 {
        return Err(Error::op(op, "mean over an empty axis"));
    }
    let alpha = if mean { 1.0 / count as f32 } else { 1.0 };
    // Runs of consecutive axes, reduced from the last run to the first so that the axis
    // numbers of the earlier runs stay valid; the scale is applied once, in the first pass.
    let mut runs: Vec<(usize, usize)> = vec![];
    for &a in &ax {
        match runs.last_mut() {
            Some((_, e)) if *e == a => *e = a + 1,
            _ => runs.push((a, a + 1)),
        }
    }
    let mut t = x.clone();
    let mut first = true;
    for &(s, e) in runs.iter().rev() {
        t = sum_run(&t, s, e, if first { alpha } else { 1.0 })?;
        first = false;
    }
    Ok(t)
}
