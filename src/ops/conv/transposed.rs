//! The 3D transposed convolution with kernel == stride (VNet's 2×2×2/2 upsampling) and its
//! backwards: `ct_gemm`, one GEMM [N·voxels, Ci] × [Ci, Co·k³] whose epilogue writes each
//! product to its shuffled output voxel; its input gradient is a strided convolution forward,
//! its weight gradient a strided convolution's weight gradient. Shader:
//! `shaders/conv_transpose.wgsl`.

use super::geometry::{
    check_bias, ct_geom, ct_out_shape, ct_params, f32_check, u, CtGeom, CtParams, Geom,
};
use super::launch::{bwd_weight_raw, fwd_raw, grid};
use super::ops::record_xwb;
use super::plan::{pick_fitting, pick_tile, tuned_plan, Tile, TILES};
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Transposed-conv GEMM (kernel == stride) of `c`: x [n, ci, xs] (any tensor with that
/// layout), w [ci, co, k], optional bias [co] → a fresh tensor of `out_shape` = [n, co, k·xs].
pub(super) fn ct_raw(
    op: &str,
    c: &CtGeom,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = x.gpu().clone();
    let p = ct_params(op, c, b.is_some())?;
    let (m, cols) = (p.m as usize, p.n as usize);
    // The tiles the device can run (its workgroup-memory limit), the heuristic's if it can.
    let fit = |t: Tile| {
        gpu.check_footprint(Shader::ConvTranspose, "ct_gemm", &t.consts())
            .map_err(|e| Error::op(op, e))
    };
    let tiles: Vec<Tile> = TILES.iter().map(|&t| Tile::Gemm(t)).collect();
    let heur = pick_fitting(&tiles, Tile::Gemm(pick_tile(m, cols)), m, cols, &fit)?;
    let tile = if gpu.tuning_enabled() {
        // Candidates: every tile whose grid fits the adapter, the heuristic's first.
        let fits = |t: &Tile| {
            let (tr, tn) = t.count(m, cols);
            grid(&gpu, op, (tr * tn) as u64).is_ok() && fit(*t).is_ok()
        };
        let cands: Vec<_> = std::iter::once(heur)
            .chain(tiles.iter().copied().filter(|t| *t != heur && fits(t)))
            .map(|t| (t, t.choice(1)))
            .collect();
        let CtGeom { ci, xs, co, k, .. } = *c;
        let key = format!(
            "ct_gemm m{m} n{cols} k{ci} x{}x{}x{} ker{}x{}x{} co{co} bias{}",
            xs[0], xs[1], xs[2], k[0], k[1], k[2], p.has_bias
        );
        tuned_plan(&gpu, key, &cands, |t| {
            ct_launch(op, p, t, x, w, b, out_shape).map(drop)
        })?
    } else {
        heur
    };
    ct_launch(op, p, tile, x, w, b, out_shape)
}

/// One `ct_gemm` with the tile `tile`; `p` holds the geometry, the tiling is filled in here.
fn ct_launch(
    op: &str,
    mut p: CtParams,
    tile: Tile,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = x.gpu().clone();
    let (m, cols) = (p.m as usize, p.n as usize);
    let out = Tensor::empty(&gpu, out_shape, DType::F32, op)?;
    let (tiles_r, tiles_n) = tile.count(m, cols);
    let total = tiles_r * tiles_n;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_total = u(op, total)?;
    let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
    let groups = grid(&gpu, op, total as u64)?;
    gpu.dispatch_with(
        Shader::ConvTranspose,
        "ct_gemm",
        &tile.consts(),
        &p,
        &[x.buffer(), w.buffer(), bias, out.buffer()],
        groups,
    )?;
    Ok(out)
}

/// Transposed 3D convolution with kernel == stride (VNet's 2×2×2/2 upsampling): x
/// `[N, Ci, X, Y, Z]`, w `[Ci, Co, k, k, k]` (PyTorch transposed layout), b `[Co]` →
/// `[N, Co, kX, kY, kZ]`.
/// Any other kernel/stride pair is an error. On the tape.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose3d";
    f32_check(op, &[x, w])?;
    let c = ct_geom(op, x.shape(), w.shape(), stride)?;
    let CtGeom { n, xs, co, k, .. } = c;
    check_bias(op, b, co, w)?;
    let out = ct_raw(op, &c, x, w, b, &ct_out_shape(n, co, xs, k))?;
    let (xsh, wsh) = (x.shape().to_vec(), w.shape().to_vec());
    Ok(record_xwb(
        op,
        out,
        x,
        w,
        b,
        move |gy, w| conv_transpose3d_bwd_input(gy, w, &xsh, stride),
        move |gy, x| conv_transpose3d_bwd_weight(gy, x, &wsh, stride),
        conv_transpose3d_bwd_bias,
    ))
}

/// The strided convolution whose input gradient is a transposed convolution of x `x_shape`,
/// w `w_shape` (its input is the transposed conv's output gradient `g`, of the shape
/// checked here).
fn as_strided_conv(
    op: &str,
    g: &Tensor,
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
) -> Result<Geom> {
    let CtGeom { n, ci, xs, co, k } = ct_geom(op, x_shape, w_shape, stride)?;
    g.expect_shape(op, &ct_out_shape(n, co, xs, k))?;
    let gs = [xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]];
    Geom::new(op, "as a strided conv", n, co, ci, gs, k, k, [0; 3])
}

/// Input gradient of [`conv_transpose3d`]: the strided convolution of `g` with w read as a
/// [Ci, Co, k...] conv weight. Shape `x_shape`.
pub fn conv_transpose3d_bwd_input(
    g: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose3d_bwd_input";
    f32_check(op, &[g, w])?;
    let geom = as_strided_conv(op, g, x_shape, w.shape(), stride)?;
    fwd_raw(op, &geom, g, w, None, x_shape)
}

/// Weight gradient of [`conv_transpose3d`]: [Ci, Co, k, k, k], the weight gradient of that
/// strided convolution with x as its output gradient; deterministic.
pub fn conv_transpose3d_bwd_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose3d_bwd_weight";
    f32_check(op, &[g, x])?;
    let geom = as_strided_conv(op, g, x.shape(), w_shape, stride)?;
    bwd_weight_raw(op, &geom, x, g, w_shape)
}

/// Bias gradient of [`conv_transpose3d`]: `[Co]`.
pub fn conv_transpose3d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    let op = "conv_transpose3d_bwd_bias";
    g.expect_dtype(op, DType::F32)?;
    if g.shape().len() != 5 {
        return Err(Error::op(
            op,
            format!("expected a rank-5 gradient, got {:?}", g.shape()),
        ));
    }
    crate::ops::reduce::sum_axes(g, &[0, 2, 3, 4])
}
