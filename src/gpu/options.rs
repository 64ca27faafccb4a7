//! What the caller asks of the device: how the convolution GEMMs multiply
//! ([`MatrixUnits`], `SSNET_TENSOR_CORES`), how often recorded work is submitted
//! (`SSNET_SUBMIT_EVERY`), which limits it is opened with (`SSNET_LIMITS`,
//! `SSNET_MAX_BINDING_BYTES`).

use super::matrix_units::MmaShape;
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
    /// `off`/`0`, `on`/`1`/`coop`, `emulate` (`emulate8x8`: the emulated path on 8×8 tiles).
    pub fn parse(s: &str) -> Result<MatrixUnits> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "off" | "false" | "no" => Ok(MatrixUnits::Off),
            "1" | "on" | "true" | "yes" | "coop" => Ok(MatrixUnits::Coop),
            "emulate" | "emulated" | "emulate8x8" | "emulate-8x8" => Ok(MatrixUnits::Emulated),
            other => Err(Error::msg(format!(
                "SSNET_TENSOR_CORES / --tensor-cores: '{other}' is not one of off, on, emulate, emulate8x8"
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
    /// The matrix-unit tile of the emulated path (`None`: 16×16); the cooperative-matrix path
    /// takes the adapter's.
    pub mma_shape: Option<MmaShape>,
    /// Ask for at most this many bytes per storage binding (`SSNET_MAX_BINDING_BYTES`): a
    /// test and debug knob that makes small tensors exceed the binding limit, so that the ops
    /// which work in pieces are split and the others refuse, as on an adapter with a small
    /// limit. `None`: the limit of [`LimitsMode`].
    pub max_binding_bytes: Option<u64>,
}

impl GpuOptions {
    /// From the environment (`SSNET_TENSOR_CORES`, `SSNET_SUBMIT_EVERY`, `SSNET_LIMITS`,
    /// `SSNET_MAX_BINDING_BYTES`).
    pub fn from_env() -> Result<GpuOptions> {
        let tc = std::env::var("SSNET_TENSOR_CORES").unwrap_or_default();
        Ok(GpuOptions {
            matrix_units: MatrixUnits::parse(&tc)?,
            mma_shape: tc
                .to_ascii_lowercase()
                .contains("8x8")
                .then_some(MmaShape::M8x8),
            submit_every: submit_every_from_env()?,
            limits: match std::env::var("SSNET_LIMITS") {
                Ok(v) => LimitsMode::parse(&v)?,
                Err(_) => LimitsMode::Adapter,
            },
            max_binding_bytes: max_binding_from_env()?,
        })
    }
}

/// `SSNET_MAX_BINDING_BYTES=N`: request at most N bytes per storage binding (a multiple of
/// 4, at least 4096).
fn max_binding_from_env() -> Result<Option<u64>> {
    match std::env::var("SSNET_MAX_BINDING_BYTES") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 4096 && n % 4 == 0 => Ok(Some(n)),
            _ => Err(Error::msg(format!(
                "SSNET_MAX_BINDING_BYTES: '{v}' is not a multiple of 4 of at least 4096 bytes"
            ))),
        },
    }
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
