//! The command line: one file per subcommand; `main.rs` only parses and dispatches.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod devices;
pub mod eval;
pub mod outputs;
pub mod own;
pub mod plan;
pub mod predict;
pub mod train;

#[derive(Parser, Debug)]
#[command(
    name = "ssnet",
    version,
    about = "SS-Net semi-supervised medical image segmentation on any GPU (wgpu/WGSL)"
)]
pub struct Cli {
    /// GPU to use: an adapter index from `ssnet devices` or a substring of its name.
    #[arg(long, global = true, env = "SSNET_DEVICE")]
    pub device: Option<String>,
    /// Convolution GEMMs on the GPU's matrix units (tensor cores): f16 tiles with f32
    /// accumulation, where the adapter offers f16 cooperative matrices (else the f32 path,
    /// with a warning). `off` (default, the reference), `on`, or `emulate` (the same f16 path
    /// without matrix units: for checking it on any adapter, slow).
    #[arg(
        long,
        global = true,
        env = "SSNET_TENSOR_CORES",
        value_name = "off|on|emulate"
    )]
    pub tensor_cores: Option<String>,
    /// Device limits: `adapter` (default: everything the adapter offers) or `webgpu`
    /// (wgpu's defaults, WebGPU's guaranteed minimum: 16 KiB of workgroup memory, 128 MiB per
    /// storage binding, 8 storage buffers per stage), to check that a run fits adapters that
    /// offer no more.
    #[arg(
        long,
        global = true,
        env = "SSNET_LIMITS",
        value_name = "adapter|webgpu"
    )]
    pub limits: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every GPU adapter wgpu can see, with its limits and features.
    Devices(devices::DevicesArgs),
    /// Train SS-Net (presets `la` and `acdc`, a TOML config, CLI overrides, resume).
    Train(Box<train::TrainArgs>),
    /// Segment volumes (NIfTI or SS-Net HDF5, a file or a folder) with a checkpoint.
    Predict(predict::PredictArgs),
    /// Evaluate segmentations: Dice, Jaccard, 95HD, ASD per case and class.
    Eval(eval::EvalArgs),
    /// Print the plan of an own dataset (network, patch, spacing, classes) without training.
    Plan(plan::PlanArgs),
    /// Time the SS-Net training step, inference and the per-layer kernels on this GPU.
    Bench(bench::BenchArgs),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    if let Some(t) = &cli.tensor_cores {
        // Validated here (a one-line error), then read by every `Gpu::new`.
        crate::gpu::MatrixUnits::parse(t)?;
        std::env::set_var("SSNET_TENSOR_CORES", t);
    }
    if let Some(l) = &cli.limits {
        crate::gpu::LimitsMode::parse(l)?;
        std::env::set_var("SSNET_LIMITS", l);
    }
    let from_env = device_from_env(cli.device.as_deref());
    let r = match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Train(a) => train::run(*a, cli.device.as_deref()),
        Command::Predict(a) => predict::run(a, cli.device.as_deref()),
        Command::Eval(a) => eval::run(a, cli.device.as_deref()),
        Command::Bench(a) => bench::run(a, cli.device.as_deref()),
        Command::Plan(a) => plan::run(a, cli.device.as_deref()),
    };
    r.map_err(|e| explain_gpu_error(e, from_env, &driver_env()))
}

/// The device selector came from `SSNET_DEVICE`, not from `--device` on the command line.
fn device_from_env(device: Option<&str>) -> bool {
    let on_line = std::env::args().any(|a| a == "--device" || a.starts_with("--device="));
    !on_line && device.is_some() && std::env::var("SSNET_DEVICE").ok().as_deref() == device
}

/// The Vulkan loader variables that are set, as `NAME='value'`.
fn driver_env() -> Vec<String> {
    ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}='{v}'")))
        .collect()
}

/// A GPU error that names what the user set: `SSNET_DEVICE` when the selector came from it,
/// and the Vulkan loader variables when no adapter was found while they are set (a wrong
/// path there hides every installed driver).
pub fn explain_gpu_error(e: crate::Error, from_env: bool, driver_env: &[String]) -> crate::Error {
    match e {
        crate::Error::Gpu(m) => {
            let mut m = if from_env && m.starts_with("--device ") {
                m.replacen("--device ", "SSNET_DEVICE=", 1)
                    + " (SSNET_DEVICE is set in the environment: unset it or pass --device)"
            } else {
                m
            };
            if m.starts_with("no GPU adapter found") && !driver_env.is_empty() {
                m = format!(
                    "{m}; note {} is set: the Vulkan loader reads only the driver manifests named there (unset it to use the installed drivers)",
                    driver_env.join(" and ")
                );
            }
            crate::Error::Gpu(m)
        }
        e => e,
    }
}
