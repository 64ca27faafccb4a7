//! # ssnet: SS-Net on any GPU
//!
//! SS-Net (Wu et al., MICCAI 2022: smoothness through virtual adversarial training plus
//! class separation through a prototype memory) trained and run with hand-written WGSL
//! compute shaders through wgpu (Vulkan, Metal, DX12). No CUDA.
//!
//! The crate reads as floors, each using only those below it:
//!
//! ```text
//! cli      one file per subcommand (train, eval, predict, plan, bench, devices)
//! ssnet    VAT, prototype memory, contrastive loss, ramp-up, the training step and loop
//! admt     AD-MT: schedules, strong views, CutMix, the two-teacher training step
//! infer    sliding-window (3D) and slice-wise (2D) prediction
//! nn       layers, VNet, UNet, heads, initialisation, safetensors checkpoints
//! ops      one file per op family: forward + one backward per input, on the tape
//! autograd the tape: nodes in execution order, backward, backward_wrt, no_grad
//! tensor   GPU tensor handle: shape, dtype, pooled buffer, upload / readback
//! gpu      adapter + device + limits, error scopes, buffer pool, shader registry, dispatch
//! data, metrics   plain CPU code (NIfTI, HDF5, datasets, own layouts + preprocessing; Dice, 95HD, ASD...)
//! fsutil, error    atomic file writes, the one error type: used by every floor
//! reference       the CPU twin of every kernel, f64 accumulation (tests, debugging)
//! ```
//!
//! Every WGSL file lives in `shaders/`, is registered once in [`gpu::shaders::Shader`], and is
//! validated by naga in a plain `cargo test`.

pub mod error;
pub mod fsutil;
pub mod golden;

pub mod admt;
pub mod autograd;
pub mod gpu;
pub mod infer;
pub mod nn;
pub mod ops;
pub mod reference;
pub mod ssnet;
pub mod tensor;
pub mod train;

pub mod data;
pub mod metrics;

pub mod bench;
pub mod cli;

pub use error::{Error, Result};
