//! Matrix products on row batches: `matmul`, `linear` (x·Wᵀ + b, the bias added by the
//! product's epilogue), `batch_norm_linear` (BatchNorm1d + activation applied to the
//! product's input as it is read, then a Linear) and their backwards.
//! Shader: `shaders/matmul.wgsl` (64×64 register-blocked tiles, strided operands, split-K
//! with a fixed-order second pass for long reductions such as a weight gradient over
//! millions of voxel rows).

use super::norm::{act_code, batch_norm_bwd, batch_norm_stats, BnMode};
use super::reduce::sum_mid_raw;
use super::u32_of;
use crate::autograd::{no_grad, record};
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MmParams {
    m: u32,
    n: u32,
    k: u32,
    kc: u32,
    sam: u32,
    sak: u32,
    sbk: u32,
    sbn: u32,
    act: u32,
    slope: f32,
    _p0: u32,
    _p1: u32,
}

/// How an operand is read: `Rows` = as stored ([M, K] / [K, N]), `Trans` = transposed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    Rows,
    Trans,
}

/// Split K into chunks when the output is small and K long (weight gradients).
fn chunks(m: usize, n: usize, k: usize) -> usize {
    let tiles = m.div_ceil(64) * n.div_ceil(64);
    if tiles >= 64 || k < 4096 {
        return 1;
    }
    (256 / tiles).clamp(1, k / 2048).max(1)
}

/// Which operand a [`Fuse::bn`] prologue normalises: A over its K columns, or B over its
/// N columns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Operand {
    A,
    B,
}

/// A BatchNorm (statistics [2, C] as `batch_norm_stats` returns them, gamma, beta) and the
/// activation after it, applied to an operand's values as the product reads them.
#[derive(Clone, Copy)]
pub(crate) struct BnRead<'a> {
    pub stats: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    /// (act flag, slope) as `act_code` returns them.
    pub act: (u32, f32),
}

/// What a product applies on the way in (`bn`) and out (`bias`, added to every row).
#[derive(Clone, Copy, Default)]
pub(crate) struct Fuse<'a> {
    pub bn: Option<(Operand, BnRead<'a>)>,
    pub bias: Option<&'a Tensor>,
}

/// C = op(A) · op(B) with A stored [M, K] (or [K, M] when `la == Trans`) and B stored
/// [K, N] (or [N, K]). Off the tape.
pub fn gemm_raw(
    a: &Tensor,
    la: Layout,
    b: &Tensor,
    lb: Layout,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Tensor> {
    gemm_fused(a, la, b, lb, m, n, k, Fuse::default())
}

/// [`gemm_raw`] with a BatchNorm + activation prologue on one operand and/or a bias
/// epilogue (`matmul_fused`; the plain `matmul` when nothing is fused). Split-K products
/// add the bias after their ordered second pass. Off the tape.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_fused(
    a: &Tensor,
    la: Layout,
    b: &Tensor,
    lb: Layout,
    m: usize,
    n: usize,
    k: usize,
    fuse: Fuse<'_>,
) -> Result<Tensor> {
    let op = "matmul";
    if a.numel() != m * k || b.numel() != k * n {
        return Err(Error::op(
            op,
            format!(
                "operands {:?} and {:?} for [{m}x{k}]·[{k}x{n}]",
                a.shape(),
                b.shape()
            ),
        ));
    }
    if let Some((which, bn)) = fuse.bn {
        let c = if which == Operand::A { k } else { n };
        if bn.stats.shape() != [2, c] || bn.gamma.shape() != [c] || bn.beta.shape() != [c] {
            return Err(Error::op(
                op,
                format!(
                    "batch norm of {c} columns with statistics {:?}, gamma {:?}, beta {:?}",
                    bn.stats.shape(),
                    bn.gamma.shape(),
                    bn.beta.shape()
                ),
            ));
        }
    }
    if let Some(bias) = fuse.bias {
        if bias.shape() != [n] {
            return Err(Error::op(
                op,
                format!("bias {:?} for {n} columns", bias.shape()),
            ));
        }
    }
    let gpu = a.gpu().clone();
    let (sam, sak) = match la {
        Layout::Rows => (k, 1),
        Layout::Trans => (1, m),
    };
    let (sbk, sbn) = match lb {
        Layout::Rows => (n, 1),
        Layout::Trans => (1, k),
    };
    let z = chunks(m, n, k);
    let kc = k.div_ceil(z).div_ceil(16) * 16;
    let z = k.div_ceil(kc).max(1);
    let (act, slope) = fuse.bn.map_or((0, 0.0), |(_, bn)| bn.act);
    let p = MmParams {
        m: u32_of(op, m)?,
        n: u32_of(op, n)?,
        k: u32_of(op, k)?,
        kc: u32_of(op, kc)?,
        sam: u32_of(op, sam)?,
        sak: u32_of(op, sak)?,
        sbk: u32_of(op, sbk)?,
        sbn: u32_of(op, sbn)?,
        act,
        slope,
        _p0: 0,
        _p1: 0,
    };
    let groups = [n.div_ceil(64) as u32, u32_of(op, m.div_ceil(64))?, z as u32];
    let out = if z == 1 {
        Tensor::empty(&gpu, &[m, n], DType::F32, op)?
    } else {
        Tensor::empty(&gpu, &[z, m, n], DType::F32, op)?
    };
    let bias_here = fuse.bias.filter(|_| z == 1);
    // Unused slots are bound to a read-only operand (the entry point declares them all).
    let spare = b.buffer();
    let pro = match fuse.bn {
        None => 0.0,
        Some((Operand::A, _)) => 1.0,
        Some((Operand::B, _)) => 2.0,
    };
    let bn = fuse.bn.map(|(_, bn)| bn);
    gpu.dispatch_with(
        Shader::Matmul,
        "matmul_fused",
        &[
            ("PRO", pro),
            ("BIAS", if bias_here.is_some() { 1.0 } else { 0.0 }),
        ],
        &p,
        &[
            a.buffer(),
            b.buffer(),
            out.buffer(),
            bn.map_or(spare, |x| x.stats.buffer()),
            bn.map_or(spare, |x| x.gamma.buffer()),
            bn.map_or(spare, |x| x.beta.buffer()),
            bias_here.map_or(spare, |x| x.buffer()),
        ],
        groups,
    )?;
    if z == 1 {
        return Ok(out);
    }
    let sum = sum_mid_raw(&out, 1, z, m * n, 1.0)?.reshape(&[m, n])?;
    match fuse.bias {
        Some(bias) => no_grad(|| super::elementwise::bias_add(&sum, bias, 1)),
        None => Ok(sum),
    }
}

/// a [M, K] · b [K, N] on the tape.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let op = "matmul";
    a.expect_dtype(op, DType::F32)?;
    b.expect_dtype(op, DType::F32)?;
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[0] {
        return Err(Error::op(op, format!("cannot multiply {sa:?} by {sb:?}")));
    }
    let (m, k, n) = (sa[0], sa[1], sb[1]);
    let out = gemm_raw(a, Layout::Rows, b, Layout::Rows, m, n, k)?;
    let (da, db) = (a.detach(), b.detach());
    Ok(record(op, out, &[a, b], move |g, need| {
        // dA = g·Bᵀ, dB = Aᵀ·g
        let ga = if need[0] {
            Some(gemm_raw(g, Layout::Rows, &db, Layout::Trans, m, k, n)?)
        } else {
            None
        };
        let gb = if need[1] {
            Some(gemm_raw(&da, Layout::Trans, g, Layout::Rows, k, n, m)?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }))
}

/// PyTorch's Linear: x `[M, K]`, w `[O, K]`, b `[O]` → x·wᵀ + b, `[M, O]`; the bias is added by
/// the product's epilogue (one pass over the output).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let op = "linear";
    x.expect_dtype(op, DType::F32)?;
    let (sx, sw) = (x.shape().to_vec(), w.shape().to_vec());
    if sx.len() != 2 || sw.len() != 2 || sx[1] != sw[1] {
        return Err(Error::op(
            op,
            format!("input {sx:?} with weight {sw:?} (expected [M, K] and [O, K])"),
        ));
    }
    if let Some(b) = b {
        b.expect_shape(op, &[sw[0]])?;
    }
    let (m, k, o) = (sx[0], sx[1], sw[0]);
    let fuse = Fuse { bn: None, bias: b };
    let y = gemm_fused(x, Layout::Rows, w, Layout::Trans, m, o, k, fuse)?;
    let (dx, dw) = (x.detach(), w.detach());
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(record(op, y, &inputs, move |g, need| {
        let mut out = vec![
            if need[0] {
                Some(linear_bwd_input(g, &dw)?)
            } else {
                None
            },
            if need[1] {
                Some(linear_bwd_weight(g, &dx)?)
            } else {
                None
            },
        ];
        if need.len() > 2 {
            out.push(if need[2] {
                Some(super::elementwise::bias_bwd_bias(g, 1)?)
            } else {
                None
            });
        }
        Ok(out)
    }))
}

/// The BatchNorm1d (+ activation) in front of a Linear: what [`batch_norm_linear`] takes.
#[derive(Clone, Copy)]
pub struct BnArgs<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub mode: BnMode,
    pub momentum: f32,
    pub eps: f32,
    pub act: super::norm::Act,
}

/// `linear(&batch_norm(h, ...)?, w, b)` for rows h [M, C] (BatchNorm1d, activation fused),
/// without the normalised activation in memory: the statistics pass (which, in Train
/// mode, updates the running statistics in place as `batch_norm` does), then one product
/// that normalises its input as it reads it and adds the bias on the way out. The tape
/// keeps h, the [2, C] statistics and the parameters; the backward computes w's gradient
/// with the same prologue on its second operand, the input gradient of the Linear, then
/// BatchNorm's backward (`batch_norm_bwd`, recomputing x̂ from h). Same values as the
/// unfused ops.
pub fn batch_norm_linear(
    h: &Tensor,
    bn: &BnArgs<'_>,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<Tensor> {
    let op = "batch_norm_linear";
    h.expect_dtype(op, DType::F32)?;
    let (sh, sw) = (h.shape().to_vec(), w.shape().to_vec());
    if sh.len() != 2 || sw.len() != 2 || sh[1] != sw[1] {
        return Err(Error::op(
            op,
            format!("rows {sh:?} with weight {sw:?} (expected [M, C] and [O, C])"),
        ));
    }
    let (m, c, o) = (sh[0], sh[1], sw[0]);
    bn.gamma.expect_shape(op, &[c])?;
    bn.beta.expect_shape(op, &[c])?;
    if let Some(b) = b {
        b.expect_shape(op, &[o])?;
    }
    let act = act_code(op, bn.act)?;
    let stats = batch_norm_stats(
        h,
        bn.running_mean,
        bn.running_var,
        bn.mode,
        bn.momentum,
        bn.eps,
    )?;
    let read = BnRead {
        stats: &stats,
        gamma: bn.gamma,
        beta: bn.beta,
        act,
    };
    let fuse = Fuse {
        bn: Some((Operand::A, read)),
        bias: b,
    };
    let y = gemm_fused(h, Layout::Rows, w, Layout::Trans, m, o, c, fuse)?;
    let (sh, sg, sb, sw) = (h.detach(), bn.gamma.detach(), bn.beta.detach(), w.detach());
    let (mode, bn_act) = (bn.mode, bn.act);
    let mut inputs = vec![h, bn.gamma, bn.beta, w];
    inputs.extend(b);
    Ok(record(op, y, &inputs, move |g, need| {
        let gw = if need[3] {
            let read = BnRead {
                stats: &stats,
                gamma: &sg,
                beta: &sb,
                act,
            };
            let fuse = Fuse {
                bn: Some((Operand::B, read)),
                bias: None,
            };
            Some(gemm_fused(
                g,
                Layout::Trans,
                &sh,
                Layout::Rows,
                o,
                c,
                m,
                fuse,
            )?)
        } else {
            None
        };
        let gb = if need.len() > 4 && need[4] {
            Some(super::elementwise::bias_bwd_bias(g, 1)?)
        } else {
            None
        };
        let (need_x, need_affine) = (need[0], need[1] || need[2]);
        let r = if need_x || need_affine {
            let ga = linear_bwd_input(g, &sw)?;
            batch_norm_bwd(
                &sh,
                &stats,
                &sg,
                &sb,
                &ga,
                mode,
                bn_act,
                need_x,
                need_affine,
            )?
        } else {
            Default::default()
        };
        let mut out = vec![
            r.x,
            if need[1] { r.gamma } else { None },
            if need[2] { r.beta } else { None },
            gw,
        ];
        if need.len() > 4 {
            out.push(gb);
        }
        Ok(out)
    }))
}

/// g [M, O], w [O, K] → g·w [M, K].
pub fn linear_bwd_input(g: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, o, k) = (g.shape()[0], g.shape()[1], w.shape()[1]);
    gemm_raw(g, Layout::Rows, w, Layout::Rows, m, k, o)
}

/// g [M, O], x [M, K] → gᵀ·x [O, K] (a reduction over the M rows, split-K, fixed order).
pub fn linear_bwd_weight(g: &Tensor, x: &Tensor) -> Result<Tensor> {
    let (m, o, k) = (g.shape()[0], g.shape()[1], x.shape()[1]);
    gemm_raw(g, Layout::Trans, x, Layout::Rows, o, k, m)
}
