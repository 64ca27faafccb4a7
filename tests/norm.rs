//! BatchNorm (1d, 2d, 3d; train, eval, frozen; fused ReLU / LeakyReLU) against its f64 twin,
//! forward, running statistics and every backward with a random upstream gradient, on
//! shapes that are not workgroup multiples (including channels long enough to be reduced in
//! several chunks); finite differences on the twin's backward; determinism and errors.

mod common;
use common::*;
use ssnet::autograd::{backward_with, backward_wrt};
use ssnet::ops::{self, Act, BnMode};
use ssnet::reference as r;
use ssnet::tensor::Tensor;

const MODES: [BnMode; 3] = [BnMode::Train, BnMode::Eval, BnMode::Frozen];
const ACTS: [Act; 5] = [
    Act::None,
    Act::Relu,
    Act::LeakyRelu(0.01),
    Act::LeakyRelu(0.2),
    Act::LeakyRelu(-0.5),
];

/// Values as the GPU sees them (rounded to f32), so the twin computes on the same inputs.
fn f32r(v: &[f64]) -> Vec<f64> {
    r::to_f64(&r::to_f32(v))
}

struct Case {
    shape: Vec<usize>,
    x: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    rm: Vec<f64>,
    rv: Vec<f64>,
    dy: Vec<f64>,
}

fn case(shape: &[usize], seed: u64, offset: f64) -> Case {
    let n: usize = shape.iter().product();
    let c = shape[1];
    Case {
        shape: shape.to_vec(),
        x: f32r(
            &r::normal(seed, n)
                .iter()
                .map(|v| offset + 2.0 * v)
                .collect::<Vec<_>>(),
        ),
        gamma: f32r(&r::uniform(seed + 1, c, -1.5, 1.5)),
        beta: f32r(&r::normal(seed + 2, c)),
        rm: f32r(&r::normal(seed + 3, c)),
        rv: f32r(&r::uniform(seed + 4, c, 0.5, 2.0)),
        dy: f32r(&r::normal(seed + 5, n)),
    }
}

/// Runs one BatchNorm call on the GPU and checks every output against the twin.
fn check(cs: &Case, mode: BnMode, act: Act, momentum: f32, eps: f32) {
    let g = gpu();
    let what = format!("{:?} {mode:?} {act:?}", cs.shape);
    let c = cs.shape[1];
    let xt = upload(&g, &cs.x, &cs.shape).with_grad();
    let gt = upload(&g, &cs.gamma, &[c]).with_grad();
    let bt = upload(&g, &cs.beta, &[c]).with_grad();
    let rmt = upload(&g, &cs.rm, &[c]);
    let rvt = upload(&g, &cs.rv, &[c]);
    let y = ops::batch_norm(&xt, &gt, &bt, &rmt, &rvt, mode, momentum, eps, act).unwrap();
    let want = r::batch_norm(
        &cs.x,
        &cs.shape,
        &cs.gamma,
        &cs.beta,
        &cs.rm,
        &cs.rv,
        mode,
        momentum as f64,
        eps as f64,
        act,
    );
    assert_close(&format!("bn fwd {what}"), &down(&y), &want.y, TOL_FWD);
    let (rm_after, rv_after) = (rmt.to_f32().unwrap(), rvt.to_f32().unwrap());
    if mode == BnMode::Train {
        assert_close(
            &format!("bn running_mean {what}"),
            &r::to_f64(&rm_after),
            &want.running_mean,
            TOL_FWD,
        );
        assert_close(
            &format!("bn running_var {what}"),
            &r::to_f64(&rv_after),
            &want.running_var,
            TOL_FWD,
        );
    } else {
        // Eval and Frozen leave the running statistics bit-identical.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&rm_after),
            bits(&r::to_f32(&cs.rm)),
            "running_mean changed in {what}"
        );
        assert_eq!(
            bits(&rv_after),
            bits(&r::to_f32(&cs.rv)),
            "running_var changed in {what}"
        );
    }
    let gr = backward_with(&y, &upload(&g, &cs.dy, &cs.shape)).unwrap();
    let (gx, ggamma, gbeta) = r::batch_norm_bwd(
        &cs.x,
        &cs.shape,
        &cs.gamma,
        &cs.beta,
        &want.mean,
        &want.invstd,
        &cs.dy,
        mode,
        act,
    );
    assert_close(
        &format!("bn gx {what}"),
        &down(gr.get(&xt).unwrap()),
        &gx,
        TOL_BWD,
    );
    assert_close(
        &format!("bn ggamma {what}"),
        &down(gr.get(&gt).unwrap()),
        &ggamma,
        TOL_BWD,
    );
    assert_close(
        &format!("bn gbeta {what}"),
        &down(gr.get(&bt).unwrap()),
        &gbeta,
        TOL_BWD,
    );
}

#[test]
fn batchnorm_matches_twin_in_every_mode_and_activation() {
    let shapes: [&[usize]; 6] = [
        &[37, 3],
        &[5, 7],
        &[3, 4, 5, 6],
        &[2, 3, 17, 9],
        &[2, 3, 4, 5, 7],
        &[1, 2, 3, 1, 5],
    ];
    for (k, shape) in shapes.iter().enumerate() {
        let cs = case(shape, 10 * k as u64, 0.5);
        for mode in MODES {
            for act in ACTS {
                check(&cs, mode, act, 0.1, 1e-5);
            }
        }
    }
}

#[test]
fn batchnorm_multi_chunk_channels_match_twin() {
    // 14 000 and 37 800 values per channel: reduced in several chunks per channel.
    // BatchNorm1d ([rows, C], the row layout): several row blocks, C not dividing 256,
    // C = 1, and C > 256 (the per-channel layout again).
    for (k, shape) in [
        vec![2usize, 3, 70, 100],
        vec![3, 2, 20, 21, 30],
        vec![20001, 3],
        vec![3001, 32],
        vec![1999, 7],
        vec![9000, 1],
        vec![9, 300],
    ]
    .iter()
    .enumerate()
    {
        let cs = case(shape, 100 + k as u64, -1.25);
        for (mode, act) in [
            (BnMode::Train, Act::Relu),
            (BnMode::Frozen, Act::LeakyRelu(0.2)),
            (BnMode::Eval, Act::None),
        ] {
            check(&cs, mode, act, 0.3, 1e-3);
        }
    }
}

#[test]
fn batchnorm_variance_is_numerically_careful() {
    // A mean far larger than the spread (1000 vs 2): E[x^2] - E[x]^2 in f32 would lose about
    // 10% of the variance; the two-pass chunked variance keeps it to f32 rounding. The mean
    // itself is only as exact as f32 allows (ulp(1000) / 2 = 3e-5, 1.5e-5 of the spread),
    // so y is compared at that level while the statistics are compared tightly.
    let g = gpu();
    let shape = [4usize, 2, 61, 67];
    let cs = case(&shape, 200, 1000.0);
    let (rmt, rvt) = (upload(&g, &cs.rm, &[2]), upload(&g, &cs.rv, &[2]));
    let x = upload(&g, &cs.x, &shape);
    let stats = down(&ops::batch_norm_stats(&x, &rmt, &rvt, BnMode::Train, 0.1, 1e-5).unwrap());
    let want = r::batch_norm(
        &cs.x,
        &shape,
        &cs.gamma,
        &cs.beta,
        &cs.rm,
        &cs.rv,
        BnMode::Train,
        0.1,
        1e-5,
        Act::None,
    );
    assert_close("mean (offset 1000)", &stats[..2], &want.mean, 1e-7);
    assert_close("invstd (offset 1000)", &stats[2..], &want.invstd, 1e-6);
    assert_close(
        "running_var (offset 1000)",
        &down(&rvt),
        &want.running_var,
        1e-6,
    );
    let gt = upload(&g, &cs.gamma, &[2]);
    let bt = upload(&g, &cs.beta, &[2]);
    let y = ops::batch_norm(
        &x,
        &gt,
        &bt,
        &rmt,
        &rvt,
        BnMode::Frozen,
        0.1,
        1e-5,
        Act::None,
    )
    .unwrap();
    assert_close("y (offset 1000)", &down(&y), &want.y, 5e-5);
}

#[test]
fn batchnorm_backward_computes_only_what_is_asked() {
    let g = gpu();
    let cs = case(&[3, 4, 5, 6], 300, 0.0);
    let c = 4;
    for mode in MODES {
        let xt = upload(&g, &cs.x, &cs.shape).with_grad();
        let gt = upload(&g, &cs.gamma, &[c]).with_grad();
        let bt = upload(&g, &cs.beta, &[c]).with_grad();
        let (rmt, rvt) = (upload(&g, &cs.rm, &[c]), upload(&g, &cs.rv, &[c]));
        let y = ops::batch_norm(&xt, &gt, &bt, &rmt, &rvt, mode, 0.1, 1e-5, Act::Relu).unwrap();
        let loss = ops::sum_all(&ops::mul(&y, &upload(&g, &cs.dy, &cs.shape)).unwrap()).unwrap();
        let gr = backward_wrt(&loss, &[&xt]).unwrap();
        assert!(
            gr.get(&gt).is_none() && gr.get(&bt).is_none(),
            "{mode:?}: affine gradients computed without being asked"
        );
        let want = r::batch_norm(
            &cs.x,
            &cs.shape,
            &cs.gamma,
            &cs.beta,
            &cs.rm,
            &cs.rv,
            mode,
            0.1,
            1e-5,
            Act::Relu,
        );
        let (gx, ggamma, gbeta) = r::batch_norm_bwd(
            &cs.x,
            &cs.shape,
            &cs.gamma,
            &cs.beta,
            &want.mean,
            &want.invstd,
            &cs.dy,
            mode,
            Act::Relu,
        );
        assert_close(
            &format!("wrt x only {mode:?}"),
            &down(gr.get(&xt).unwrap()),
            &gx,
            TOL_BWD,
        );

        // The public backward, affine only.
        let x = upload(&g, &cs.x, &cs.shape);
        // Frozen gives Train's statistics without moving the running ones again.
        let smode = if mode == BnMode::Train {
            BnMode::Frozen
        } else {
            mode
        };
        let stats = ops::batch_norm_stats(&x, &rmt, &rvt, smode, 0.1, 1e-5).unwrap();
        let r2 = ops::batch_norm_bwd(
            &x,
            &stats,
            &gt,
            &bt,
            &upload(&g, &cs.dy, &cs.shape),
            mode,
            Act::Relu,
            false,
            true,
        )
        .unwrap();
        assert!(r2.x.is_none());
        // Eval uses the running statistics, which the Train call above moved.
        let want = if mode == BnMode::Eval {
            let rm = r::to_f64(&rmt.to_f32().unwrap());
            let rv = r::to_f64(&rvt.to_f32().unwrap());
            r::batch_norm(
                &cs.x,
                &cs.shape,
                &cs.gamma,
                &cs.beta,
                &rm,
                &rv,
                mode,
                0.1,
                1e-5,
                Act::Relu,
            )
        } else {
            want
        };
        let (_, ggamma2, gbeta2) = r::batch_norm_bwd(
            &cs.x,
            &cs.shape,
            &cs.gamma,
            &cs.beta,
            &want.mean,
            &want.invstd,
            &cs.dy,
            mode,
            Act::Relu,
        );
        if mode != BnMode::Eval {
            assert_eq!((&ggamma2, &gbeta2), (&ggamma, &gbeta));
        }
        assert_close(
            &format!("affine only ggamma {mode:?}"),
            &down(r2.gamma.as_ref().unwrap()),
            &ggamma2,
            TOL_BWD,
        );
        assert_close(
            &format!("affine only gbeta {mode:?}"),
            &down(r2.beta.as_ref().unwrap()),
            &gbeta2,
            TOL_BWD,
        );
    }
}

#[test]
fn batchnorm_running_stats_accumulate_over_steps() {
    // Three train steps on different batches: running statistics follow the twin.
    let g = gpu();
    let shape = [4usize, 3, 7, 5];
    let c = 3;
    let mut rm = vec![0.0; c];
    let mut rv = vec![1.0; c];
    let gamma = vec![1.0; c];
    let beta = vec![0.0; c];
    let (rmt, rvt) = (upload(&g, &rm, &[c]), upload(&g, &rv, &[c]));
    let (gt, bt) = (upload(&g, &gamma, &[c]), upload(&g, &beta, &[c]));
    for step in 0..3 {
        let cs = case(&shape, 400 + step, step as f64);
        let xt = upload(&g, &cs.x, &shape);
        let y = ops::batch_norm(
            &xt,
            &gt,
            &bt,
            &rmt,
            &rvt,
            BnMode::Train,
            0.1,
            1e-5,
            Act::None,
        )
        .unwrap();
        let want = r::batch_norm(
            &cs.x,
            &shape,
            &gamma,
            &beta,
            &rm,
            &rv,
            BnMode::Train,
            0.1,
            1e-5,
            Act::None,
        );
        assert_close(&format!("step {step} y"), &down(&y), &want.y, TOL_FWD);
        rm = f32r(&want.running_mean);
        rv = f32r(&want.running_var);
    }
    assert_close("running_mean after 3 steps", &down(&rmt), &rm, TOL_FWD);
    assert_close("running_var after 3 steps", &down(&rvt), &rv, TOL_FWD);
}

#[test]
fn batchnorm_is_deterministic() {
    let g = gpu();
    let cs = case(&[2, 3, 70, 100], 500, 0.3);
    let run = || {
        let xt = upload(&g, &cs.x, &cs.shape).with_grad();
        let gt = upload(&g, &cs.gamma, &[3]).with_grad();
        let bt = upload(&g, &cs.beta, &[3]);
        let (rmt, rvt) = (upload(&g, &cs.rm, &[3]), upload(&g, &cs.rv, &[3]));
        let y = ops::batch_norm(
            &xt,
            &gt,
            &bt,
            &rmt,
            &rvt,
            BnMode::Train,
            0.1,
            1e-5,
            Act::Relu,
        )
        .unwrap();
        let gr = backward_with(&y, &upload(&g, &cs.dy, &cs.shape)).unwrap();
        let mut v = y.to_f32().unwrap();
        v.extend(gr.get(&xt).unwrap().to_f32().unwrap());
        v.extend(gr.get(&gt).unwrap().to_f32().unwrap());
        v.extend(rvt.to_f32().unwrap());
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    };
    assert!(
        run() == run(),
        "two identical BatchNorm calls gave different bits"
    );
}

#[test]
fn batchnorm_rejects_bad_arguments() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4]).unwrap();
    let v3 = Tensor::full(&g, &[3], 1.0).unwrap();
    let v4 = Tensor::full(&g, &[4], 1.0).unwrap();
    let rm = Tensor::zeros(&g, &[3]).unwrap();
    let rv = Tensor::full(&g, &[3], 1.0).unwrap();
    let e = ops::batch_norm(&x, &v4, &v3, &rm, &rv, BnMode::Train, 0.1, 1e-5, Act::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_norm") && e.contains("gamma"), "{e}");
    let e = ops::batch_norm(
        &x,
        &v3,
        &v3,
        &rm,
        &rv,
        BnMode::Train,
        0.1,
        1e-5,
        Act::LeakyRelu(f32::NAN),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("slope"), "{e}");
    let one = Tensor::zeros(&g, &[1, 3]).unwrap();
    let e = ops::batch_norm(
        &one,
        &v3,
        &v3,
        &rm,
        &rv,
        BnMode::Train,
        0.1,
        1e-5,
        Act::None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("more than 1 value"), "{e}");
    // Eval on a single value is fine.
    ops::batch_norm(&one, &v3, &v3, &rm, &rv, BnMode::Eval, 0.1, 1e-5, Act::None).unwrap();
    let e = ops::batch_norm(&x, &v3, &v3, &rm, &rm, BnMode::Train, 0.1, 1e-5, Act::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("share"), "{e}");
}

#[test]
fn batchnorm_twin_backward_passes_finite_differences() {
    for (k, shape) in [vec![6usize, 3], vec![2, 3, 2, 3], vec![2, 2, 2, 2, 3]]
        .iter()
        .enumerate()
    {
        let cs = case(shape, 600 + k as u64, 0.7);
        let c = shape[1];
        for mode in MODES {
            for act in ACTS {
                let fwd = |x: &[f64], gm: &[f64], bt: &[f64]| {
                    r::batch_norm(x, shape, gm, bt, &cs.rm, &cs.rv, mode, 0.1, 1e-5, act).y
                };
                let o = r::batch_norm(
                    &cs.x, shape, &cs.gamma, &cs.beta, &cs.rm, &cs.rv, mode, 0.1, 1e-5, act,
                );
                let (gx, ggamma, gbeta) = r::batch_norm_bwd(
                    &cs.x, shape, &cs.gamma, &cs.beta, &o.mean, &o.invstd, &cs.dy, mode, act,
                );
                let fx = |v: &[f64]| r::dot(&fwd(v, &cs.gamma, &cs.beta), &cs.dy);
                let e = r::gradcheck(&fx, &cs.x, &gx, 1e-6, 64);
                assert!(
                    e < TOL_FD,
                    "bn {shape:?} {mode:?} {act:?} fd x error {e:.2e}"
                );
                let fg = |v: &[f64]| r::dot(&fwd(&cs.x, v, &cs.beta), &cs.dy);
                let e = r::gradcheck(&fg, &cs.gamma, &ggamma, 1e-6, c);
                assert!(
                    e < TOL_FD,
                    "bn {shape:?} {mode:?} {act:?} fd gamma error {e:.2e}"
                );
                let fb = |v: &[f64]| r::dot(&fwd(&cs.x, &cs.gamma, v), &cs.dy);
                let e = r::gradcheck(&fb, &cs.beta, &gbeta, 1e-6, c);
                assert!(
                    e < TOL_FD,
                    "bn {shape:?} {mode:?} {act:?} fd beta error {e:.2e}"
                );
            }
        }
    }
}
