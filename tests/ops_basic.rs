//! The engine's basic kernels against their CPU twins on shapes that are not workgroup
//! multiples, forward and backward with a random upstream gradient; finite differences on
//! the twins' backwards; autograd behaviour.

mod common;
use common::*;
use ssnet::autograd::{backward, backward_wrt, no_grad};
use ssnet::ops;
use ssnet::reference as r;

const SHAPES: &[&[usize]] = &[
    &[7],
    &[3, 5, 17],
    &[2, 3, 9, 11],
    &[1, 257],
    &[4, 2, 3, 5, 7],
];

#[test]
fn unary_kernels_match_twins() {
    let g = gpu();
    for (k, shape) in SHAPES.iter().enumerate() {
        let n: usize = shape.iter().product();
        let x = r::normal(k as u64, n);
        let dy = r::normal(100 + k as u64, n);
        let xt = upload(&g, &x, shape).with_grad();
        let dyt = upload(&g, &dy, shape);
        for (name, slope) in [
            ("relu", 0.0),
            ("leaky_relu_0.01", 0.01),
            ("leaky_relu_0.2", 0.2),
        ] {
            let y = ops::leaky_relu(&xt, slope as f32).unwrap();
            assert_close(
                &format!("{name} fwd {shape:?}"),
                &down(&y),
                &r::leaky_relu(&x, slope),
                TOL_FWD,
            );
            let gr = ssnet::autograd::backward_with(&y, &dyt).unwrap();
            assert_close(
                &format!("{name} bwd {shape:?}"),
                &down(gr.get(&xt).unwrap()),
                &r::leaky_relu_bwd_input(&x, &dy, slope),
                TOL_BWD,
            );
        }
        let y = ops::sigmoid(&xt).unwrap();
        let yr = r::sigmoid(&x);
        assert_close(&format!("sigmoid fwd {shape:?}"), &down(&y), &yr, TOL_FWD);
        let gr = ssnet::autograd::backward_with(&y, &dyt).unwrap();
        assert_close(
            &format!("sigmoid bwd {shape:?}"),
            &down(gr.get(&xt).unwrap()),
            &r::sigmoid_bwd_input(&yr, &dy),
            TOL_BWD,
        );
    }
}

#[test]
fn binary_kernels_and_bias_match_twins() {
    let g = gpu();
    let shape = [3usize, 5, 2, 13];
    let n: usize = shape.iter().product();
    let (a, b, dy) = (r::normal(1, n), r::normal(2, n), r::normal(3, n));
    let bias = r::normal(4, 5);
    let at = upload(&g, &a, &shape).with_grad();
    let bt = upload(&g, &b, &shape).with_grad();
    let biast = upload(&g, &bias, &[5]).with_grad();
    let dyt = upload(&g, &dy, &shape);
    let y = ops::lincomb(&at, 0.5, &bt, -2.0).unwrap();
    assert_close(
        "lincomb fwd",
        &down(&y),
        &r::lincomb(&a, 0.5, &b, -2.0),
        TOL_FWD,
    );
    let gr = ssnet::autograd::backward_with(&y, &dyt).unwrap();
    assert_close(
        "lincomb bwd a",
        &down(gr.get(&at).unwrap()),
        &dy.iter().map(|v| 0.5 * v).collect::<Vec<_>>(),
        TOL_BWD,
    );
    assert_close(
        "lincomb bwd b",
        &down(gr.get(&bt).unwrap()),
        &dy.iter().map(|v| -2.0 * v).collect::<Vec<_>>(),
        TOL_BWD,
    );
    let y = ops::mul(&at, &bt).unwrap();
    assert_close("mul fwd", &down(&y), &r::mul(&a, &b), TOL_FWD);
    let gr = ssnet::autograd::backward_with(&y, &dyt).unwrap();
    assert_close(
        "mul bwd a",
        &down(gr.get(&at).unwrap()),
        &r::mul(&dy, &b),
        TOL_BWD,
    );
    assert_close(
        "mul bwd b",
        &down(gr.get(&bt).unwrap()),
        &r::mul(&dy, &a),
        TOL_BWD,
    );
    let y = ops::bias_add(&at, &biast, 1).unwrap();
    assert_close(
        "bias fwd",
        &down(&y),
        &r::bias_add(&a, &shape, &bias, 1),
        TOL_FWD,
    );
    let gr = ssnet::autograd::backward_with(&y, &dyt).unwrap();
    assert_close("bias bwd x", &down(gr.get(&at).unwrap()), &dy, TOL_BWD);
    assert_close(
        "bias bwd b",
        &down(gr.get(&biast).unwrap()),
        &r::bias_bwd_bias(&dy, &shape, 1),
        TOL_BWD,
    );
}

#[test]
fn sums_and_means_match_twins() {
    let g = gpu();
    // Large enough to take the chunked two-pass path, odd sizes throughout.
    for (shape, axes) in [
        (vec![3usize, 5, 7], vec![1usize]),
        (vec![3, 5, 7], vec![0, 2]),
        (vec![2, 3, 4, 5], vec![0, 1, 2, 3]),
        (vec![100_003], vec![0]),
        (vec![3, 40_001], vec![1]),
        (vec![2, 6, 4097], vec![0, 2]),
        (vec![300, 7], vec![0]),
    ] {
        let n: usize = shape.iter().product();
        let x = r::normal(7, n);
        let xt = upload(&g, &x, &shape).with_grad();
        let s = ops::sum_axes(&xt, &axes).unwrap();
        let want = r::sum_axes(&x, &shape, &axes);
        assert_close(
            &format!("sum {shape:?} over {axes:?}"),
            &down(&s),
            &want,
            TOL_FWD,
        );
        let dy = r::normal(8, want.len());
        let gr = ssnet::autograd::backward_with(&s, &upload(&g, &dy, s.shape())).unwrap();
        // d/dx sum = the upstream broadcast back.
        let keep: Vec<usize> = (0..shape.len()).filter(|a| !axes.contains(a)).collect();
        let mut idx = vec![0usize; shape.len()];
        let mut want_g = vec![];
        for _ in 0..n {
            let mut o = 0;
            for &a in &keep {
                o = o * shape[a] + idx[a];
            }
            want_g.push(dy[o]);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        assert_close(
            &format!("sum bwd {shape:?}"),
            &down(gr.get(&xt).unwrap()),
            &want_g,
            TOL_BWD,
        );
    }
    let x = r::normal(9, 1001);
    let m = ops::mean_all(&upload(&g, &x, &[7, 11, 13]))
        .unwrap()
        .item()
        .unwrap() as f64;
    let want = x.iter().sum::<f64>() / 1001.0;
    assert!((m - want).abs() < 1e-6, "mean {m} vs {want}");
}

#[test]
fn softmax_and_argmax_match_twins() {
    let g = gpu();
    for shape in [[2usize, 3, 5, 7], [3, 4, 1, 33], [1, 2, 17, 3]] {
        let (n, c, s) = r::ncs(&shape);
        let len = n * c * s;
        let x = r::normal(11, len)
            .iter()
            .map(|v| v * 3.0)
            .collect::<Vec<_>>();
        let dy = r::normal(12, len);
        let xt = upload(&g, &x, &shape).with_grad();
        let y = ops::softmax(&xt).unwrap();
        let yr = r::softmax(&x, n, c, s);
        assert_close(&format!("softmax fwd {shape:?}"), &down(&y), &yr, TOL_FWD);
        let gr = ssnet::autograd::backward_with(&y, &upload(&g, &dy, &shape)).unwrap();
        assert_close(
            &format!("softmax bwd {shape:?}"),
            &down(gr.get(&xt).unwrap()),
            &r::softmax_bwd_input(&yr, &dy, n, c, s),
            TOL_BWD,
        );
        let am = ops::argmax_channels(&xt).unwrap().to_u32().unwrap();
        assert_eq!(am, r::argmax_channels(&x, n, c, s), "argmax {shape:?}");
    }
}

#[test]
fn twins_backwards_pass_finite_differences() {
    let x = r::normal(21, 40);
    let dy = r::normal(22, 40);
    for slope in [0.0, 0.01, 0.2] {
        // Keep probes away from the kink at 0.
        let x: Vec<f64> = x
            .iter()
            .map(|v| if v.abs() < 1e-3 { 0.5 } else { *v })
            .collect();
        let f = |v: &[f64]| r::dot(&r::leaky_relu(v, slope), &dy);
        let e = r::gradcheck(&f, &x, &r::leaky_relu_bwd_input(&x, &dy, slope), 1e-6, 40);
        assert!(e < TOL_FD, "leaky_relu({slope}) fd error {e:.2e}");
    }
    let f = |v: &[f64]| r::dot(&r::sigmoid(v), &dy);
    let e = r::gradcheck(
        &f,
        &x,
        &r::sigmoid_bwd_input(&r::sigmoid(&x), &dy),
        1e-6,
        40,
    );
    assert!(e < TOL_FD, "sigmoid fd error {e:.2e}");
    let (n, c, s) = (2, 4, 5);
    let f = |v: &[f64]| r::dot(&r::softmax(v, n, c, s), &dy);
    let e = r::gradcheck(
        &f,
        &x,
        &r::softmax_bwd_input(&r::softmax(&x, n, c, s), &dy, n, c, s),
        1e-6,
        40,
    );
    assert!(e < TOL_FD, "softmax fd error {e:.2e}");
    let shape = [2usize, 4, 5];
    let b = r::normal(23, 4);
    let f = |v: &[f64]| r::dot(&r::bias_add(&x, &shape, v, 1), &dy);
    let e = r::gradcheck(&f, &b, &r::bias_bwd_bias(&dy, &shape, 1), 1e-6, 4);
    assert!(e < TOL_FD, "bias fd error {e:.2e}");
}

#[test]
fn autograd_accumulates_restricts_and_respects_no_grad() {
    let g = gpu();
    let x = r::normal(31, 10);
    let w = r::normal(32, 10);
    let xt = upload(&g, &x, &[10]).with_grad();
    let wt = upload(&g, &w, &[10]).with_grad();
    // loss = sum(x*w) + sum(x*x): dx = w + 2x, dw = x (x feeds three uses: accumulation).
    let l = ops::add(
        &ops::sum_all(&ops::mul(&xt, &wt).unwrap()).unwrap(),
        &ops::sum_all(&ops::mul(&xt, &xt).unwrap()).unwrap(),
    )
    .unwrap();
    let gr = backward(&l).unwrap();
    let want: Vec<f64> = x.iter().zip(&w).map(|(a, b)| b + 2.0 * a).collect();
    assert_close(
        "accumulated dx",
        &down(gr.get(&xt).unwrap()),
        &want,
        TOL_BWD,
    );
    assert_close("dw", &down(gr.get(&wt).unwrap()), &x, TOL_BWD);
    // backward_wrt computes only what the requested leaf needs.
    let l = ops::sum_all(&ops::mul(&xt, &wt).unwrap()).unwrap();
    let gr = backward_wrt(&l, &[&xt]).unwrap();
    assert!(
        gr.get(&wt).is_none(),
        "backward_wrt computed a gradient nobody asked for"
    );
    assert_close("wrt dx", &down(gr.get(&xt).unwrap()), &w, TOL_BWD);
    // A second backward through the same graph is an error, not garbage.
    let err = backward(&l).unwrap_err().to_string();
    assert!(err.contains("second time"), "{err}");
    // no_grad records nothing; detach cuts the tape.
    let y = no_grad(|| ops::mul(&xt, &wt).unwrap());
    assert!(!y.requires_grad());
    assert!(!xt.detach().requires_grad());
    let l = ops::sum_all(&ops::mul(&xt.detach(), &wt).unwrap()).unwrap();
    let gr = backward(&l).unwrap();
    assert!(gr.get(&xt).is_none() && gr.get(&wt).is_some());
}

#[test]
fn same_inputs_give_same_bits() {
    let g = gpu();
    let x = r::normal(41, 300_001);
    let a = ops::sum_all(&upload(&g, &x, &[300_001]))
        .unwrap()
        .to_f32()
        .unwrap();
    let b = ops::sum_all(&upload(&g, &x, &[300_001]))
        .unwrap()
        .to_f32()
        .unwrap();
    assert_eq!(a[0].to_bits(), b[0].to_bits());
}

/// Over the buffer limit a tensor is refused; over the binding limit it exists, and an op
/// that cannot work in pieces refuses it (tests/split.rs has the ops that split).
#[test]
fn oversized_tensor_is_refused_with_a_clear_error() {
    let g = gpu();
    let too_big = (g.max_buffer() / 4 + 1) as usize;
    let err = ssnet::tensor::Tensor::empty(&g, &[too_big], ssnet::tensor::DType::F32, "test op")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max buffer size") && err.contains("test op"),
        "{err}"
    );
    if g.max_buffer() > g.max_binding() {
        let over = (g.max_binding() / 4 + 1) as usize;
        let x = ssnet::tensor::Tensor::empty(&g, &[over], ssnet::tensor::DType::F32, "test op")
            .unwrap();
        let err = ops::sum_all(&x).unwrap_err().to_string();
        assert!(
            err.contains("max storage binding") && err.contains("does not work in pieces"),
            "{err}"
        );
    }
}

/// Submitting the pending work after every dispatch (`SSNET_SUBMIT_EVERY=1`) changes when the
/// GPU starts, never what it computes: the same bits as one submission at the readback.
#[test]
fn submitting_every_dispatch_gives_the_same_bits() {
    use ssnet::gpu::{Gpu, GpuOptions};
    let eager = Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        GpuOptions {
            submit_every: Some(1),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let run = |g: &std::sync::Arc<ssnet::gpu::Gpu>| {
        let x = ops::uniform(g, &[2, 3, 9, 7, 5], 7).unwrap();
        let w = ops::uniform(g, &[6, 3, 3, 3, 3], 8).unwrap();
        let y = ops::conv3d(&x, &w, None, 1, 1).unwrap();
        let s = ops::softmax(&y).unwrap();
        let t = ops::sum_all(&ops::mul(&s, &y).unwrap()).unwrap();
        let mut v = s.to_f32().unwrap();
        v.extend(t.to_f32().unwrap());
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    let before = eager.submissions();
    let a = run(&eager);
    let eager_subs = eager.submissions() - before;
    assert_eq!(a, run(&gpu()));
    // The chain is over a dozen dispatches and two readbacks: far more than two submissions.
    assert!(
        eager_subs > 5,
        "SSNET_SUBMIT_EVERY=1 should submit after every dispatch: {eager_subs} submissions"
    );
}
