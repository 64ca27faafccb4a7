//! Batch normalisation (BatchNorm1d / 2d / 3d) with an optional fused activation, forward and
//! backward, and the in-place running-statistics update. Shader: `shaders/batchnorm.wgsl`.
//!
//! The forward is two steps that are also public: [`batch_norm_stats`] (the per-channel mean
//! and 1/sqrt(var + eps) as a [2, C] tensor; in train mode it also updates the running
//! statistics in place on the GPU) and [`batch_norm_apply`] (normalise, affine, activation
//! in one kernel). The backward ([`batch_norm_bwd`]) recomputes x̂ and the pre-activation
//! from the saved input and statistics, so the tape holds x and [2, C] floats, nothing else.
//!
//! Reductions are deterministic (see the shader's header): (channel, chunk) partials from
//! one workgroup each (or, for BatchNorm1d's [rows, C] with C <= 256, one workgroup per
//! block of rows covering every channel, so that reads are whole rows), then one
//! invocation per channel combining them in chunk order.

use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// How a BatchNorm layer uses and maintains its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics (biased variance); running statistics updated in place with momentum
    /// (running_var from the unbiased variance), as PyTorch's training mode.
    Train,
    /// Running statistics.
    Eval,
    /// Batch statistics, running statistics left untouched (SS-Net's VAT passes).
    Frozen,
}

/// Activation fused after BatchNorm's affine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    None,
    Relu,
    /// Leaky ReLU with this negative slope (any finite value).
    LeakyRelu(f32),
}

/// Mirrors `BnParams` in batchnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BnParams {
    n: u32,
    c: u32,
    s: u32,
    m: u32,
    k: u32,
    chunk: u32,
    mode: u32,
    act: u32,
    momentum: f32,
    eps: f32,
    slope: f32,
    total: u32,
}

/// Aim for about this many workgroups in a statistics reduction.
const TARGET_GROUPS: usize = 256;
/// A chunk of a channel is never shorter than this (keeps the second pass short).
const MIN_CHUNK: usize = 2048;

/// Gradients of a BatchNorm call; `None` where not asked for.
#[derive(Debug, Default)]
pub struct BnGrads {
    pub x: Option<Tensor>,
    pub gamma: Option<Tensor>,
    pub beta: Option<Tensor>,
}

fn mode_code(m: BnMode) -> u32 {
    match m {
        BnMode::Train => 0,
        BnMode::Eval => 1,
        BnMode::Frozen => 2,
    }
}

/// (act flag, slope) of an activation, validated.
pub(crate) fn act_code(op: &str, a: Act) -> Result<(u32, f32)> {
    match a {
        Act::None => Ok((0, 0.0)),
        Act::Relu => Ok((1, 0.0)),
        Act::LeakyRelu(s) if s.is_finite() => Ok((1, s)),
        Act::LeakyRelu(s) => Err(Error::op(
            op,
            format!("leaky relu slope {s} must be finite"),
        )),
    }
}

/// (N, C, S) of x, checked: f32, rank >= 2, C > 0, N*S > 0, sizes fit u32.
fn geometry(op: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    x.expect_dtype(op, DType::F32)?;
    let sh = x.shape();
    if sh.len() < 2 {
        return Err(Error::op(op, format!("expected x [N, C, ...], got {sh:?}")));
    }
    let (n, c, s) = (sh[0], sh[1], sh[2..].iter().product::<usize>());
    if c == 0 || n * s == 0 {
        return Err(Error::op(op, format!("empty input {sh:?}")));
    }
    u32_of(op, x.numel())?;
    Ok((n, c, s))
}

fn per_channel(op: &str, what: &str, t: &Tensor, c: usize) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    if t.shape() != [c] {
        return Err(Error::op(
            op,
            format!("{what} has shape {:?}, expected [{c}]", t.shape()),
        ));
    }
    Ok(())
}

/// Whether the partial reductions use the row layout (BatchNorm1d: each workgroup reduces
/// a block of rows for every channel, reading whole rows).
fn rows_layout(c: usize, s: usize) -> bool {
    s == 1 && c <= 256
}

/// K chunks of `chunk` values per channel of M values: K (channel, chunk) workgroups per
/// channel, or K row blocks in the row layout.
fn chunks(c: usize, s: usize, m: usize) -> (usize, usize) {
    let k = if rows_layout(c, s) {
        TARGET_GROUPS.min((m * c).div_ceil(MIN_CHUNK)).max(1)
    } else {
        TARGET_GROUPS.div_ceil(c).min(m.div_ceil(MIN_CHUNK)).max(1)
    };
    let chunk = m.div_ceil(k);
    (m.div_ceil(chunk), chunk)
}

/// Record the partial-reduction pass `entry` (`bn_stats_partial` or `bn_bwd_partial`, or
/// their `_rows` variants in the row layout) over `bufs`.
fn partial_pass(
    x: &Tensor,
    p: &BnParams,
    entry: (&'static str, &'static str),
    bufs: &[&wgpu::Buffer],
) -> Result<()> {
    let gpu = x.gpu();
    let (c, k) = (p.c as u64, p.k as u64);
    if rows_layout(p.c as usize, p.s as usize) {
        gpu.dispatch(Shader::BatchNorm, entry.1, p, bufs, gpu.grid(k, 1)?)
    } else {
        gpu.dispatch(Shader::BatchNorm, entry.0, p, bufs, gpu.grid(c * k, 1)?)
    }
}

#[allow(clippy::too_many_arguments)]
fn params(
    op: &str,
    n: usize,
    c: usize,
    s: usize,
    mode: BnMode,
    act: Act,
    momentum: f32,
    eps: f32,
) -> Result<BnParams> {
    let m = n * s;
    let (k, chunk) = chunks(c, s, m);
    let (a, slope) = act_code(op, act)?;
    Ok(BnParams {
        n: u32_of(op, n)?,
        c: u32_of(op, c)?,
        s: u32_of(op, s)?,
        m: u32_of(op, m)?,
        k: u32_of(op, k)?,
        chunk: u32_of(op, chunk)?,
        mode: mode_code(mode),
        act: a,
        momentum,
        eps,
        slope,
        total: u32_of(op, n * c * s)?,
    })
}

/// Batch normalisation of x [N, C, ...] (1d: [N, C]; 2d: [N, C, H, W]; 3d: [N, C, X, Y, Z])
/// with gamma, beta, running_mean, running_var of shape `[C]`, then the fused activation.
/// Train: batch mean and biased variance; running_mean / running_var updated IN PLACE on the
/// GPU, `r = (1 - momentum) r + momentum batch`, running_var with the unbiased variance.
/// Eval: running statistics. Frozen: batch statistics, running statistics untouched.
/// Recorded on the tape for x, gamma and beta (the running statistics are plain buffers).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    mode: BnMode,
    momentum: f32,
    eps: f32,
    act: Act,
) -> Result<Tensor> {
    let op = "batch_norm";
    let (_, c, _) = geometry(op, x)?;
    per_channel(op, "gamma", gamma, c)?;
    per_channel(op, "beta", beta, c)?;
    act_code(op, act)?;
    let stats = batch_norm_stats(x, running_mean, running_var, mode, momentum, eps)?;
    let y = batch_norm_apply(x, &stats, gamma, beta, act)?;
    let (sx, sg, sb) = (x.detach(), gamma.detach(), beta.detach());
    Ok(record(op, y, &[x, gamma, beta], move |g, need| {
        let r = batch_norm_bwd(
            &sx,
            &stats,
            &sg,
            &sb,
            g,
            mode,
            act,
            need[0],
            need[1] || need[2],
        )?;
        Ok(vec![
            r.x,
            if need[1] { r.gamma } else { None },
            if need[2] { r.beta } else { None },
        ])
    }))
}

/// The statistics a BatchNorm forward normalises with, as a [2, C] tensor: row 0 the mean,
/// row 1 `1 / sqrt(var + eps)` (batch statistics with the biased variance in Train and
/// Frozen, the running ones in Eval). In Train mode this also updates `running_mean` and
/// `running_var` in place (momentum; unbiased variance), ordered with the recorded ops.
/// Off the tape.
pub fn batch_norm_stats(
    x: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    mode: BnMode,
    momentum: f32,
    eps: f32,
) -> Result<Tensor> {
    let op = "batch_norm_stats";
    let (n, c, s) = geometry(op, x)?;
    per_channel(op, "running_mean", running_mean, c)?;
    per_channel(op, "running_var", running_var, c)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::op(op, format!("eps {eps} must be finite and >= 0")));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::op(
            op,
            format!("momentum {momentum} must be in [0, 1]"),
        ));
    }
    if running_mean.same_storage(running_var) {
        return Err(Error::op(
            op,
            "running_mean and running_var share one buffer",
        ));
    }
    if mode != BnMode::Eval && n * s < 2 {
        return Err(Error::op(
            op,
            format!(
                "expected more than 1 value per channel with batch statistics, got input {:?}",
                x.shape()
            ),
        ));
    }
    let gpu = x.gpu().clone();
    let p = params(op, n, c, s, mode, Act::None, momentum, eps)?;
    let stats = Tensor::empty(&gpu, &[2, c], DType::F32, op)?;
    if mode == BnMode::Eval {
        launch(
            &gpu,
            Shader::BatchNorm,
            "bn_stats_eval",
            &p,
            &[running_mean.buffer(), running_var.buffer(), stats.buffer()],
            c,
        )?;
        return Ok(stats);
    }
    let part = Tensor::empty(&gpu, &[c * p.k as usize * 2], DType::F32, op)?;
    partial_pass(
        x,
        &p,
        ("bn_stats_partial", "bn_stats_partial_rows"),
        &[x.buffer(), part.buffer()],
    )?;
    launch(
        &gpu,
        Shader::BatchNorm,
        "bn_stats_final",
        &p,
        &[
            part.buffer(),
            running_mean.buffer(),
            running_var.buffer(),
            stats.buffer(),
        ],
        c,
    )?;
    Ok(stats)
}

/// `act(gamma * (x - mean) * invstd + beta)` with `stats` as [`batch_norm_stats`] returns.
/// Off the tape (use [`batch_norm`] for a recorded op).
pub fn batch_norm_apply(
    x: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    act: Act,
) -> Result<Tensor> {
    let op = "batch_norm_apply";
    let (n, c, s) = geometry(op, x)?;
    per_channel(op, "gamma", gamma, c)?;
    per_channel(op, "beta", beta, c)?;
    stats.expect_dtype(op, DType::F32)?;
    stats.expect_shape(op, &[2, c])?;
    let p = params(op, n, c, s, BnMode::Eval, act, 0.0, 0.0)?;
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::BatchNorm,
        "bn_apply",
        &p,
        &[
            x.buffer(),
            stats.buffer(),
            gamma.buffer(),
            beta.buffer(),
            y.buffer(),
        ],
        x.numel(),
    )?;
    Ok(y)
}

/// Backward of [`batch_norm`] from the forward's input `x`, its `stats` ([2, C]), gamma,
/// beta, the mode and activation it ran with, and the upstream gradient `g`.
/// `need_x`: the input gradient; `need_affine`: the gamma and beta gradients
/// (`sum gz * x̂` and `sum gz`, gz the gradient at the pre-activation). With batch
/// statistics (Train, Frozen) the input gradient includes the statistics' dependence on x:
/// `gamma * invstd * (gz - mean(gz) - x̂ * mean(gz * x̂))`; in Eval it is
/// `gamma * invstd * gz`, and the channel sums are only computed when `need_affine`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_bwd(
    x: &Tensor,
    stats: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    g: &Tensor,
    mode: BnMode,
    act: Act,
    need_x: bool,
    need_affine: bool,
) -> Result<BnGrads> {
    let op = "batch_norm_bwd";
    let (n, c, s) = geometry(op, x)?;
    per_channel(op, "gamma", gamma, c)?;
    per_channel(op, "beta", beta, c)?;
    stats.expect_dtype(op, DType::F32)?;
    stats.expect_shape(op, &[2, c])?;
    g.expect_dtype(op, DType::F32)?;
    if g.shape() != x.shape() {
        return Err(Error::op(
            op,
            format!("gradient {:?} for input {:?}", g.shape(), x.shape()),
        ));
    }
    let gpu = x.gpu().clone();
    let p = params(op, n, c, s, mode, act, 0.0, 0.0)?;
    let batch_stats = mode != BnMode::Eval;
    let mut out = BnGrads::default();
    let mut coef = None;
    if need_affine || (need_x && batch_stats) {
        let part = Tensor::empty(&gpu, &[c * p.k as usize * 2], DType::F32, op)?;
        partial_pass(
            x,
            &p,
            ("bn_bwd_partial", "bn_bwd_partial_rows"),
            &[
                x.buffer(),
                stats.buffer(),
                gamma.buffer(),
                beta.buffer(),
                g.buffer(),
                part.buffer(),
            ],
        )?;
        let gbeta = Tensor::empty(&gpu, &[c], DType::F32, op)?;
        let ggamma = Tensor::empty(&gpu, &[c], DType::F32, op)?;
        let cf = Tensor::empty(&gpu, &[2, c], DType::F32, op)?;
        launch(
            &gpu,
            Shader::BatchNorm,
            "bn_bwd_final",
            &p,
            &[part.buffer(), gbeta.buffer(), ggamma.buffer(), cf.buffer()],
            c,
        )?;
        if need_affine {
            out.gamma = Some(ggamma);
            out.beta = Some(gbeta);
        }
        coef = Some(cf);
    }
    if need_x {
        let gx = Tensor::empty(&gpu, x.shape(), DType::F32, op)?;
        match (&coef, batch_stats) {
            (Some(cf), true) => launch(
                &gpu,
                Shader::BatchNorm,
                "bn_bwd_input",
                &p,
                &[
                    x.buffer(),
                    stats.buffer(),
                    gamma.buffer(),
                    beta.buffer(),
                    g.buffer(),
                    cf.buffer(),
                    gx.buffer(),
                ],
                x.numel(),
            )?,
            _ => launch(
                &gpu,
                Shader::BatchNorm,
                "bn_bwd_input_eval",
                &p,
                &[
                    x.buffer(),
                    stats.buffer(),
                    gamma.buffer(),
                    beta.buffer(),
                    g.buffer(),
                    gx.buffer(),
                ],
                x.numel(),
            )?,
        }
        out.x = Some(gx);
    }
    Ok(out)
}
