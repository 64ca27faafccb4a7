//! Convolutions: 3D (any kernel, stride, zero padding), 2D (the 3D kernels with a unit
//! leading spatial axis) and the 3D transposed convolution with kernel == stride, each with
//! its input, weight and bias backwards. Shaders: `shaders/conv.wgsl` and
//! `shaders/conv_transpose.wgsl`.
//!
//! Layouts are PyTorch's: x `[N, Ci, X, Y, Z]` (2D: `[N, Ci, H, W]`), conv weight
//! `[Co, Ci, kx, ky, kz]`, transposed weight `[Ci, Co, kx, ky, kz]`, bias `[Co]`.
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
//!
//! One file per concern: `geometry` (shapes, the params uniforms), `plan` (tiles, the
//! heuristic, tuning candidates), `launch` (the one launch path of every tiled GEMM, the
//! grid, the partial sums), `tensor_cores` (the matrix-unit module, its first-use check, the
//! operand scales), `transposed` (the transposed convolution), `ops` (the public ops and
//! their tape records).

mod geometry;
mod launch;
mod ops;
mod plan;
mod tensor_cores;
mod transposed;

pub use launch::{conv_grid_cap_for_tests, fold_grid};
pub use ops::*;
pub use plan::{
    gemm_splits, mma_tile_dims, pick_mma_tile, pick_tile, pick_wgrad_mma_tile, pick_wgrad_tile,
    wgrad_chunks, MmaTile, MMA_TILES, NARROW_N, TILES, WGRAD_MMA_TILES, WGRAD_TILES,
};
pub use transposed::*;
