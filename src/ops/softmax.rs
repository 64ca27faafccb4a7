//! Softmax over the channel axis (axis 1 of [N, C, ...]), its backward, argmax over
//! channels, and the argmax of the softmax without materialising it. Shader:
//! `shaders/softmax.wgsl`.

use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SmParams {
    n: u32,
    c: u32,
    s: u32,
    /// First sample read (`argmax_softmax`; 0 elsewhere).
    n0: u32,
}

/// (N, C, S) of a [N, C, spatial...] tensor.
pub(crate) fn ncs(op: &str, x: &Tensor) -> Result<(usize, usize, usize)> {
    let sh = x.shape();
    if sh.len() < 2 {
        return Err(Error::op(op, format!("expected [N, C, ...], got {sh:?}")));
    }
    Ok((sh[0], sh[1], sh[2..].iter().product()))
}

fn params(op: &str, x: &Tensor) -> Result<SmParams> {
    let (n, c, s) = ncs(op, x)?;
    if c == 0 {
        return Err(Error::op(op, "no channels"));
    }
    Ok(SmParams {
        n: u32_of(op, n)?,
        c: u32_of(op, c)?,
        s: u32_of(op, s)?,
        n0: 0,
    })
}

/// Softmax over axis 1.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let op = "softmax";
    x.expect_dtype(op, DType::F32)?;
    let p = params(op, x)?;
    let y = Tensor::empty(x.gpu(), x.shape(), DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Softmax,
        "softmax_fwd",
        &p,
        &[x.buffer(), y.buffer()],
        (p.n * p.s) as usize,
    )?;
    let sy = y.detach();
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(softmax_bwd_input(&sy, g)?)])
    }))
}

/// Input gradient of softmax given its output `y`.
pub fn softmax_bwd_input(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let op = "softmax_bwd_input";
    if y.shape() != g.shape() {
        return Err(Error::op(
            op,
            format!("y {:?} vs g {:?}", y.shape(), g.shape()),
        ));
    }
    let p = params(op, y)?;
    let gx = Tensor::empty(y.gpu(), y.shape(), DType::F32, op)?;
    launch(
        y.gpu(),
        Shader::Softmax,
        "softmax_bwd_input",
        &p,
        &[y.buffer(), g.buffer(), gx.buffer()],
        (p.n * p.s) as usize,
    )?;
    Ok(gx)
}

/// Index of the largest channel (first on ties): u32 of shape [N, spatial...].
pub fn argmax_channels(x: &Tensor) -> Result<Tensor> {
    let op = "argmax";
    x.expect_dtype(op, DType::F32)?;
    let p = params(op, x)?;
    let mut oshape = vec![x.shape()[0]];
    oshape.extend_from_slice(&x.shape()[2..]);
    let out = Tensor::empty(x.gpu(), &oshape, DType::U32, op)?;
    launch(
        x.gpu(),
        Shader::Softmax,
        "argmax_fwd",
        &p,
        &[x.buffer(), out.buffer()],
        (p.n * p.s) as usize,
    )?;
    Ok(out)
}

/// The argmax over channels of `softmax(x)` for samples `start..start + len` of x
/// [N, C, ...]: u32 [len, spatial...]. Equal bit for bit to
/// `argmax_channels(&softmax(&narrow_batch(x, start, len)?)?)` (the probabilities are the
/// values `softmax` writes and are compared the same way, so ties between channels whose
/// probabilities round to the same value, and NaN, behave as there), with one read of the
/// logits and no probability tensor. Off the tape.
pub fn argmax_softmax(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    let op = "argmax_softmax";
    x.expect_dtype(op, DType::F32)?;
    let mut p = params(op, x)?;
    let sh = x.shape();
    if len == 0 || start.checked_add(len).is_none_or(|e| e > sh[0]) {
        return Err(Error::op(
            op,
            format!("samples {start}..{} of {sh:?}", start.saturating_add(len)),
        ));
    }
    u32_of(op, x.numel())?;
    p.n = u32_of(op, len)?;
    p.n0 = u32_of(op, start)?;
    let mut oshape = vec![len];
    oshape.extend_from_slice(&sh[2..]);
    let out = Tensor::empty(x.gpu(), &oshape, DType::U32, op)?;
    launch(
        x.gpu(),
        Shader::Softmax,
        "argmax_softmax",
        &p,
        &[x.buffer(), out.buffer()],
        len * p.s as usize,
    )?;
    Ok(out)
}
