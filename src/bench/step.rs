//! The benchmark: the full SS-Net 3D and 2D training iterations, the AD-MT steps
//! ([`super::admt`]), VNet inference on one patch, peak GPU memory the engine allocated, and
//! the per-layer convolution table; any subset of them ([`Row`]). Its JSON keys
//! are the ones `tools/bench_torch.py` writes for PyTorch on the same card, so
//! `tools/compare_bench.py` can put the two side by side.
//!
//! Timing: warm-up iterations first (pipelines compiled, pool filled), then each timed
//! iteration ends with a device sync inside the timed region (wall clock, `ms`). Each timed
//! iteration is also a GPU timing session (timestamp queries on every compute pass, see
//! [`Gpu::timing_begin`]): `gpu_ms` is the median span from the first pass's beginning to the
//! last pass's end (what CUDA events around the same work measure), `gpu_busy_ms` the median
//! sum of the pass durations (the span less the GPU idle gaps, e.g. while the host ranks the
//! memory bank's scores). Without `TIMESTAMP_QUERY` they are `null` and only the wall clock
//! is reported (the report's `gpu_timer` says which).
//! GFLOP of an iteration = 9 × the network's forward convolution FLOPs at that batch
//! (forward + 3 VAT forwards + the input-only backward + two full backwards ≈ 9 forwards).

use super::layers::{conv_layer_table, LayerRow};
use crate::error::Result;
use crate::gpu::{Gpu, GpuTiming, MatrixUnits};
use crate::nn::{Arch, Model, ModelConfig, Pass};
use crate::ssnet::{StepInputs, Trainer, TrainerConfig};
use crate::tensor::Tensor;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    /// Median wall time (submit + wait included).
    pub ms: f64,
    pub gflop: f64,
    /// `gflop` over the wall time.
    pub gflops: f64,
    pub batch: Vec<usize>,
    /// Median GPU span from timestamps (null without them).
    pub gpu_ms: Option<f64>,
    /// Median GPU busy time, the sum of the compute passes' durations (null without them).
    pub gpu_busy_ms: Option<f64>,
    /// `gflop` over `gpu_ms` (null without it).
    pub gpu_gflops: Option<f64>,
}

impl Timing {
    /// The timing of `gflop` from wall times and GPU timings of the timed repetitions.
    pub fn from_samples(
        gflop: f64,
        batch: &[usize],
        wall_ms: &[f64],
        gpu: &[Option<GpuTiming>],
    ) -> Timing {
        let ms = median(wall_ms);
        let (gpu_ms, gpu_busy_ms) = gpu_medians(gpu);
        Timing {
            ms,
            gflop,
            gflops: gflop / (ms / 1e3),
            batch: batch.to_vec(),
            gpu_ms,
            gpu_busy_ms,
            gpu_gflops: gpu_ms.map(|g| gflop / (g / 1e3)),
        }
    }

    /// The time the table's GFLOP/s come from: the GPU span when measured, else the wall.
    pub fn best_ms(&self) -> f64 {
        self.gpu_ms.unwrap_or(self.ms)
    }
}

/// The median of a non-empty list (the upper one of an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Medians of the spans and busy times, `None` unless every repetition was timed on the GPU.
pub fn gpu_medians(gpu: &[Option<GpuTiming>]) -> (Option<f64>, Option<f64>) {
    let all: Option<Vec<GpuTiming>> = gpu.iter().copied().collect();
    match all {
        Some(v) if !v.is_empty() => {
            let span: Vec<f64> = v.iter().map(|t| t.span_ms).collect();
            let busy: Vec<f64> = v.iter().map(|t| t.busy_ms).collect();
            (Some(median(&span)), Some(median(&busy)))
        }
        _ => (None, None),
    }
}

/// One row of the report (`ssnet bench [ROW]...`); the JSON key of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Row {
    /// SS-Net, VNet, LA settings.
    Iteration3d,
    /// SS-Net, UNet, ACDC settings.
    Iteration2d,
    /// VNet inference on one patch.
    Inference3d,
    /// AD-MT, VNet, LA settings.
    Admt3d,
    /// AD-MT, UNet, ACDC settings.
    Admt2d,
    /// The per-layer convolution table.
    Layers,
}

impl Row {
    pub const ALL: [Row; 6] = [
        Row::Iteration3d,
        Row::Iteration2d,
        Row::Inference3d,
        Row::Admt3d,
        Row::Admt2d,
        Row::Layers,
    ];
}

/// The report; a row that was not asked for is `null` (the layer table: empty).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub engine: String,
    pub adapter: String,
    pub size: String,
    pub tf32: bool,
    /// How `gpu_ms` was measured: "timestamp queries", or null (wall clock only).
    pub gpu_timer: Option<String>,
    /// Whether convolution tiles were autotuned (`--tune` / `SSNET_TUNE=1`).
    pub tuned: bool,
    /// What the convolution GEMMs ran on: "off" (f32), "cooperative matrix" (f16 tiles on
    /// the matrix units, `--tensor-cores on`) or "emulated" (the f16 path without them).
    /// PyTorch's report says "tf32" or "off".
    pub tensor_cores: String,
    pub iteration3d: Option<Timing>,
    pub iteration2d: Option<Timing>,
    pub inference3d: Option<Timing>,
    pub admt3d: Option<Timing>,
    pub admt2d: Option<Timing>,
    pub peak_memory_3d_bytes: Option<u64>,
    pub peak_memory_2d_bytes: Option<u64>,
    pub peak_memory_admt3d_bytes: Option<u64>,
    pub peak_memory_admt2d_bytes: Option<u64>,
    pub layers: Vec<LayerRow>,
}

/// Forward convolution FLOPs (2 per multiply-add) of a network on input `shape` [N, C, ...].
pub fn forward_gflop(arch: Arch, shape: &[usize], num_classes: usize) -> f64 {
    let n = shape[0] as f64;
    let vox = |div: usize| -> f64 { shape[2..].iter().map(|&s| (s / div) as f64).product() };
    let mut f = 0.0;
    let mut conv =
        |v: f64, cout: usize, cin: usize, k3: usize| f += 2.0 * n * v * (cout * cin * k3) as f64;
    match arch {
        Arch::VNet => {
            let c = [16usize, 32, 64, 128, 256];
            let stages = [1usize, 2, 3, 3, 3];
            for lvl in 0..5 {
                let v = vox(1 << lvl);
                for s in 0..stages[lvl] {
                    conv(
                        v,
                        c[lvl],
                        if s == 0 && lvl == 0 { shape[1] } else { c[lvl] },
                        27,
                    );
                }
                if lvl < 4 {
                    conv(vox(2 << lvl), c[lvl + 1], c[lvl], 8); // down
                                                                // up: transposed, counted from its input side (the deeper level), as
                                                                // tools/bench_torch.py counts it: the same work as the down conv
                    conv(vox(2 << lvl), c[lvl], c[lvl + 1], 8);
                }
            }
            for (lvl, stages) in [(3usize, 3usize), (2, 3), (1, 2), (0, 1)] {
                for _ in 0..stages {
                    conv(vox(1 << lvl), c[lvl], c[lvl], 27);
                }
            }
            conv(vox(1), num_classes, 16, 1);
        }
        Arch::UNet => {
            let c = [16usize, 32, 64, 128, 256];
            for lvl in 0..5 {
                let v = vox(1 << lvl);
                conv(v, c[lvl], if lvl == 0 { shape[1] } else { c[lvl - 1] }, 9);
                conv(v, c[lvl], c[lvl], 9);
            }
            for lvl in (0..4).rev() {
                conv(vox(2 << lvl), c[lvl], c[lvl + 1], 1);
                conv(vox(1 << lvl), c[lvl], 2 * c[lvl], 9);
                conv(vox(1 << lvl), c[lvl], c[lvl], 9);
            }
            conv(vox(1), num_classes, 16, 9);
        }
    }
    f / 1e9
}

/// A synthetic batch: smooth random intensities and a sphere (3D) / disc (2D) label.
pub(crate) fn batch(
    gpu: &Arc<Gpu>,
    shape: &[usize],
    labeled: usize,
    classes: usize,
    seed: u64,
) -> Result<(Tensor, Tensor)> {
    let x = crate::ops::uniform(gpu, shape, seed)?;
    let sp = &shape[2..];
    let per: usize = sp.iter().product();
    let mut lab = vec![0u32; labeled * per];
    for n in 0..labeled {
        for i in 0..per {
            let mut rem = i;
            let mut r2 = 0.0f64;
            for d in (0..sp.len()).rev() {
                let c = rem % sp[d];
                rem /= sp[d];
                let t = (c as f64 + 0.5) / sp[d] as f64 - 0.5;
                r2 += t * t;
            }
            let r = r2.sqrt();
            lab[n * per + i] = if r < 0.3 {
                (1 + (r * 10.0) as usize % (classes - 1)) as u32
            } else {
                0
            };
        }
    }
    let mut ls = vec![labeled];
    ls.extend_from_slice(sp);
    Ok((x, Tensor::from_u32(gpu, &lab, &ls)?))
}

fn time_iterations(
    gpu: &Arc<Gpu>,
    arch: Arch,
    shape: &[usize],
    classes: usize,
    warmup: usize,
    reps: usize,
) -> Result<(Timing, u64)> {
    let model = Model::init(
        gpu,
        ModelConfig {
            arch,
            in_channels: 1,
            num_classes: classes,
        },
        1337,
    )?;
    let mut cfg = if arch == Arch::VNet {
        TrainerConfig::la()
    } else {
        TrainerConfig::acdc()
    };
    cfg.labeled_bs = shape[0] / 2;
    let mut trainer = Trainer::new(model, cfg);
    let (x, labels) = batch(gpu, shape, shape[0] / 2, classes, 7)?;
    for i in 0..warmup {
        trainer.step(&StepInputs {
            x: &x,
            labels: &labels,
            rand_u: None,
            seed: i as u64,
        })?;
    }
    gpu.sync()?;
    gpu.reset_peak();
    let (mut ms, mut gt) = (vec![], vec![]);
    for i in 0..reps.max(1) {
        let t = Instant::now();
        gpu.timing_begin();
        let r = trainer.step(&StepInputs {
            x: &x,
            labels: &labels,
            rand_u: None,
            seed: 1000 + i as u64,
        });
        let r = r.and_then(|_| gpu.sync());
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let g = gpu.timing_end();
        r?;
        gt.push(g?);
    }
    let gflop = 9.0 * forward_gflop(arch, shape, classes);
    let peak = gpu.pool_stats().peak_allocated;
    Ok((Timing::from_samples(gflop, shape, &ms, &gt), peak))
}

fn time_inference(gpu: &Arc<Gpu>, shape: &[usize], warmup: usize, reps: usize) -> Result<Timing> {
    let model = Model::init(
        gpu,
        ModelConfig {
            arch: Arch::VNet,
            in_channels: 1,
            num_classes: 2,
        },
        1337,
    )?;
    let x = crate::ops::uniform(gpu, shape, 3)?;
    let run = || -> Result<()> {
        crate::autograd::no_grad(|| -> Result<()> {
            let (logits, _) = model.forward(&x, Pass::EVAL)?;
            crate::ops::softmax(&logits)?;
            Ok(())
        })
    };
    for _ in 0..warmup {
        run()?;
    }
    gpu.sync()?;
    let (mut ms, mut gt) = (vec![], vec![]);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        gpu.timing_begin();
        let r = run().and_then(|_| gpu.sync());
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let g = gpu.timing_end();
        r?;
        gt.push(g?);
    }
    let gflop = forward_gflop(Arch::VNet, shape, 2);
    Ok(Timing::from_samples(gflop, shape, &ms, &gt))
}

/// Run the benchmark's `rows` (in the order of [`Row::ALL`]). `full`: the reference's
/// sizes; else tiny shapes for CI.
pub fn run(
    gpu: &Arc<Gpu>,
    full: bool,
    warmup: usize,
    reps: usize,
    rows: &[Row],
) -> Result<BenchReport> {
    let (s3, s2, si): (Vec<usize>, Vec<usize>, Vec<usize>) = if full {
        (
            vec![4, 1, 112, 112, 80],
            vec![24, 1, 256, 256],
            vec![1, 1, 112, 112, 80],
        )
    } else {
        (
            vec![4, 1, 16, 16, 16],
            vec![4, 1, 32, 32],
            vec![1, 1, 16, 16, 16],
        )
    };
    let on = |r: Row| rows.contains(&r);
    let split = |x: Option<(Timing, u64)>| match x {
        Some((t, p)) => (Some(t), Some(p)),
        None => (None, None),
    };
    let (iteration3d, peak3) = split(
        on(Row::Iteration3d)
            .then(|| time_iterations(gpu, Arch::VNet, &s3, 2, warmup, reps))
            .transpose()?,
    );
    let (iteration2d, peak2) = split(
        on(Row::Iteration2d)
            .then(|| time_iterations(gpu, Arch::UNet, &s2, 4, warmup, reps))
            .transpose()?,
    );
    let inference3d = on(Row::Inference3d)
        .then(|| time_inference(gpu, &si, warmup, reps))
        .transpose()?;
    let (admt3d, peak_admt3) = split(
        on(Row::Admt3d)
            .then(|| super::admt::time_admt(gpu, Arch::VNet, &s3, 2, warmup, reps))
            .transpose()?,
    );
    let (admt2d, peak_admt2) = split(
        on(Row::Admt2d)
            .then(|| super::admt::time_admt(gpu, Arch::UNet, &s2, 4, warmup, reps))
            .transpose()?,
    );
    let layers = if on(Row::Layers) {
        conv_layer_table(gpu, full, reps)?
    } else {
        vec![]
    };
    Ok(BenchReport {
        engine: "ssnet-wgpu".into(),
        adapter: gpu.describe(),
        size: if full { "full" } else { "tiny" }.into(),
        tf32: false,
        gpu_timer: gpu
            .has_timestamps()
            .then(|| "timestamp queries".to_string()),
        tuned: gpu.tuning_enabled(),
        // After the runs: a failed first-use check of the matrix-unit path reads "off".
        tensor_cores: match gpu.matrix_units() {
            MatrixUnits::Off => "off".to_string(),
            MatrixUnits::Coop => format!("cooperative matrix {}", gpu.mma_shape().name()),
            MatrixUnits::Emulated => format!("emulated {}", gpu.mma_shape().name()),
        },
        iteration3d,
        iteration2d,
        inference3d,
        admt3d,
        admt2d,
        peak_memory_3d_bytes: peak3,
        peak_memory_2d_bytes: peak2,
        peak_memory_admt3d_bytes: peak_admt3,
        peak_memory_admt2d_bytes: peak_admt2,
        layers,
    })
}

/// FP32 peak of well-known cards in TFLOP/s (by name substring), for "% of peak".
pub fn known_fp32_peak_tflops(name: &str) -> Option<f64> {
    let n = name.to_lowercase();
    [
        ("h200", 67.0),
        ("h100", 67.0),
        ("a100", 19.5),
        ("rtx 4090", 82.6),
        ("rtx 3090", 35.6),
        ("mi300x", 163.4),
        ("mi250", 47.9),
    ]
    .iter()
    .find(|(k, _)| n.contains(k))
    .map(|&(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The totals tools/bench_torch.py gets by tracing PyTorch's convolutions (tools/README.md):
    /// VNet 80.2 GFLOP per 112×112×80 sample, UNet 141.6 at batch 24 on 256×256.
    #[test]
    fn forward_gflop_matches_the_pytorch_trace() {
        let v = forward_gflop(Arch::VNet, &[1, 1, 112, 112, 80], 2);
        assert!((v - 80.2).abs() < 0.05, "VNet {v}");
        let u = forward_gflop(Arch::UNet, &[24, 1, 256, 256], 4);
        assert!((u - 141.6).abs() < 0.05, "UNet {u}");
    }
}
