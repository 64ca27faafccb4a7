//! The launch path of the convolution GEMMs: the grid (folded into 2-D past the adapter's
//! per-dimension limit), the reduction partials and their fixed-order sum, and the one
//! function that launches every tiled GEMM ([`launch`]: `conv_gemm`, `conv_wgrad`, and on
//! the matrix units `conv_mma`, `wgrad_mma`). [`run`] picks the plan (heuristic, or tuned)
//! and the unit (f32, or the matrix units when enabled and checked).

use super::geometry::{
    bwd_input_params, direct_params, fwd_params, u, wgrad_params, ConvParams, CtGeom, Geom,
};
use super::plan::{tuned_plan, Family, Plan, Problem, Tile, Unit, NARROW_N, NARROW_ROWS};
use super::tensor_cores::{mma_scales, mma_shader};
use super::transposed::ct_raw;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Shader};
use crate::tensor::{DType, Tensor};
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    static GRID_CAP: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Test hook: cap the workgroups per grid dimension of this thread's conv dispatches (below
/// the adapter's limit) so that small problems exercise the folded 2-D grids.
#[doc(hidden)]
pub fn conv_grid_cap_for_tests(cap: Option<u32>) {
    GRID_CAP.with(|c| c.set(cap));
}

/// `total` workgroups as a grid of at most `maxd` per dimension: [total, 1, 1] when it fits,
/// else folded into [x, y, 1] with x·y >= total (kernels skip ids past `total`).
pub fn fold_grid(total: u64, maxd: u32) -> Option<[u32; 3]> {
    let maxd = maxd.max(1) as u64;
    let total = total.max(1);
    if total <= maxd {
        return Some([total as u32, 1, 1]);
    }
    let y = total.div_ceil(maxd);
    if y > maxd {
        return None;
    }
    Some([total.div_ceil(y) as u32, y as u32, 1])
}

pub(super) fn grid(gpu: &Gpu, op: &str, total: u64) -> Result<[u32; 3]> {
    let mut maxd = gpu.limits.max_compute_workgroups_per_dimension;
    if let Some(c) = GRID_CAP.with(|c| c.get()) {
        maxd = maxd.min(c);
    }
    fold_grid(total, maxd)
        .ok_or_else(|| Error::op(op, format!("{total} workgroups exceed the adapter's grid")))
}

/// Runs a GEMM whose `parts` reduction parts each write `len` outputs: straight into a fresh
/// tensor of `shape` when there is one part, else into partials [parts, len] that are then
/// summed in a fixed order (deterministic, no atomics).
pub(super) fn with_partials(
    gpu: &Arc<Gpu>,
    op: &str,
    parts: usize,
    len: usize,
    shape: &[usize],
    run: impl FnOnce(&Tensor) -> Result<()>,
) -> Result<Tensor> {
    if parts == 1 {
        let out = Tensor::empty(gpu, shape, DType::F32, op)?;
        run(&out)?;
        return Ok(out);
    }
    let part = Tensor::empty(gpu, &[parts, len], DType::F32, op)?;
    run(&part)?;
    crate::ops::reduce::sum_axes(&part, &[0])?.reshape(shape)
}

// ------------------------------------------------------------------ matrix units (f16)

/// The operands of a tiled GEMM.
#[derive(Clone, Copy)]
pub(super) enum Operands<'a> {
    /// `conv_gemm` / `conv_mma`: the gathered source, the weight, an optional bias.
    Conv {
        src: &'a Tensor,
        w: &'a Tensor,
        b: Option<&'a Tensor>,
    },
    /// `conv_wgrad` / `wgrad_mma`: the output gradient and the convolution's input.
    Wgrad { gy: &'a Tensor, x: &'a Tensor },
}

impl Operands<'_> {
    fn family(&self) -> Family {
        match self {
            Operands::Conv { .. } => Family::Conv,
            Operands::Wgrad { .. } => Family::Wgrad,
        }
    }

    fn gpu(&self) -> Arc<Gpu> {
        match self {
            Operands::Conv { src, .. } => src.gpu().clone(),
            Operands::Wgrad { gy, .. } => gy.gpu().clone(),
        }
    }

    /// The GEMM problem of the geometry `p` on `unit`: output rows × cols and reduction.
    pub(super) fn problem(&self, p: &ConvParams, unit: Unit) -> Problem {
        let family = self.family();
        let (rows, cols, len) = match family {
            Family::Conv => (p.m, p.n, p.k),
            Family::Wgrad => (p.rows, p.n, p.m),
        };
        Problem {
            family,
            unit,
            rows: rows as usize,
            cols: cols as usize,
            len: len as usize,
            max_partial: (self.gpu().max_binding() / 4) as usize,
        }
    }
}

/// Whether the device can run a tile of `family`'s kernel on `unit` (its limits).
pub(super) fn tile_fit<'a>(
    gpu: &'a Gpu,
    op: &'a str,
    unit: Unit,
    family: Family,
) -> impl Fn(Tile) -> Result<()> + 'a {
    move |t: Tile| {
        gpu.check_footprint(unit.shader(), unit.entry(family), &t.consts())
            .map_err(|e| Error::op(op, e))
    }
}

/// Runs the tiled GEMM of geometry `p` on `operands` on `unit`, the plan chosen by the shape
/// heuristic or, with tuning on, by timing the candidates: a fresh tensor of `out_shape`.
pub(super) fn run(
    op: &str,
    unit: Unit,
    mut p: ConvParams,
    operands: Operands,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = operands.gpu();
    let problem = operands.problem(&p, unit);
    let fit = tile_fit(&gpu, op, unit, problem.family);
    let plan = if gpu.tuning_enabled() {
        if let Operands::Conv { b, .. } = operands {
            p.has_bias = b.is_some() as u32;
        }
        let cands = problem.candidates(&fit, |t| grid(&gpu, op, t as u64).is_ok())?;
        tuned_plan(&gpu, problem.key(&p), &cands, |plan| {
            launch(op, unit, p, plan, operands, out_shape).map(drop)
        })?
    } else {
        problem.heuristic(&fit)?.0
    };
    launch(op, unit, p, plan, operands, out_shape)
}

/// One tiled GEMM with the plan `plan` (on the matrix units: the operand scales first; with
/// several reduction parts: the sum of the partials after); `p` holds the geometry, the
/// tiling fields are filled in here.
pub(super) fn launch(
    op: &str,
    unit: Unit,
    mut p: ConvParams,
    plan: Plan,
    operands: Operands,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = operands.gpu();
    let problem = operands.problem(&p, unit);
    let (rows, cols) = (problem.rows, problem.cols);
    let Plan { tile, parts, chunk } = plan;
    let (tiles_r, tiles_n) = tile.count(rows, cols);
    let total = tiles_r * tiles_n * parts;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_r = u(op, tiles_r)?;
    p.tiles_total = u(op, total)?;
    p.chunk = u(op, chunk)?;
    p.nchunks = u(op, parts)?;
    u(op, parts * rows * cols)?;
    let (a, b) = match operands {
        Operands::Conv { src, w, b } => {
            p.has_bias = b.is_some() as u32;
            (src, w)
        }
        Operands::Wgrad { gy, x } => (gy, x),
    };
    let scales = match unit {
        Unit::F32 => None,
        Unit::Mma(shader) => Some(mma_scales(op, shader, a, b)?),
    };
    let groups = grid(&gpu, op, total as u64)?;
    with_partials(&gpu, op, parts, rows * cols, out_shape, |out| {
        let mut bufs = match operands {
            Operands::Conv { src, w, b } => vec![
                src.buffer(),
                w.buffer(),
                b.map(|t| t.buffer()).unwrap_or(w.buffer()),
                out.buffer(),
            ],
            Operands::Wgrad { gy, x } => vec![x.buffer(), gy.buffer(), out.buffer()],
        };
        bufs.extend(scales.as_ref().map(|s| s.buffer()));
        gpu.dispatch_with(
            unit.shader(),
            unit.entry(problem.family),
            &tile.consts(),
            &p,
            &bufs,
            groups,
        )
    })
}

/// The unit the convolution GEMMs use on this device now.
fn unit(gpu: &Arc<Gpu>) -> Unit {
    match mma_shader(gpu) {
        Some(s) => Unit::Mma(s),
        None => Unit::F32,
    }
}

/// Runs `conv_gemm` with the geometry `p`: a fresh tensor of `out_shape` (M·N elements). At
/// most [`NARROW_N`] columns: the narrow kernel; else the tiled GEMM on the current unit.
fn gemm_run(
    op: &str,
    mut p: ConvParams,
    src: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = src.gpu().clone();
    let (m, n) = (p.m as usize, p.n as usize);
    if n <= NARROW_N {
        let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
        let total = m.div_ceil(NARROW_ROWS);
        p.has_bias = b.is_some() as u32;
        p.tiles_total = u(op, total)?;
        p.nchunks = 1;
        p.chunk = p.k;
        let out = Tensor::empty(&gpu, out_shape, DType::F32, op)?;
        let groups = grid(&gpu, op, total as u64)?;
        gpu.dispatch(
            Shader::Conv,
            "conv_gemm_narrow",
            &p,
            &[src.buffer(), w.buffer(), bias, out.buffer()],
            groups,
        )?;
        return Ok(out);
    }
    run(op, unit(&gpu), p, Operands::Conv { src, w, b }, out_shape)
}

/// Forward: y [N, Co, O] = x ⋆ w (+ b), written into a fresh tensor of `out_shape`.
pub(super) fn fwd_raw(
    op: &str,
    g: &Geom,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    gemm_run(op, fwd_params(op, g)?, x, w, b, out_shape)
}

/// Input gradient gx [N, Ci, X] (shape `x_shape`) of the convolution `g` from its output
/// gradient gy [N, Co, O] and weight w [Co, Ci, k].
pub(super) fn bwd_input_raw(
    op: &str,
    g: &Geom,
    gy: &Tensor,
    w: &Tensor,
    x_shape: &[usize],
) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    if g.s == [1, 1, 1] {
        return gemm_run(op, bwd_input_params(op, g)?, gy, w, None, x_shape);
    }
    if g.k == g.s && g.p == [0, 0, 0] && (0..3).all(|a| g.x[a] == g.o[a] * g.s[a]) {
        // Kernel == stride: every input voxel gets exactly one kernel offset; w [Co, Ci, k]
        // is the transposed conv's [in, out, k] weight.
        let c = CtGeom {
            n: g.n,
            ci: g.co,
            xs: g.o,
            co: g.ci,
            k: g.k,
        };
        return ct_raw(op, &c, gy, w, None, x_shape);
    }
    // Other strided convolutions: a direct gather.
    let out = Tensor::empty(&gpu, x_shape, DType::F32, op)?;
    let p = direct_params(op, g)?;
    let groups = grid(&gpu, op, g.xlen().div_ceil(256) as u64)?;
    gpu.dispatch(
        Shader::Conv,
        "conv_bwd_input_direct",
        &p,
        &[gy.buffer(), w.buffer(), out.buffer()],
        groups,
    )?;
    Ok(out)
}

/// Weight gradient gw [Co, Ci, k] (shape `w_shape`) of the convolution `g` from its output
/// gradient gy [N, Co, O] and input x [N, Ci, X]: rows = Co, columns = Ci·k³, the N·voxels
/// reduction in chunks summed in a fixed order.
pub(super) fn bwd_weight_raw(
    op: &str,
    g: &Geom,
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Result<Tensor> {
    let unit = unit(gy.gpu());
    run(
        op,
        unit,
        wgrad_params(op, g)?,
        Operands::Wgrad { gy, x },
        w_shape,
    )
}
