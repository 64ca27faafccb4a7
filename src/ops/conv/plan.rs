//! Tile plans of the convolution GEMMs: the tile shapes of each kernel, the shape heuristic
//! (what runs without tuning: the tile of least estimated cost and a shape-determined
//! reduction split), the tuning candidates and the tuned choice (`gpu::tune`).
//!
//! One [`Plan`] describes every tiled GEMM of the folder: the f32 `conv_gemm` (split-K) and
//! `conv_wgrad` (reduction chunks), and their matrix-unit twins `conv_mma` / `wgrad_mma`.

use super::geometry::ConvParams;
use crate::error::{Error, Result};
use crate::gpu::tune::TileChoice;
use crate::gpu::{Gpu, Shader};

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

/// GEMMs with at most this many columns use `conv_gemm_narrow` (no A staging, 4 rows per
/// invocation, `NARROW_ROWS` rows per workgroup).
pub const NARROW_N: usize = 4;
pub(super) const NARROW_ROWS: usize = 1024;

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

/// At most this many floats of split partials in a tuning candidate.
const TUNE_MAX_PARTIAL: usize = 1 << 26;

/// Adds `plan` named `choice` to a candidate list unless the list already has that plan or
/// that name (so that a name always means the plan that was timed under it).
fn push_candidate<P: PartialEq>(out: &mut Vec<(P, TileChoice)>, plan: P, choice: TileChoice) {
    if !out.iter().any(|(p, c)| *p == plan || *c == choice) {
        out.push((plan, choice));
    }
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
pub(super) fn tuned_plan<P: Copy>(
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
pub(super) const MMA_K: usize = 32;

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

/// Which tiled GEMM a plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// `conv_gemm` / `conv_mma`: out[M, N] = A[M, K] B[K, N] with A gathered from the source
    /// (forward, stride-1 input gradient); a long reduction over few tiles is split (split-K).
    Conv,
    /// `conv_wgrad` / `wgrad_mma`: the weight gradient, rows = Co, columns = Ci·k³, the
    /// N·voxels reduction in chunks written as partials.
    Wgrad,
}

/// Where the products of a GEMM are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unit {
    /// f32 FMAs: the reference path.
    F32,
    /// f16 tiles with f32 accumulation through the matrix-unit module (cooperative matrices,
    /// or their emulation).
    Mma(Shader),
}

impl Unit {
    /// The entry point of `family`'s kernel on this unit.
    pub(super) fn entry(self, family: Family) -> &'static str {
        match (family, self) {
            (Family::Conv, Unit::F32) => "conv_gemm",
            (Family::Conv, Unit::Mma(_)) => "conv_mma",
            (Family::Wgrad, Unit::F32) => "conv_wgrad",
            (Family::Wgrad, Unit::Mma(_)) => "wgrad_mma",
        }
    }

    /// The shader module holding the kernels.
    pub(super) fn shader(self) -> Shader {
        match self {
            Unit::F32 => Shader::Conv,
            Unit::Mma(s) => s,
        }
    }

    /// The kernel's name in the tuning cache (each matrix-unit back-end has its own).
    pub(super) fn tuning_name(self, family: Family) -> String {
        let entry = self.entry(family);
        match self {
            Unit::Mma(Shader::ConvMmaEmulated) => format!("{entry}_emulated"),
            Unit::Mma(Shader::ConvMma8) => format!("{entry}_8x8"),
            Unit::Mma(Shader::ConvMma8Emulated) => format!("{entry}_8x8_emulated"),
            _ => entry.to_string(),
        }
    }
}

/// A tile of one of the GEMM kernels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Tile {
    /// `conv_gemm` / `ct_gemm`: rows, columns, reduction step.
    Gemm((u32, u32, u32)),
    /// `conv_wgrad`: rows, columns, reduction step per group, groups.
    Wgrad((u32, u32, u32, u32)),
    /// `conv_mma` / `wgrad_mma`: subgroups and accumulators along rows and columns.
    Mma(MmaTile),
}

impl Tile {
    /// Rows and columns of output per workgroup.
    pub(super) fn dims(self) -> (usize, usize) {
        match self {
            Tile::Gemm((bm, bn, _)) | Tile::Wgrad((bm, bn, _, _)) => (bm as usize, bn as usize),
            Tile::Mma(t) => mma_tile_dims(t),
        }
    }

    /// Reduction elements consumed per stage (a split or chunk is a multiple of it).
    pub(super) fn step(self) -> usize {
        match self {
            Tile::Gemm((_, _, bk)) => bk as usize,
            Tile::Wgrad((_, _, bk, g)) => (bk * g) as usize,
            Tile::Mma(_) => MMA_K,
        }
    }

    /// Output tiles of a rows × cols output: (row tiles, column tiles).
    pub(super) fn count(self, rows: usize, cols: usize) -> (usize, usize) {
        let (bm, bn) = self.dims();
        (rows.div_ceil(bm), cols.div_ceil(bn))
    }

    /// The pipeline's override constants.
    pub(super) fn consts(self) -> Vec<(&'static str, f64)> {
        match self {
            Tile::Gemm(t) => tile_consts(t).to_vec(),
            Tile::Wgrad(t) => vec![
                ("BM", t.0 as f64),
                ("BN", t.1 as f64),
                ("BK", t.2 as f64),
                ("G", t.3 as f64),
            ],
            Tile::Mma(t) => mma_consts(t).to_vec(),
        }
    }

    /// The name of this tile with `splits` reduction parts requested in the tuning cache.
    pub(super) fn choice(self, splits: usize) -> TileChoice {
        let (bm, bn) = self.dims();
        let g = match self {
            Tile::Wgrad((_, _, _, g)) => g,
            _ => 1,
        };
        TileChoice {
            bm: bm as u32,
            bn: bn as u32,
            bk: match self {
                Tile::Gemm((_, _, bk)) | Tile::Wgrad((_, _, bk, _)) => bk,
                Tile::Mma(_) => MMA_K as u32,
            },
            g,
            splits: splits as u32,
        }
    }
}

/// The override constants of a `conv_gemm` / `ct_gemm` tile.
pub(super) fn tile_consts(t: (u32, u32, u32)) -> [(&'static str, f64); 3] {
    [("BM", t.0 as f64), ("BN", t.1 as f64), ("BK", t.2 as f64)]
}

/// Whether the device can run a tile (its workgroup memory, invocations and storage buffers
/// within the limits); the error names the limit.
pub(super) type Fit<'a> = dyn Fn(Tile) -> Result<()> + 'a;

/// `preferred` when the device can run it, else the tile of `tiles` of least estimated cost
/// on rows × cols that it can run; none: the first tile's reason.
pub(super) fn pick_fitting(
    tiles: &[Tile],
    preferred: Tile,
    rows: usize,
    cols: usize,
    fit: &Fit,
) -> Result<Tile> {
    let first = match fit(preferred) {
        Ok(()) => return Ok(preferred),
        Err(e) => e,
    };
    let cost = |t: &Tile| {
        let (bm, bn) = t.dims();
        tile_cost(rows, cols, bm as u32, bn as u32)
    };
    tiles
        .iter()
        .copied()
        .filter(|&t| fit(t).is_ok())
        .min_by(|a, b| cost(a).total_cmp(&cost(b)))
        .ok_or_else(|| Error::msg(format!("no tile fits this device: {first}")))
}

/// How a tiled GEMM runs: the tile, the number of reduction parts (split-K splits or
/// weight-gradient chunks) and the reduction length of each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Plan {
    pub(super) tile: Tile,
    pub(super) parts: usize,
    pub(super) chunk: usize,
}

/// One GEMM's problem: the kernel family and unit, output rows × cols, reduction length.
#[derive(Clone, Copy, Debug)]
pub(super) struct Problem {
    pub(super) family: Family,
    pub(super) unit: Unit,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) len: usize,
    /// Floats of reduction partials one storage binding can hold.
    pub(super) max_partial: usize,
}

impl Problem {
    /// Every tile of the kernel.
    fn tiles(&self) -> Vec<Tile> {
        match (self.family, self.unit) {
            (Family::Conv, Unit::F32) => TILES.iter().map(|&t| Tile::Gemm(t)).collect(),
            (Family::Conv, Unit::Mma(_)) => MMA_TILES.iter().map(|&t| Tile::Mma(t)).collect(),
            (Family::Wgrad, Unit::F32) => WGRAD_TILES.iter().map(|&t| Tile::Wgrad(t)).collect(),
            (Family::Wgrad, Unit::Mma(_)) => {
                WGRAD_MMA_TILES.iter().map(|&t| Tile::Mma(t)).collect()
            }
        }
    }

    /// The tile the shape heuristic picks among those the device can run (`fit`).
    fn pick(&self, fit: &Fit) -> Result<Tile> {
        let (rows, cols) = (self.rows, self.cols);
        let preferred = match (self.family, self.unit) {
            (Family::Conv, Unit::F32) => Tile::Gemm(pick_tile(rows, cols)),
            (Family::Conv, Unit::Mma(_)) => Tile::Mma(pick_mma_tile(cols)),
            (Family::Wgrad, Unit::F32) => Tile::Wgrad(pick_wgrad_tile(rows, cols)),
            (Family::Wgrad, Unit::Mma(_)) => Tile::Mma(pick_wgrad_mma_tile(rows, cols)),
        };
        pick_fitting(&self.tiles(), preferred, rows, cols, fit)
    }

    /// The reduction parts the heuristic asks for with `tile` (before rounding to stages).
    fn request(&self, tile: Tile) -> usize {
        let (tr, tn) = tile.count(self.rows, self.cols);
        match self.family {
            Family::Conv => gemm_split_request(tr * tn, self.len, tile.step()),
            // Within the partials a binding can hold (binding only under limits below 256 MiB).
            Family::Wgrad => wgrad_chunk_request(self.len, tr * tn, self.rows * self.cols)
                .min((self.max_partial / (self.rows * self.cols).max(1)).max(1)),
        }
    }

    /// The shape heuristic's plan (what runs without tuning) and the parts it requested.
    pub(super) fn heuristic(&self, fit: &Fit) -> Result<(Plan, usize)> {
        let tile = self.pick(fit)?;
        let (tr, tn) = tile.count(self.rows, self.cols);
        let (parts, chunk) = match self.family {
            Family::Conv => gemm_splits(tr * tn, self.len, tile.step()),
            Family::Wgrad => split_reduction(self.len, self.request(tile), tile.step()),
        };
        Ok((Plan { tile, parts, chunk }, self.request(tile)))
    }

    /// Tuning candidates (the heuristic's plan first): every tile, each with the heuristic's
    /// number of parts for that tile, its half and its double (split-K also no split); every
    /// part keeps at least one reduction stage, the partials stay within a bound, and every
    /// grid fits the adapter (`fits`, on the number of workgroups). With the [`TileChoice`]
    /// that names each.
    pub(super) fn candidates(
        &self,
        fit: &Fit,
        fits: impl Fn(usize) -> bool,
    ) -> Result<Vec<(Plan, TileChoice)>> {
        let mut out = vec![];
        let (heur, hs) = self.heuristic(fit)?;
        push_candidate(&mut out, heur, heur.tile.choice(hs));
        let outputs = self.rows * self.cols;
        for tile in self.tiles().into_iter().filter(|&t| fit(t).is_ok()) {
            let (tr, tn) = tile.count(self.rows, self.cols);
            let h = self.request(tile);
            let (variants, max_partial) = match self.family {
                Family::Conv => (vec![h, 1, h / 2, 2 * h], TUNE_MAX_PARTIAL),
                Family::Wgrad => (vec![h, h / 2, 2 * h], WGRAD_MAX_PARTIAL),
            };
            let max_partial = max_partial.min(self.max_partial);
            push_split_variants(
                &mut out,
                &variants,
                self.len,
                tile.step(),
                outputs,
                max_partial,
                tr * tn,
                &fits,
                |parts, chunk| Plan { tile, parts, chunk },
                |s| tile.choice(s),
            );
        }
        Ok(out)
    }

    /// The tuning cache key: the kernel and the whole geometry `p`.
    pub(super) fn key(&self, p: &ConvParams) -> String {
        let kernel = self.unit.tuning_name(self.family);
        match self.family {
            Family::Conv => format!(
                "{kernel} m{} n{} k{} src{}x{}x{}x{} grid{}x{}x{} ker{}x{}x{} st{}x{}x{} pad{}x{}x{} flip{} w{}/{} bias{}",
                p.m, p.n, p.k, p.sc, p.sx, p.sy, p.sz, p.mx, p.my, p.mz, p.kx, p.ky, p.kz,
                p.stx, p.sty, p.stz, p.pdx, p.pdy, p.pdz, p.flip, p.wc, p.wstride, p.has_bias
            ),
            Family::Wgrad => format!(
                "{kernel} r{} rows{} cols{} src{}x{}x{}x{} grid{}x{}x{} ker{}x{}x{} st{}x{}x{} pad{}x{}x{}",
                p.m, p.rows, p.n, p.sc, p.sx, p.sy, p.sz, p.mx, p.my, p.mz, p.kx, p.ky, p.kz,
                p.stx, p.sty, p.stz, p.pdx, p.pdy, p.pdz
            ),
        }
    }
}
