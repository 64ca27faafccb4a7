//! `ssnet bench [ROW]...`: the SS-Net training iteration and the AD-MT step (3D and 2D),
//! VNet inference and the per-layer convolution table on the chosen GPU (all rows unless
//! some are named), as a table and as JSON (the keys of `tools/bench_torch.py`, so the two
//! can be compared by `tools/compare_bench.py`).
use crate::bench::step::{known_fp32_peak_tflops, run as run_bench, Row, Timing};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Size {
    /// The reference's sizes: VNet batch 4 on 112×112×80, UNet batch 24 on 256×256.
    Full,
    /// Tiny shapes (CI, software drivers).
    Tiny,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Rows to run (default: all): iteration3d, iteration2d (SS-Net), inference3d, admt3d,
    /// admt2d (AD-MT), layers.
    #[arg(value_enum)]
    pub rows: Vec<Row>,
    /// Problem size.
    #[arg(long, value_enum, default_value_t = Size::Full)]
    pub size: Size,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Warm-up repetitions before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Skip the per-layer convolution table.
    #[arg(long)]
    pub no_layers: bool,
    /// Write the JSON report here (also printed as the last line).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The adapter's FP32 peak in TFLOP/s for "% of peak" (known cards are recognised).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Autotune convolution tiles per layer shape first (as SSNET_TUNE=1; cuDNN's benchmark
    /// mode): each new shape is tuned when first met, i.e. in the warm-up.
    #[arg(long)]
    pub tune: bool,
}

fn opt_ms(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.prec$}"))
}

fn pct(gflops: f64, peak: Option<f64>) -> String {
    peak.map_or("-".to_string(), |p| {
        format!("{:.1}%", gflops / (p * 1e3) * 100.0)
    })
}

fn row(name: &str, t: &Timing, peak: Option<f64>) {
    let gflops = t.gflop / (t.best_ms() / 1e3);
    println!(
        "{name:<34} {:>10.2} {:>10} {:>10} {:>10.1} {:>10.1} {:>8}  {:?}",
        t.ms,
        opt_ms(t.gpu_ms, 2),
        opt_ms(t.gpu_busy_ms, 2),
        t.gflop,
        gflops,
        pct(gflops, peak),
        t.batch
    );
}

pub fn run(a: BenchArgs, device: Option<&str>) -> Result<()> {
    let gpu = Gpu::new(device)?;
    if a.tune && !gpu.tuning_enabled() {
        gpu.enable_tuning(None);
    }
    let peak = a
        .peak_tflops
        .or_else(|| known_fp32_peak_tflops(&gpu.info.name));
    println!("adapter: {}", gpu.describe());
    if gpu.tuning_enabled() {
        println!(
            "tuning: on ({} choices cached{})",
            gpu.tuned_choices().len(),
            gpu.tune_file()
                .map_or(String::new(), |p| format!(" in {}", p.display()))
        );
    }
    match gpu.matrix_units() {
        crate::gpu::MatrixUnits::Off => println!("convolutions: f32"),
        crate::gpu::MatrixUnits::Coop => println!(
            "convolutions: f16 {} tiles on the matrix units (tensor cores), f32 accumulation",
            gpu.mma_shape().name()
        ),
        crate::gpu::MatrixUnits::Emulated => println!(
            "convolutions: f16 {} tiles, emulated matrix units (a correctness check, not a speed)",
            gpu.mma_shape().name()
        ),
    }
    if gpu.has_timestamps() {
        println!(
            "timing: wall clock (ms, with the sync) and GPU timestamps (GPU ms: first pass begin to last pass end; busy: sum of the passes); GFLOP/s and % peak from GPU ms"
        );
    } else {
        println!(
            "timing: wall clock only (the adapter has no TIMESTAMP_QUERY); GFLOP/s and % peak from the wall clock"
        );
    }
    let mut rows = if a.rows.is_empty() {
        Row::ALL.to_vec()
    } else {
        a.rows.clone()
    };
    if a.no_layers {
        rows.retain(|&r| r != Row::Layers);
    }
    let rep = run_bench(&gpu, a.size == Size::Full, a.warmup, a.reps.max(1), &rows)?;
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}  batch",
        "what", "wall ms", "GPU ms", "busy ms", "GFLOP", "GFLOP/s", "% peak"
    );
    for (name, t) in [
        ("SS-Net 3D iteration (VNet)", &rep.iteration3d),
        ("SS-Net 2D iteration (UNet)", &rep.iteration2d),
        ("VNet inference, one patch", &rep.inference3d),
        ("AD-MT 3D step (VNet, LA)", &rep.admt3d),
        ("AD-MT 2D step (UNet, ACDC)", &rep.admt2d),
    ] {
        if let Some(t) = t {
            row(name, t, peak);
        }
    }
    let peaks: Vec<String> = [
        ("SS-Net 3D", rep.peak_memory_3d_bytes),
        ("SS-Net 2D", rep.peak_memory_2d_bytes),
        ("AD-MT 3D", rep.peak_memory_admt3d_bytes),
        ("AD-MT 2D", rep.peak_memory_admt2d_bytes),
    ]
    .iter()
    .filter_map(|(k, v)| v.map(|b| format!("{k} {:.2} GiB", b as f64 / (1u64 << 30) as f64)))
    .collect();
    if !peaks.is_empty() {
        println!("peak GPU memory allocated: {}", peaks.join(", "));
    }
    if !rep.layers.is_empty() {
        println!(
            "{:<6} {:<36} {:<28} {:<11} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "net", "layer", "shape", "pass", "wall ms", "GPU ms", "GFLOP", "GFLOP/s", "% peak"
        );
        for l in &rep.layers {
            let gflops = l.gflop / (l.best_ms() / 1e3);
            println!(
                "{:<6} {:<36} {:<28} {:<11} {:>9.3} {:>9} {:>9.2} {:>9.1} {:>7}",
                l.net,
                l.layer,
                l.shape,
                l.pass,
                l.ms,
                opt_ms(l.gpu_ms, 3),
                l.gflop,
                gflops,
                pct(gflops, peak)
            );
        }
    }
    let json = serde_json::to_string(&rep)
        .map_err(|e| Error::msg(format!("bench: cannot serialise the report: {e}")))?;
    if let Some(p) = &a.json {
        crate::fsutil::atomic_write(p, json.as_bytes())?;
    }
    println!("{json}");
    Ok(())
}
