//! The matrix-unit (tensor-core) side of the convolution GEMMs: which module runs them on
//! this device, its first-use comparison with the f32 path, and the power-of-two operand
//! scales the f16 tiles need. The GEMMs themselves go through the one launch path
//! (`launch::launch` with `Unit::Mma`).

use super::geometry::{conv_geom, fwd_params, u, wgrad_params, y_shape, ConvParams};
use super::launch::{launch, tile_fit, Operands};
use super::plan::Unit;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, MatrixUnits, MmaShape, Shader};
use crate::tensor::{numel, DType, Tensor};
use std::sync::Arc;

/// The matrix-unit module the convolution GEMMs use on this adapter, if any. The first call
/// compares the path with the f32 GEMM on a small problem ([`check_mma`]); a failure (a
/// driver that rejects the module, or results that disagree) prints one line and leaves the
/// f32 path in charge for the rest of the process.
pub(super) fn mma_shader(gpu: &Arc<Gpu>) -> Option<Shader> {
    let shader = match gpu.matrix_units() {
        MatrixUnits::Off => return None,
        MatrixUnits::Coop => match gpu.mma_shape() {
            MmaShape::M16x16 => Shader::ConvMma,
            MmaShape::M8x8 => Shader::ConvMma8,
        },
        MatrixUnits::Emulated => match gpu.mma_shape() {
            MmaShape::M16x16 => Shader::ConvMmaEmulated,
            MmaShape::M8x8 => Shader::ConvMma8Emulated,
        },
    };
    if gpu.matrix_check.lock().unwrap().is_none() {
        let r = check_mma(gpu, shader).map_err(|e| e.to_string());
        if let Err(e) = &r {
            eprintln!(
                "ssnet: the tensor-core convolution failed its check on '{}' ({e}); using the f32 path",
                gpu.info.name
            );
        }
        *gpu.matrix_check.lock().unwrap() = Some(r);
    }
    match gpu.matrix_check.lock().unwrap().as_ref() {
        Some(Ok(())) => Some(shader),
        _ => None,
    }
}

/// Relative L2 distance above which the matrix-unit path is judged wrong (f16 operands give
/// about 5e-4 on random data).
const MMA_CHECK_TOL: f64 = 1e-2;

/// Runs one convolution (x [2, 5, 9, 7, 6], 24 output channels, 3³ kernel, padding 1: rows,
/// columns and reduction all off the tile multiples) through `shader` and through the f32
/// GEMM, and compares them.
fn check_mma(gpu: &Arc<Gpu>, shader: Shader) -> Result<()> {
    let op = "tensor-core check";
    let rand = |seed: u64, n: usize| crate::reference::to_f32(&crate::reference::normal(seed, n));
    let (xs, ws) = ([2, 5, 9, 7, 6], [24, 5, 3, 3, 3]);
    let x = Tensor::from_f32(gpu, &rand(1, numel(&xs)), &xs)?;
    let w = Tensor::from_f32(gpu, &rand(2, numel(&ws)), &ws)?;
    let b = Tensor::from_f32(gpu, &rand(3, 24), &[24])?;
    let g = conv_geom(op, &xs, &ws, 1, 1, false)?;
    let p = fwd_params(op, &g)?;
    let ys = y_shape(&g, false);
    // The heuristic plans throughout: the check neither tunes nor touches the tuning cache.
    let mma = Unit::Mma(shader);
    let both = |p: ConvParams, ops: Operands, out: &[usize]| -> Result<(Vec<f32>, Vec<f32>)> {
        let got = |unit: Unit| -> Result<Vec<f32>> {
            let problem = ops.problem(&p, unit);
            let plan = problem
                .heuristic(&tile_fit(gpu, op, unit, problem.family))?
                .0;
            launch(op, unit, p, plan, ops, out)?.to_f32()
        };
        Ok((got(mma)?, got(Unit::F32)?))
    };
    let (got, want) = both(
        p,
        Operands::Conv {
            src: &x,
            w: &w,
            b: Some(&b),
        },
        &ys,
    )?;
    mma_agrees("forward", &got, &want)?;
    let gy = Tensor::from_f32(gpu, &rand(4, numel(&ys)), &ys)?;
    let pw = wgrad_params(op, &g)?;
    let (got, want) = both(pw, Operands::Wgrad { gy: &gy, x: &x }, &ws)?;
    mma_agrees("weight gradient", &got, &want)
}

fn mma_agrees(what: &str, got: &[f32], want: &[f32]) -> Result<()> {
    let rel = crate::golden::errors(got, want).rel_l2;
    if !rel.is_finite() || rel > MMA_CHECK_TOL {
        return Err(Error::op(
            "tensor-core check",
            format!(
                "{what}: relative L2 distance {rel:.3e} from the f32 path (limit {MMA_CHECK_TOL})"
            ),
        ));
    }
    Ok(())
}

/// Power-of-two operand scales of a matrix-unit GEMM, computed on the GPU: [sa, sb,
/// 1 / (sa sb)] bringing max|a| and max|b| into [2^14, 2^15) (see conv_mma.wgsl).
pub(super) fn mma_scales(op: &str, shader: Shader, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let gpu = a.gpu().clone();
    let groups = |len: usize| len.div_ceil(4096).clamp(1, 256);
    let gmax = groups(a.numel()).max(groups(b.numel()));
    let partial = Tensor::empty(&gpu, &[2 * gmax], DType::F32, op)?;
    for (i, t) in [a, b].into_iter().enumerate() {
        let len = t.numel();
        let p = ConvParams {
            m: u(op, len)?,
            chunk: u(op, len.div_ceil(gmax))?,
            sc: u(op, i * gmax)?,
            nchunks: u(op, gmax)?,
            ..Default::default()
        };
        gpu.dispatch(
            shader,
            "mma_absmax",
            &p,
            &[t.buffer(), partial.buffer()],
            [gmax as u32, 1, 1],
        )?;
    }
    let scales = Tensor::empty(&gpu, &[3], DType::F32, op)?;
    let p = ConvParams {
        nchunks: u(op, gmax)?,
        ..Default::default()
    };
    gpu.dispatch(
        shader,
        "mma_scales",
        &p,
        &[partial.buffer(), scales.buffer()],
        [1, 1, 1],
    )?;
    Ok(scales)
}
