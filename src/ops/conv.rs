//! Convolutions: 3D (any kernel, stride, zero padding), 2D (the 3D kernels with a unit
//! leading spatial axis) and the 3D transposed convolution with kernel == stride, each with
//! its input, weight and bias backwards. Shaders: `shaders/conv.wgsl` and
//! `shaders/conv_transpose.wgsl`.
//!
//! Layouts are PyTorch's: x [N, Ci, X, Y, Z] (2D: [N, Ci, H, W]), conv weight
//! [Co, Ci, kx, ky, kz], transposed weight [Ci, Co, kx, ky, kz], bias [Co].
//!
//! Kernels (all tiled GEMMs of 256 invocations, 4×4 outputs each, tiles picked per shape among
//! 64×64, 128×32, 32×128, 256×16, 16×256 to waste the least padding; with tuning on
//! (`gpu::tune`: `SSNET_TUNE=1`, `--tune`), tiles and reduction splits are instead timed on
//! the GPU at a shape's first use and the fastest cached, see `tuned_plan`):
//! - forward: implicit GEMM `conv_gemm`, rows = N·output voxels, columns = Co,
//!   reduction = Ci·k³ gathered from x on the fly (no im2col buffer); split-K when there
//!   are few output tiles; `conv_gemm_narrow` for at most 4 columns (Co ≤ 4 outputs, the
//!   input gradient of a 1-channel input), which gathers A without staging it.
//! - input gradient, stride 1: the same kernel reading the output gradient with the flipped
//!   kernel (each input-gradient element is one GEMM output: a gather, no scatter/atomics);
//!   kernel == stride without padding (VNet's downsampling): the transposed-conv GEMM;
//!   other strided cases: a direct gather kernel (correct, not tuned: no network uses them).
//! - weight gradient: `conv_wgrad`, rows = Co, columns = Ci·k³, the N·voxels reduction split
//!   into a shape-determined number of chunks written as partials [chunks, Co, Ci·k³], then
//!   summed in a fixed order by `ops::reduce` (deterministic, no atomics).
//! - bias gradient: `sum_axes` over N and the spatial axes (deterministic).
//! - transposed conv (kernel == stride): `ct_gemm`, one GEMM [N·voxels, Ci] × [Ci, Co·k³]
//!   whose epilogue writes each product to its shuffled output voxel; its input gradient is a
//!   strided conv forward, its weight gradient a strided conv weight gradient.

use super::u32_of;
use crate::autograd::record;
use crate::error::{Error, Result};
use crate::gpu::tune::TileChoice;
use crate::gpu::{Gpu, MatrixUnits, Shader};
use crate::tensor::{numel, DType, Tensor};
use std::cell::Cell;
use std::sync::Arc;

/// Mirrors `ConvParams` in conv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    sc: u32,
    sx: u32,
    sy: u32,
    sz: u32,
    sv: u32,
    mx: u32,
    my: u32,
    mz: u32,
    mv: u32,
    kx: u32,
    ky: u32,
    kz: u32,
    kv: u32,
    stx: u32,
    sty: u32,
    stz: u32,
    pdx: i32,
    pdy: i32,
    pdz: i32,
    flip: u32,
    wc: u32,
    wstride: u32,
    tiles_n: u32,
    tiles_total: u32,
    chunk: u32,
    nchunks: u32,
    rows: u32,
    tiles_r: u32,
}

/// Mirrors `CtParams` in conv_transpose.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct CtParams {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    xv: u32,
    xx: u32,
    xy: u32,
    xz: u32,
    kx: u32,
    ky: u32,
    kz: u32,
    kv: u32,
    co: u32,
    oy: u32,
    oz: u32,
    ov: u32,
    tiles_n: u32,
    tiles_total: u32,
    _pad0: u32,
    _pad1: u32,
}

/// Tile shapes (rows, columns, reduction step) of the GEMM kernels: 256 invocations with
/// 4×4 outputs each (rows·columns = 4096); workgroup memory stays under 11 KiB.
pub const TILES: [(u32, u32, u32); 5] = [
    (64, 64, 16),
    (128, 32, 16),
    (32, 128, 16),
    (256, 16, 8),
    (16, 256, 8),
];

/// The tile of least estimated cost on a rows × cols output: the padded work, weighted by
/// how much memory traffic a tile needs per product (`1 + 16 / intensity`, intensity =
/// BM·BN/(BM+BN): 1.5 for 64×64, 1.63 for 128×32, 2.06 for 256×16). A thin tile wins only
/// where the square one would pad a narrow side (Co = 16 or 32) by much more.
pub fn pick_tile(rows: usize, cols: usize) -> (u32, u32, u32) {
    let cost = |&(bm, bn, _): &(u32, u32, u32)| tile_cost(rows, cols, bm, bn);
    *TILES
        .iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("non-empty")
}

fn tile_cost(rows: usize, cols: usize, bm: u32, bn: u32) -> f64 {
    let (bm, bn) = (bm as usize, bn as usize);
    let padded = (rows.div_ceil(bm) * bm) as f64 * (cols.div_ceil(bn) * bn) as f64;
    padded * (1.0 + 16.0 * (bm + bn) as f64 / (bm * bn) as f64)
}

/// Weight-gradient tiles (rows, columns, reduction step per group, groups): the GEMM tiles,
/// plus small tiles for small outputs whose invocations form G groups that share a stage's
/// rows and add their sums at the end (256 / G invocations × 4×4 outputs per group).
pub const WGRAD_TILES: [(u32, u32, u32, u32); 9] = [
    (64, 64, 16, 1),
    (128, 32, 16, 1),
    (32, 128, 16, 1),
    (256, 16, 8, 1),
    (16, 256, 8, 1),
    (32, 32, 8, 4),
    (16, 32, 4, 8),
    (32, 16, 4, 8),
    (16, 16, 4, 16),
];

/// The weight-gradient tile of least estimated cost (the same model as [`pick_tile`]).
pub fn pick_wgrad_tile(rows: usize, cols: usize) -> (u32, u32, u32, u32) {
    let cost = |&(bm, bn, _, _): &(u32, u32, u32, u32)| tile_cost(rows, cols, bm, bn);
    *WGRAD_TILES
        .iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("non-empty")
}

/// Workgroups the weight gradient aims for (chunks × tiles), enough for a large GPU.
const WGRAD_TARGET_GROUPS: usize = 1024;
/// A weight-gradient chunk covers at least this many rows (N·voxels).
const WGRAD_MIN_CHUNK: usize = 1024;
/// At most this many partial floats (chunks × Co × Ci·k³).
const WGRAD_MAX_PARTIAL: usize = 1 << 26;

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

fn grid(gpu: &Gpu, op: &str, total: u64) -> Result<[u32; 3]> {
    let mut maxd = gpu.limits.max_compute_workgroups_per_dimension;
    if let Some(c) = GRID_CAP.with(|c| c.get()) {
        maxd = maxd.min(c);
    }
    fold_grid(total, maxd)
        .ok_or_else(|| Error::op(op, format!("{total} workgroups exceed the adapter's grid")))
}

fn tile_consts(t: (u32, u32, u32)) -> [(&'static str, f64); 3] {
    [("BM", t.0 as f64), ("BN", t.1 as f64), ("BK", t.2 as f64)]
}

fn wgrad_consts(t: (u32, u32, u32, u32)) -> [(&'static str, f64); 4] {
    [
        ("BM", t.0 as f64),
        ("BN", t.1 as f64),
        ("BK", t.2 as f64),
        ("G", t.3 as f64),
    ]
}

/// One convolution's geometry on three spatial axes: x [n, ci, x], w [co, ci, k], y [n, co, o].
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: usize,
    ci: usize,
    co: usize,
    x: [usize; 3],
    k: [usize; 3],
    s: [usize; 3],
    p: [usize; 3],
    o: [usize; 3],
}

fn vol(v: [usize; 3]) -> usize {
    v[0] * v[1] * v[2]
}

impl Geom {
    #[allow(clippy::too_many_arguments)]
    fn new(
        op: &str,
        what: &str,
        n: usize,
        ci: usize,
        co: usize,
        x: [usize; 3],
        k: [usize; 3],
        s: [usize; 3],
        p: [usize; 3],
    ) -> Result<Geom> {
        if s.contains(&0) {
            return Err(Error::op(op, format!("{what}: stride must be at least 1")));
        }
        if (0..3).any(|a| k[a] == 0 || x[a] + 2 * p[a] < k[a]) {
            return Err(Error::op(
                op,
                format!("{what}: kernel {k:?} larger than the input {x:?} padded by {p:?}"),
            ));
        }
        let o = [0, 1, 2].map(|a| (x[a] + 2 * p[a] - k[a]) / s[a] + 1);
        let g = Geom {
            n,
            ci,
            co,
            x,
            k,
            s,
            p,
            o,
        };
        // Signed source offsets in the kernels are i32.
        for (name, len) in [
            ("input", g.xlen()),
            ("output", g.ylen()),
            ("weight", g.wlen()),
        ] {
            if len > i32::MAX as usize {
                return Err(Error::op(
                    op,
                    format!("{what}: {name} of {len} elements exceeds 2^31"),
                ));
            }
        }
        Ok(g)
    }
    fn kv(&self) -> usize {
        vol(self.k)
    }
    fn xlen(&self) -> usize {
        self.n * self.ci * vol(self.x)
    }
    fn ylen(&self) -> usize {
        self.n * self.co * vol(self.o)
    }
    fn wlen(&self) -> usize {
        self.co * self.ci * self.kv()
    }
}

/// Geometry of a 3D (`d2` false: x [N, Ci, X, Y, Z], w [Co, Ci, kx, ky, kz]) or 2D (x [N, Ci,
/// H, W], w [Co, Ci, kh, kw], lifted to a unit leading axis) convolution.
fn conv_geom(
    op: &str,
    x_shape: &[usize],
    w_shape: &[usize],
    stride: usize,
    pad: usize,
    d2: bool,
) -> Result<Geom> {
    let rank = if d2 { 4 } else { 5 };
    let what = format!("x {x_shape:?}, w {w_shape:?}, stride {stride}, padding {pad}");
    if x_shape.len() != rank || w_shape.len() != rank {
        return Err(Error::op(
            op,
            format!("{what}: expected rank-{rank} input and weight"),
        ));
    }
    if x_shape[1] != w_shape[1] {
        return Err(Error::op(
            op,
            format!(
                "{what}: input has {} channels, weight expects {}",
                x_shape[1], w_shape[1]
            ),
        ));
    }
    if numel(x_shape) == 0 || numel(w_shape) == 0 {
        return Err(Error::op(op, format!("{what}: empty input or weight")));
    }
    let (x, k, s, p) = if d2 {
        (
            [1, x_shape[2], x_shape[3]],
            [1, w_shape[2], w_shape[3]],
            [1, stride, stride],
            [0, pad, pad],
        )
    } else {
        (
            [x_shape[2], x_shape[3], x_shape[4]],
            [w_shape[2], w_shape[3], w_shape[4]],
            [stride; 3],
            [pad; 3],
        )
    };
    Geom::new(op, &what, x_shape[0], x_shape[1], w_shape[0], x, k, s, p)
}

/// The output shape in the caller's rank.
fn y_shape(g: &Geom, d2: bool) -> Vec<usize> {
    if d2 {
        vec![g.n, g.co, g.o[1], g.o[2]]
    } else {
        vec![g.n, g.co, g.o[0], g.o[1], g.o[2]]
    }
}

fn f32_check(op: &str, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        t.expect_dtype(op, DType::F32)?;
    }
    Ok(())
}

fn u(op: &str, v: usize) -> Result<u32> {
    u32_of(op, v)
}

// ------------------------------------------------------------------ raw kernels (off tape)

/// Forward: y [N, Co, O] = x ⋆ w (+ b), written into a fresh tensor of `out_shape`.
fn fwd_raw(
    op: &str,
    g: &Geom,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    gemm_run(op, fwd_params(op, g)?, x, w, b, out_shape)
}

/// The `conv_gemm` geometry of the forward convolution `g`.
fn fwd_params(op: &str, g: &Geom) -> Result<ConvParams> {
    let (m, n, k) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    Ok(ConvParams {
        m: u(op, m)?,
        n: u(op, n)?,
        k: u(op, k)?,
        has_bias: 0, // set by gemm_run
        sc: u(op, g.ci)?,
        sx: u(op, g.x[0])?,
        sy: u(op, g.x[1])?,
        sz: u(op, g.x[2])?,
        sv: u(op, vol(g.x))?,
        mx: u(op, g.o[0])?,
        my: u(op, g.o[1])?,
        mz: u(op, g.o[2])?,
        mv: u(op, vol(g.o))?,
        kx: u(op, g.k[0])?,
        ky: u(op, g.k[1])?,
        kz: u(op, g.k[2])?,
        kv: u(op, g.kv())?,
        stx: u(op, g.s[0])?,
        sty: u(op, g.s[1])?,
        stz: u(op, g.s[2])?,
        pdx: g.p[0] as i32,
        pdy: g.p[1] as i32,
        pdz: g.p[2] as i32,
        flip: 0,
        wc: u(op, g.kv())?,
        wstride: u(op, k)?,
        ..Default::default()
    })
}

/// GEMMs with at most this many columns use `conv_gemm_narrow` (no A staging, 4 rows per
/// invocation, `NARROW_ROWS` rows per workgroup).
pub const NARROW_N: usize = 4;
const NARROW_ROWS: usize = 1024;

/// Workgroups below which a `conv_gemm` splits its reduction (two per SM of a 132-SM GPU).
const GEMM_TARGET_GROUPS: usize = 264;
/// A reduction split covers at least this many K stages.
const GEMM_MIN_SPLIT_STEPS: usize = 32;

/// Number of reduction splits and K per split of a GEMM with `tiles` output tiles and
/// reduction step `bk` (shape-determined: the same on every adapter).
pub fn gemm_splits(tiles: usize, k: usize, bk: usize) -> (usize, usize) {
    if tiles >= GEMM_TARGET_GROUPS {
        return (1, k);
    }
    split_reduction(k, gemm_split_request(tiles, k, bk), bk)
}

/// The number of splits [`gemm_splits`] aims for before rounding to whole stages.
fn gemm_split_request(tiles: usize, k: usize, bk: usize) -> usize {
    if tiles >= GEMM_TARGET_GROUPS {
        return 1;
    }
    GEMM_TARGET_GROUPS
        .div_ceil(tiles)
        .min(k / (bk * GEMM_MIN_SPLIT_STEPS))
        .max(1)
}

/// A reduction of `len` split into about `s` ranges whose length is a multiple of `step`:
/// (ranges, length of each).
fn split_reduction(len: usize, s: usize, step: usize) -> (usize, usize) {
    let chunk = len.div_ceil(s.max(1)).div_ceil(step) * step;
    (len.div_ceil(chunk), chunk)
}

/// How [`gemm_launch`] runs a `conv_gemm`: the tile, the number of reduction splits and the
/// reduction length of each.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GemmPlan {
    tile: (u32, u32, u32),
    splits: usize,
    chunk: usize,
}

/// The shape heuristic's plan (what runs without tuning) and the splits it requested.
fn gemm_heuristic(m: usize, n: usize, k: usize) -> (GemmPlan, usize) {
    let tile = pick_tile(m, n);
    let tiles = m.div_ceil(tile.0 as usize) * n.div_ceil(tile.1 as usize);
    let (splits, chunk) = gemm_splits(tiles, k, tile.2 as usize);
    (
        GemmPlan {
            tile,
            splits,
            chunk,
        },
        gemm_split_request(tiles, k, tile.2 as usize),
    )
}

/// At most this many floats of split partials in a tuning candidate.
const TUNE_MAX_PARTIAL: usize = 1 << 26;

/// Adds `plan` named `choice` to a candidate list unless the list already has that plan or
/// that name (so that a name always means the plan that was timed under it).
fn push_candidate<P: PartialEq>(out: &mut Vec<(P, TileChoice)>, plan: P, choice: TileChoice) {
    if !out.iter().any(|(p, c)| *p == plan || *c == choice) {
        out.push((plan, choice));
    }
}

/// Tuning candidates of a `conv_gemm` (the heuristic's plan first): every tile, each with
/// the heuristic's number of splits for that tile, its half and its double, and no split;
/// every split keeps at least one reduction stage, every grid fits the adapter (`fits`, on
/// the number of workgroups). With the [`TileChoice`] that names each.
fn gemm_candidates(
    m: usize,
    n: usize,
    k: usize,
    fits: impl Fn(usize) -> bool,
) -> Vec<(GemmPlan, TileChoice)> {
    let mut out = vec![];
    let name = |(bm, bn, bk): (u32, u32, u32), s: usize| TileChoice {
        bm,
        bn,
        bk,
        g: 1,
        splits: s as u32,
    };
    let (heur, hs) = gemm_heuristic(m, n, k);
    push_candidate(&mut out, heur, name(heur.tile, hs));
    for tile in TILES {
        let bk = tile.2 as usize;
        let tiles = m.div_ceil(tile.0 as usize) * n.div_ceil(tile.1 as usize);
        let h = gemm_split_request(tiles, k, bk);
        push_split_variants(
            &mut out,
            &[h, 1, h / 2, 2 * h],
            k,
            bk,
            m * n,
            TUNE_MAX_PARTIAL,
            tiles,
            &fits,
            |splits, chunk| GemmPlan {
                tile,
                splits,
                chunk,
            },
            |s| name(tile, s),
        );
    }
    out
}

/// The split variants of one tile for a tuning candidate list: each requested split count
/// `s` of `variants` that is positive, keeps at least one stage of `step` per part of the
/// reduction of `len`, keeps split partials (`s` × `outputs` floats) under `max_partial`,
/// and whose grid (`tiles` × `s` workgroups) `fits`, as `make(parts, chunk)` named `name(s)`.
#[allow(clippy::too_many_arguments)]
fn push_split_variants<P: PartialEq>(
    out: &mut Vec<(P, TileChoice)>,
    variants: &[usize],
    len: usize,
    step: usize,
    outputs: usize,
    max_partial: usize,
    tiles: usize,
    fits: &impl Fn(usize) -> bool,
    make: impl Fn(usize, usize) -> P,
    name: impl Fn(usize) -> TileChoice,
) {
    for &s in variants {
        if s == 0
            || s > (len / step).max(1)
            || (s > 1 && s * outputs > max_partial)
            || !fits(tiles * s)
        {
            continue;
        }
        let (parts, chunk) = split_reduction(len, s, step);
        push_candidate(out, make(parts, chunk), name(s));
    }
}

/// The plan a cached choice names, when it is one of this shape's candidates.
fn from_choice<P: Copy>(cands: &[(P, TileChoice)], c: TileChoice) -> Option<P> {
    cands.iter().find(|(_, t)| *t == c).map(|(p, _)| *p)
}

/// With tuning on: the cached plan of `key`, else each candidate timed on the real operands
/// by `run` (outputs discarded) and the fastest cached. The heuristic's plan (the first
/// candidate) when tuning is off or the GPU cannot time.
fn tuned_plan<P: Copy>(
    gpu: &Gpu,
    key: String,
    cands: &[(P, TileChoice)],
    run: impl FnMut(P) -> Result<()>,
) -> Result<P> {
    if let Some(p) = gpu.tuned(&key).and_then(|c| from_choice(cands, c)) {
        return Ok(p);
    }
    let plans: Vec<P> = cands.iter().map(|c| c.0).collect();
    match gpu.time_candidates(&plans, run)? {
        Some(i) => {
            gpu.store_tuned(key, cands[i].1);
            Ok(plans[i])
        }
        None => Ok(plans[0]),
    }
}

/// The tuning cache key of a `conv_gemm`: the kernel and the whole geometry.
fn gemm_key(p: &ConvParams) -> String {
    format!(
        "conv_gemm m{} n{} k{} src{}x{}x{}x{} grid{}x{}x{} ker{}x{}x{} st{}x{}x{} pad{}x{}x{} flip{} w{}/{} bias{}",
        p.m, p.n, p.k, p.sc, p.sx, p.sy, p.sz, p.mx, p.my, p.mz, p.kx, p.ky, p.kz,
        p.stx, p.sty, p.stz, p.pdx, p.pdy, p.pdz, p.flip, p.wc, p.wstride, p.has_bias
    )
}

/// Runs `conv_gemm` with the geometry `p` (tiles and splits filled in here): a fresh tensor
/// of `out_shape` (M·N elements). Few output tiles and a long reduction: the reduction is
/// split, the split partials [S, M·N] (the bias added by split 0) summed in a fixed order.
/// At most [`NARROW_N`] columns: the narrow kernel.
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
    let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
    if n <= NARROW_N {
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
    if let Some(shader) = mma_shader(&gpu) {
        return gemm_mma(op, shader, p, src, w, b, out_shape);
    }
    let k = p.k as usize;
    let plan = if gpu.tuning_enabled() {
        p.has_bias = b.is_some() as u32;
        let cands = gemm_candidates(m, n, k, |t| grid(&gpu, op, t as u64).is_ok());
        tuned_plan(&gpu, gemm_key(&p), &cands, |plan| {
            gemm_launch(op, p, plan, src, w, b, out_shape).map(drop)
        })?
    } else {
        gemm_heuristic(m, n, k).0
    };
    gemm_launch(op, p, plan, src, w, b, out_shape)
}

/// One `conv_gemm` (and the sum of its split partials) with the plan `plan`.
fn gemm_launch(
    op: &str,
    mut p: ConvParams,
    plan: GemmPlan,
    src: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = src.gpu().clone();
    let (m, n) = (p.m as usize, p.n as usize);
    let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
    let GemmPlan {
        tile,
        splits,
        chunk,
    } = plan;
    let tiles_n = n.div_ceil(tile.1 as usize);
    let tiles = m.div_ceil(tile.0 as usize) * tiles_n;
    let total = tiles * splits;
    p.has_bias = b.is_some() as u32;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_total = u(op, total)?;
    p.chunk = u(op, chunk)?;
    p.nchunks = u(op, splits)?;
    u(op, splits * m * n)?;
    let groups = grid(&gpu, op, total as u64)?;
    with_partials(&gpu, op, splits, m * n, out_shape, |out| {
        gpu.dispatch_with(
            Shader::Conv,
            "conv_gemm",
            &tile_consts(tile),
            &p,
            &[src.buffer(), w.buffer(), bias, out.buffer()],
            groups,
        )
    })
}

/// Runs a GEMM whose `parts` reduction parts each write `len` outputs: straight into a fresh
/// tensor of `shape` when there is one part, else into partials [parts, len] that are then
/// summed in a fixed order (deterministic, no atomics).
fn with_partials(
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
    super::reduce::sum_axes(&part, &[0])?.reshape(shape)
}

// ------------------------------------------------------------------ matrix units (f16)

/// A matrix-unit tile: subgroups along the rows and along the columns (8 in all), 16×16
/// accumulators per subgroup along the rows and along the columns (1 or 2 each).
pub type MmaTile = (u32, u32, u32, u32);

/// Tiles of `conv_mma` (forward / input gradient; columns = output channels): 256×16,
/// 256×32, 128×64 and 64×128 outputs per 256-invocation workgroup.
pub const MMA_TILES: &[MmaTile] = &[(8, 1, 2, 1), (8, 1, 2, 2), (4, 2, 2, 2), (2, 4, 2, 2)];
/// Tiles of `wgrad_mma` (rows = output channels, columns = Ci·k³): 16×256, 32×128, 64×128,
/// 128×64, 256×32.
pub const WGRAD_MMA_TILES: &[MmaTile] = &[
    (1, 8, 1, 2),
    (2, 4, 1, 2),
    (2, 4, 2, 2),
    (4, 2, 2, 2),
    (8, 1, 2, 2),
];
/// Reduction step of the matrix-unit kernels.
const MMA_K: usize = 32;

/// The `conv_mma` tile for `n` GEMM columns: the narrowest that covers them (VNet's Co = 16
/// and 32 layers get tall tiles), 64×128 beyond 64 columns.
pub fn pick_mma_tile(n: usize) -> MmaTile {
    match n {
        0..=16 => MMA_TILES[0],
        17..=32 => MMA_TILES[1],
        33..=64 => MMA_TILES[2],
        _ => MMA_TILES[3],
    }
}

/// The `wgrad_mma` tile of least estimated cost on rows × cols (the model of [`pick_tile`]:
/// padded work weighted by the operand traffic per product; the first on ties).
pub fn pick_wgrad_mma_tile(rows: usize, cols: usize) -> MmaTile {
    let cost = |t: &MmaTile| {
        let (bm, bn) = mma_tile_dims(*t);
        tile_cost(rows, cols, bm as u32, bn as u32)
    };
    *WGRAD_MMA_TILES
        .iter()
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .expect("non-empty")
}

/// Rows and columns of a matrix-unit tile.
pub fn mma_tile_dims(t: MmaTile) -> (usize, usize) {
    (16 * (t.0 * t.2) as usize, 16 * (t.1 * t.3) as usize)
}

fn mma_consts(t: MmaTile) -> [(&'static str, f64); 4] {
    [
        ("SGM", t.0 as f64),
        ("SGN", t.1 as f64),
        ("TM", t.2 as f64),
        ("TN", t.3 as f64),
    ]
}

/// The matrix-unit module the convolution GEMMs use on this adapter, if any. The first call
/// compares the path with the f32 GEMM on a small problem ([`check_mma`]); a failure (a
/// driver that rejects the module, or results that disagree) prints one line and leaves the
/// f32 path in charge for the rest of the process.
fn mma_shader(gpu: &Arc<Gpu>) -> Option<Shader> {
    let shader = match gpu.matrix_units() {
        MatrixUnits::Off => return None,
        MatrixUnits::Coop => Shader::ConvMma,
        MatrixUnits::Emulated => Shader::ConvMmaEmulated,
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
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let plan = gemm_heuristic(m, n, k).0;
    let want = gemm_launch(op, p, plan, &x, &w, Some(&b), &ys)?.to_f32()?;
    let plan = gemm_mma_heuristic(m, n, k).0;
    let got = gemm_mma_launch(op, shader, p, plan, &x, &w, Some(&b), &ys)?.to_f32()?;
    mma_agrees("forward", &got, &want)?;
    let gy = Tensor::from_f32(gpu, &rand(4, numel(&ys)), &ys)?;
    let pw = wgrad_params(op, &g)?;
    let (r, rows, cols) = (pw.m as usize, pw.rows as usize, pw.n as usize);
    let want = wgrad_launch(op, pw, wgrad_heuristic(r, rows, cols).0, &gy, &x, &ws)?;
    let plan = wgrad_mma_heuristic(r, rows, cols).0;
    let got = wgrad_mma_launch(op, shader, pw, plan, &gy, &x, &ws)?;
    mma_agrees("weight gradient", &got.to_f32()?, &want.to_f32()?)
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
fn mma_scales(op: &str, shader: Shader, a: &Tensor, b: &Tensor) -> Result<Tensor> {
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

/// How a matrix-unit kernel runs: the tile, the number of reduction parts (split-K or
/// weight-gradient chunks) and the length of each.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MmaPlan {
    tile: MmaTile,
    parts: usize,
    chunk: usize,
}

/// The name a tuned matrix-unit plan is cached under (tile rows and columns, K step 32).
fn mma_choice(t: MmaTile, parts: usize) -> TileChoice {
    let (bm, bn) = mma_tile_dims(t);
    TileChoice {
        bm: bm as u32,
        bn: bn as u32,
        bk: MMA_K as u32,
        g: 1,
        splits: parts as u32,
    }
}

/// The shape heuristic's `conv_mma` plan and the splits it requested.
fn gemm_mma_heuristic(m: usize, n: usize, k: usize) -> (MmaPlan, usize) {
    let tile = pick_mma_tile(n);
    let (tbm, tbn) = mma_tile_dims(tile);
    let tiles = m.div_ceil(tbm) * n.div_ceil(tbn);
    let (parts, chunk) = gemm_splits(tiles, k, MMA_K);
    let plan = MmaPlan { tile, parts, chunk };
    (plan, gemm_split_request(tiles, k, MMA_K))
}

/// Tuning candidates of a `conv_mma` (the heuristic's first): every tile with the heuristic's
/// splits for it, their half and double, and no split (the rules of [`gemm_candidates`]).
fn gemm_mma_candidates(
    m: usize,
    n: usize,
    k: usize,
    fits: impl Fn(usize) -> bool,
) -> Vec<(MmaPlan, TileChoice)> {
    let mut out = vec![];
    let (heur, hs) = gemm_mma_heuristic(m, n, k);
    push_candidate(&mut out, heur, mma_choice(heur.tile, hs));
    for &tile in MMA_TILES {
        let (tbm, tbn) = mma_tile_dims(tile);
        let tiles = m.div_ceil(tbm) * n.div_ceil(tbn);
        let h = gemm_split_request(tiles, k, MMA_K);
        push_split_variants(
            &mut out,
            &[h, 1, h / 2, 2 * h],
            k,
            MMA_K,
            m * n,
            TUNE_MAX_PARTIAL,
            tiles,
            &fits,
            |parts, chunk| MmaPlan { tile, parts, chunk },
            |s| mma_choice(tile, s),
        );
    }
    out
}

/// The tuning-cache name of a matrix-unit back-end's kernel.
fn mma_kernel_name(shader: Shader, kernel: &str) -> String {
    match shader {
        Shader::ConvMmaEmulated => format!("{kernel}_emulated"),
        _ => kernel.to_string(),
    }
}

/// The f32 `conv_gemm` of [`gemm_run`] on f16 tiles through the matrix-unit module `shader` (f32 accumulation,
/// power-of-two operand scaling, the same split-K and output layout).
fn gemm_mma(
    op: &str,
    shader: Shader,
    mut p: ConvParams,
    src: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = src.gpu().clone();
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let plan = if gpu.tuning_enabled() {
        p.has_bias = b.is_some() as u32;
        let cands = gemm_mma_candidates(m, n, k, |t| grid(&gpu, op, t as u64).is_ok());
        let key = gemm_key(&p).replacen("conv_gemm", &mma_kernel_name(shader, "conv_mma"), 1);
        tuned_plan(&gpu, key, &cands, |plan| {
            gemm_mma_launch(op, shader, p, plan, src, w, b, out_shape).map(drop)
        })?
    } else {
        gemm_mma_heuristic(m, n, k).0
    };
    gemm_mma_launch(op, shader, p, plan, src, w, b, out_shape)
}

/// One `conv_mma` (operand scales, the product, the sum of its split partials) with `plan`.
#[allow(clippy::too_many_arguments)]
fn gemm_mma_launch(
    op: &str,
    shader: Shader,
    mut p: ConvParams,
    plan: MmaPlan,
    src: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = src.gpu().clone();
    let (m, n) = (p.m as usize, p.n as usize);
    let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
    let MmaPlan {
        tile,
        parts: splits,
        chunk,
    } = plan;
    let (tbm, tbn) = mma_tile_dims(tile);
    let tiles_n = n.div_ceil(tbn);
    let tiles = m.div_ceil(tbm) * tiles_n;
    let total = tiles * splits;
    p.has_bias = b.is_some() as u32;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_total = u(op, total)?;
    p.chunk = u(op, chunk)?;
    p.nchunks = u(op, splits)?;
    u(op, splits * m * n)?;
    let scales = mma_scales(op, shader, src, w)?;
    let groups = grid(&gpu, op, total as u64)?;
    with_partials(&gpu, op, splits, m * n, out_shape, |out| {
        gpu.dispatch_with(
            shader,
            "conv_mma",
            &mma_consts(tile),
            &p,
            &[
                src.buffer(),
                w.buffer(),
                bias,
                out.buffer(),
                scales.buffer(),
            ],
            groups,
        )
    })
}

/// Input gradient gx [N, Ci, X] (shape `x_shape`) of the convolution `g` from its output
/// gradient gy [N, Co, O] and weight w [Co, Ci, k].
fn bwd_input_raw(op: &str, g: &Geom, gy: &Tensor, w: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    if g.s == [1, 1, 1] {
        // A stride-1 convolution of gy with the flipped kernel: rows = input voxels, columns
        // = Ci, reduction = Co·k³; input voxel i reads gy at i + p - d.
        let (m, n, k) = (g.n * vol(g.x), g.ci, g.co * g.kv());
        let p = ConvParams {
            m: u(op, m)?,
            n: u(op, n)?,
            k: u(op, k)?,
            has_bias: 0,
            sc: u(op, g.co)?,
            sx: u(op, g.o[0])?,
            sy: u(op, g.o[1])?,
            sz: u(op, g.o[2])?,
            sv: u(op, vol(g.o))?,
            mx: u(op, g.x[0])?,
            my: u(op, g.x[1])?,
            mz: u(op, g.x[2])?,
            mv: u(op, vol(g.x))?,
            kx: u(op, g.k[0])?,
            ky: u(op, g.k[1])?,
            kz: u(op, g.k[2])?,
            kv: u(op, g.kv())?,
            stx: 1,
            sty: 1,
            stz: 1,
            pdx: -(g.p[0] as i32),
            pdy: -(g.p[1] as i32),
            pdz: -(g.p[2] as i32),
            flip: 1,
            wc: u(op, g.ci * g.kv())?,
            wstride: u(op, g.kv())?,
            ..Default::default()
        };
        return gemm_run(op, p, gy, w, None, x_shape);
    }
    if g.k == g.s && g.p == [0, 0, 0] && (0..3).all(|a| g.x[a] == g.o[a] * g.s[a]) {
        // Kernel == stride: every input voxel gets exactly one kernel offset; w [Co, Ci, k]
        // is the transposed conv's [in, out, k] weight.
        return ct_raw(op, gy, g.n, g.co, g.o, g.ci, g.k, w, None, x_shape);
    }
    // Other strided convolutions: a direct gather.
    let out = Tensor::empty(&gpu, x_shape, DType::F32, op)?;
    let len = g.xlen();
    let p = ConvParams {
        m: u(op, len)?,
        n: u(op, g.ci)?,
        sc: u(op, g.co)?,
        sx: u(op, g.o[0])?,
        sy: u(op, g.o[1])?,
        sz: u(op, g.o[2])?,
        sv: u(op, vol(g.o))?,
        mx: u(op, g.x[0])?,
        my: u(op, g.x[1])?,
        mz: u(op, g.x[2])?,
        mv: u(op, vol(g.x))?,
        kx: u(op, g.k[0])?,
        ky: u(op, g.k[1])?,
        kz: u(op, g.k[2])?,
        kv: u(op, g.kv())?,
        stx: u(op, g.s[0])?,
        sty: u(op, g.s[1])?,
        stz: u(op, g.s[2])?,
        pdx: g.p[0] as i32,
        pdy: g.p[1] as i32,
        pdz: g.p[2] as i32,
        ..Default::default()
    };
    let groups = grid(&gpu, op, len.div_ceil(256) as u64)?;
    gpu.dispatch(
        Shader::Conv,
        "conv_bwd_input_direct",
        &p,
        &[gy.buffer(), w.buffer(), out.buffer()],
        groups,
    )?;
    Ok(out)
}

/// Number of chunks and rows per chunk of a weight gradient's reduction over `r` rows with
/// `tiles` output tiles of `outputs` elements in all and `stage` rows per stage
/// (shape-determined).
pub fn wgrad_chunks(r: usize, tiles: usize, outputs: usize, stage: usize) -> (usize, usize) {
    split_reduction(r, wgrad_chunk_request(r, tiles, outputs), stage)
}

/// The number of chunks [`wgrad_chunks`] aims for before rounding to whole stages.
fn wgrad_chunk_request(r: usize, tiles: usize, outputs: usize) -> usize {
    let mut s = WGRAD_TARGET_GROUPS.div_ceil(tiles.max(1));
    s = s.min((r / WGRAD_MIN_CHUNK).max(1));
    s.min((WGRAD_MAX_PARTIAL / outputs.max(1)).max(1))
}

/// How [`wgrad_launch`] runs a `conv_wgrad`: the tile (with its groups), the number of
/// reduction chunks and the rows of each.
#[derive(Clone, Copy, Debug, PartialEq)]
struct WgradPlan {
    tile: (u32, u32, u32, u32),
    nchunks: usize,
    chunk: usize,
}

/// The shape heuristic's plan of a weight gradient with reduction `r`, output rows × cols,
/// and the chunk count it requested.
fn wgrad_heuristic(r: usize, rows: usize, cols: usize) -> (WgradPlan, usize) {
    let tile = pick_wgrad_tile(rows, cols);
    let tiles = rows.div_ceil(tile.0 as usize) * cols.div_ceil(tile.1 as usize);
    let stage = (tile.2 * tile.3) as usize;
    let s = wgrad_chunk_request(r, tiles, rows * cols);
    let (nchunks, chunk) = wgrad_chunks(r, tiles, rows * cols, stage);
    (
        WgradPlan {
            tile,
            nchunks,
            chunk,
        },
        s,
    )
}

/// Tuning candidates of a `conv_wgrad` (the heuristic's plan first): every tile, each with
/// the heuristic's chunk count for that tile, its half and its double (each chunk at least one
/// stage, the partials within [`WGRAD_MAX_PARTIAL`], the grid fitting the adapter: `fits`).
fn wgrad_candidates(
    r: usize,
    rows: usize,
    cols: usize,
    fits: impl Fn(usize) -> bool,
) -> Vec<(WgradPlan, TileChoice)> {
    let mut out = vec![];
    let name = |(bm, bn, bk, g): (u32, u32, u32, u32), s: usize| TileChoice {
        bm,
        bn,
        bk,
        g,
        splits: s as u32,
    };
    let (heur, hs) = wgrad_heuristic(r, rows, cols);
    push_candidate(&mut out, heur, name(heur.tile, hs));
    let outputs = rows * cols;
    for tile in WGRAD_TILES {
        let stage = (tile.2 * tile.3) as usize;
        let tiles = rows.div_ceil(tile.0 as usize) * cols.div_ceil(tile.1 as usize);
        let h = wgrad_chunk_request(r, tiles, outputs);
        push_split_variants(
            &mut out,
            &[h, h / 2, 2 * h],
            r,
            stage,
            outputs,
            WGRAD_MAX_PARTIAL,
            tiles,
            &fits,
            |nchunks, chunk| WgradPlan {
                tile,
                nchunks,
                chunk,
            },
            |s| name(tile, s),
        );
    }
    out
}

/// Weight gradient gw [Co, Ci, k] (shape `w_shape`) of the convolution `g` from its output
/// gradient gy [N, Co, O] and input x [N, Ci, X].
fn bwd_weight_raw(
    op: &str,
    g: &Geom,
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    if let Some(shader) = mma_shader(&gpu) {
        return wgrad_mma(op, shader, g, gy, x, w_shape);
    }
    wgrad_f32(op, g, gy, x, w_shape)
}

/// The tuning cache key of a weight-gradient kernel: its name and the whole geometry.
fn wgrad_key(kernel: &str, p: &ConvParams) -> String {
    format!(
        "{kernel} r{} rows{} cols{} src{}x{}x{}x{} grid{}x{}x{} ker{}x{}x{} st{}x{}x{} pad{}x{}x{}",
        p.m,
        p.rows,
        p.n,
        p.sc,
        p.sx,
        p.sy,
        p.sz,
        p.mx,
        p.my,
        p.mz,
        p.kx,
        p.ky,
        p.kz,
        p.stx,
        p.sty,
        p.stz,
        p.pdx,
        p.pdy,
        p.pdz
    )
}

/// The geometry of a weight-gradient GEMM (tiles and chunks filled in by the caller).
fn wgrad_params(op: &str, g: &Geom) -> Result<ConvParams> {
    let (r, rows, cols) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    Ok(ConvParams {
        m: u(op, r)?,
        n: u(op, cols)?,
        k: u(op, cols)?,
        sc: u(op, g.ci)?,
        sx: u(op, g.x[0])?,
        sy: u(op, g.x[1])?,
        sz: u(op, g.x[2])?,
        sv: u(op, vol(g.x))?,
        mx: u(op, g.o[0])?,
        my: u(op, g.o[1])?,
        mz: u(op, g.o[2])?,
        mv: u(op, vol(g.o))?,
        kx: u(op, g.k[0])?,
        ky: u(op, g.k[1])?,
        kz: u(op, g.k[2])?,
        kv: u(op, g.kv())?,
        stx: u(op, g.s[0])?,
        sty: u(op, g.s[1])?,
        stz: u(op, g.s[2])?,
        pdx: g.p[0] as i32,
        pdy: g.p[1] as i32,
        pdz: g.p[2] as i32,
        rows: u(op, rows)?,
        ..Default::default()
    })
}

/// [`wgrad_f32`] on f16 tiles through the matrix-unit module `shader`: the same chunked,
/// fixed-order reduction.
fn wgrad_mma(
    op: &str,
    shader: Shader,
    g: &Geom,
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    let (r, rows, cols) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    let p = wgrad_params(op, g)?;
    let plan = if gpu.tuning_enabled() {
        let cands = wgrad_mma_candidates(r, rows, cols, |t| grid(&gpu, op, t as u64).is_ok());
        let key = wgrad_key(&mma_kernel_name(shader, "wgrad_mma"), &p);
        tuned_plan(&gpu, key, &cands, |plan| {
            wgrad_mma_launch(op, shader, p, plan, gy, x, w_shape).map(drop)
        })?
    } else {
        wgrad_mma_heuristic(r, rows, cols).0
    };
    wgrad_mma_launch(op, shader, p, plan, gy, x, w_shape)
}

/// The shape heuristic's `wgrad_mma` plan and the chunks it requested.
fn wgrad_mma_heuristic(r: usize, rows: usize, cols: usize) -> (MmaPlan, usize) {
    let tile = pick_wgrad_mma_tile(rows, cols);
    let (tbm, tbn) = mma_tile_dims(tile);
    let tiles = rows.div_ceil(tbm) * cols.div_ceil(tbn);
    let (parts, chunk) = wgrad_chunks(r, tiles, rows * cols, MMA_K);
    let plan = MmaPlan { tile, parts, chunk };
    (plan, wgrad_chunk_request(r, tiles, rows * cols))
}

/// Tuning candidates of a `wgrad_mma` (the heuristic's first): every tile with the
/// heuristic's chunks for it, their half and double (the rules of [`wgrad_candidates`]).
fn wgrad_mma_candidates(
    r: usize,
    rows: usize,
    cols: usize,
    fits: impl Fn(usize) -> bool,
) -> Vec<(MmaPlan, TileChoice)> {
    let mut out = vec![];
    let (heur, hs) = wgrad_mma_heuristic(r, rows, cols);
    push_candidate(&mut out, heur, mma_choice(heur.tile, hs));
    let outputs = rows * cols;
    for &tile in WGRAD_MMA_TILES {
        let (tbm, tbn) = mma_tile_dims(tile);
        let tiles = rows.div_ceil(tbm) * cols.div_ceil(tbn);
        let h = wgrad_chunk_request(r, tiles, outputs);
        push_split_variants(
            &mut out,
            &[h, h / 2, 2 * h],
            r,
            MMA_K,
            outputs,
            WGRAD_MAX_PARTIAL,
            tiles,
            &fits,
            |parts, chunk| MmaPlan { tile, parts, chunk },
            |s| mma_choice(tile, s),
        );
    }
    out
}

/// One `wgrad_mma` (operand scales, the product, the sum of its chunk partials) with `plan`.
#[allow(clippy::too_many_arguments)]
fn wgrad_mma_launch(
    op: &str,
    shader: Shader,
    mut p: ConvParams,
    plan: MmaPlan,
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    let (rows, cols) = (p.rows as usize, p.n as usize);
    let MmaPlan {
        tile,
        parts: nchunks,
        chunk,
    } = plan;
    let (tbm, tbn) = mma_tile_dims(tile);
    let tiles_r = rows.div_ceil(tbm);
    let tiles_n = cols.div_ceil(tbn);
    let total = tiles_r * tiles_n * nchunks;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_r = u(op, tiles_r)?;
    p.tiles_total = u(op, total)?;
    p.chunk = u(op, chunk)?;
    p.nchunks = u(op, nchunks)?;
    let scales = mma_scales(op, shader, gy, x)?;
    let groups = grid(&gpu, op, total as u64)?;
    with_partials(&gpu, op, nchunks, rows * cols, w_shape, |out| {
        gpu.dispatch_with(
            shader,
            "wgrad_mma",
            &mma_consts(tile),
            &p,
            &[x.buffer(), gy.buffer(), out.buffer(), scales.buffer()],
            groups,
        )
    })
}

/// The f32 `conv_wgrad` of [`bwd_weight_raw`] (its tiles and chunks tuned when tuning is on).
fn wgrad_f32(op: &str, g: &Geom, gy: &Tensor, x: &Tensor, w_shape: &[usize]) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    let (r, rows, cols) = (g.n * vol(g.o), g.co, g.ci * g.kv());
    let p = wgrad_params(op, g)?;
    let plan = if gpu.tuning_enabled() {
        let cands = wgrad_candidates(r, rows, cols, |t| grid(&gpu, op, t as u64).is_ok());
        let key = wgrad_key("conv_wgrad", &p);
        tuned_plan(&gpu, key, &cands, |plan| {
            wgrad_launch(op, p, plan, gy, x, w_shape).map(drop)
        })?
    } else {
        wgrad_heuristic(r, rows, cols).0
    };
    wgrad_launch(op, p, plan, gy, x, w_shape)
}

/// One `conv_wgrad` (and the sum of its chunk partials) with the plan `plan`; `p` holds the
/// geometry, the tiling fields are filled in here.
fn wgrad_launch(
    op: &str,
    mut p: ConvParams,
    plan: WgradPlan,
    gy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
) -> Result<Tensor> {
    let gpu = gy.gpu().clone();
    let (rows, cols) = (p.rows as usize, p.n as usize);
    let WgradPlan {
        tile,
        nchunks,
        chunk,
    } = plan;
    let tiles_r = rows.div_ceil(tile.0 as usize);
    let tiles_n = cols.div_ceil(tile.1 as usize);
    let total = tiles_r * tiles_n * nchunks;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_total = u(op, total)?;
    p.chunk = u(op, chunk)?;
    p.nchunks = u(op, nchunks)?;
    p.tiles_r = u(op, tiles_r)?;
    let groups = grid(&gpu, op, total as u64)?;
    with_partials(&gpu, op, nchunks, rows * cols, w_shape, |out| {
        gpu.dispatch_with(
            Shader::Conv,
            "conv_wgrad",
            &wgrad_consts(tile),
            &p,
            &[x.buffer(), gy.buffer(), out.buffer()],
            groups,
        )
    })
}

/// Transposed-conv GEMM (kernel == stride): x [n, ci, xs] (any tensor with that layout),
/// w [ci, co, k], optional bias [co] → a fresh tensor of `out_shape` = [n, co, k·xs].
#[allow(clippy::too_many_arguments)]
fn ct_raw(
    op: &str,
    x: &Tensor,
    n: usize,
    ci: usize,
    xs: [usize; 3],
    co: usize,
    k: [usize; 3],
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = x.gpu().clone();
    let kv = vol(k);
    let os = [xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]];
    let (m, cols) = (n * vol(xs), co * kv);
    let p = CtParams {
        m: u(op, m)?,
        n: u(op, cols)?,
        k: u(op, ci)?,
        has_bias: b.is_some() as u32,
        xv: u(op, vol(xs))?,
        xx: u(op, xs[0])?,
        xy: u(op, xs[1])?,
        xz: u(op, xs[2])?,
        kx: u(op, k[0])?,
        ky: u(op, k[1])?,
        kz: u(op, k[2])?,
        kv: u(op, kv)?,
        co: u(op, co)?,
        oy: u(op, os[1])?,
        oz: u(op, os[2])?,
        ov: u(op, vol(os))?,
        ..Default::default()
    };
    let tile = if gpu.tuning_enabled() {
        // Candidates: every tile whose grid fits the adapter, the heuristic's first.
        let heur = pick_tile(m, cols);
        let fits = |t: &(u32, u32, u32)| {
            let total = m.div_ceil(t.0 as usize) * cols.div_ceil(t.1 as usize);
            grid(&gpu, op, total as u64).is_ok()
        };
        let cands: Vec<((u32, u32, u32), TileChoice)> = std::iter::once(heur)
            .chain(TILES.into_iter().filter(|t| *t != heur && fits(t)))
            .map(|t| {
                (
                    t,
                    TileChoice {
                        bm: t.0,
                        bn: t.1,
                        bk: t.2,
                        g: 1,
                        splits: 1,
                    },
                )
            })
            .collect();
        let key = format!(
            "ct_gemm m{m} n{cols} k{ci} x{}x{}x{} ker{}x{}x{} co{co} bias{}",
            xs[0], xs[1], xs[2], k[0], k[1], k[2], p.has_bias
        );
        tuned_plan(&gpu, key, &cands, |t| {
            ct_launch(op, p, t, x, w, b, out_shape).map(drop)
        })?
    } else {
        pick_tile(m, cols)
    };
    ct_launch(op, p, tile, x, w, b, out_shape)
}

/// One `ct_gemm` with the tile `tile`; `p` holds the geometry, the tiling is filled in here.
fn ct_launch(
    op: &str,
    mut p: CtParams,
    tile: (u32, u32, u32),
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    out_shape: &[usize],
) -> Result<Tensor> {
    let gpu = x.gpu().clone();
    let (m, cols) = (p.m as usize, p.n as usize);
    let out = Tensor::empty(&gpu, out_shape, DType::F32, op)?;
    let tiles_n = cols.div_ceil(tile.1 as usize);
    let total = m.div_ceil(tile.0 as usize) * tiles_n;
    p.tiles_n = u(op, tiles_n)?;
    p.tiles_total = u(op, total)?;
    let bias = b.map(|t| t.buffer()).unwrap_or(w.buffer());
    let groups = grid(&gpu, op, total as u64)?;
    gpu.dispatch_with(
        Shader::ConvTranspose,
        "ct_gemm",
        &tile_consts(tile),
        &p,
        &[x.buffer(), w.buffer(), bias, out.buffer()],
        groups,
    )?;
    Ok(out)
}

// ------------------------------------------------------------------ convolution (3D and 2D)

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
    if let Some(b) = b {
        b.expect_dtype(op, DType::F32)?;
        if b.shape() != [g.co] {
            return Err(Error::op(
                op,
                format!(
                    "bias {:?} for weight {:?}: expected [{}]",
                    b.shape(),
                    w.shape(),
                    g.co
                ),
            ));
        }
    }
    let out = fwd_raw(op, &g, x, w, b, &y_shape(&g, d2))?;
    let (sx, sw) = (x.detach(), w.detach());
    let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
    let has_b = b.is_some();
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(record(op, out, &inputs, move |gy, need| {
        let mut v = vec![
            if need[0] {
                Some(conv_bwd_input(gy, &sw, &xs, stride, pad, d2)?)
            } else {
                None
            },
            if need[1] {
                Some(conv_bwd_weight(gy, &sx, &ws, stride, pad, d2)?)
            } else {
                None
            },
        ];
        if has_b {
            v.push(if need[2] {
                Some(conv_bwd_bias(gy, d2)?)
            } else {
                None
            });
        }
        Ok(v)
    }))
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
    super::reduce::sum_axes(gy, &axes)
}

/// 3D convolution: x [N, Ci, X, Y, Z], w [Co, Ci, kx, ky, kz] (PyTorch layout), b [Co];
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

/// Weight gradient of [`conv3d`]: shape `w_shape` [Co, Ci, kx, ky, kz]; deterministic.
pub fn conv3d_bwd_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_weight(g, x, w_shape, stride, pad, false)
}

/// Bias gradient of [`conv3d`]: `g` summed over N and the spatial axes, [Co].
pub fn conv3d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    conv_bwd_bias(g, false)
}

/// 2D convolution: x [N, Ci, H, W], w [Co, Ci, kh, kw], b [Co]. On the tape.
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

/// Weight gradient of [`conv2d`]: shape `w_shape` [Co, Ci, kh, kw]; deterministic.
pub fn conv2d_bwd_weight(
    g: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv_bwd_weight(g, x, w_shape, stride, pad, true)
}

/// Bias gradient of [`conv2d`]: [Co].
pub fn conv2d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    conv_bwd_bias(g, true)
}

// ------------------------------------------------------------------ transposed convolution

/// A transposed conv's x [n, ci, xs], w [ci, co, k] (kernel == stride).
struct CtGeom {
    n: usize,
    ci: usize,
    xs: [usize; 3],
    co: usize,
    k: [usize; 3],
}

/// The geometry of a transposed conv, checking kernel == stride.
fn ct_geom(op: &str, x_shape: &[usize], w_shape: &[usize], stride: usize) -> Result<CtGeom> {
    let what = format!("x {x_shape:?}, w {w_shape:?}, stride {stride}");
    if x_shape.len() != 5 || w_shape.len() != 5 {
        return Err(Error::op(
            op,
            format!("{what}: expected rank-5 input and weight [Ci, Co, k, k, k]"),
        ));
    }
    if x_shape[1] != w_shape[0] {
        return Err(Error::op(
            op,
            format!(
                "{what}: input has {} channels, weight expects {}",
                x_shape[1], w_shape[0]
            ),
        ));
    }
    let k = [w_shape[2], w_shape[3], w_shape[4]];
    if k != [stride; 3] {
        return Err(Error::op(op, format!("{what}: kernel {k:?} != stride is not supported (only kernel == stride, e.g. 2x2x2/2)")));
    }
    if numel(x_shape) == 0 || numel(w_shape) == 0 {
        return Err(Error::op(op, format!("{what}: empty input or weight")));
    }
    let xs = [x_shape[2], x_shape[3], x_shape[4]];
    let ylen = x_shape[0] * w_shape[1] * vol(xs) * vol(k);
    if ylen > i32::MAX as usize || numel(x_shape) > i32::MAX as usize {
        return Err(Error::op(op, format!("{what}: tensors over 2^31 elements")));
    }
    Ok(CtGeom {
        n: x_shape[0],
        ci: x_shape[1],
        xs,
        co: w_shape[1],
        k,
    })
}

fn ct_out_shape(n: usize, co: usize, xs: [usize; 3], k: [usize; 3]) -> Vec<usize> {
    vec![n, co, xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]]
}

/// Transposed 3D convolution with kernel == stride (VNet's 2×2×2/2 upsampling): x [N, Ci, X,
/// Y, Z], w [Ci, Co, k, k, k] (PyTorch transposed layout), b [Co] → [N, Co, kX, kY, kZ].
/// Any other kernel/stride pair is an error. On the tape.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    let op = "conv_transpose3d";
    f32_check(op, &[x, w])?;
    let CtGeom { n, ci, xs, co, k } = ct_geom(op, x.shape(), w.shape(), stride)?;
    if let Some(b) = b {
        b.expect_dtype(op, DType::F32)?;
        if b.shape() != [co] {
            return Err(Error::op(
                op,
                format!(
                    "bias {:?} for weight {:?}: expected [{co}]",
                    b.shape(),
                    w.shape()
                ),
            ));
        }
    }
    let out = ct_raw(op, x, n, ci, xs, co, k, w, b, &ct_out_shape(n, co, xs, k))?;
    let (sx, sw) = (x.detach(), w.detach());
    let (xsh, wsh) = (x.shape().to_vec(), w.shape().to_vec());
    let has_b = b.is_some();
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(record(op, out, &inputs, move |gy, need| {
        let mut v = vec![
            if need[0] {
                Some(conv_transpose3d_bwd_input(gy, &sw, &xsh, stride)?)
            } else {
                None
            },
            if need[1] {
                Some(conv_transpose3d_bwd_weight(gy, &sx, &wsh, stride)?)
            } else {
                None
            },
        ];
        if has_b {
            v.push(if need[2] {
                Some(conv_transpose3d_bwd_bias(gy)?)
            } else {
                None
            });
        }
        Ok(v)
    }))
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
    let CtGeom { n, ci, xs, co, k } = ct_geom(op, x_shape, w.shape(), stride)?;
    g.expect_shape(op, &ct_out_shape(n, co, xs, k))?;
    let gs = [xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]];
    let geom = Geom::new(op, "as a strided conv", n, co, ci, gs, k, k, [0; 3])?;
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
    let CtGeom { n, ci, xs, co, k } = ct_geom(op, x.shape(), w_shape, stride)?;
    g.expect_shape(op, &ct_out_shape(n, co, xs, k))?;
    let gs = [xs[0] * k[0], xs[1] * k[1], xs[2] * k[2]];
    let geom = Geom::new(op, "as a strided conv", n, co, ci, gs, k, k, [0; 3])?;
    bwd_weight_raw(op, &geom, x, g, w_shape)
}

/// Bias gradient of [`conv_transpose3d`]: [Co].
pub fn conv_transpose3d_bwd_bias(g: &Tensor) -> Result<Tensor> {
    let op = "conv_transpose3d_bwd_bias";
    g.expect_dtype(op, DType::F32)?;
    if g.shape().len() != 5 {
        return Err(Error::op(
            op,
            format!("expected a rank-5 gradient, got {:?}", g.shape()),
        ));
    }
    super::reduce::sum_axes(g, &[0, 2, 3, 4])
}
