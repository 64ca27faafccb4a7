//! Optimiser steps, in place on the parameter and state buffers (not on the tape).
//! Shader: `shaders/optim.wgsl`.

use super::{launch_pieces, Part};
use crate::error::{Error, Result};
use crate::gpu::Shader;
use crate::tensor::{DType, Tensor};

/// Mirrors `SgdParams` in optim.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    n: u32,
    first: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    momentum: f32,
    wd: f32,
    _pad2: f32,
}

/// One SGD step with PyTorch's semantics (dampening 0, no Nesterov), in place:
/// `g' = g + weight_decay * w`; `buf = g'` on the first step, else `momentum * buf + g'`;
/// `w -= lr * buf`. `w`, `g` and `momentum_buf` have one shape; `w` and `momentum_buf` are
/// overwritten (ordered with the recorded ops); `momentum_buf` need not be initialised
/// before the first step. With momentum 0 this is plain SGD (the buffer holds g').
/// Works in pieces on tensors over the storage-binding limit.
pub fn sgd_step(
    w: &Tensor,
    g: &Tensor,
    momentum_buf: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    first_step: bool,
) -> Result<()> {
    let op = "sgd_step";
    for (name, t) in [
        ("weight", w),
        ("gradient", g),
        ("momentum buffer", momentum_buf),
    ] {
        t.expect_dtype(op, DType::F32)?;
        if t.shape() != w.shape() {
            return Err(Error::op(
                op,
                format!("{name} {:?} for weight {:?}", t.shape(), w.shape()),
            ));
        }
    }
    if w.same_storage(g) || w.same_storage(momentum_buf) || g.same_storage(momentum_buf) {
        return Err(Error::op(
            op,
            format!(
                "weight, gradient and momentum buffer must be distinct buffers ({:?})",
                w.shape()
            ),
        ));
    }
    if !(lr.is_finite() && momentum.is_finite() && weight_decay.is_finite()) {
        return Err(Error::op(op, format!("non-finite hyper-parameter: lr {lr}, momentum {momentum}, weight decay {weight_decay}")));
    }
    let first = first_step as u32;
    launch_pieces(
        w.gpu(),
        Shader::Optim,
        "sgd_step",
        &[
            Part::Elems(w.buffer()),
            Part::Elems(g.buffer()),
            Part::Elems(momentum_buf.buffer()),
        ],
        w.numel(),
        |_, n| SgdParams {
            n,
            first,
            _pad0: 0,
            _pad1: 0,
            lr,
            momentum,
            wd: weight_decay,
            _pad2: 0.0,
        },
    )
}
