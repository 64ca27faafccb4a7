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

/// u32 from a usize that must fit (shapes are validated against the binding size first).
pub(crate) fn u32_of(op: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| crate::Error::op(op, format!("size {v} exceeds u32")))
}
