//! Matrix products on row batches: `matmul`, `linear` (x·Wᵀ + b) and their backwards.
//! Shader: `shaders/matmul.wgsl` (64×64 register-blocked tiles, strided operands, split-K
//! with a fixed-order second pass for long reductions such as a weight gradient over
//! millions of voxel rows).

use super::reduce::sum_mid_raw;
use super::u32_of;
use crate::autograd::record;
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
    let p = MmParams {
        m: u32_of(op, m)?,
        n: u32_of(op, n)?,
        k: u32_of(op, k)?,
        kc: u32_of(op, kc)?,
        sam: u32_of(op, sam)?,
        sak: u32_of(op, sak)?,
        sbk: u32_of(op, sbk)?,
        sbn: u32_of(op, sbn)?,
    };
    let groups = [n.div_ceil(64) as u32, u32_of(op, m.div_ceil(64))?, z as u32];
    if z == 1 {
        let out = Tensor::empty(&gpu, &[m, n], DType::F32, op)?;
        gpu.dispatch(
            Shader::Matmul,
            "matmul",
            &p,
            &[a.buffer(), b.buffer(), out.buffer()],
            groups,
        )?;
        return Ok(out);
    }
    let partial = Tensor::empty(&gpu, &[z, m, n], DType::F32, op)?;
    gpu.dispatch(
        Shader::Matmul,
        "matmul",
        &p,
        &[a.buffer(), b.buffer(), partial.buffer()],
        groups,
    )?;
    sum_mid_raw(&partial, 1, z, m * n, 1.0)?.reshape(&[m, n])
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

/// PyTorch's Linear: x [M, K], w [O, K], b [O] → x·wᵀ + b, [M, O].
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
    let y = gemm_raw(x, Layout::Rows, w, Layout::Trans, m, o, k)?;
    let (dx, dw) = (x.detach(), w.detach());
    let y = record(op, y, &[x, w], move |g, need| {
        Ok(vec![
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
        ])
    });
    match b {
        Some(b) => super::elementwise::bias_add(&y, b, 1),
        None => Ok(y),
    }
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
