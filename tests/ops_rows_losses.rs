//! Matmul/linear, row ops and losses against their CPU twins on shapes that are not tile or
//! workgroup multiples, forward and backward with random upstream gradients; finite
//! differences on the twins' backwards.

mod common;
use common::*;
use ssnet::autograd::{backward, backward_with};
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;

#[test]
fn linear_matches_twin_including_split_k() {
    let g = gpu();
    // (m, k, o): small, not tile multiples, and one long reduction over m (split-K path).
    for (m, k, o) in [
        (9usize, 16usize, 32usize),
        (67, 33, 65),
        (1, 5, 3),
        (20_011, 16, 32),
    ] {
        let x = r::normal(1, m * k);
        let w = r::normal(2, o * k);
        let b = r::normal(3, o);
        let dy = r::normal(4, m * o);
        let (xt, wt, bt) = (
            upload(&g, &x, &[m, k]).with_grad(),
            upload(&g, &w, &[o, k]).with_grad(),
            upload(&g, &b, &[o]).with_grad(),
        );
        let y = ops::linear(&xt, &wt, Some(&bt)).unwrap();
        assert_close(
            &format!("linear fwd {m}x{k}x{o}"),
            &down(&y),
            &r::linear(&x, &w, Some(&b), m, k, o),
            TOL_FWD * 10.0,
        );
        let gr = backward_with(&y, &upload(&g, &dy, &[m, o])).unwrap();
        assert_close(
            "linear gx",
            &down(gr.get(&xt).unwrap()),
            &r::linear_bwd_input(&dy, &w, m, k, o),
            TOL_BWD,
        );
        assert_close(
            "linear gw",
            &down(gr.get(&wt).unwrap()),
            &r::linear_bwd_weight(&dy, &x, m, k, o),
            TOL_BWD,
        );
        assert_close(
            "linear gb",
            &down(gr.get(&bt).unwrap()),
            &r::linear_bwd_bias(&dy, m, o),
            TOL_BWD,
        );
    }
}

#[test]
fn row_ops_match_twins() {
    let g = gpu();
    let (m, d, k) = (37usize, 32usize, 13usize);
    let a = r::normal(5, m * d);
    let b = r::normal(6, k * d);
    let dy = r::normal(7, m * k);
    let at = upload(&g, &a, &[m, d]).with_grad();
    let s = ops::cosine_similarity(&at, &upload(&g, &b, &[k, d])).unwrap();
    assert_close(
        "cosine fwd",
        &down(&s),
        &r::cosine_similarity(&a, &b, m, k, d),
        TOL_FWD * 10.0,
    );
    let gr = backward_with(&s, &upload(&g, &dy, &[m, k])).unwrap();
    // Twin gradient by finite differences of the twin (cosine has no closed-form twin bwd here).
    let f = |v: &[f64]| r::dot(&r::cosine_similarity(v, &b, m, k, d), &dy);
    let gpu_ga = down(gr.get(&at).unwrap());
    let e = r::gradcheck(&f, &a, &gpu_ga, 1e-6, 200);
    assert!(e < 1e-4, "cosine gradient vs finite differences: {e:.2e}");

    let dy = r::normal(8, m * d);
    let xt = upload(&g, &a, &[m, d]).with_grad();
    let y = ops::l2norm_rows(&xt, 1e-12).unwrap();
    assert_close(
        "l2norm fwd",
        &down(&y),
        &r::l2norm_rows(&a, m, d, 1e-12),
        TOL_FWD,
    );
    let gr = backward_with(&y, &upload(&g, &dy, &[m, d])).unwrap();
    assert_close(
        "l2norm bwd",
        &down(gr.get(&xt).unwrap()),
        &r::l2norm_rows_bwd_input(&a, &dy, m, d, 1e-12),
        TOL_BWD,
    );
    let f = |v: &[f64]| r::dot(&r::l2norm_rows(v, m, d, 1e-12), &dy);
    let e = r::gradcheck(
        &f,
        &a,
        &r::l2norm_rows_bwd_input(&a, &dy, m, d, 1e-12),
        1e-6,
        100,
    );
    assert!(e < TOL_FD, "l2norm twin fd {e:.2e}");

    // Voxel rows round trip and against the twin.
    let (n, c, sp) = (2usize, 5usize, 37usize);
    let x = r::normal(9, n * c * sp);
    let xt = upload(&g, &x, &[n, c, sp]).with_grad();
    let rows = ops::to_rows(&xt).unwrap();
    assert_close("to_rows", &down(&rows), &r::to_rows(&x, n, c, sp), 0.0);
    let back = ops::from_rows(&rows, &[n, c, sp]).unwrap();
    assert_close("from_rows", &down(&back), &x, 0.0);
}

#[test]
fn masked_selection_gathers_in_order_and_scatters_back() {
    let g = gpu();
    for (m, d, density) in [
        (1000usize, 3usize, 0.3f64),
        (70_001, 16, 0.05),
        (513, 4, 0.0),
        (300, 2, 1.0),
    ] {
        let x = r::normal(10, m * d);
        let u = r::uniform(11, m, 0.0, 1.0);
        let mask: Vec<bool> = u.iter().map(|&v| v < density).collect();
        let mask_u: Vec<u32> = mask.iter().map(|&b| b as u32).collect();
        let xt = upload(&g, &x, &[m, d]).with_grad();
        let mt = Tensor::from_u32(&g, &mask_u, &[m]).unwrap();
        let (sel, _idx, count) = ops::masked_rows(&xt, &mt).unwrap();
        let want = r::masked_rows(&x, &mask, d);
        assert_eq!(count * d, want.len(), "count m={m}");
        if count == 0 {
            continue;
        }
        assert_close("masked rows", &down(&sel), &want, 0.0);
        let dy = r::normal(12, count * d);
        let gr = backward_with(&sel, &upload(&g, &dy, &[count, d])).unwrap();
        let mut want_g = vec![0.0; m * d];
        let mut k = 0;
        for (row, &b) in mask.iter().enumerate() {
            if b {
                want_g[row * d..(row + 1) * d].copy_from_slice(&dy[k * d..(k + 1) * d]);
                k += 1;
            }
        }
        assert_close("masked rows bwd", &down(gr.get(&xt).unwrap()), &want_g, 0.0);
    }
    // Label masks.
    let pred = Tensor::from_u32(&g, &[0, 1, 1, 2, 0, 3], &[6]).unwrap();
    let lab = Tensor::from_u32(&g, &[0, 1, 0, 2, 1, 3], &[6]).unwrap();
    assert_eq!(
        ops::correct_foreground(&pred, &lab)
            .unwrap()
            .to_u32()
            .unwrap(),
        vec![0, 1, 0, 1, 0, 1]
    );
    assert_eq!(
        ops::eq_value(&lab, 1).unwrap().to_u32().unwrap(),
        vec![0, 1, 0, 0, 1, 0]
    );
}

#[test]
fn losses_match_twins_and_finite_differences() {
    let g = gpu();
    for (shape, c) in [
        ([3usize, 3, 5, 7, 3], 3usize),
        ([2, 2, 9, 11, 1], 2),
        ([2, 4, 13, 17, 1], 4),
    ] {
        let (n, _, s) = r::ncs(&shape);
        let x: Vec<f64> = r::normal(13, n * c * s).iter().map(|v| 2.0 * v).collect();
        let lab: Vec<u32> = r::uniform(14, n * s, 0.0, c as f64)
            .iter()
            .map(|&v| v as u32)
            .collect();
        let lshape: Vec<usize> = std::iter::once(shape[0])
            .chain(shape[2..].iter().copied())
            .collect();
        let xt = upload(&g, &x, &shape).with_grad();
        let lt = Tensor::from_u32(&g, &lab, &lshape).unwrap();
        // Cross-entropy.
        let l = ops::cross_entropy(&xt, &lt).unwrap();
        let want = r::cross_entropy(&x, &lab, n, c, s);
        assert!(
            (l.item().unwrap() as f64 - want).abs() < 1e-6 * want.abs().max(1.0),
            "ce {} vs {want}",
            l.item().unwrap()
        );
        let gr = backward(&l).unwrap();
        assert_close(
            "ce bwd",
            &down(gr.get(&xt).unwrap()),
            &r::cross_entropy_bwd(&x, &lab, 1.0, n, c, s),
            TOL_BWD,
        );
        let e = r::gradcheck(
            &|v: &[f64]| r::cross_entropy(v, &lab, n, c, s),
            &x,
            &r::cross_entropy_bwd(&x, &lab, 1.0, n, c, s),
            1e-4,
            60,
        );
        assert!(e < TOL_FD, "ce fd {e:.2e}");
        // Dice family on probabilities, with labels and soft targets.
        let p = r::softmax(&x, n, c, s);
        let q = r::softmax(&r::normal(15, n * c * s), n, c, s);
        let onehot = r::one_hot(&lab, n, c, s);
        for kind in [
            ops::DiceKind::BinaryForeground,
            ops::DiceKind::Whole,
            ops::DiceKind::MeanClasses,
        ] {
            let kid = match kind {
                ops::DiceKind::BinaryForeground => 0,
                ops::DiceKind::Whole => 1,
                ops::DiceKind::MeanClasses => 2,
            };
            for soft in [false, true] {
                if kind == ops::DiceKind::BinaryForeground && soft {
                    continue;
                }
                let t = if soft { &q } else { &onehot };
                let pt = upload(&g, &p, &shape).with_grad();
                let qt = upload(&g, &q, &shape);
                let target = if soft {
                    ops::DiceTarget::Soft(&qt)
                } else {
                    ops::DiceTarget::Labels(&lt)
                };
                let l = ops::dice_loss(&pt, target, kind).unwrap();
                let want = r::dice_loss(&p, t, n, c, s, kid);
                let got = l.item().unwrap() as f64;
                assert!(
                    (got - want).abs() < 1e-6,
                    "dice {kind:?} soft={soft}: {got} vs {want}"
                );
                let up = 0.7;
                let gr =
                    backward_with(&l, &Tensor::from_f32(&g, &[up as f32], &[1]).unwrap()).unwrap();
                let want_g = r::dice_loss_bwd(&p, t, up, n, c, s, kid);
                assert_close(
                    &format!("dice {kind:?} soft={soft} bwd"),
                    &down(gr.get(&pt).unwrap()),
                    &want_g,
                    TOL_BWD,
                );
                let e = r::gradcheck(
                    &|v: &[f64]| up * r::dice_loss(v, t, n, c, s, kid),
                    &p,
                    &want_g,
                    1e-5,
                    60,
                );
                assert!(e < 1e-4, "dice {kind:?} fd {e:.2e}");
            }
        }
    }
}

#[test]
fn loss_shape_errors_name_the_op() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4]).unwrap();
    let bad = Tensor::from_u32(&g, &[0; 6], &[2, 3]).unwrap();
    let e = ops::cross_entropy(&x, &bad).unwrap_err().to_string();
    assert!(e.starts_with("cross_entropy:"), "{e}");
    let e = ops::linear(&x, &x, None).unwrap_err().to_string();
    assert!(e.starts_with("linear:"), "{e}");
}
