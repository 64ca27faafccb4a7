//! The public convolution ops (3D and 2D, the 2D ones as 3D with a unit leading axis) and
//! their tape records: forward, input, weight and bias gradients.

use super::geometry::{check_bias, conv_geom, f32_check, y_shape};
use super::launch::{bwd_input_raw, bwd_weight_raw, fwd_raw};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

fn conv_fwd(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
    d2: bool,
) -> Result<Tensor> {
    f32_check(op, &[x, w])?;
    let g = conv_geom(op, x.shape(), w.shape(), stride, pad, d2)?;
    check_bias(op, b, g.co, w)?;
    let out = fwd_raw(op, &g, x, w, b, &y_shape(&g, d2))?;
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    Ok(record_xwb(
        op,
        out,
        x,
        w,
        b,
        move |gy, w| conv_bwd_input(gy, w, &xs, stride, pad, d2),
        move |gy, x| conv_bwd_weight(gy, x, &ws, stride, pad, d2),
        move |gy| conv_bwd_bias(gy, d2),
    ))
}

/// Records y = f(x, w, b) on the tape with one backward per input, each given the output
/// gradient (and the saved weight or input).
#[allow(clippy::too_many_arguments)]
pub(super) fn record_xwb(
    op: &'static str,
    out: Tensor,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    gx: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor> + Send + 'static,
    gw: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor> + Send + 'static,
    gb: impl FnOnce(&Tensor) -> Result<Tensor> + Send + 'static,
) -> Tensor {
    let (sx, sw) = (x.detach(), w.detach());
    let has_b = b.is_some();
    let mut inputs = vec![x, w];
    inputs.extend(b);
    record(op, out, &inputs, move |gy, need| {
        let mut v = vec![
            need[0].then(|| gx(gy, &sw)).transpose()?,
            need[1].then(|| gw(gy, &sx)).transpose()?,
        ];
        if has_b {
            v.push(need[2].then(|| gb(gy)).transpose()?);
        }
        Ok(v)
    })
}

fn conv_bwd_input(
    gy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: usize,
    pad: usize,
    d2: bool,
) -> Result<Tensor> {
    let op = if d2 {
        "conv2d_bwd_input"
    } else {
        "conv3d_bwd_input"
    };
    f32_check(op, &[gy, w])?;
    let g = conv_geom(op, x_shape, w.shape(), stride, pad, d2)?;
    gy.expect_shape(op, &y_shape(&g, d2))?;
    bwd_input_raw(op, &g, gy, w, x_shape)
}

fn conv_bwd_weight(
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
    pad: usize,
    d2: bool,
) -> Result<Tensor> {
    let op = if d2 {
        "conv2d_bwd_weight"
    } else {
        "conv3d_bwd_weight"
    };
    f32_check(op, &[gy, x])?;
    let g = conv_geom(op, x.shape(), w_shape, stride, pad, d2)?;
    gy.expect_shape(op, &y_shape(&g, d2))?;
    bwd_weight_raw(op, &g, gy, x, w_shape)
}

fn conv_bwd_bias(gy: &Tensor, d2: bool) -> Result<Tensor> {
    let op = if d2 {
        "conv2d_bwd_bias"
    } else {
        "conv3d_bwd_bias"
    };
    let rank = if d2 { 4 } else { 5 };
    gy.expect_dtype(op, DType::F32)?;
    if gy.shape().len() != rank {
        return Err(Error::op(
            op,
            format!("expected a rank-{rank} gradient, got {:?}", gy.shape()),
        ));
    }
    let axes: Vec<usize> = (0..rank).filter(|&a| a != 1).collect();
    crate::ops::reduce::sum_axes(gy, &axes)
}

/// 3D convolution: x `[N, Ci, X, Y, Z]`, w `[Co, Ci, kx, ky, kz]` (PyTorch layout), b `[Co]`;
/// stride and zero padding on every axis. y [N, Co, (X+2p-kx)/s+1, ...]. On the tape.
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_fwd("conv3d", x, w, b, stride, pad, false)
}

/// Input gradient of [`conv3d`] for the output gradient `g`: shape `x_shape`.
pub fn conv3d_bwd_input(
    g: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_input(g, w, x_shape, stride, pad, false)
}

/// Weight gradient of [`conv3d`]: shape `w_shape` `[Co, Ci, kx, ky, kz]`; deterministic.
pub fn conv3d_bwd_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_weight(g, x, w_shape, stride, pad, false)
}

/// Bias gradient of [`conv3d`]: `g` summed over N and the spatial axes, `[Co]`.
pub fn conv3d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    conv_bwd_bias(g, false)
}

/// 2D convolution: x `[N, Ci, H, W]`, w `[Co, Ci, kh, kw]`, b `[Co]`. On the tape.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_fwd("conv2d", x, w, b, stride, pad, true)
}

/// Input gradient of [`conv2d`]: shape `x_shape`.
pub fn conv2d_bwd_input(
    g: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_input(g, w, x_shape, stride, pad, true)
}

/// Weight gradient of [`conv2d`]: shape `w_shape` `[Co, Ci, kh, kw]`; deterministic.
pub fn conv2d_bwd_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_weight(g, x, w_shape, stride, pad, true)
}

/// Bias gradient of [`conv2d`]: `[Co]`.
pub fn conv2d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    conv_bwd_bias(g, true)
}
