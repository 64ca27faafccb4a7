//! Opening the device: the adapter's features we use, its own limits (big activations need
//! its real binding size), the matrix-unit path when asked for and offered, and the
//! process-wide shared device.

use super::adapter::{adapters, choose, instance};
use super::matrix_units::cooperative_matrix_support;
use super::options::{GpuOptions, LimitsMode, MatrixUnits};
use super::pool::BufferPool;
use super::recorder::{Recorder, MAX_PENDING_DISPATCHES};
use super::{tune, Gpu};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Features we use when the adapter offers them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);

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
        let mut mma_shape = opts.mma_shape.unwrap_or_default();
        let matrix_units = match opts.matrix_units {
            MatrixUnits::Off => MatrixUnits::Off,
            MatrixUnits::Coop => match cooperative_matrix_support(&adapter) {
                Ok(shape) => {
                    mma_shape = shape;
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
        // Ask for everything the adapter offers (big activations need its real binding size),
        // or WebGPU's defaults in the strict mode.
        let mut limits = match opts.limits {
            LimitsMode::Adapter => adapter.limits(),
            LimitsMode::WebGpu => wgpu::Limits::default(),
        };
        if let Some(b) = opts.max_binding_bytes {
            if b < 4096 || b % 4 != 0 {
                return Err(Error::msg(format!(
                    "max_binding_bytes {b}: not a multiple of 4 of at least 4096 bytes"
                )));
            }
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(b);
        }
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
        let pool = BufferPool::new(
            !no_pool,
            limits.max_storage_buffer_binding_size,
            limits.max_buffer_size,
        );
        let gpu = Arc::new(Gpu {
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(pool)),
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
            dispatch_count: std::sync::atomic::AtomicU64::new(0),
            matrix_units,
            limits_mode: opts.limits,
            binding_knob: opts.max_binding_bytes.is_some(),
            mma_shape,
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
}
