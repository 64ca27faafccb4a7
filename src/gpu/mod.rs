//! The GPU context: adapter choice, device with the adapter's own limits, error scopes, the
//! buffer pool, the shader registry, the pipeline cache and the dispatch path. One file per
//! concern: `adapter` (which adapter), `options` (what is asked of it), `matrix_units` (the
//! tensor-core tile and the driver denylist), `footprint` (what a pipeline needs of the
//! limits), `device` (opening it), `pipelines` (modules and pipelines, compiled once), `recorder` (dispatch, submit,
//! readback), `registry` (every pipeline created, for the translation tests), `timing` (GPU
//! timestamps), `pool` (buffers), `shaders` (the WGSL registry),
//! `tune` (autotuning).
//!
//! Recording model: every op appends its dispatch to one open compute pass of one pending
//! command encoder; nothing is submitted until somebody needs a result on the CPU
//! ([`Gpu::flush`], called by readbacks) or the encoder has grown large. A training step is
//! therefore one encoder and, between readbacks, one compute pass: wgpu inserts the barriers
//! between dispatches. Uniform parameters of all dispatches of one submission live in one
//! arena buffer written just before the submit.
//!
//! GPU timing ([`Gpu::timing_begin`] / [`Gpu::timing_end`]): while a timing session is open,
//! every compute pass the recorder begins carries timestamp writes (its beginning and end) into
//! a query set; `timing_end` resolves them and reports the span (first pass begin to last pass
//! end) and the busy time (the sum of the pass durations). Only `timing_end` waits. Needs
//! `TIMESTAMP_QUERY`; without it `timing_end` returns `None`.
//!
//! Kernel autotuning ([`tune`]): `SSNET_TUNE=1` (read here, when the GPU is opened) or
//! [`Gpu::enable_tuning`]; the cache file `SSNET_TUNE_FILE`.
//!
//! Debug knobs (environment):
//! - `SSNET_SYNC=1`: submit and wait after every dispatch (isolates a faulting kernel).
//! - `SSNET_SUBMIT_EVERY=N`: submit (without waiting) every N dispatches instead of 8192, so
//!   the GPU starts on a step while the CPU still records it (a knob to measure on the card).
//! - `SSNET_NO_POOL=1`: never reuse a freed buffer.
//! - `SSNET_DEBUG_PIPELINES=1`: print every pipeline key when it is compiled.
//! - `SSNET_MAX_BINDING_BYTES=N`: open the device with at most N bytes per storage binding,
//!   so that small tensors go through the split path of the ops that work in pieces and the
//!   refusal of the others (tests/split.rs).

mod adapter;
mod device;
pub mod footprint;
pub mod matrix_units;
mod options;
mod pipelines;
pub mod pool;
mod recorder;
pub mod registry;
pub mod shaders;
mod timing;
pub mod tune;

use crate::error::{Error, Result};
pub use adapter::{list_adapters, AdapterReport};
pub use matrix_units::{cooperative_matrix_support, MmaShape};
pub use options::{GpuOptions, LimitsMode, MatrixUnits};
use pipelines::PipelineKey;
pub use pool::PoolStats;
use pool::{BufferPool, Storage};
use recorder::Recorder;
pub use shaders::Shader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
pub use timing::GpuTiming;

/// The GPU: one adapter, its device and queue, and everything cached on them.
pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    modules: Mutex<HashMap<Shader, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    pub(crate) pool: Arc<Mutex<BufferPool>>,
    rec: Mutex<Recorder>,
    sync_each: bool,
    /// Submit the pending encoder (without waiting) after this many dispatches.
    submit_every: usize,
    /// Command buffers submitted so far.
    submissions: std::sync::atomic::AtomicU64,
    /// Dispatches recorded so far.
    dispatch_count: std::sync::atomic::AtomicU64,
    /// What the convolution GEMMs multiply on (after the capability probe).
    matrix_units: MatrixUnits,
    /// The limits the device was opened with.
    limits_mode: LimitsMode,
    /// Whether the binding limit was lowered by `SSNET_MAX_BINDING_BYTES`.
    binding_knob: bool,
    /// The matrix-unit tile (the adapter's for cooperative matrices; the asked one emulated).
    mma_shape: MmaShape,
    /// The numerical check of the matrix-unit path, run on its first use: `Err` disables it.
    pub(crate) matrix_check: Mutex<Option<std::result::Result<(), String>>>,
    tuner: Mutex<tune::Tuner>,
}

impl Gpu {
    /// What the convolution GEMMs multiply on: [`MatrixUnits::Off`] unless asked for and
    /// offered, or once the first-use check of the matrix-unit path has failed.
    pub fn matrix_units(&self) -> MatrixUnits {
        match *self.matrix_check.lock().unwrap() {
            Some(Err(_)) => MatrixUnits::Off,
            _ => self.matrix_units,
        }
    }

    /// Command buffers submitted since the device was opened (readbacks, syncs and the
    /// every-N-dispatches submissions).
    pub fn submissions(&self) -> u64 {
        self.submissions.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compute dispatches recorded since the device was opened (every op's kernels; what
    /// the tests count to check that an op batches its work, e.g. the grouped EMA).
    pub fn dispatches(&self) -> u64 {
        self.dispatch_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The matrix-unit tile the tensor-core path uses on this device.
    pub fn mma_shape(&self) -> MmaShape {
        self.mma_shape
    }

    /// The limits the device was opened with (the adapter's, or WebGPU's defaults).
    pub fn limits_mode(&self) -> LimitsMode {
        self.limits_mode
    }

    /// Appended to a message naming a limit: how the limit came about in the strict mode or
    /// under the binding knob.
    pub(crate) fn limits_note(&self) -> String {
        let mut note = String::new();
        if self.limits_mode == LimitsMode::WebGpu {
            note += "; SSNET_LIMITS=webgpu: WebGPU's default limits";
        }
        if self.binding_knob {
            note += "; lowered by SSNET_MAX_BINDING_BYTES";
        }
        note
    }

    /// Largest buffer a single storage binding can see. Tensors up to
    /// [`Gpu::max_buffer`] exist; the ops that work in pieces (`ops::launch_pieces`) bind
    /// them a range at a time, the others refuse them naming this limit.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Largest buffer the device creates: the largest tensor.
    pub fn max_buffer(&self) -> u64 {
        self.limits.max_buffer_size
    }

    /// The refusal of a kernel that would bind `bytes` bytes at once, over the binding limit.
    pub(crate) fn over_binding(&self, what: &str, bytes: u64) -> Error {
        Error::op(
            what,
            format!(
                "a buffer of {bytes} bytes (a tensor and its pool slack) exceeds the device's max storage binding of {} bytes (max_storage_buffer_binding_size, {}{}), and this op does not work in pieces",
                self.max_binding(),
                self.info.name,
                self.limits_note()
            ),
        )
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.lock().unwrap().stats()
    }

    /// Reset the peak-memory counter (benchmarks measure one step's peak).
    pub fn reset_peak(&self) {
        self.pool.lock().unwrap().reset_peak()
    }

    /// The refusal of a tensor over the buffer limit, or `Ok`.
    fn check_buffer(&self, bytes: u64, what: &str) -> Result<()> {
        if bytes > self.max_buffer() {
            return Err(Error::op(
                what,
                format!(
                    "tensor of {bytes} bytes exceeds the device's max buffer size of {} bytes (max_buffer_size, {}{})",
                    self.max_buffer(),
                    self.info.name,
                    self.limits_note()
                ),
            ));
        }
        Ok(())
    }

    /// A storage buffer of at least `bytes` from the pool (contents undefined). Up to the
    /// buffer limit: the binding limit is checked where a kernel binds it.
    pub(crate) fn alloc(self: &Arc<Self>, bytes: u64, what: &str) -> Result<Storage> {
        self.check_buffer(bytes, what)?;
        BufferPool::alloc(&self.pool, &self.device, bytes.max(4))
    }

    /// A new storage buffer holding `data` (uploads never reuse a pooled buffer: a queued
    /// write would land before commands still pending on the old contents).
    pub(crate) fn upload(self: &Arc<Self>, data: &[u8], what: &str) -> Result<Storage> {
        self.check_buffer((data.len() as u64).max(4), what)?;
        BufferPool::upload(&self.pool, &self.device, data)
    }

    /// Whether the adapter is a CPU implementation (lavapipe, WARP, ...).
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Adapter name and backend, for logs.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }
}
