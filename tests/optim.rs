//! SGD against its twin: the first step (buffer = gradient), later steps (momentum), weight
//! decay, plain SGD (momentum 0), and argument errors.

mod common;
use common::*;
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;

fn f32r(v: &[f64]) -> Vec<f64> {
    r::to_f64(&r::to_f32(v))
}

#[test]
fn sgd_matches_twin_over_several_steps() {
    let g = gpu();
    for (k, shape) in [vec![7usize], vec![16, 3, 3, 3, 5], vec![300, 7]]
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        for (lr, mom, wd) in [
            (0.01f32, 0.9f32, 1e-4f32),
            (0.1, 0.0, 0.0),
            (0.05, 0.5, 0.01),
        ] {
            let mut w = f32r(&r::normal(k as u64, n));
            let mut buf = vec![0.0; n];
            let wt = upload(&g, &w, &shape);
            // The buffer's contents before the first step do not matter.
            let bt = Tensor::full(&g, &shape, f32::NAN).unwrap();
            for step in 0..4 {
                let grad = f32r(&r::normal(100 * (k as u64 + 1) + step, n));
                ops::sgd_step(&wt, &upload(&g, &grad, &shape), &bt, lr, mom, wd, step == 0)
                    .unwrap();
                let (nw, nb) =
                    r::sgd_step(&w, &grad, &buf, lr as f64, mom as f64, wd as f64, step == 0);
                let what = format!("{shape:?} lr {lr} momentum {mom} wd {wd} step {step}");
                assert_close(&format!("sgd buf {what}"), &down(&bt), &nb, TOL_FWD);
                assert_close(&format!("sgd w {what}"), &down(&wt), &nw, TOL_FWD);
                // Follow the GPU's rounding so errors do not compound across steps.
                w = down(&wt);
                buf = down(&bt);
            }
        }
    }
}

#[test]
fn sgd_weight_change_is_exact_enough() {
    // Golden iterations compare the change of the weights (lr·buf is small next to w):
    // the update must not lose it.
    let g = gpu();
    let n = 1001;
    let w = f32r(&r::normal(1, n));
    let grad = f32r(&r::normal(2, n));
    let (wt, bt) = (upload(&g, &w, &[n]), Tensor::zeros(&g, &[n]).unwrap());
    ops::sgd_step(&wt, &upload(&g, &grad, &[n]), &bt, 0.01, 0.9, 1e-4, true).unwrap();
    let (nw, _) = r::sgd_step(&w, &grad, &vec![0.0; n], 0.01, 0.9, 1e-4, true);
    let dw: Vec<f64> = down(&wt).iter().zip(&w).map(|(a, b)| a - b).collect();
    let dw_want: Vec<f64> = nw.iter().zip(&w).map(|(a, b)| a - b).collect();
    assert_close("sgd weight change", &dw, &dw_want, 1e-4);
}

#[test]
fn sgd_rejects_bad_arguments() {
    let g = gpu();
    let w = Tensor::zeros(&g, &[4]).unwrap();
    let gr = Tensor::zeros(&g, &[4]).unwrap();
    let b = Tensor::zeros(&g, &[4]).unwrap();
    let e = ops::sgd_step(
        &w,
        &Tensor::zeros(&g, &[5]).unwrap(),
        &b,
        0.1,
        0.9,
        0.0,
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sgd_step") && e.contains("gradient"), "{e}");
    let e = ops::sgd_step(&w, &gr, &w, 0.1, 0.9, 0.0, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("distinct"), "{e}");
    assert!(ops::sgd_step(&w, &gr, &b, f32::NAN, 0.9, 0.0, true).is_err());
}
