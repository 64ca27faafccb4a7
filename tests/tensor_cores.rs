//! The tensor-core convolution path (`conv_mma.wgsl`: f16 tiles, f32 accumulation,
//! power-of-two operand scaling) against the f64 twins, on both tile shapes: 16×16×16 and the
//! 8×8×8 one of Metal-shaped adapters (`mma8.wgsl`). No adapter here has cooperative
//! matrices, so these tests run the emulated back-end (`SSNET_TENSOR_CORES=emulate`): the same
//! module with the 16×16×16 products done lane by lane on the same f16 tiles. The
//! cooperative-matrix back-end itself is translated to SPIR-V in tests/shaders.rs and checked
//! against the f32 path on the device at first use (ops::conv::check_mma).
//!
//! Tolerance: each operand is rounded to f16 (relative 2^-11 ≈ 4.9e-4 per value) and products
//! are accumulated in f32, so on random data the relative L2 error is about 3e-4..6e-4; the
//! written bound is 2e-3 (the f32 path meets 1e-6).

mod common;
use common::*;
use ssnet::gpu::{Gpu, GpuOptions, MatrixUnits, MmaShape};
use ssnet::ops;
use ssnet::reference as r;
use std::sync::{Arc, OnceLock};

const TOL_F16: f64 = 2e-3;

/// The test adapter opened with the emulated matrix-unit path on `shape` (a failure when
/// there is none).
fn open_emulated(shape: MmaShape) -> Arc<Gpu> {
    Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            matrix_units: MatrixUnits::Emulated,
            mma_shape: Some(shape),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter with SHADER_F16: {e}"))
}

/// The test adapter opened with the emulated matrix-unit path (a failure when there is none).
fn emu() -> Arc<Gpu> {
    static G: OnceLock<Arc<Gpu>> = OnceLock::new();
    G.get_or_init(|| open_emulated(MmaShape::M16x16)).clone()
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    ssnet::golden::errors(&r::to_f32(a), &r::to_f32(b)).rel_l2
}

/// Forward (with bias), input and weight gradients of one conv on the f16 path against the
/// twins; also checks the forward and weight gradient are not the f32 path's (the f16 path
/// really ran).
fn check(x_shape: &[usize], w_shape: &[usize], s: usize, p: usize, seed: u64, gy_scale: f64) {
    check_on(&emu(), x_shape, w_shape, s, p, seed, gy_scale);
}

/// The test adapter opened with the emulated matrix-unit path on 8×8 tiles (Metal's shape):
/// each 16×16 product assembled from 8×8 fragments.
fn emu8() -> Arc<Gpu> {
    static G: OnceLock<Arc<Gpu>> = OnceLock::new();
    G.get_or_init(|| open_emulated(MmaShape::M8x8)).clone()
}

/// [`check`] on the device `g`.
#[allow(clippy::too_many_arguments)]
fn check_on(
    g: &Arc<Gpu>,
    x_shape: &[usize],
    w_shape: &[usize],
    s: usize,
    p: usize,
    seed: u64,
    gy_scale: f64,
) {
    let g = g.clone();
    let f32_gpu = gpu();
    let d2 = x_shape.len() == 4;
    let x = r::normal(seed, numel(x_shape));
    let w: Vec<f64> = r::normal(seed + 1, numel(w_shape))
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = r::normal(seed + 2, w_shape[0]);
    let (yr, ys) = if d2 {
        (
            r::conv2d(&x, x_shape, &w, w_shape, Some(&b), s, p),
            r::conv2d_out_shape(x_shape, w_shape, s, p),
        )
    } else {
        (
            r::conv3d(&x, x_shape, &w, w_shape, Some(&b), s, p),
            r::conv3d_out_shape(x_shape, w_shape, s, p),
        )
    };
    let dy: Vec<f64> = r::normal(seed + 3, yr.len())
        .iter()
        .map(|v| v * gy_scale)
        .collect();
    let (gxr, gwr) = if d2 {
        (
            r::conv2d_bwd_input(&dy, &w, w_shape, x_shape, s, p),
            r::conv2d_bwd_weight(&dy, &x, x_shape, w_shape, s, p),
        )
    } else {
        (
            r::conv3d_bwd_input(&dy, &w, w_shape, x_shape, s, p),
            r::conv3d_bwd_weight(&dy, &x, x_shape, w_shape, s, p),
        )
    };
    let name = format!("x {x_shape:?} w {w_shape:?} s {s} p {p} gy×{gy_scale:e}");
    let run = |g: &Arc<Gpu>| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (xt, wt, bt) = (
            upload(g, &x, x_shape),
            upload(g, &w, w_shape),
            upload(g, &b, &[w_shape[0]]),
        );
        let dyt = upload(g, &dy, &ys);
        let (y, gx, gw) = if d2 {
            (
                ops::conv2d(&xt, &wt, Some(&bt), s, p).unwrap(),
                ops::conv2d_bwd_input(&dyt, &wt, x_shape, s, p).unwrap(),
                ops::conv2d_bwd_weight(&dyt, &xt, w_shape, s, p).unwrap(),
            )
        } else {
            (
                ops::conv3d(&xt, &wt, Some(&bt), s, p).unwrap(),
                ops::conv3d_bwd_input(&dyt, &wt, x_shape, s, p).unwrap(),
                ops::conv3d_bwd_weight(&dyt, &xt, w_shape, s, p).unwrap(),
            )
        };
        (down(&y), down(&gx), down(&gw))
    };
    let (y16, gx16, gw16) = run(&g);
    assert_eq!(
        g.matrix_units(),
        MatrixUnits::Emulated,
        "the f16 path was disabled by its first-use check"
    );
    assert_close(&format!("{name} fwd f16"), &y16, &yr, TOL_F16);
    assert_close(&format!("{name} gx f16"), &gx16, &gxr, TOL_F16);
    assert_close(&format!("{name} gw f16"), &gw16, &gwr, TOL_F16);
    let (y32, _, gw32) = run(&f32_gpu);
    for (what, a, b) in [("forward", &y16, &y32), ("weight gradient", &gw16, &gw32)] {
        let d = rel_l2(a, b);
        assert!(
            d > 1e-6,
            "{name}: the f16 {what} matches the f32 path to {d:e}: it did not run on f16 tiles"
        );
    }
}

#[test]
fn conv3d_on_f16_tiles_matches_the_twins_for_every_tile_shape() {
    // Co = 13 (narrowest tile), 24 (256×32), 40 (128×64), 70 (64×128): rows, columns and
    // reduction all off the tile multiples. The weight gradients (rows Co, columns 5·27)
    // take the 16×256, 32×128, 64×128 and 128×64 tiles; 150 channels the 256×32 one.
    for (i, co) in [13usize, 24, 40, 70, 150].into_iter().enumerate() {
        check(
            &[2, 5, 9, 7, 6],
            &[co, 5, 3, 3, 3],
            1,
            1,
            10 + i as u64,
            1.0,
        );
    }
}

/// The cases above reach every matrix-unit tile (forward columns = Co, weight-gradient rows
/// = Co and columns = 5·27).
#[test]
fn the_cases_cover_every_matrix_unit_tile() {
    let cos = [13usize, 24, 40, 70, 150];
    let fwd: std::collections::HashSet<_> = cos.iter().map(|&c| ops::pick_mma_tile(c)).collect();
    let wg: std::collections::HashSet<_> = cos
        .iter()
        .map(|&c| ops::pick_wgrad_mma_tile(c, 5 * 27))
        .collect();
    assert_eq!(fwd.len(), ops::MMA_TILES.len(), "forward tiles {fwd:?}");
    assert_eq!(
        wg.len(),
        ops::WGRAD_MMA_TILES.len(),
        "weight-gradient tiles {wg:?}"
    );
}

/// The 8×8 tile (Metal-shaped adapters) on the same cases: every forward and weight-gradient
/// tile, 2D, strided, a split reduction and tiny gradients, against the twins.
#[test]
fn conv_on_8x8_fragments_matches_the_twins_for_every_tile_shape() {
    let g = emu8();
    assert_eq!(g.mma_shape(), MmaShape::M8x8);
    for (i, co) in [13usize, 24, 40, 70, 150].into_iter().enumerate() {
        check_on(
            &g,
            &[2, 5, 9, 7, 6],
            &[co, 5, 3, 3, 3],
            1,
            1,
            90 + i as u64,
            1.0,
        );
    }
    check_on(&g, &[3, 7, 13, 11], &[33, 7, 3, 3], 1, 1, 95, 1.0);
    check_on(&g, &[2, 6, 8, 6, 10], &[20, 6, 2, 2, 2], 2, 0, 96, 1.0);
    check_on(&g, &[1, 128, 3, 3, 3], &[20, 128, 3, 3, 3], 1, 1, 97, 1e-9);
}

#[test]
fn conv2d_and_strided_conv_on_f16_tiles_match_the_twins() {
    check(&[3, 7, 13, 11], &[33, 7, 3, 3], 1, 1, 20, 1.0);
    // VNet's downsampling (kernel 2, stride 2): a strided forward; its input gradient is the
    // transposed-conv GEMM (f32).
    check(&[2, 6, 8, 6, 10], &[20, 6, 2, 2, 2], 2, 0, 21, 1.0);
}

#[test]
fn split_reduction_on_f16_tiles_matches_the_twins() {
    // 27 rows and a 3456-long reduction: one output tile, the reduction split in three.
    check(&[1, 128, 3, 3, 3], &[20, 128, 3, 3, 3], 1, 1, 30, 1.0);
    // A long weight-gradient reduction (2·16·14·12 rows): chunked, summed in a fixed order.
    check(&[2, 3, 16, 14, 12], &[17, 3, 3, 3, 3], 1, 1, 31, 1.0);
}

#[test]
fn operand_scaling_keeps_tiny_and_huge_gradients() {
    // Without the power-of-two scaling, 1e-9 underflows f16 (smallest 6e-8) and 1e6
    // overflows it (largest 65504): the input gradient would be zero or infinite.
    check(&[2, 5, 9, 7, 6], &[24, 5, 3, 3, 3], 1, 1, 40, 1e-9);
    check(&[2, 5, 9, 7, 6], &[24, 5, 3, 3, 3], 1, 1, 41, 1e6);
}

#[test]
fn nan_propagates_like_the_f32_path() {
    let (g, f) = (emu(), gpu());
    let xs = [1, 3, 6, 5, 4];
    let ws = [18, 3, 3, 3, 3];
    let mut x = r::normal(50, numel(&xs));
    x[37] = f64::NAN;
    let w = r::normal(51, numel(&ws));
    let y = |g: &Arc<Gpu>| {
        let t = ops::conv3d(&upload(g, &x, &xs), &upload(g, &w, &ws), None, 1, 1).unwrap();
        t.to_f32().unwrap()
    };
    let (a, b) = (y(&g), y(&f));
    let nan_a: Vec<bool> = a.iter().map(|v| v.is_nan()).collect();
    let nan_b: Vec<bool> = b.iter().map(|v| v.is_nan()).collect();
    assert!(nan_b.iter().any(|&v| v), "the f32 path lost the NaN");
    assert_eq!(
        nan_a, nan_b,
        "NaN positions differ between the f16 and f32 paths"
    );
}

#[test]
fn f16_path_is_bit_deterministic() {
    let g = emu();
    let xs = [2, 8, 7, 9, 5];
    let ws = [36, 8, 3, 3, 3];
    let x = upload(&g, &r::normal(60, numel(&xs)), &xs);
    let w = upload(&g, &r::normal(61, numel(&ws)), &ws);
    let a = ops::conv3d(&x, &w, None, 1, 1).unwrap().to_f32().unwrap();
    let b = ops::conv3d(&x, &w, None, 1, 1).unwrap().to_f32().unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn matrix_unit_option_parses_and_rejects_junk() {
    assert_eq!(MatrixUnits::parse("on").unwrap(), MatrixUnits::Coop);
    assert_eq!(MatrixUnits::parse("0").unwrap(), MatrixUnits::Off);
    assert_eq!(
        MatrixUnits::parse("Emulate").unwrap(),
        MatrixUnits::Emulated
    );
    let e = MatrixUnits::parse("fast").unwrap_err().to_string();
    assert!(
        e.contains("'fast'") && e.contains("off, on, emulate"),
        "{e}"
    );
}

/// Asking for cooperative matrices on an adapter without them falls back to f32 (one line on
/// stderr), it does not fail.
#[test]
fn tensor_cores_without_matrix_units_fall_back_to_f32() {
    let g = Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            matrix_units: MatrixUnits::Coop,
            ..Default::default()
        },
    )
    .unwrap();
    let (xs, ws) = ([2usize, 6, 5, 6, 4], [9usize, 6, 3, 3, 3]);
    let (x, w) = (r::normal(80, numel(&xs)), r::normal(81, numel(&ws)));
    let y = |g: &Arc<Gpu>| {
        let t = ops::conv3d(&upload(g, &x, &xs), &upload(g, &w, &ws), None, 1, 1).unwrap();
        t.to_f32().unwrap()
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    if g.features
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        // An adapter with matrix units: the path is on and within the f16 bound of f32.
        let got = y(&g);
        assert_eq!(
            g.matrix_units(),
            MatrixUnits::Coop,
            "first-use check failed"
        );
        let want = y(&gpu());
        let e = ssnet::golden::errors(&got, &want).rel_l2;
        assert!(e <= TOL_F16, "tensor cores vs f32: {e:e}");
    } else {
        // The fallback is the f32 path itself: the same bits as a device opened without asking.
        assert_eq!(g.matrix_units(), MatrixUnits::Off);
        assert_eq!(bits(&y(&g)), bits(&y(&gpu())));
    }
}

/// Autotuning covers the matrix-unit kernels too: with tuning on, the f16 path still matches
/// the twins, and its forward, input-gradient and weight-gradient shapes are cached under
/// their own kernel names (never mixed with the f32 kernels' choices).
#[test]
fn tuned_f16_path_matches_the_twins_and_caches_its_own_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            matrix_units: MatrixUnits::Emulated,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(g.has_timestamps(), "tuning needs TIMESTAMP_QUERY");
    assert!(g.enable_tuning(Some(tmp.path().join("tune.json"))));
    let (xs, ws) = ([2usize, 5, 7, 6, 5], [20usize, 5, 3, 3, 3]);
    let x = r::normal(70, numel(&xs));
    let w: Vec<f64> = r::normal(71, numel(&ws)).iter().map(|v| v * 0.3).collect();
    let ys = r::conv3d_out_shape(&xs, &ws, 1, 1);
    let dy = r::normal(72, numel(&ys));
    let (xt, wt, dyt) = (
        upload(&g, &x, &xs),
        upload(&g, &w, &ws),
        upload(&g, &dy, &ys),
    );
    let y = ops::conv3d(&xt, &wt, None, 1, 1).unwrap();
    let gx = ops::conv3d_bwd_input(&dyt, &wt, &xs, 1, 1).unwrap();
    let gw = ops::conv3d_bwd_weight(&dyt, &xt, &ws, 1, 1).unwrap();
    assert_close(
        "tuned f16 fwd",
        &down(&y),
        &r::conv3d(&x, &xs, &w, &ws, None, 1, 1),
        TOL_F16,
    );
    assert_close(
        "tuned f16 gx",
        &down(&gx),
        &r::conv3d_bwd_input(&dy, &w, &ws, &xs, 1, 1),
        TOL_F16,
    );
    assert_close(
        "tuned f16 gw",
        &down(&gw),
        &r::conv3d_bwd_weight(&dy, &x, &xs, &ws, 1, 1),
        TOL_F16,
    );
    let keys: Vec<String> = g.tuned_choices().keys().cloned().collect();
    let count = |prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(
        count("conv_mma_emulated "),
        2,
        "forward + input gradient: {keys:?}"
    );
    assert_eq!(count("wgrad_mma_emulated "), 1, "weight gradient: {keys:?}");
    assert_eq!(
        count("conv_gemm "),
        0,
        "the f32 kernels did not run: {keys:?}"
    );
    assert_eq!(
        count("conv_wgrad "),
        0,
        "the f32 kernels did not run: {keys:?}"
    );
}
