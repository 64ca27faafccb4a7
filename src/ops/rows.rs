//! Row-wise ops: L2 normalisation, cosine-similarity matrices, channels-last voxel rows,
//! label masks, and masked row selection (gather the rows where a mask is set, on the GPU).
//! Shader: `shaders/rows.wgsl`.
//!
//! The selection is the one op that reads back: it needs the number of selected rows on the
//! CPU to size its output (4 bytes, once per call).

use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowParams {
    m: u32,
    d: u32,
    s: u32,
    v: u32,
    eps: f32,
    _p: [f32; 3],
}

fn rp(op: &str, m: usize, d: usize, s: usize, v: usize, eps: f32) -> Result<RowParams> {
    Ok(RowParams {
        m: u32_of(op, m)?,
        d: u32_of(op, d)?,
        s: u32_of(op, s)?,
        v: u32_of(op, v)?,
        eps,
        _p: [0.0; 3],
    })
}

fn md(op: &str, x: &Tensor) -> Result<(usize, usize)> {
    match x.shape() {
        [m, d] => Ok((*m, *d)),
        s => Err(Error::op(op, format!("expected rows [M, D], got {s:?}"))),
    }
}

/// Each row divided by max(its L2 norm, eps) (PyTorch `F.normalize(x, dim=1)`; eps 1e-12).
pub fn l2norm_rows(x: &Tensor, eps: f32) -> Result<Tensor> {
    let op = "l2norm_rows";
    x.expect_dtype(op, DType::F32)?;
    let (m, d) = md(op, x)?;
    let y = Tensor::empty(x.gpu(), &[m, d], DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Rows,
        "l2norm_rows_fwd",
        &rp(op, m, d, 1, 0, eps)?,
        &[x.buffer(), y.buffer()],
        m,
    )?;
    let sx = x.detach();
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(l2norm_rows_bwd_input(&sx, g, eps)?)])
    }))
}

pub fn l2norm_rows_bwd_input(x: &Tensor, g: &Tensor, eps: f32) -> Result<Tensor> {
    let op = "l2norm_rows_bwd_input";
    let (m, d) = md(op, x)?;
    g.expect_shape(op, &[m, d])?;
    let gx = Tensor::empty(x.gpu(), &[m, d], DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Rows,
        "l2norm_rows_bwd_input",
        &rp(op, m, d, 1, 0, eps)?,
        &[x.buffer(), g.buffer(), gx.buffer()],
        m,
    )?;
    Ok(gx)
}

/// Cosine similarity of every row of `a` [M, D] with every row of `b` [K, D]: [M, K].
pub fn cosine_similarity(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let an = l2norm_rows(a, 1e-12)?;
    let bn = l2norm_rows(b, 1e-12)?;
    let bt = transpose_rows(&bn)?;
    super::matmul::matmul(&an, &bt)
}

/// [M, D] → [D, M] on the tape (a to_rows with N = 1).
pub fn transpose_rows(x: &Tensor) -> Result<Tensor> {
    let (m, d) = md("transpose", x)?;
    // [1, M, D] viewed as [N=1, C=M, S=D] → rows [D, M].
    let t = to_rows(&x.reshape(&[1, m, d])?)?;
    t.reshape(&[d, m])
}

/// [N, C, spatial...] → channels-last voxel rows [N·S, C].
pub fn to_rows(x: &Tensor) -> Result<Tensor> {
    let op = "to_rows";
    x.expect_dtype(op, DType::F32)?;
    let (n, c, s) = super::softmax::ncs(op, x)?;
    let y = Tensor::empty(x.gpu(), &[n * s, c], DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Rows,
        "to_rows",
        &rp(op, n * s, c, s, 0, 0.0)?,
        &[x.buffer(), y.buffer()],
        n * s * c,
    )?;
    let shape = x.shape().to_vec();
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(from_rows(g, &shape)?)])
    }))
}

/// Voxel rows [N·S, C] back to `shape` = [N, C, spatial...].
pub fn from_rows(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let op = "from_rows";
    let n = shape[0];
    let c = shape[1];
    let s: usize = shape[2..].iter().product();
    x.expect_shape(op, &[n * s, c])?;
    let y = Tensor::empty(x.gpu(), shape, DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Rows,
        "from_rows",
        &rp(op, n * s, c, s, 0, 0.0)?,
        &[x.buffer(), y.buffer()],
        n * s * c,
    )?;
    Ok(record(op, y, &[x], move |g, _| Ok(vec![Some(to_rows(g)?)])))
}

/// u32 mask of `labels == value`.
pub fn eq_value(labels: &Tensor, value: u32) -> Result<Tensor> {
    let op = "eq_value";
    labels.expect_dtype(op, DType::U32)?;
    let out = Tensor::empty(labels.gpu(), labels.shape(), DType::U32, op)?;
    launch(
        labels.gpu(),
        Shader::Rows,
        "eq_value",
        &rp(op, labels.numel(), 1, 1, value as usize, 0.0)?,
        &[labels.buffer(), out.buffer()],
        labels.numel(),
    )?;
    Ok(out)
}

/// u32 mask of `(pred == label) & (pred > 0)`: SS-Net's correctly predicted foreground.
pub fn correct_foreground(pred: &Tensor, label: &Tensor) -> Result<Tensor> {
    let op = "correct_foreground";
    pred.expect_dtype(op, DType::U32)?;
    label.expect_dtype(op, DType::U32)?;
    if pred.shape() != label.shape() {
        return Err(Error::op(
            op,
            format!("prediction {:?} vs label {:?}", pred.shape(), label.shape()),
        ));
    }
    let out = Tensor::empty(pred.gpu(), pred.shape(), DType::U32, op)?;
    launch(
        pred.gpu(),
        Shader::Rows,
        "correct_foreground",
        &rp(op, pred.numel(), 1, 1, 0, 0.0)?,
        &[pred.buffer(), label.buffer(), out.buffer()],
        pred.numel(),
    )?;
    Ok(out)
}

/// Indices (u32, ascending) of the set entries of a u32 mask, and their count. Reads back
/// the count (4 bytes): the one sync of the selection.
pub fn mask_indices(mask: &Tensor) -> Result<(Tensor, usize)> {
    let op = "mask_indices";
    mask.expect_dtype(op, DType::U32)?;
    let gpu = mask.gpu();
    let m = mask.numel();
    let nb = m.div_ceil(256).max(1);
    let p = rp(op, m, 1, 1, nb, 0.0)?;
    let counts = Tensor::empty(gpu, &[nb], DType::U32, op)?;
    let offsets = Tensor::empty(gpu, &[nb + 1], DType::U32, op)?;
    gpu.dispatch(
        Shader::Rows,
        "block_count",
        &p,
        &[mask.buffer(), counts.buffer()],
        gpu.grid(nb as u64, 1)?,
    )?;
    gpu.dispatch(
        Shader::Rows,
        "block_scan",
        &p,
        &[counts.buffer(), offsets.buffer()],
        [1, 1, 1],
    )?;
    let total_bytes = {
        let staging = Tensor::empty(gpu, &[1], DType::U32, op)?;
        gpu.with_encoder(|e| {
            e.copy_buffer_to_buffer(offsets.buffer(), nb as u64 * 4, staging.buffer(), 0, 4)
        });
        staging.to_u32()?
    };
    let total = total_bytes[0] as usize;
    let idx = Tensor::empty(gpu, &[total.max(1)], DType::U32, op)?;
    if total > 0 {
        gpu.dispatch(
            Shader::Rows,
            "compact",
            &p,
            &[mask.buffer(), offsets.buffer(), idx.buffer()],
            gpu.grid(nb as u64, 1)?,
        )?;
    }
    let idx = if total == 0 {
        idx
    } else {
        idx.reshape(&[total])?
    };
    Ok((idx, total))
}

/// Rows `idx` of `x` [M, D] (f32 or u32) → [len(idx), D], on the tape (f32).
pub fn gather_rows(x: &Tensor, idx: &Tensor, count: usize) -> Result<Tensor> {
    let op = "gather_rows";
    idx.expect_dtype(op, DType::U32)?;
    let (m, d) = md(op, x)?;
    let out = Tensor::empty(x.gpu(), &[count, d], x.dtype(), op)?;
    if count > 0 {
        launch(
            x.gpu(),
            Shader::Rows,
            "gather_rows",
            &rp(op, count, d, 1, 0, 0.0)?,
            &[x.buffer(), idx.buffer(), out.buffer()],
            count * d,
        )?;
    }
    let sidx = idx.detach();
    Ok(record(op, out, &[x], move |g, _| {
        Ok(vec![Some(scatter_rows(g, &sidx, count, m)?)])
    }))
}

/// The backward of [`gather_rows`]: rows of `g` [count, D] placed at `idx` in zeros [M, D].
pub fn scatter_rows(g: &Tensor, idx: &Tensor, count: usize, m: usize) -> Result<Tensor> {
    let op = "scatter_rows";
    let d = g.shape().get(1).copied().unwrap_or(1);
    let out = Tensor::zeros(g.gpu(), &[m, d])?;
    if count > 0 {
        launch(
            g.gpu(),
            Shader::Rows,
            "scatter_rows",
            &rp(op, count, d, 1, 0, 0.0)?,
            &[g.buffer(), idx.buffer(), out.buffer()],
            count * d,
        )?;
    }
    Ok(out)
}

/// The rows of `x` `[M, D]` where `mask` `[M]` (u32) is set: (`[count, D]`, indices, count).
pub fn masked_rows(x: &Tensor, mask: &Tensor) -> Result<(Tensor, Tensor, usize)> {
    let (m, _) = md("masked_rows", x)?;
    if mask.numel() != m {
        return Err(Error::op(
            "masked_rows",
            format!("mask of {} entries for {m} rows", mask.numel()),
        ));
    }
    let (idx, count) = mask_indices(mask)?;
    Ok((gather_rows(x, &idx, count)?, idx, count))
}

/// Each row of x [M, D] divided by (its L2 norm + eps), off the tape (a constant direction,
/// e.g. VAT's perturbation). The norms come from a deterministic reduction: no readback.
pub fn normalize_rows_plus_eps(x: &Tensor, eps: f32) -> Result<Tensor> {
    let op = "normalize_rows_plus_eps";
    let (m, d) = md(op, x)?;
    let sq = crate::autograd::no_grad(|| {
        super::reduce::sum_axes(&super::elementwise::mul(x, x)?, &[1])
    })?;
    let y = Tensor::empty(x.gpu(), &[m, d], DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Rows,
        "normalize_by_sumsq",
        &rp(op, m, d, 1, 0, eps)?,
        &[x.buffer(), sq.buffer(), y.buffer()],
        m * d,
    )?;
    Ok(y)
}
