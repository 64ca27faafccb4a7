//! The GPU context: adapter choice, device with the adapter's own limits, error scopes, the
//! buffer pool, the shader registry, the pipeline cache and the dispatch path.
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

pub mod pool;
pub mod shaders;
pub mod tune;

use crate::error::{Error, Result};
pub use pool::PoolStats;
use pool::{BufferPool, Storage};
pub use shaders::Shader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Features we use when the adapter offers them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);

/// How the convolution GEMMs multiply (`SSNET_TENSOR_CORES`, `ssnet --tensor-cores`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatrixUnits {
    /// f32 everywhere: the default and the reference.
    #[default]
    Off,
    /// f16 tiles on the adapter's matrix units (cooperative matrices), f32 accumulation.
    Coop,
    /// The same f16 tiles and scaling multiplied lane by lane (any adapter with SHADER_F16):
    /// for testing the tensor-core kernel where no matrix unit exists, never fast.
    Emulated,
}

impl MatrixUnits {
    /// `off`/`0`, `on`/`1`/`coop`, `emulate`.
    pub fn parse(s: &str) -> Result<MatrixUnits> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "off" | "false" | "no" => Ok(MatrixUnits::Off),
            "1" | "on" | "true" | "yes" | "coop" => Ok(MatrixUnits::Coop),
            "emulate" | "emulated" => Ok(MatrixUnits::Emulated),
            other => Err(Error::msg(format!(
                "SSNET_TENSOR_CORES / --tensor-cores: '{other}' is not one of off, on, emulate"
            ))),
        }
    }
}

/// Options of [`Gpu::with_options`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuOptions {
    pub matrix_units: MatrixUnits,
    /// Submit the pending work every this many dispatches (`None`: 8192).
    pub submit_every: Option<usize>,
}

impl GpuOptions {
    /// From the environment (`SSNET_TENSOR_CORES`).
    pub fn from_env() -> Result<GpuOptions> {
        Ok(GpuOptions {
            matrix_units: match std::env::var("SSNET_TENSOR_CORES") {
                Ok(v) => MatrixUnits::parse(&v)?,
                Err(_) => MatrixUnits::Off,
            },
            submit_every: submit_every_from_env()?,
        })
    }
}

/// Whether the adapter can run the cooperative-matrix convolution: f16 × f16 → f32 16×16×16
/// tiles, SHADER_F16, and subgroups of exactly 32 lanes (the kernel's layout).
pub fn cooperative_matrix_support(a: &wgpu::Adapter) -> std::result::Result<(), String> {
    let f = a.features();
    if !f.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Err("no EXPERIMENTAL_COOPERATIVE_MATRIX".into());
    }
    if !f.contains(wgpu::Features::SHADER_F16) {
        return Err("no SHADER_F16".into());
    }
    let tile = a.cooperative_matrix_properties().iter().any(|c| {
        c.m_size == 16
            && c.n_size == 16
            && c.k_size == 16
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !tile {
        return Err("no f16 x f16 -> f32 16x16x16 cooperative matrix".into());
    }
    let info = a.get_info();
    if info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return Err(format!(
            "subgroups of {}..{} lanes (the kernel needs exactly 32)",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    Ok(())
}

/// How to get an adapter when there is none: printed in the error.
const NO_ADAPTER_HINT: &str = "no GPU adapter found: install your GPU's Vulkan/Metal/DX12 driver, \
or Mesa's software Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)";

/// Uniform parameter slots are aligned to this (the WebGPU maximum of
/// min_uniform_buffer_offset_alignment, so it is valid everywhere).
const UNIFORM_ALIGN: u64 = 256;
/// Size of one uniform arena buffer (1024 dispatches of up to 256 bytes of params).
const ARENA_BYTES: u64 = 256 * 1024;
/// Submit the pending encoder after this many dispatches even without a readback, so that
/// very long graphs do not hold unbounded command memory.
const MAX_PENDING_DISPATCHES: usize = 8192;

/// Timestamp queries per query set of a timing session (two per compute pass); a session that
/// needs more takes another set.
const QUERIES_PER_SET: u32 = 1024;

/// What a timing session measured on the GPU (from timestamp queries).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GpuTiming {
    /// From the beginning of the first timed compute pass to the end of the last, in ms
    /// (GPU idle gaps between passes included, like CUDA events around the same work).
    pub span_ms: f64,
    /// The sum of the timed passes' durations, in ms (at most `span_ms`).
    pub busy_ms: f64,
    /// Compute passes timed (0: nothing was dispatched between begin and end; both times 0).
    pub passes: usize,
}

/// One open timing session: its query sets (all full but the last) and the queries used in
/// the last one.
struct TimingSession {
    sets: Vec<wgpu::QuerySet>,
    used: u32,
}

/// `SSNET_SUBMIT_EVERY=N`: submit the pending work every N dispatches (default
/// [`MAX_PENDING_DISPATCHES`]). Smaller values let the GPU start on a step while the CPU is
/// still recording it, at the cost of more submissions: a knob for measuring on the card.
fn submit_every_from_env() -> Result<Option<usize>> {
    match std::env::var("SSNET_SUBMIT_EVERY") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Error::msg(format!(
                "SSNET_SUBMIT_EVERY: '{v}' is not a positive number of dispatches"
            ))),
        },
    }
}

/// One adapter as `ssnet devices` reports it.
#[derive(Debug, Clone)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub features: Vec<&'static str>,
    pub cooperative_matrix: usize,
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    }
    wgpu::Instance::new(desc)
}

fn adapters(inst: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

fn features_of_interest(f: wgpu::Features) -> Vec<&'static str> {
    let mut v = vec![];
    for (flag, name) in [
        (wgpu::Features::SHADER_F16, "SHADER_F16"),
        (wgpu::Features::SUBGROUP, "SUBGROUP"),
        (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
        (
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            "TIMESTAMP_QUERY_INSIDE_PASSES",
        ),
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "EXPERIMENTAL_COOPERATIVE_MATRIX",
        ),
    ] {
        if f.contains(flag) {
            v.push(name);
        }
    }
    v
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let l = a.limits();
    AdapterReport {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_storage_binding: l.max_storage_buffer_binding_size,
        max_buffer_size: l.max_buffer_size,
        max_workgroup_storage: l.max_compute_workgroup_storage_size,
        max_invocations: l.max_compute_invocations_per_workgroup,
        features: features_of_interest(a.features()),
        cooperative_matrix: if a
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            a.cooperative_matrix_properties().len()
        } else {
            0
        },
    }
}

/// Every adapter wgpu can see (for `ssnet devices`).
pub fn list_adapters() -> Vec<AdapterReport> {
    let inst = instance();
    adapters(&inst)
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect()
}

/// Pick an adapter: `selector` is an index or a case-insensitive name substring; without one,
/// the first discrete GPU, else integrated, else any (a CPU rasteriser last).
fn choose(adapters: Vec<wgpu::Adapter>, selector: Option<&str>) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(Error::gpu(NO_ADAPTER_HINT));
    }
    let names = || {
        adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {}", a.get_info().name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match selector.map(str::trim).filter(|s| !s.is_empty()) {
        Some(sel) => {
            if let Ok(i) = sel.parse::<usize>() {
                let n = adapters.len();
                return adapters.into_iter().nth(i).ok_or_else(|| {
                    Error::gpu(format!(
                        "--device {i}: only {n} adapters ({})",
                        "see `ssnet devices`"
                    ))
                });
            }
            let low = sel.to_lowercase();
            let list = names();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&low))
                .ok_or_else(|| {
                    Error::gpu(format!("--device '{sel}' matches no adapter (have {list})"))
                })
        }
        None => {
            let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            let mut v = adapters;
            v.sort_by_key(rank);
            Ok(v.into_iter().next().expect("non-empty"))
        }
    }
}

struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Arena buffers; `arena_used` of them are in use by the pending submission.
    arenas: Vec<wgpu::Buffer>,
    arena_used: usize,
    /// Parameter bytes staged for arena `arena_used - 1`.
    staged: Vec<u8>,
    dispatches: usize,
    /// Open timing sessions, innermost last: a pass is timed by the innermost one only.
    timing: Vec<TimingSession>,
    /// Query sets of finished sessions, for reuse.
    spare_sets: Vec<wgpu::QuerySet>,
}

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
    /// What the convolution GEMMs multiply on (after the capability probe).
    matrix_units: MatrixUnits,
    /// The numerical check of the matrix-unit path, run on its first use: `Err` disables it.
    pub(crate) matrix_check: Mutex<Option<std::result::Result<(), String>>>,
    tuner: Mutex<tune::Tuner>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct PipelineKey {
    shader: Shader,
    entry: &'static str,
    /// Override constants, as (name, value bits) so the key is hashable.
    constants: Vec<(&'static str, u64)>,
}

static DEFAULT: OnceLock<std::result::Result<Arc<Gpu>, String>> = OnceLock::new();

impl Gpu {
    /// Open the adapter named by `selector` (index or name substring; `None` = best), with
    /// the options of the environment ([`GpuOptions::from_env`]).
    pub fn new(selector: Option<&str>) -> Result<Arc<Gpu>> {
        Gpu::with_options(selector, GpuOptions::from_env()?)
    }

    /// Open the adapter named by `selector` with explicit options.
    pub fn with_options(selector: Option<&str>, opts: GpuOptions) -> Result<Arc<Gpu>> {
        let inst = instance();
        let adapter = choose(adapters(&inst), selector)?;
        let info = adapter.get_info();
        let mut features = adapter.features() & WANTED_FEATURES;
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        let matrix_units = match opts.matrix_units {
            MatrixUnits::Off => MatrixUnits::Off,
            MatrixUnits::Coop => match cooperative_matrix_support(&adapter) {
                Ok(()) => {
                    features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
                    // SAFETY: wgpu warns that experimental APIs may still hold bugs with
                    // undefined behaviour. Only reached when the user asked for tensor cores
                    // (off by default); the kernel is compared with the f32 path on first use
                    // (ops::conv) and disabled if the two disagree.
                    experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
                    MatrixUnits::Coop
                }
                Err(why) => {
                    eprintln!(
                        "ssnet: tensor cores requested but '{}' cannot run them ({why}); using the f32 path",
                        info.name
                    );
                    MatrixUnits::Off
                }
            },
            MatrixUnits::Emulated => {
                if !features.contains(wgpu::Features::SHADER_F16) {
                    return Err(Error::gpu(format!(
                        "the emulated tensor-core path needs SHADER_F16, which '{}' lacks",
                        info.name
                    )));
                }
                MatrixUnits::Emulated
            }
        };
        // Ask for everything the adapter offers: big activations need its real binding size.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ssnet"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::gpu(format!("cannot open device on '{}': {e}", info.name)))?;
        // Errors we did not catch in a scope are reported, never a panic in a driver thread.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!(
                "ssnet: uncaptured wgpu error: {}",
                e.to_string().lines().next().unwrap_or("")
            );
        }));
        let no_pool = std::env::var("SSNET_NO_POOL").as_deref() == Ok("1");
        let gpu = Arc::new(Gpu {
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(BufferPool::new(!no_pool))),
            rec: Mutex::new(Recorder {
                encoder: None,
                pass: None,
                arenas: vec![],
                arena_used: 0,
                staged: vec![],
                dispatches: 0,
                timing: vec![],
                spare_sets: vec![],
            }),
            sync_each: std::env::var("SSNET_SYNC").as_deref() == Ok("1"),
            submit_every: opts.submit_every.unwrap_or(MAX_PENDING_DISPATCHES).max(1),
            submissions: std::sync::atomic::AtomicU64::new(0),
            matrix_units,
            matrix_check: Mutex::new(None),
            tuner: Mutex::new(tune::Tuner::default()),
        });
        if std::env::var("SSNET_TUNE").as_deref() == Ok("1") {
            gpu.enable_tuning(None);
        }
        Ok(gpu)
    }

    /// The process-wide GPU chosen by `SSNET_DEVICE` (or the best one), opened once.
    pub fn shared() -> Result<Arc<Gpu>> {
        DEFAULT
            .get_or_init(|| {
                let sel = std::env::var("SSNET_DEVICE").ok();
                Gpu::new(sel.as_deref()).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::Gpu)
    }

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

    /// Largest buffer a single storage binding can see.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.pool.lock().unwrap().stats()
    }

    /// Reset the peak-memory counter (benchmarks measure one step's peak).
    pub fn reset_peak(&self) {
        self.pool.lock().unwrap().reset_peak()
    }

    /// A storage buffer of at least `bytes` from the pool (contents undefined).
    pub(crate) fn alloc(self: &Arc<Self>, bytes: u64, what: &str) -> Result<Storage> {
        if bytes > self.max_binding() {
            return Err(Error::op(
                what,
                format!(
                    "tensor of {bytes} bytes exceeds the adapter's max storage binding of {} bytes ({})",
                    self.max_binding(),
                    self.info.name
                ),
            ));
        }
        BufferPool::alloc(&self.pool, &self.device, bytes.max(4))
    }

    /// A new storage buffer holding `data` (uploads never reuse a pooled buffer: a queued
    /// write would land before commands still pending on the old contents).
    pub(crate) fn upload(self: &Arc<Self>, data: &[u8], what: &str) -> Result<Storage> {
        let bytes = (data.len() as u64).max(4);
        if bytes > self.max_binding() {
            return Err(Error::op(
                what,
                format!(
                    "tensor of {bytes} bytes exceeds the adapter's max storage binding of {} bytes",
                    self.max_binding()
                ),
            ));
        }
        BufferPool::upload(&self.pool, &self.device, data)
    }

    fn module(&self, shader: Shader) -> Result<Arc<wgpu::ShaderModule>> {
        let mut m = self.modules.lock().unwrap();
        if let Some(x) = m.get(&shader) {
            return Ok(x.clone());
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.file()),
                source: wgpu::ShaderSource::Wgsl(shader.source()),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!("shader {}: {e}", shader.file())));
        }
        let module = Arc::new(module);
        m.insert(shader, module.clone());
        Ok(module)
    }

    fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = PipelineKey {
            shader,
            entry,
            constants: constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        };
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        if std::env::var("SSNET_DEBUG_PIPELINES").as_deref() == Ok("1") {
            eprintln!("ssnet: compiling pipeline {key:?}");
        }
        let module = self.module(shader)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!(
                "pipeline {}::{entry}: {e}",
                shader.file()
            )));
        }
        let p = Arc::new(p);
        self.pipelines.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }

    /// Grid for `n` invocations of a 1-D kernel with workgroup size `wg`: folded into 2-D when
    /// more than the per-dimension limit of workgroups is needed. Kernels recover the linear
    /// index as `(wid.y * nwg.x + wid.x) * WG + lid.x` and bound-check it.
    pub fn grid(&self, n: u64, wg: u32) -> Result<[u32; 3]> {
        let groups = n.div_ceil(wg as u64).max(1);
        let maxd = self.limits.max_compute_workgroups_per_dimension as u64;
        if groups <= maxd {
            return Ok([groups as u32, 1, 1]);
        }
        let y = groups.div_ceil(maxd);
        if y > maxd {
            return Err(Error::gpu(format!(
                "dispatch of {n} invocations exceeds the adapter's grid"
            )));
        }
        Ok([groups.div_ceil(y) as u32, y as u32, 1])
    }

    /// Record one dispatch: `params` goes to binding 0 (uniform), `buffers` to bindings 1..
    /// in order. Every entry point must use its params and exactly those buffers.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with(shader, entry, &[], params, buffers, groups)
    }

    /// [`Gpu::dispatch`] with pipeline-overridable constants (tile sizes and the like).
    pub fn dispatch_with<P: bytemuck::Pod>(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Result<()> {
        let maxd = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > maxd) {
            return Err(Error::op(
                entry,
                format!("grid {groups:?} exceeds the adapter's {maxd} workgroups per dimension"),
            ));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let pipeline = self.pipeline(shader, entry, constants)?;
        let bytes = bytemuck::bytes_of(params);
        let psize = (bytes.len() as u64).div_ceil(16).max(1) * 16;
        let mut rec = self.rec.lock().unwrap();
        // A slot in the current arena (a fresh arena when full).
        let mut off = rec.staged.len() as u64;
        off = off.div_ceil(UNIFORM_ALIGN) * UNIFORM_ALIGN;
        if rec.arena_used == 0 || off + psize > ARENA_BYTES {
            if rec.arena_used > 0 {
                self.stage_arena(&mut rec);
            }
            if rec.arena_used == rec.arenas.len() {
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params arena"),
                    size: ARENA_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                rec.arenas.push(b);
            }
            rec.arena_used += 1;
            rec.staged.clear();
            off = 0;
        }
        rec.staged.resize(off as usize, 0);
        rec.staged.extend_from_slice(bytes);
        rec.staged.resize((off + psize) as usize, 0);
        let arena = rec.arenas[rec.arena_used - 1].clone();

        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &arena,
                offset: off,
                size: std::num::NonZeroU64::new(psize),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::op(
                entry,
                format!("bind group: {}", e.to_string().lines().next().unwrap_or("")),
            ));
        }
        if rec.pass.is_none() {
            self.begin_pass(&mut rec);
        }
        let pass = rec.pass.as_mut().unwrap();
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        rec.dispatches += 1;
        let full = rec.dispatches >= self.submit_every;
        drop(rec);
        if self.sync_each {
            self.flush()?;
            self.wait()?;
        } else if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Open the recorder's compute pass (and its encoder if needed), with timestamp writes
    /// into the innermost timing session when one is open.
    fn begin_pass(&self, rec: &mut Recorder) {
        let timestamps = self.has_timestamps();
        let Recorder {
            encoder,
            pass,
            timing,
            spare_sets,
            ..
        } = rec;
        let enc = encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                })
        });
        let mut writes = None;
        if let Some(s) = timing.last_mut().filter(|_| timestamps) {
            let current = match s.sets.last() {
                Some(set) if s.used + 2 <= QUERIES_PER_SET => set.clone(),
                _ => {
                    let set = spare_sets.pop().unwrap_or_else(|| {
                        self.device.create_query_set(&wgpu::QuerySetDescriptor {
                            label: Some("ssnet timing"),
                            ty: wgpu::QueryType::Timestamp,
                            count: QUERIES_PER_SET,
                        })
                    });
                    s.sets.push(set.clone());
                    s.used = 0;
                    set
                }
            };
            writes = Some((current, s.used));
            s.used += 2;
        }
        let p = enc
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: writes.as_ref().map(|(set, i)| {
                    wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(*i),
                        end_of_pass_write_index: Some(*i + 1),
                    }
                }),
            })
            .forget_lifetime();
        *pass = Some(p);
    }

    /// Whether the device can time compute passes (`TIMESTAMP_QUERY`).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Open a timing session: every compute pass begun from now until the matching
    /// [`Gpu::timing_end`] is timed on the GPU. The pass open now (work recorded before) is
    /// closed so that none of it is counted. Sessions nest: a pass belongs to the innermost.
    /// Never waits.
    pub fn timing_begin(&self) {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        rec.timing.push(TimingSession {
            sets: vec![],
            used: 0,
        });
    }

    /// Close the innermost timing session: submits, waits, reads the timestamps back.
    /// `Ok(None)` when the adapter has no `TIMESTAMP_QUERY` (time on the wall clock instead);
    /// a session with no pass gives `passes: 0` and zero times. Calling it without an open
    /// session is an error.
    pub fn timing_end(&self) -> Result<Option<GpuTiming>> {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        let Some(session) = rec.timing.pop() else {
            return Err(Error::op(
                "timing_end",
                "no timing session is open (call timing_begin first)",
            ));
        };
        if !self.has_timestamps() {
            return Ok(None);
        }
        if session.sets.is_empty() {
            return Ok(Some(GpuTiming {
                span_ms: 0.0,
                busy_ms: 0.0,
                passes: 0,
            }));
        }
        let stride = QUERIES_PER_SET as u64 * wgpu::QUERY_SIZE as u64;
        let nsets = session.sets.len();
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ssnet timing resolve"),
            size: stride * nsets as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let enc = rec.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                })
        });
        for (i, set) in session.sets.iter().enumerate() {
            let used = if i + 1 == nsets {
                session.used
            } else {
                QUERIES_PER_SET
            };
            enc.resolve_query_set(set, 0..used, &resolved, i as u64 * stride);
        }
        drop(rec);
        let bytes = self.read_bytes(&resolved, stride * nsets as u64);
        // The sets are free again once the readback has waited (or failed).
        self.rec.lock().unwrap().spare_sets.extend(session.sets);
        let bytes = bytes?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| c.iter().rev().fold(0u64, |v, &b| (v << 8) | b as u64))
            .collect();
        let mut pairs = vec![];
        for i in 0..nsets {
            let used = if i + 1 == nsets {
                session.used
            } else {
                QUERIES_PER_SET
            } as usize;
            let base = i * QUERIES_PER_SET as usize;
            for q in (0..used).step_by(2) {
                pairs.push((ticks[base + q], ticks[base + q + 1]));
            }
        }
        let period_ns = self.queue.get_timestamp_period() as f64;
        timing_from_ticks(&pairs, period_ns).map(Some)
    }

    fn stage_arena(&self, rec: &mut Recorder) {
        if rec.arena_used > 0 && !rec.staged.is_empty() {
            let a = &rec.arenas[rec.arena_used - 1];
            self.queue.write_buffer(a, 0, &rec.staged);
        }
    }

    /// Run `f` on the pending encoder outside any compute pass (copies, timestamps).
    pub fn with_encoder<R>(&self, f: impl FnOnce(&mut wgpu::CommandEncoder) -> R) -> R {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None; // ends the pass
        if rec.encoder.is_none() {
            rec.encoder = Some(self.device.create_command_encoder(
                &wgpu::CommandEncoderDescriptor {
                    label: Some("ssnet step"),
                },
            ));
        }
        f(rec.encoder.as_mut().unwrap())
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) -> Result<()> {
        let mut rec = self.rec.lock().unwrap();
        rec.pass = None;
        let Some(enc) = rec.encoder.take() else {
            return Ok(());
        };
        self.stage_arena(&mut rec);
        rec.arena_used = 0;
        rec.staged.clear();
        rec.dispatches = 0;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let cb = enc.finish();
        self.queue.submit([cb]);
        self.submissions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        drop(rec);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::gpu(format!(
                "submit: {}",
                e.to_string().lines().next().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// Block until the GPU has finished all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::gpu(format!("waiting for the device: {e}")))?;
        Ok(())
    }

    /// Submit and wait: the device is idle when this returns.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.wait()
    }

    /// Copy `bytes` bytes of `src` to the CPU (submits and waits).
    pub fn read_bytes(&self, src: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let size = bytes.div_ceil(4).max(1) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.with_encoder(|enc| enc.copy_buffer_to_buffer(src, 0, &staging, 0, size));
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::gpu("readback: map callback never ran"))?
            .map_err(|e| Error::gpu(format!("readback: {e}")))?;
        let view = staging
            .get_mapped_range(..)
            .map_err(|e| Error::gpu(format!("readback: {e}")))?;
        let mut out = view.to_vec();
        drop(view);
        staging.unmap();
        out.truncate(bytes as usize);
        Ok(out)
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

/// Span and busy time of passes given as (begin, end) timestamps in ticks of `period_ns`.
fn timing_from_ticks(pairs: &[(u64, u64)], period_ns: f64) -> Result<GpuTiming> {
    let (Some(first), Some(last)) = (
        pairs.iter().map(|p| p.0).min(),
        pairs.iter().map(|p| p.1).max(),
    ) else {
        return Ok(GpuTiming {
            span_ms: 0.0,
            busy_ms: 0.0,
            passes: 0,
        });
    };
    let mut busy = 0u64;
    for &(b, e) in pairs {
        if e < b {
            return Err(Error::op(
                "timing_end",
                format!("a pass ended (tick {e}) before it began (tick {b}): the GPU timestamps are unusable"),
            ));
        }
        busy += e - b;
    }
    let ms = |t: u64| t as f64 * period_ns / 1e6;
    Ok(GpuTiming {
        span_ms: ms(last - first),
        busy_ms: ms(busy),
        passes: pairs.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_from_ticks_spans_and_sums() {
        let t = timing_from_ticks(&[(100, 300), (400, 500), (1000, 1100)], 2.0).unwrap();
        assert_eq!(t.passes, 3);
        assert!((t.span_ms - 2000.0 / 1e6).abs() < 1e-12);
        assert!((t.busy_ms - 800.0 / 1e6).abs() < 1e-12);
        let none = timing_from_ticks(&[], 1.0).unwrap();
        assert_eq!(none.passes, 0);
        let e = timing_from_ticks(&[(5, 4)], 1.0).unwrap_err().to_string();
        assert!(e.starts_with("timing_end:") && !e.contains('\n'), "{e}");
    }
}
