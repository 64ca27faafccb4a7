//! What the caller asks of the device: how the convolution GEMMs multiply
//! ([`MatrixUnits`], `SSNET_TENSOR_CORES`), how often recorded work is submitted
//! (`SSNET_SUBMIT_EVERY`), and whether an adapter can run the tensor-core path.

use crate::error::{Error, Result};

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

/// Which limits the device is opened with (`SSNET_LIMITS`, `ssnet --limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitsMode {
    /// Everything the adapter offers (big activations need its real binding size).
    #[default]
    Adapter,
    /// `wgpu::Limits::default()`, WebGPU's guaranteed minimum (16 KiB of workgroup memory,
    /// 128 MiB per storage binding, 8 storage buffers per stage): what many integrated,
    /// mobile and browser adapters give. For checking that the engine runs there.
    WebGpu,
}

impl LimitsMode {
    /// `adapter` (or empty), `webgpu`.
    pub fn parse(s: &str) -> Result<LimitsMode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "adapter" => Ok(LimitsMode::Adapter),
            "webgpu" | "default" => Ok(LimitsMode::WebGpu),
            other => Err(Error::msg(format!(
                "SSNET_LIMITS / --limits: '{other}' is not one of adapter, webgpu"
            ))),
        }
    }
}

/// Options of [`Gpu::with_options`](super::Gpu::with_options).
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuOptions {
    pub matrix_units: MatrixUnits,
    /// Submit the pending work every this many dispatches (`None`: 8192).
    pub submit_every: Option<usize>,
    /// The adapter's own limits, or WebGPU's defaults.
    pub limits: LimitsMode,
}

impl GpuOptions {
    /// From the environment (`SSNET_TENSOR_CORES`, `SSNET_SUBMIT_EVERY`, `SSNET_LIMITS`).
    pub fn from_env() -> Result<GpuOptions> {
        Ok(GpuOptions {
            matrix_units: match std::env::var("SSNET_TENSOR_CORES") {
                Ok(v) => MatrixUnits::parse(&v)?,
                Err(_) => MatrixUnits::Off,
            },
            submit_every: submit_every_from_env()?,
            limits: match std::env::var("SSNET_LIMITS") {
                Ok(v) => LimitsMode::parse(&v)?,
                Err(_) => LimitsMode::Adapter,
            },
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
