//! Convolution kernels against their f64 twins: forward, input, weight and bias gradients on
//! shapes that are not tile multiples (odd channels, odd spatial sizes, batch 1-3), every
//! kernel path (implicit GEMM forward, flipped-kernel input gradient, kernel == stride
//! transposed GEMM, direct strided gather, split-K, chunked weight gradient), every tile shape, folded
//! grids, determinism, errors; finite differences on every twin backward.

mod common;
use common::*;
use ssnet::autograd::{backward_with, backward_wrt};
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;

/// Weight gradients sum over N·voxels products (thousands here): a looser written bound.
const TOL_GW: f64 = 2e-5;

/// One 3D (or 2D, `d2`) conv case: x shape, w shape, stride, padding.
struct Case {
    x: Vec<usize>,
    w: Vec<usize>,
    s: usize,
    p: usize,
}

fn case(x: &[usize], w: &[usize], s: usize, p: usize) -> Case {
    Case {
        x: x.to_vec(),
        w: w.to_vec(),
        s,
        p,
    }
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// Runs one case on the GPU through the tape (forward, backward with a random upstream
/// gradient) and through the public backward functions, against the twins.
fn check_conv(c: &Case, seed: u64) {
    let g = gpu();
    let d2 = c.x.len() == 4;
    let co = c.w[0];
    let x = r::normal(seed, numel(&c.x));
    let w: Vec<f64> = r::normal(seed + 1, numel(&c.w))
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = r::normal(seed + 2, co);
    let (yr, ys) = if d2 {
        (
            r::conv2d(&x, &c.x, &w, &c.w, Some(&b), c.s, c.p),
            r::conv2d_out_shape(&c.x, &c.w, c.s, c.p),
        )
    } else {
        (
            r::conv3d(&x, &c.x, &w, &c.w, Some(&b), c.s, c.p),
            r::conv3d_out_shape(&c.x, &c.w, c.s, c.p),
        )
    };
    let dy = r::normal(seed + 3, yr.len());
    let (gxr, gwr, gbr) = if d2 {
        (
            r::conv2d_bwd_input(&dy, &w, &c.w, &c.x, c.s, c.p),
            r::conv2d_bwd_weight(&dy, &x, &c.x, &c.w, c.s, c.p),
            r::conv2d_bwd_bias(&dy, &ys),
        )
    } else {
        (
            r::conv3d_bwd_input(&dy, &w, &c.w, &c.x, c.s, c.p),
            r::conv3d_bwd_weight(&dy, &x, &c.x, &c.w, c.s, c.p),
            r::conv3d_bwd_bias(&dy, &ys),
        )
    };
    let xt = upload(&g, &x, &c.x).with_grad();
    let wt = upload(&g, &w, &c.w).with_grad();
    let bt = upload(&g, &b, &[co]).with_grad();
    let dyt = upload(&g, &dy, &ys);
    let name = format!(
        "{} x {:?} w {:?} s {} p {}",
        if d2 { "conv2d" } else { "conv3d" },
        c.x,
        c.w,
        c.s,
        c.p
    );
    let y = if d2 {
        ops::conv2d(&xt, &wt, Some(&bt), c.s, c.p)
    } else {
        ops::conv3d(&xt, &wt, Some(&bt), c.s, c.p)
    }
    .unwrap();
    assert_eq!(y.shape(), ys.as_slice(), "{name}: output shape");
    assert_close(&format!("{name} fwd"), &down(&y), &yr, TOL_FWD);
    let gr = backward_with(&y, &dyt).unwrap();
    assert_close(
        &format!("{name} gx"),
        &down(gr.get(&xt).unwrap()),
        &gxr,
        TOL_BWD,
    );
    assert_close(
        &format!("{name} gw"),
        &down(gr.get(&wt).unwrap()),
        &gwr,
        TOL_GW,
    );
    assert_close(
        &format!("{name} gb"),
        &down(gr.get(&bt).unwrap()),
        &gbr,
        TOL_BWD,
    );
    // The public backward functions directly, and the forward without bias.
    let (xd, wd) = (xt.detach(), wt.detach());
    let gx = if d2 {
        ops::conv2d_bwd_input(&dyt, &wd, &c.x, c.s, c.p)
    } else {
        ops::conv3d_bwd_input(&dyt, &wd, &c.x, c.s, c.p)
    }
    .unwrap();
    assert_close(&format!("{name} bwd_input"), &down(&gx), &gxr, TOL_BWD);
    let gw = if d2 {
        ops::conv2d_bwd_weight(&dyt, &xd, &c.w, c.s, c.p)
    } else {
        ops::conv3d_bwd_weight(&dyt, &xd, &c.w, c.s, c.p)
    }
    .unwrap();
    assert_eq!(gw.shape(), c.w.as_slice());
    assert_close(&format!("{name} bwd_weight"), &down(&gw), &gwr, TOL_GW);
    let gb = if d2 {
        ops::conv2d_bwd_bias(&dyt)
    } else {
        ops::conv3d_bwd_bias(&dyt)
    }
    .unwrap();
    assert_close(&format!("{name} bwd_bias"), &down(&gb), &gbr, TOL_BWD);
    let y0 = if d2 {
        ops::conv2d(&xd, &wd, None, c.s, c.p)
    } else {
        ops::conv3d(&xd, &wd, None, c.s, c.p)
    }
    .unwrap();
    let yr0 = if d2 {
        r::conv2d(&x, &c.x, &w, &c.w, None, c.s, c.p)
    } else {
        r::conv3d(&x, &c.x, &w, &c.w, None, c.s, c.p)
    };
    assert_close(&format!("{name} fwd no bias"), &down(&y0), &yr0, TOL_FWD);
}

fn conv3d_cases() -> Vec<Case> {
    vec![
        // M, N, K none a tile multiple: 2·210 rows, 70 columns, 135 reduction (64×64 tiles
        // forward, 128×32 / 32×128 elsewhere).
        case(&[2, 5, 7, 6, 5], &[70, 5, 3, 3, 3], 1, 1),
        // Co = 16 (256×16 tiles), chunked weight gradient (N·voxels = 4320 rows), batch 3.
        case(&[3, 3, 12, 12, 10], &[16, 3, 3, 3, 3], 1, 1),
        // Co ≤ 16 with a long reduction: 16×256 weight-gradient tiles.
        case(&[1, 9, 5, 4, 6], &[7, 9, 3, 3, 3], 1, 1),
        // Downsampling k2 s2 (input gradient through the transposed GEMM), odd channels.
        case(&[2, 3, 8, 6, 4], &[5, 3, 2, 2, 2], 2, 0),
        // k2 s2 with an odd input (the last voxel gets no output): direct gather.
        case(&[1, 3, 7, 6, 5], &[4, 3, 2, 2, 2], 2, 0),
        // Strided 3×3×3 with padding: direct gather input gradient.
        case(&[2, 3, 7, 5, 6], &[6, 3, 3, 3, 3], 2, 1),
        // 1×1×1 and no padding with a kernel larger than 1.
        case(&[2, 6, 4, 5, 3], &[2, 6, 1, 1, 1], 1, 0),
        case(&[1, 2, 6, 5, 7], &[33, 2, 3, 2, 3], 1, 0),
        // Few output tiles, long reductions: split-K forward / input gradient.
        case(&[1, 40, 4, 4, 4], &[8, 40, 3, 3, 3], 1, 1),
        case(&[1, 6, 4, 4, 3], &[48, 6, 3, 3, 3], 1, 1),
        // Padding 2.
        case(&[1, 4, 3, 4, 5], &[3, 4, 3, 3, 3], 1, 2),
        // Few rows, many columns: 32×128 and 16×256 forward tiles.
        case(&[1, 3, 3, 3, 3], &[100, 3, 3, 3, 3], 1, 1),
        case(&[1, 2, 2, 2, 3], &[200, 2, 3, 3, 3], 1, 1),
        // Small weight gradients (one input channel, as VNet's and UNet's first layers):
        // grouped 32×32, 16×32 and 32×16 weight-gradient tiles.
        case(&[1, 1, 6, 5, 4], &[24, 1, 3, 3, 3], 1, 1),
        case(&[1, 1, 5, 4, 6], &[10, 1, 3, 3, 3], 1, 1),
        case(&[1, 2, 6, 4, 4], &[20, 2, 2, 2, 2], 2, 0),
        // 32×128 and 256×16 weight-gradient tiles.
        case(&[1, 16, 4, 4, 6], &[30, 16, 2, 2, 2], 2, 0),
        case(&[1, 2, 4, 4, 2], &[250, 2, 2, 2, 2], 2, 0),
    ]
}

#[test]
fn conv3d_matches_twin() {
    for (i, c) in conv3d_cases().iter().enumerate() {
        check_conv(c, 10 * i as u64);
    }
}

#[test]
fn conv2d_matches_twin() {
    for (i, c) in [
        case(&[2, 3, 9, 11], &[16, 3, 3, 3], 1, 1),
        case(&[3, 5, 7, 6], &[4, 5, 1, 1], 1, 0),
        case(&[2, 17, 13, 10], &[33, 17, 3, 3], 1, 1),
        case(&[1, 3, 8, 10], &[5, 3, 2, 2], 2, 0),
        case(&[2, 4, 9, 7], &[3, 4, 3, 3], 2, 1),
    ]
    .iter()
    .enumerate()
    {
        check_conv(c, 100 + 10 * i as u64);
    }
}

/// Transposed conv (kernel == stride) forward and backwards through the tape and directly.
fn check_transpose(xs: &[usize], ws: &[usize], s: usize, seed: u64) {
    let g = gpu();
    let co = ws[1];
    let x = r::normal(seed, numel(xs));
    let w: Vec<f64> = r::normal(seed + 1, numel(ws))
        .iter()
        .map(|v| v * 0.3)
        .collect();
    let b = r::normal(seed + 2, co);
    let ys = r::conv_transpose3d_out_shape(xs, ws, s);
    let yr = r::conv_transpose3d(&x, xs, &w, ws, Some(&b), s);
    let dy = r::normal(seed + 3, yr.len());
    let xt = upload(&g, &x, xs).with_grad();
    let wt = upload(&g, &w, ws).with_grad();
    let bt = upload(&g, &b, &[co]).with_grad();
    let dyt = upload(&g, &dy, &ys);
    let name = format!("conv_transpose3d x {xs:?} w {ws:?} s {s}");
    let y = ops::conv_transpose3d(&xt, &wt, Some(&bt), s).unwrap();
    assert_eq!(y.shape(), ys.as_slice());
    assert_close(&format!("{name} fwd"), &down(&y), &yr, TOL_FWD);
    let gr = backward_with(&y, &dyt).unwrap();
    let gxr = r::conv_transpose3d_bwd_input(&dy, &w, ws, xs, s);
    let gwr = r::conv_transpose3d_bwd_weight(&dy, &x, xs, ws, s);
    let gbr = r::conv_transpose3d_bwd_bias(&dy, &ys);
    assert_close(
        &format!("{name} gx"),
        &down(gr.get(&xt).unwrap()),
        &gxr,
        TOL_BWD,
    );
    assert_close(
        &format!("{name} gw"),
        &down(gr.get(&wt).unwrap()),
        &gwr,
        TOL_GW,
    );
    assert_close(
        &format!("{name} gb"),
        &down(gr.get(&bt).unwrap()),
        &gbr,
        TOL_BWD,
    );
    let gx = ops::conv_transpose3d_bwd_input(&dyt, &wt.detach(), xs, s).unwrap();
    assert_close(&format!("{name} bwd_input"), &down(&gx), &gxr, TOL_BWD);
    let gw = ops::conv_transpose3d_bwd_weight(&dyt, &xt.detach(), ws, s).unwrap();
    assert_close(&format!("{name} bwd_weight"), &down(&gw), &gwr, TOL_GW);
    let gb = ops::conv_transpose3d_bwd_bias(&dyt).unwrap();
    assert_close(&format!("{name} bwd_bias"), &down(&gb), &gbr, TOL_BWD);
    let y0 = ops::conv_transpose3d(&xt.detach(), &wt.detach(), None, s).unwrap();
    assert_close(
        &format!("{name} fwd no bias"),
        &down(&y0),
        &r::conv_transpose3d(&x, xs, &w, ws, None, s),
        TOL_FWD,
    );
}

#[test]
fn conv_transpose3d_matches_twin() {
    check_transpose(&[2, 5, 3, 4, 5], &[5, 3, 2, 2, 2], 2, 1);
    check_transpose(&[1, 19, 5, 3, 4], &[19, 9, 2, 2, 2], 2, 2);
    check_transpose(&[3, 4, 3, 2, 3], &[4, 70, 2, 2, 2], 2, 3);
    check_transpose(&[1, 3, 2, 3, 2], &[3, 2, 3, 3, 3], 3, 4);
    check_transpose(&[2, 7, 4, 3, 5], &[7, 6, 1, 1, 1], 1, 5);
}

#[test]
fn the_cases_cover_every_tile_shape() {
    let (mut gemm, mut wgrad) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let (mut split_fwd, mut split_in, mut chunked, mut grouped_chunked) =
        (false, false, false, false);
    let (mut narrow_fwd, mut narrow_in) = (false, false);
    for c in conv3d_cases() {
        let ys = r::conv3d_out_shape(&c.x, &c.w, c.s, c.p);
        let (m, co, k) = (ys[0] * numel(&ys[2..]), c.w[0], numel(&c.w[1..]));
        // Forward.
        if co <= ops::NARROW_N {
            narrow_fwd = true;
        } else {
            let t = ops::pick_tile(m, co);
            gemm.insert(t);
            let tiles = m.div_ceil(t.0 as usize) * co.div_ceil(t.1 as usize);
            split_fwd |= ops::gemm_splits(tiles, k, t.2 as usize).0 > 1;
        }
        // Input gradient of a stride-1 conv.
        if c.s == 1 && c.x[1] <= ops::NARROW_N {
            narrow_in = true;
        } else if c.s == 1 {
            let (mi, ci, ki) = (c.x[0] * numel(&c.x[2..]), c.x[1], co * numel(&c.w[2..]));
            let t = ops::pick_tile(mi, ci);
            gemm.insert(t);
            let tiles = mi.div_ceil(t.0 as usize) * ci.div_ceil(t.1 as usize);
            split_in |= ops::gemm_splits(tiles, ki, t.2 as usize).0 > 1;
        }
        // Weight gradient.
        let t = ops::pick_wgrad_tile(co, k);
        wgrad.insert(t);
        let tiles = co.div_ceil(t.0 as usize) * k.div_ceil(t.1 as usize);
        let chunks = ops::wgrad_chunks(m, tiles, co * k, (t.2 * t.3) as usize).0;
        chunked |= chunks > 1;
        grouped_chunked |= chunks > 1 && t.3 > 1;
    }
    for t in ops::TILES {
        assert!(
            gemm.contains(&t),
            "GEMM tile {t:?} not exercised by the conv3d cases"
        );
    }
    for t in ops::WGRAD_TILES {
        assert!(
            wgrad.contains(&t),
            "weight-gradient tile {t:?} not exercised by the conv3d cases"
        );
    }
    assert!(
        narrow_fwd && narrow_in,
        "narrow kernel: fwd {narrow_fwd}, input {narrow_in}"
    );
    assert!(
        split_fwd && split_in && chunked && grouped_chunked,
        "split-K fwd {split_fwd}, input {split_in}, wgrad chunks {chunked}, grouped {grouped_chunked}"
    );
}

#[test]
fn grid_folding() {
    assert_eq!(ops::fold_grid(5, 65535), Some([5, 1, 1]));
    assert_eq!(ops::fold_grid(65535, 65535), Some([65535, 1, 1]));
    assert_eq!(ops::fold_grid(65536, 65535), Some([32768, 2, 1]));
    assert_eq!(ops::fold_grid(200_000, 65535), Some([50000, 4, 1]));
    assert_eq!(ops::fold_grid(13, 4), Some([4, 4, 1]));
    assert_eq!(ops::fold_grid(17, 4), None);
    for total in 1..200u64 {
        if let Some([x, y, _]) = ops::fold_grid(total, 16) {
            assert!(
                (x as u64) * (y as u64) >= total && x <= 16 && y <= 16,
                "{total}: {x}x{y}"
            );
            assert!(
                (x as u64) * (y as u64) < total + y as u64,
                "{total}: {x}x{y} wastes a row"
            );
        }
    }
    // Every kernel on grids folded into 2-D (at most 7 workgroups per dimension on this
    // thread), several rows of tiles each: the kernels' unfolding of the workgroup id.
    ops::conv_grid_cap_for_tests(Some(7));
    check_conv(&case(&[2, 5, 7, 6, 5], &[70, 5, 3, 3, 3], 1, 1), 500);
    check_conv(&case(&[1, 3, 9, 9, 8], &[5, 3, 2, 2, 2], 2, 0), 510);
    check_conv(&case(&[1, 3, 9, 7, 8], &[5, 3, 3, 3, 3], 2, 1), 520);
    check_transpose(&[2, 5, 7, 4, 5], &[5, 9, 2, 2, 2], 2, 530);
    // The narrow kernel (3 output channels, 2 input channels) over 9 folded workgroups.
    check_conv(&case(&[2, 2, 20, 20, 11], &[3, 2, 3, 3, 3], 1, 1), 540);
    ops::conv_grid_cap_for_tests(None);
}

#[test]
fn weight_gradients_are_deterministic() {
    let g = gpu();
    // Chunked reduction (several partials summed in a fixed order).
    let (xs, ws) = ([3usize, 3, 12, 12, 10], [16usize, 3, 3, 3, 3]);
    let ys = r::conv3d_out_shape(&xs, &ws, 1, 1);
    let x = upload(&g, &r::normal(41, numel(&xs)), &xs);
    let dy = upload(&g, &r::normal(42, numel(&ys)), &ys);
    let bits = |t: &Tensor| {
        t.to_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<u32>>()
    };
    let a = bits(&ops::conv3d_bwd_weight(&dy, &x, &ws, 1, 1).unwrap());
    let b = bits(&ops::conv3d_bwd_weight(&dy, &x, &ws, 1, 1).unwrap());
    assert_eq!(a, b, "conv3d weight gradient differs between two runs");
    let tx = upload(&g, &r::normal(43, 2 * 8 * 5 * 6 * 7), &[2, 8, 5, 6, 7]);
    let tdy = upload(
        &g,
        &r::normal(44, 2 * 4 * 10 * 12 * 14),
        &[2, 4, 10, 12, 14],
    );
    let a = bits(&ops::conv_transpose3d_bwd_weight(&tdy, &tx, &[8, 4, 2, 2, 2], 2).unwrap());
    let b = bits(&ops::conv_transpose3d_bwd_weight(&tdy, &tx, &[8, 4, 2, 2, 2], 2).unwrap());
    assert_eq!(
        a, b,
        "conv_transpose3d weight gradient differs between two runs"
    );
    let gb1 = bits(&ops::conv3d_bwd_bias(&dy).unwrap());
    let gb2 = bits(&ops::conv3d_bwd_bias(&dy).unwrap());
    assert_eq!(gb1, gb2, "bias gradient differs between two runs");
}

#[test]
fn input_only_backward_skips_the_weight() {
    // VAT's power iteration: the gradient of the input only.
    let g = gpu();
    let (xs, ws) = ([2usize, 3, 5, 4, 6], [4usize, 3, 3, 3, 3]);
    let x = r::normal(61, numel(&xs));
    let w = r::normal(62, numel(&ws));
    let xt = upload(&g, &x, &xs).with_grad();
    let wt = upload(&g, &w, &ws).with_grad();
    let y = ops::conv3d(&xt, &wt, None, 1, 1).unwrap();
    let loss = ops::sum_all(&ops::mul(&y, &y).unwrap()).unwrap();
    let gr = backward_wrt(&loss, &[&xt]).unwrap();
    assert!(
        gr.get(&wt).is_none(),
        "weight gradient computed for an input-only backward"
    );
    let yr = r::conv3d(&x, &xs, &w, &ws, None, 1, 1);
    let dy: Vec<f64> = yr.iter().map(|v| 2.0 * v).collect();
    assert_close(
        "conv3d input-only gx",
        &down(gr.get(&xt).unwrap()),
        &r::conv3d_bwd_input(&dy, &w, &ws, &xs, 1, 1),
        TOL_BWD,
    );
}

#[test]
fn bad_shapes_are_one_line_errors() {
    let g = gpu();
    let t = |s: &[usize]| Tensor::zeros(&g, s).unwrap();
    let msg = |r: ssnet::Result<Tensor>| r.expect_err("should fail").to_string();
    let e = msg(ops::conv3d(
        &t(&[1, 3, 4, 4, 4]),
        &t(&[2, 4, 3, 3, 3]),
        None,
        1,
        1,
    ));
    assert!(e.starts_with("conv3d:") && e.contains("channels"), "{e}");
    let e = msg(ops::conv3d(
        &t(&[1, 3, 4, 4]),
        &t(&[2, 3, 3, 3, 3]),
        None,
        1,
        1,
    ));
    assert!(e.starts_with("conv3d:") && e.contains("rank"), "{e}");
    let e = msg(ops::conv3d(
        &t(&[1, 3, 2, 4, 4]),
        &t(&[2, 3, 3, 3, 3]),
        None,
        1,
        0,
    ));
    assert!(
        e.starts_with("conv3d:") && e.contains("larger than the input"),
        "{e}"
    );
    let e = msg(ops::conv3d(
        &t(&[1, 3, 4, 4, 4]),
        &t(&[2, 3, 3, 3, 3]),
        Some(&t(&[3])),
        1,
        1,
    ));
    assert!(e.starts_with("conv3d:") && e.contains("bias"), "{e}");
    let e = msg(ops::conv3d(
        &t(&[1, 3, 4, 4, 4]),
        &t(&[2, 3, 3, 3, 3]),
        None,
        0,
        1,
    ));
    assert!(e.starts_with("conv3d:") && e.contains("stride"), "{e}");
    let e = msg(ops::conv2d(
        &t(&[1, 3, 4, 4]),
        &t(&[2, 3, 5, 5]),
        None,
        1,
        0,
    ));
    assert!(
        e.starts_with("conv2d:") && e.contains("larger than the input"),
        "{e}"
    );
    let e = msg(ops::conv_transpose3d(
        &t(&[1, 3, 4, 4, 4]),
        &t(&[3, 2, 3, 3, 3]),
        None,
        2,
    ));
    assert!(
        e.starts_with("conv_transpose3d:") && e.contains("not supported"),
        "{e}"
    );
    let e = msg(ops::conv_transpose3d(
        &t(&[1, 3, 4, 4, 4]),
        &t(&[2, 2, 2, 2, 2]),
        None,
        2,
    ));
    assert!(
        e.starts_with("conv_transpose3d:") && e.contains("channels"),
        "{e}"
    );
    let e = msg(ops::conv3d_bwd_input(
        &t(&[1, 2, 3, 3, 3]),
        &t(&[2, 3, 3, 3, 3]),
        &[1, 3, 4, 4, 4],
        1,
        1,
    ));
    assert!(
        e.starts_with("conv3d_bwd_input:") && e.contains("expected shape"),
        "{e}"
    );
    let e = msg(ops::conv3d_bwd_weight(
        &t(&[1, 2, 4, 4, 4]),
        &t(&[1, 3, 4, 4, 4]),
        &[2, 3, 3, 3],
        1,
        1,
    ));
    assert!(
        e.starts_with("conv3d_bwd_weight:") && e.contains("rank"),
        "{e}"
    );
    for e in [
        msg(ops::conv3d(
            &t(&[1, 3, 4, 4, 4]),
            &t(&[2, 4, 3, 3, 3]),
            None,
            1,
            1,
        )),
        msg(ops::conv_transpose3d(
            &t(&[1, 3, 4, 4, 4]),
            &t(&[3, 2, 3, 3, 3]),
            None,
            2,
        )),
    ] {
        assert!(!e.contains('\n'), "multi-line error: {e}");
    }
}

#[test]
fn twins_backwards_pass_finite_differences() {
    let h = 1e-6;
    // 3D: stride 1 with padding, strided with padding, kernel == stride.
    for (xs, ws, s, p) in [
        (vec![2usize, 3, 4, 5, 3], vec![4usize, 3, 3, 3, 3], 1, 1),
        (vec![1, 2, 5, 4, 5], vec![3, 2, 3, 3, 3], 2, 1),
        (vec![2, 3, 4, 4, 2], vec![2, 3, 2, 2, 2], 2, 0),
    ] {
        let x = r::normal(71, numel(&xs));
        let w = r::normal(72, numel(&ws));
        let b = r::normal(73, ws[0]);
        let ys = r::conv3d_out_shape(&xs, &ws, s, p);
        let dy = r::normal(74, numel(&ys));
        let f = |v: &[f64]| r::dot(&r::conv3d(v, &xs, &w, &ws, Some(&b), s, p), &dy);
        let e = r::gradcheck(&f, &x, &r::conv3d_bwd_input(&dy, &w, &ws, &xs, s, p), h, 40);
        assert!(
            e < TOL_FD,
            "conv3d {xs:?} {ws:?} bwd_input fd error {e:.2e}"
        );
        let f = |v: &[f64]| r::dot(&r::conv3d(&x, &xs, v, &ws, Some(&b), s, p), &dy);
        let e = r::gradcheck(
            &f,
            &w,
            &r::conv3d_bwd_weight(&dy, &x, &xs, &ws, s, p),
            h,
            40,
        );
        assert!(
            e < TOL_FD,
            "conv3d {xs:?} {ws:?} bwd_weight fd error {e:.2e}"
        );
        let f = |v: &[f64]| r::dot(&r::conv3d(&x, &xs, &w, &ws, Some(v), s, p), &dy);
        let e = r::gradcheck(&f, &b, &r::conv3d_bwd_bias(&dy, &ys), h, 40);
        assert!(e < TOL_FD, "conv3d {xs:?} {ws:?} bwd_bias fd error {e:.2e}");
    }
    // 2D.
    let (xs, ws, s, p) = (vec![2usize, 3, 5, 4], vec![4usize, 3, 3, 3], 1, 1);
    let x = r::normal(81, numel(&xs));
    let w = r::normal(82, numel(&ws));
    let b = r::normal(83, 4);
    let ys = r::conv2d_out_shape(&xs, &ws, s, p);
    let dy = r::normal(84, numel(&ys));
    let f = |v: &[f64]| r::dot(&r::conv2d(v, &xs, &w, &ws, Some(&b), s, p), &dy);
    let e = r::gradcheck(&f, &x, &r::conv2d_bwd_input(&dy, &w, &ws, &xs, s, p), h, 40);
    assert!(e < TOL_FD, "conv2d bwd_input fd error {e:.2e}");
    let f = |v: &[f64]| r::dot(&r::conv2d(&x, &xs, v, &ws, Some(&b), s, p), &dy);
    let e = r::gradcheck(
        &f,
        &w,
        &r::conv2d_bwd_weight(&dy, &x, &xs, &ws, s, p),
        h,
        40,
    );
    assert!(e < TOL_FD, "conv2d bwd_weight fd error {e:.2e}");
    let f = |v: &[f64]| r::dot(&r::conv2d(&x, &xs, &w, &ws, Some(v), s, p), &dy);
    let e = r::gradcheck(&f, &b, &r::conv2d_bwd_bias(&dy, &ys), h, 40);
    assert!(e < TOL_FD, "conv2d bwd_bias fd error {e:.2e}");
    // Transposed, kernel == stride and kernel > stride.
    for (xs, ws, s) in [
        (vec![2usize, 3, 2, 3, 2], vec![3usize, 2, 2, 2, 2], 2),
        (vec![1, 2, 3, 2, 2], vec![2, 3, 3, 3, 3], 2),
    ] {
        let x = r::normal(91, numel(&xs));
        let w = r::normal(92, numel(&ws));
        let b = r::normal(93, ws[1]);
        let ys = r::conv_transpose3d_out_shape(&xs, &ws, s);
        let dy = r::normal(94, numel(&ys));
        let f = |v: &[f64]| r::dot(&r::conv_transpose3d(v, &xs, &w, &ws, Some(&b), s), &dy);
        let e = r::gradcheck(
            &f,
            &x,
            &r::conv_transpose3d_bwd_input(&dy, &w, &ws, &xs, s),
            h,
            40,
        );
        assert!(e < TOL_FD, "conv_transpose3d bwd_input fd error {e:.2e}");
        let f = |v: &[f64]| r::dot(&r::conv_transpose3d(&x, &xs, v, &ws, Some(&b), s), &dy);
        let e = r::gradcheck(
            &f,
            &w,
            &r::conv_transpose3d_bwd_weight(&dy, &x, &xs, &ws, s),
            h,
            40,
        );
        assert!(e < TOL_FD, "conv_transpose3d bwd_weight fd error {e:.2e}");
        let f = |v: &[f64]| r::dot(&r::conv_transpose3d(&x, &xs, &w, &ws, Some(v), s), &dy);
        let e = r::gradcheck(&f, &b, &r::conv_transpose3d_bwd_bias(&dy, &ys), h, 40);
        assert!(e < TOL_FD, "conv_transpose3d bwd_bias fd error {e:.2e}");
    }
}

#[test]
fn layer_benchmark_tiny_scale_validates_and_times_every_pass() {
    // A cheap subset of the layer table (the whole tiny table takes half a minute on a
    // software adapter): every kind of layer (conv3d, conv_transpose3d, conv2d), every pass.
    let g = gpu();
    let only = ["k2s2", "convT", "conv1"];
    let rows = ssnet::bench::layers::conv_layer_table_only(&g, false, 1, &only).unwrap();
    assert_eq!(rows.len(), (4 + 4 + 5) * 3);
    for r in &rows {
        println!(
            "{:<6} {:<32} {:<10} {:>9.3} ms {:>8.4} GFLOP",
            r.net, r.layer, r.pass, r.ms, r.gflop
        );
        assert!(r.ms > 0.0 && r.gflop > 0.0 && r.gflops.is_finite(), "{r:?}");
    }
    for pass in ["fwd", "bwd_input", "bwd_weight"] {
        assert_eq!(rows.iter().filter(|r| r.pass == pass).count(), 13, "{pass}");
    }
}
