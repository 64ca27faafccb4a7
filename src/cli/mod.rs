//! The command line: one file per subcommand; `main.rs` only parses and dispatches.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod devices;
pub mod eval;
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
    match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Train(a) => train::run(*a, cli.device.as_deref()),
        Command::Predict(a) => predict::run(a, cli.device.as_deref()),
        Command::Eval(a) => eval::run(a, cli.device.as_deref()),
        Command::Bench(a) => bench::run(a, cli.device.as_deref()),
        Command::Plan(a) => plan::run(a, cli.device.as_deref()),
    }
}
