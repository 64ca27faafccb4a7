//! Element-wise ops: add, sub, mul, scale/affine, axpy, channel bias, relu, leaky relu,
//! sigmoid, fill. Shader: `shaders/elementwise.wgsl`.
//!
//! Every op here but the batch ranges (`narrow_batch`) works in pieces
//! (`ops::launch_pieces`): a tensor over the device's storage-binding limit is processed a
//! binding-sized range at a time, with the same bits.

use super::{launch, launch_pieces, u32_of, Part};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Mirrors `EwParams` in elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct EwParams {
    pub n: u32,
    pub c: u32,
    pub inner: u32,
    /// The global index of this launch's element 0 (a piece of a split launch).
    pub base: u32,
    pub alpha: f32,
    pub beta: f32,
    pub _pad2: [f32; 2],
}

/// Parameters of the plain element-wise kernels for the piece `base..base + len`.
fn ew(alpha: f32, beta: f32) -> impl Fn(u32, u32) -> EwParams {
    move |base, n| EwParams {
        n,
        c: 1,
        inner: 1,
        base,
        alpha,
        beta,
        _pad2: [0.0; 2],
    }
}

/// Launch the element-wise kernel `entry` over every element of the same-shaped `bufs`, in
/// pieces where a buffer exceeds the binding limit.
fn ew_launch(
    t: &Tensor,
    entry: &'static str,
    bufs: &[&Tensor],
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let parts: Vec<Part> = bufs.iter().map(|b| Part::Elems(b.buffer())).collect();
    launch_pieces(
        t.gpu(),
        Shader::Elementwise,
        entry,
        &parts,
        t.numel(),
        ew(alpha, beta),
    )
}

fn same(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::op(
            op,
            format!("shapes differ: {:?} and {:?}", a.shape(), b.shape()),
        ));
    }
    a.expect_dtype(op, DType::F32)?;
    b.expect_dtype(op, DType::F32)
}

fn out_like(t: &Tensor, op: &str) -> Result<Tensor> {
    Tensor::empty(t.gpu(), t.shape(), DType::F32, op)
}

/// Fill `t` with `v`, in place.
pub fn fill_(t: &Tensor, v: f32) -> Result<()> {
    ew_launch(t, "fill", &[t], v, 0.0)
}

/// `alpha * a + beta * b` (same shapes).
pub fn lincomb(a: &Tensor, alpha: f32, b: &Tensor, beta: f32) -> Result<Tensor> {
    same("lincomb", a, b)?;
    let out = out_like(a, "lincomb")?;
    ew_launch(a, "lincomb_fwd", &[a, b, &out], alpha, beta)?;
    Ok(record("lincomb", out, &[a, b], move |g, need| {
        Ok(vec![
            if need[0] {
                Some(scale(g, alpha)?)
            } else {
                None
            },
            if need[1] { Some(scale(g, beta)?) } else { None },
        ])
    }))
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    lincomb(a, 1.0, b, 1.0)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    lincomb(a, 1.0, b, -1.0)
}

/// `a + s * b`.
pub fn axpy(a: &Tensor, s: f32, b: &Tensor) -> Result<Tensor> {
    lincomb(a, 1.0, b, s)
}

/// Element-wise product.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same("mul", a, b)?;
    let out = out_like(a, "mul")?;
    ew_launch(a, "mul_fwd", &[a, b, &out], 0.0, 0.0)?;
    let (sa, sb) = (a.detach(), b.detach());
    Ok(record("mul", out, &[a, b], move |g, need| {
        Ok(vec![
            if need[0] { Some(mul(g, &sb)?) } else { None },
            if need[1] { Some(mul(g, &sa)?) } else { None },
        ])
    }))
}

/// `alpha * x + beta`.
pub fn affine(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    x.expect_dtype("affine", DType::F32)?;
    let out = out_like(x, "affine")?;
    ew_launch(x, "affine_fwd", &[x, &out], alpha, beta)?;
    Ok(record("affine", out, &[x], move |g, _| {
        Ok(vec![Some(scale(g, alpha)?)])
    }))
}

/// `s * x`.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    affine(x, s, 0.0)
}

/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    leaky_relu(x, 0.0)
}

/// x if x > 0 else slope * x.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    x.expect_dtype("leaky_relu", DType::F32)?;
    let out = out_like(x, "leaky_relu")?;
    ew_launch(x, "leaky_relu_fwd", &[x, &out], slope, 0.0)?;
    let sx = x.detach();
    Ok(record("leaky_relu", out, &[x], move |g, _| {
        Ok(vec![Some(leaky_relu_bwd_input(&sx, g, slope)?)])
    }))
}

/// Input gradient of leaky relu given the forward input.
pub fn leaky_relu_bwd_input(x: &Tensor, g: &Tensor, slope: f32) -> Result<Tensor> {
    same("leaky_relu_bwd_input", x, g)?;
    let gx = out_like(x, "leaky_relu_bwd_input")?;
    ew_launch(x, "leaky_relu_bwd_input", &[x, g, &gx], slope, 0.0)?;
    Ok(gx)
}

/// 1 / (1 + exp(-x)).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("sigmoid", DType::F32)?;
    let out = out_like(x, "sigmoid")?;
    ew_launch(x, "sigmoid_fwd", &[x, &out], 0.0, 0.0)?;
    let sy = out.detach();
    Ok(record("sigmoid", out, &[x], move |g, _| {
        Ok(vec![Some(sigmoid_bwd_input(&sy, g)?)])
    }))
}

/// Input gradient of sigmoid given the forward output.
pub fn sigmoid_bwd_input(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    same("sigmoid_bwd_input", y, g)?;
    let gx = out_like(y, "sigmoid_bwd_input")?;
    ew_launch(y, "sigmoid_bwd_input", &[y, g, &gx], 0.0, 0.0)?;
    Ok(gx)
}

/// `x[.., c, ..] + b[c]` with the channel at `axis` (x of any rank; b of length `shape[axis]`).
pub fn bias_add(x: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let op = "bias_add";
    x.expect_dtype(op, DType::F32)?;
    let sh = x.shape().to_vec();
    if axis >= sh.len() || b.shape() != [sh[axis]] {
        return Err(Error::op(
            op,
            format!("bias {:?} for input {:?} on axis {axis}", b.shape(), sh),
        ));
    }
    let inner: usize = sh[axis + 1..].iter().product();
    let out = out_like(x, op)?;
    let (c, inner) = (u32_of(op, sh[axis])?, u32_of(op, inner)?);
    launch_pieces(
        x.gpu(),
        Shader::Elementwise,
        "bias_fwd",
        &[
            Part::Elems(x.buffer()),
            Part::Whole(b.buffer()),
            Part::Elems(out.buffer()),
        ],
        x.numel(),
        |base, n| EwParams {
            n,
            c,
            inner,
            base,
            alpha: 0.0,
            beta: 0.0,
            _pad2: [0.0; 2],
        },
    )?;
    Ok(record(op, out, &[x, b], move |g, need| {
        let gb = if need[1] {
            Some(bias_bwd_bias(g, axis)?)
        } else {
            None
        };
        Ok(vec![if need[0] { Some(g.clone()) } else { None }, gb])
    }))
}

/// Bias gradient: the upstream gradient summed over every axis but `axis`.
pub fn bias_bwd_bias(g: &Tensor, axis: usize) -> Result<Tensor> {
    let sh = g.shape().to_vec();
    let axes: Vec<usize> = (0..sh.len()).filter(|&a| a != axis).collect();
    let s = super::reduce::sum_axes(g, &axes)?;
    s.reshape(&[sh[axis]])
}

/// Samples `start..start+len` of the batch axis (axis 0), as a new tensor on the tape.
pub fn narrow_batch(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let op = "narrow_batch";
    x.expect_dtype(op, DType::F32)?;
    let sh = x.shape().to_vec();
    if sh.is_empty() || start + len > sh[0] || len == 0 {
        return Err(Error::op(
            op,
            format!("samples {start}..{} of {sh:?}", start + len),
        ));
    }
    let per: usize = sh[1..].iter().product();
    let mut oshape = sh.clone();
    oshape[0] = len;
    let out = Tensor::empty(x.gpu(), &oshape, x.dtype(), op)?;
    let p = EwParams {
        n: u32_of(op, len * per)?,
        c: u32_of(op, start * per)?,
        inner: 1,
        base: 0,
        alpha: 0.0,
        beta: 0.0,
        _pad2: [0.0; 2],
    };
    launch(
        x.gpu(),
        Shader::Elementwise,
        "copy_range",
        &p,
        &[x.buffer(), out.buffer()],
        len * per,
    )?;
    Ok(record(op, out, &[x], move |g, _| {
        let full = Tensor::zeros(g.gpu(), &sh)?;
        launch(
            g.gpu(),
            Shader::Elementwise,
            "place_range",
            &p,
            &[g.buffer(), full.buffer()],
            len * per,
        )?;
        Ok(vec![Some(full)])
    }))
}

/// Element-wise quotient `a / b` (same shapes).
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same("div", a, b)?;
    let out = out_like(a, "div")?;
    ew_launch(a, "div_fwd", &[a, b, &out], 0.0, 0.0)?;
    let (sb, sq) = (b.detach(), out.detach());
    Ok(record("div", out, &[a, b], move |g, need| {
        // d/da = g / b; d/db = -g · (a / b) / b
        let ga = if need[0] { Some(div(g, &sb)?) } else { None };
        let gb = if need[1] {
            Some(scale(&div(&mul(g, &sq)?, &sb)?, -1.0)?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }))
}

/// Single-element tensors gathered into one `[k]` tensor (for one readback of many scalars);
/// off the tape.
pub fn stack_scalars(xs: &[&Tensor]) -> Result<Tensor> {
    let gpu = xs
        .first()
        .ok_or_else(|| Error::op("stack_scalars", "no tensors"))?
        .gpu()
        .clone();
    let out = Tensor::empty(&gpu, &[xs.len()], DType::F32, "stack_scalars")?;
    for (i, x) in xs.iter().enumerate() {
        if x.numel() != 1 || x.dtype() != DType::F32 {
            return Err(Error::op(
                "stack_scalars",
                format!("{x:?} is not a single f32"),
            ));
        }
        gpu.with_encoder(|e| e.copy_buffer_to_buffer(x.buffer(), 0, out.buffer(), i as u64 * 4, 4));
    }
    Ok(out)
}

/// U[0, 1) noise of `shape` from `seed`, generated on the GPU (a counter-based hash: the
/// same seed gives the same values everywhere, 24 random bits per value).
pub fn uniform(
    gpu: &std::sync::Arc<crate::gpu::Gpu>,
    shape: &[usize],
    seed: u64,
) -> Result<Tensor> {
    let t = Tensor::empty(gpu, shape, DType::F32, "uniform")?;
    launch_pieces(
        gpu,
        Shader::Elementwise,
        "uniform_fill",
        &[Part::Elems(t.buffer())],
        t.numel(),
        |base, n| EwParams {
            n,
            c: seed as u32,
            inner: (seed >> 32) as u32,
            base,
            alpha: 0.0,
            beta: 0.0,
            _pad2: [0.0; 2],
        },
    )?;
    Ok(t)
}
