//! The command line: one file per subcommand; `main.rs` only parses and dispatches.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod devices;
pub mod eval;
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
    /// Time the SS-Net training step, inference and the per-layer kernels on this GPU.
    Bench(bench::BenchArgs),
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Devices(a) => devices::run(a),
        Command::Train(a) => train::run(*a, cli.device.as_deref()),
        Command::Predict(a) => predict::run(a, cli.device.as_deref()),
        Command::Eval(a) => eval::run(a, cli.device.as_deref()),
        Command::Bench(a) => bench::run(a, cli.device.as_deref()),
    }
}
