//! Ops: one file per op family, forward and one backward per input side by side, each
//! recording itself on the tape (`autograd::record`). Every op checks its shapes and names
//! itself in errors; nothing here reads back from the GPU except where documented (the
//! masked row selection needs its row count on the CPU to size its output).

use crate::error::Result;
use crate::gpu::{Gpu, Shader};

pub mod admt;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod ema;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod resample;
pub mod rows;
pub mod softmax;

pub use conv::*;
pub use dropout::*;
pub use elementwise::*;
pub use loss::*;
pub use matmul::*;
pub use norm::*;
pub use optim::*;
pub use reduce::*;
pub use resample::*;
pub use rows::*;
pub use softmax::*;

/// Workgroup size of the 1-D kernels (must match `@workgroup_size` in their WGSL).
pub(crate) const WG: u32 = 256;

/// Dispatch a 1-D kernel over `n` invocations of 256-wide workgroups.
pub(crate) fn launch<P: bytemuck::Pod>(
    gpu: &Gpu,
    shader: Shader,
    entry: &'static str,
    params: &P,
    bufs: &[&wgpu::Buffer],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let groups = gpu.grid(n as u64, WG)?;
    gpu.dispatch(shader, entry, params, bufs, groups)
}

/// How [`launch_pieces`] binds a buffer.
#[derive(Clone, Copy)]
pub(crate) enum Part<'a> {
    /// One 4-byte element per invocation: element `i` of the launch is element `i` of the
    /// buffer; bound a range at a time when the launch is split.
    Elems(&'a wgpu::Buffer),
    /// Read whole by every piece (a bias, a table): must fit the binding limit.
    Whole(&'a wgpu::Buffer),
}

impl<'a> Part<'a> {
    fn buffer(self) -> &'a wgpu::Buffer {
        match self {
            Part::Elems(b) | Part::Whole(b) => b,
        }
    }
}

/// Dispatch a 1-D kernel over `n` invocations whose invocation `i` touches element `i` of
/// each [`Part::Elems`] buffer only (the element-wise family, the optimiser and EMA
/// updates), with `params(base, len)` for the invocations `base..base + len`. When every
/// buffer fits the device's storage-binding limit this is one [`launch`] of
/// `params(0, n)` on whole buffers; otherwise the launch is split into pieces of at most the
/// binding limit (offsets aligned to `min_storage_buffer_offset_alignment`), one dispatch per
/// piece on buffer ranges, recorded in order without any wait. A kernel that reads its
/// global index (a channel, a hash) adds `base`. Every element gets the same arithmetic
/// either way, so split and whole launches give the same bits.
pub(crate) fn launch_pieces<P: bytemuck::Pod>(
    gpu: &Gpu,
    shader: Shader,
    entry: &'static str,
    bufs: &[Part],
    n: usize,
    params: impl Fn(u32, u32) -> P,
) -> Result<()> {
    let total = u32_of(entry, n)?;
    if n == 0 {
        return Ok(());
    }
    let max = gpu.max_binding();
    if bufs.iter().all(|b| b.buffer().size() <= max) {
        let whole: Vec<&wgpu::Buffer> = bufs.iter().map(|b| b.buffer()).collect();
        return launch(gpu, shader, entry, &params(0, total), &whole, n);
    }
    let piece = piece_elems(gpu);
    let mut base = 0u32;
    while base < total {
        let len = piece.min(total - base);
        let (off, bytes) = (base as u64 * 4, len as u64 * 4);
        let bound: Vec<wgpu::BufferBinding> = bufs
            .iter()
            .map(|b| match *b {
                Part::Elems(buf) => wgpu::BufferBinding {
                    buffer: buf,
                    offset: off,
                    size: std::num::NonZeroU64::new(bytes),
                },
                Part::Whole(buf) => buf.as_entire_buffer_binding(),
            })
            .collect();
        let groups = gpu.grid(len as u64, WG)?;
        gpu.dispatch_bound(shader, entry, &[], &params(base, len), &bound, groups)?;
        base += len;
    }
    Ok(())
}

/// Elements of one piece of a split launch: the binding limit rounded down to the offset
/// alignment, so that every piece starts on an aligned offset.
pub(crate) fn piece_elems(gpu: &Gpu) -> u32 {
    let align = (gpu.limits.min_storage_buffer_offset_alignment as u64).max(4);
    let bytes = gpu.max_binding() / align * align;
    (bytes / 4).clamp(1, u32::MAX as u64) as u32
}

/// u32 from a usize that must fit (shapes are validated against the binding size first).
pub(crate) fn u32_of(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| crate::Error::op(op, format!("size {v} exceeds u32")))
}
