//! Resampling: 2-D max pooling, bilinear ×2 upsampling (align_corners = True), channel
//! concatenation and slicing, forward and backward. Shader: `shaders/resample.wgsl`.
//! Every backward is a gather (one invocation per input element, no atomics).

use super::{launch, u32_of};
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Mirrors `RsParams` in resample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RsParams {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    k: u32,
    total: u32,
    ci: u32,
    ct: u32,
    coff: u32,
    s: u32,
}

fn nchw(op: &str, x: &Tensor) -> Result<[usize; 4]> {
    x.expect_dtype(op, DType::F32)?;
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => Err(Error::op(op, format!("expected [N, C, H, W], got {s:?}"))),
    }
}

fn rs(
    op: &str,
    [n, c, h, w]: [usize; 4],
    ho: usize,
    wo: usize,
    k: usize,
    total: usize,
) -> Result<RsParams> {
    Ok(RsParams {
        n: u32_of(op, n)?,
        c: u32_of(op, c)?,
        h: u32_of(op, h)?,
        w: u32_of(op, w)?,
        ho: u32_of(op, ho)?,
        wo: u32_of(op, wo)?,
        k: u32_of(op, k)?,
        total: u32_of(op, total)?,
        ..Default::default()
    })
}

/// Max pooling with kernel = stride = `k`: [N, C, H, W] -> [N, C, H / k, W / k] (floor).
/// The backward routes each output's gradient to its window's first maximum (PyTorch).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    Ok(max_pool2d_with_indices(x, k)?.0)
}

/// [`max_pool2d`] that also returns the argmax of every window as a u32 tensor of the output's
/// shape holding the offset `dy * k + dx` inside the window. The output is on the tape.
pub fn max_pool2d_with_indices(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let op = "max_pool2d";
    let [n, c, h, w] = nchw(op, x)?;
    if k == 0 || h < k || w < k {
        return Err(Error::op(
            op,
            format!("kernel {k} for input {:?}", x.shape()),
        ));
    }
    let (ho, wo) = (h / k, w / k);
    let total = n * c * ho * wo;
    u32_of(op, x.numel())?;
    let p = rs(op, [n, c, h, w], ho, wo, k, total)?;
    let gpu = x.gpu();
    let y = Tensor::empty(gpu, &[n, c, ho, wo], DType::F32, op)?;
    let idx = Tensor::empty(gpu, &[n, c, ho, wo], DType::U32, op)?;
    launch(
        gpu,
        Shader::Resample,
        "max_pool_fwd",
        &p,
        &[x.buffer(), y.buffer(), idx.buffer()],
        total,
    )?;
    let in_shape = x.shape().to_vec();
    let sidx = idx.clone();
    let y = record(op, y, &[x], move |g, _| {
        Ok(vec![Some(max_pool2d_bwd_input(g, &sidx, k, &in_shape)?)])
    });
    Ok((y, idx))
}

/// Input gradient of max pooling: `g` [N, C, HO, WO], the forward's indices, kernel `k` and
/// input shape [N, C, H, W].
pub fn max_pool2d_bwd_input(
    g: &Tensor,
    idx: &Tensor,
    k: usize,
    in_shape: &[usize],
) -> Result<Tensor> {
    let op = "max_pool2d_bwd_input";
    g.expect_dtype(op, DType::F32)?;
    idx.expect_dtype(op, DType::U32)?;
    let &[n, c, h, w] = in_shape else {
        return Err(Error::op(
            op,
            format!("input shape {in_shape:?} is not [N, C, H, W]"),
        ));
    };
    if k == 0 || h < k || w < k {
        return Err(Error::op(op, format!("kernel {k} for input {in_shape:?}")));
    }
    let (ho, wo) = (h / k, w / k);
    g.expect_shape(op, &[n, c, ho, wo])?;
    idx.expect_shape(op, &[n, c, ho, wo])?;
    let total = n * c * h * w;
    let p = rs(op, [n, c, h, w], ho, wo, k, total)?;
    let gx = Tensor::empty(g.gpu(), in_shape, DType::F32, op)?;
    launch(
        g.gpu(),
        Shader::Resample,
        "max_pool_bwd_input",
        &p,
        &[g.buffer(), idx.buffer(), gx.buffer()],
        total,
    )?;
    Ok(gx)
}

/// Bilinear upsampling ×2 with align_corners = True: [N, C, H, W] -> [N, C, 2H, 2W].
pub fn upsample_bilinear2x(x: &Tensor) -> Result<Tensor> {
    let op = "upsample_bilinear2x";
    let [n, c, h, w] = nchw(op, x)?;
    let (ho, wo) = (2 * h, 2 * w);
    // Source positions are computed as o * (H - 1) in u32.
    u32_of(op, ho * h.max(w) * 2)?;
    let total = n * c * ho * wo;
    let p = rs(op, [n, c, h, w], ho, wo, 2, total)?;
    let y = Tensor::empty(x.gpu(), &[n, c, ho, wo], DType::F32, op)?;
    launch(
        x.gpu(),
        Shader::Resample,
        "upsample_fwd",
        &p,
        &[x.buffer(), y.buffer()],
        total,
    )?;
    Ok(record(op, y, &[x], move |g, _| {
        Ok(vec![Some(upsample_bilinear2x_bwd_input(g)?)])
    }))
}

/// Input gradient of [`upsample_bilinear2x`]: `g` [N, C, 2H, 2W] -> [N, C, H, W].
pub fn upsample_bilinear2x_bwd_input(g: &Tensor) -> Result<Tensor> {
    let op = "upsample_bilinear2x_bwd_input";
    let [n, c, ho, wo] = nchw(op, g)?;
    if ho % 2 != 0 || wo % 2 != 0 {
        return Err(Error::op(
            op,
            format!("gradient {:?} has odd spatial sizes", g.shape()),
        ));
    }
    let (h, w) = (ho / 2, wo / 2);
    u32_of(op, ho * h.max(w) * 2)?;
    let total = n * c * h * w;
    let p = rs(op, [n, c, h, w], ho, wo, 2, total)?;
    let gx = Tensor::empty(g.gpu(), &[n, c, h, w], DType::F32, op)?;
    launch(
        g.gpu(),
        Shader::Resample,
        "upsample_bwd_input",
        &p,
        &[g.buffer(), gx.buffer()],
        total,
    )?;
    Ok(gx)
}

/// (N, S) of a rank >= 2 shape and its channel count.
fn n_c_s(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

fn copy_params(
    op: &str,
    n: usize,
    ci: usize,
    ct: usize,
    coff: usize,
    s: usize,
) -> Result<RsParams> {
    Ok(RsParams {
        total: u32_of(op, n * ci * s)?,
        ci: u32_of(op, ci)?,
        ct: u32_of(op, ct)?,
        coff: u32_of(op, coff)?,
        s: u32_of(op, s)?,
        ..Default::default()
    })
}

/// Concatenation along axis 1 of tensors of one dtype and rank >= 2 whose shapes agree
/// except in axis 1. The backward splits the gradient back into the inputs' channel ranges.
pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let op = "concat_channels";
    let Some(first) = xs.first() else {
        return Err(Error::op(op, "no inputs"));
    };
    let sh0 = first.shape();
    if sh0.len() < 2 {
        return Err(Error::op(
            op,
            format!("inputs must have rank >= 2, got {sh0:?}"),
        ));
    }
    for x in xs {
        let sh = x.shape();
        if sh.len() != sh0.len()
            || sh[0] != sh0[0]
            || sh[2..] != sh0[2..]
            || x.dtype() != first.dtype()
        {
            let all: Vec<String> = xs
                .iter()
                .map(|t| format!("{:?} {:?}", t.dtype(), t.shape()))
                .collect();
            return Err(Error::op(
                op,
                format!("inputs disagree outside axis 1: {}", all.join(", ")),
            ));
        }
    }
    let channels: Vec<usize> = xs.iter().map(|x| x.shape()[1]).collect();
    let ct: usize = channels.iter().sum();
    let mut oshape = sh0.to_vec();
    oshape[1] = ct;
    let (n, _, s) = n_c_s(sh0);
    u32_of(op, n * ct * s)?;
    let gpu = first.gpu();
    let out = Tensor::empty(gpu, &oshape, first.dtype(), op)?;
    let mut coff = 0;
    for (x, &ci) in xs.iter().zip(&channels) {
        let p = copy_params(op, n, ci, ct, coff, s)?;
        launch(
            gpu,
            Shader::Resample,
            "concat_copy",
            &p,
            &[x.buffer(), out.buffer()],
            n * ci * s,
        )?;
        coff += ci;
    }
    Ok(record(op, out, xs, move |g, need| {
        let mut gs = vec![];
        let mut coff = 0;
        for (&ci, &nd) in channels.iter().zip(need) {
            gs.push(if nd {
                Some(slice_raw(g, coff, ci)?)
            } else {
                None
            });
            coff += ci;
        }
        Ok(gs)
    }))
}

/// Input gradients of [`concat_channels`]: `g` split into consecutive channel ranges of the
/// given sizes.
pub fn concat_channels_bwd(g: &Tensor, channels: &[usize]) -> Result<Vec<Tensor>> {
    let op = "concat_channels_bwd";
    if g.shape().len() < 2 || channels.iter().sum::<usize>() != g.shape()[1] {
        return Err(Error::op(
            op,
            format!("channel split {channels:?} of gradient {:?}", g.shape()),
        ));
    }
    let mut out = vec![];
    let mut coff = 0;
    for &ci in channels {
        out.push(slice_raw(g, coff, ci)?);
        coff += ci;
    }
    Ok(out)
}

/// Channels `start .. start + count` of x [N, C, ...] (axis 1), on the tape (the backward
/// places the gradient into a zero tensor of x's shape).
pub fn slice_channels(x: &Tensor, start: usize, count: usize) -> Result<Tensor> {
    let op = "slice_channels";
    let sh = x.shape().to_vec();
    if sh.len() < 2 || start + count > sh[1] {
        return Err(Error::op(
            op,
            format!("channels {start}..{} of {sh:?}", start + count),
        ));
    }
    let out = slice_raw(x, start, count)?;
    Ok(record(op, out, &[x], move |g, _| {
        let gx = Tensor::zeros(g.gpu(), &sh)?;
        let (n, ct, s) = n_c_s(&sh);
        let p = copy_params(op, n, count, ct, start, s)?;
        launch(
            g.gpu(),
            Shader::Resample,
            "concat_copy",
            &p,
            &[g.buffer(), gx.buffer()],
            n * count * s,
        )?;
        Ok(vec![Some(gx)])
    }))
}

/// Channels `start .. start + count` of x, off the tape.
fn slice_raw(x: &Tensor, start: usize, count: usize) -> Result<Tensor> {
    let op = "slice_channels";
    let sh = x.shape();
    let (n, ct, s) = n_c_s(sh);
    let mut oshape = sh.to_vec();
    oshape[1] = count;
    u32_of(op, x.numel())?;
    let out = Tensor::empty(x.gpu(), &oshape, x.dtype(), op)?;
    let p = copy_params(op, n, count, ct, start, s)?;
    launch(
        x.gpu(),
        Shader::Resample,
        "slice_copy",
        &p,
        &[x.buffer(), out.buffer()],
        n * count * s,
    )?;
    Ok(out)
}
