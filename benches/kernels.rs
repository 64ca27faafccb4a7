//! Throughput of the engine's basic kernels at realistic SS-Net sizes: the GEMM behind the
//! heads (millions of voxel rows × 16 → 32), a square GEMM, and the channel softmax of a
//! VNet batch. Each kernel is validated against its CPU twin on a small case first, then
//! timed with the device synchronised inside the timed region (wall clock around submit +
//! wait; the first runs are warm-up).
//!
//! `cargo bench --bench kernels` (add `-- --quick` for small sizes, e.g. on lavapipe).

use ssnet::gpu::Gpu;
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;
use std::sync::Arc;
use std::time::Instant;

fn upload(g: &Arc<Gpu>, v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f32(g, &r::to_f32(v), shape).expect("upload")
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    let (mut d, mut w) = (0f64, 0f64);
    for (g, x) in got.iter().zip(want) {
        d += (*g as f64 - x).powi(2);
        w += x * x;
    }
    (d / w.max(1e-300)).sqrt()
}

/// Median seconds of `reps` synchronised runs after `warm` warm-up runs.
fn time(g: &Arc<Gpu>, warm: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    g.sync().expect("sync");
    let mut v = vec![];
    for _ in 0..reps {
        let t = Instant::now();
        f();
        g.sync().expect("sync");
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var("SSNET_BENCH_QUICK").is_ok();
    let g = Gpu::shared().unwrap_or_else(|e| panic!("{e}"));
    println!("adapter: {}", g.describe());

    // Validate first.
    let (m, k, n) = (67, 33, 29);
    let a = r::normal(1, m * k);
    let b = r::normal(2, k * n);
    let c = ops::matmul(&upload(&g, &a, &[m, k]), &upload(&g, &b, &[k, n]))
        .unwrap()
        .to_f32()
        .unwrap();
    let e = rel_l2(&c, &r::matmul(&a, &b, m, k, n));
    assert!(e < 1e-6, "matmul validation failed: {e:.2e}");
    let x = r::normal(3, 2 * 3 * 50);
    let y = ops::softmax(&upload(&g, &x, &[2, 3, 50]))
        .unwrap()
        .to_f32()
        .unwrap();
    let e = rel_l2(&y, &r::softmax(&x, 2, 3, 50));
    assert!(e < 1e-6, "softmax validation failed: {e:.2e}");
    println!("validated: matmul and softmax match their CPU twins");

    let (reps, warm) = if quick { (3, 1) } else { (20, 3) };
    println!(
        "{:<44} {:>10} {:>12} {:>10}",
        "kernel", "ms", "GFLOP/s", "GB/s"
    );
    let gemms: &[(&str, usize, usize, usize)] = if quick {
        &[
            ("heads linear 65536x16 -> 32", 65_536, 16, 32),
            ("square 256^3", 256, 256, 256),
        ]
    } else {
        &[
            (
                "heads linear 2x112x112x80 x16 -> 32",
                2 * 112 * 112 * 80,
                16,
                32,
            ),
            (
                "heads linear 2x112x112x80 x32 -> 32",
                2 * 112 * 112 * 80,
                32,
                32,
            ),
            ("square 4096^3", 4096, 4096, 4096),
        ]
    };
    for &(name, m, k, n) in gemms {
        let a = Tensor::full(&g, &[m, k], 0.5).unwrap();
        let b = Tensor::full(&g, &[k, n], 0.25).unwrap();
        let s = time(&g, warm, reps, || {
            let _ = ops::matmul(&a, &b).unwrap();
        });
        let flop = 2.0 * m as f64 * n as f64 * k as f64;
        let bytes = 4.0 * (m * k + k * n + m * n) as f64;
        println!(
            "{name:<44} {:>10.3} {:>12.1} {:>10.1}",
            s * 1e3,
            flop / s / 1e9,
            bytes / s / 1e9
        );
    }
    let sm: &[(&str, [usize; 3])] = if quick {
        &[("softmax 2x2x16^3", [2, 2, 4096])]
    } else {
        &[
            ("softmax 4x2x112x112x80", [4, 2, 112 * 112 * 80]),
            ("softmax 24x4x256x256", [24, 4, 65_536]),
        ]
    };
    for &(name, shape) in sm {
        let x = Tensor::full(&g, &shape, 0.1).unwrap();
        let s = time(&g, warm, reps, || {
            let _ = ops::softmax(&x).unwrap();
        });
        let n = (shape[0] * shape[1] * shape[2]) as f64;
        // ~3 flops per element (max, exp, divide) and one read + one write.
        println!(
            "{name:<44} {:>10.3} {:>12.1} {:>10.1}",
            s * 1e3,
            3.0 * n / s / 1e9,
            8.0 * n / s / 1e9
        );
    }
}
