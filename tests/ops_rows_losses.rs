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
    // (m, k, o): small, not tile multiples, one long reduction over m (split-K weight
    // gradient) and one over k (split-K forward: the bias added after the ordered sum).
    for (m, k, o) in [
        (9usize, 16usize, 32usize),
        (67, 33, 65),
        (1, 5, 3),
        (20_011, 16, 32),
        (3, 5000, 4),
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
                // Its twin is reference::admt::masked_dice (tests/admt_ops.rs).
                ops::DiceKind::MeanClassesAdmt => unreachable!("not in this list"),
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

/// The fused softmax + Dice loss: absolute tolerance on the loss (a value in [0, 1]) against
/// the f64 twin; its gradient within TOL_BWD (relative L2); the twin's backward within
/// TOL_SD_FD of central differences (h = 1e-5 on the logits), as the Dice checks above:
/// the f64 loss carries ~1e-15 of rounding (sums over hundreds of voxels), i.e. ~5e-11 in a
/// difference quotient, up to ~1e-4 relative on the smallest entries `gradcheck` weighs
/// (its floor is 1e-3 of the largest; measured worst 1.5e-5, the Whole kind, C = 4).
const TOL_SD_LOSS: f64 = 1e-6;
const TOL_SD_FD: f64 = 1e-4;

fn dice_kinds() -> [(ops::DiceKind, u32); 3] {
    [
        (ops::DiceKind::BinaryForeground, 0),
        (ops::DiceKind::Whole, 1),
        (ops::DiceKind::MeanClasses, 2),
    ]
}

fn label_shape(shape: &[usize]) -> Vec<usize> {
    std::iter::once(shape[0])
        .chain(shape[2..].iter().copied())
        .collect()
}

fn random_labels(seed: u64, len: usize, c: usize) -> Vec<u32> {
    r::uniform(seed, len, 0.0, c as f64)
        .iter()
        .map(|&v| v as u32)
        .collect()
}

#[test]
fn softmax_dice_matches_twin_and_finite_differences() {
    let g = gpu();
    // 2D and 3D, C = 2 and 4 (and 5: two groups of classes), odd sizes; the last 3D shape
    // has 12210 voxels: three chunks summed in the second pass.
    let shapes: [&[usize]; 7] = [
        &[3, 2, 9, 11],
        &[2, 4, 13, 7],
        &[2, 5, 7, 9],
        &[2, 2, 5, 7, 3],
        &[1, 4, 3, 5, 7],
        &[3, 4, 5, 3, 7],
        &[2, 2, 33, 37, 5],
    ];
    for (si, shape) in shapes.iter().enumerate() {
        let (n, c, s) = r::ncs(shape);
        let x: Vec<f64> = r::normal(40 + si as u64, n * c * s)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let lab = random_labels(60 + si as u64, n * s, c);
        let lt = Tensor::from_u32(&g, &lab, &label_shape(shape)).unwrap();
        for (kind, kid) in dice_kinds() {
            let xt = upload(&g, &x, shape).with_grad();
            let d = ops::softmax_dice(&xt, &lt, kind).unwrap();
            assert_eq!(d.invalid_labels.item().unwrap(), 0.0);
            let got = d.loss.item().unwrap() as f64;
            let want = r::softmax_dice_loss(&x, &lab, n, c, s, kid);
            println!(
                "{shape:?} {kind:?}: loss {got} vs {want} ({:.2e})",
                (got - want).abs()
            );
            assert!(
                (got - want).abs() < TOL_SD_LOSS,
                "{shape:?} {kind:?}: loss {got} vs {want}"
            );
            let up = 0.7;
            let gr =
                backward_with(&d.loss, &Tensor::from_f32(&g, &[up as f32], &[1]).unwrap()).unwrap();
            let want_g = r::softmax_dice_loss_bwd(&x, &lab, up, n, c, s, kid);
            let got_g = down(gr.get(&xt).unwrap());
            assert_close(
                &format!("{shape:?} {kind:?} glogits"),
                &got_g,
                &want_g,
                TOL_BWD,
            );
            // The unfused GPU path (softmax, then the Dice of the probabilities) agrees.
            let xt2 = upload(&g, &x, shape).with_grad();
            let l2 = ops::dice_loss(
                &ops::softmax(&xt2).unwrap(),
                ops::DiceTarget::Labels(&lt),
                kind,
            )
            .unwrap();
            assert!((l2.item().unwrap() as f64 - got).abs() < TOL_SD_LOSS);
            let gr2 =
                backward_with(&l2, &Tensor::from_f32(&g, &[up as f32], &[1]).unwrap()).unwrap();
            assert_close(
                &format!("{shape:?} {kind:?} fused vs unfused"),
                &got_g,
                &down(gr2.get(&xt2).unwrap()),
                TOL_BWD,
            );
            // The twin's backward against central differences (small shapes only).
            if n * c * s <= 2000 {
                let e = r::gradcheck(
                    &|v: &[f64]| up * r::softmax_dice_loss(v, &lab, n, c, s, kid),
                    &x,
                    &want_g,
                    1e-5,
                    60,
                );
                println!("{shape:?} {kind:?}: fd {e:.2e}");
                assert!(e < TOL_SD_FD, "{shape:?} {kind:?}: fd {e:.2e}");
            }
        }
    }
}

#[test]
fn softmax_dice_is_bit_deterministic() {
    let g = gpu();
    let shape = [3usize, 4, 31, 29, 7];
    let (n, c, s) = r::ncs(&shape);
    let x = r::normal(71, n * c * s);
    let lab = random_labels(72, n * s, c);
    let lt = Tensor::from_u32(&g, &lab, &label_shape(&shape)).unwrap();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    for (kind, _) in dice_kinds() {
        let run = || {
            let xt = upload(&g, &x, &shape).with_grad();
            let l = ops::softmax_dice_loss(&xt, &lt, kind).unwrap();
            let gr = backward(&l).unwrap();
            (
                bits(l.to_f32().unwrap()),
                bits(gr.get(&xt).unwrap().to_f32().unwrap()),
            )
        };
        let (a, b) = (run(), run());
        assert_eq!(a.0, b.0, "{kind:?}: loss bits differ between runs");
        assert!(a.1 == b.1, "{kind:?}: gradient bits differ between runs");
    }
}

#[test]
fn argmax_softmax_equals_argmax_of_softmax() {
    let g = gpu();
    for shape in [[5usize, 2, 7, 9, 3], [3, 4, 11, 13, 1]] {
        let (n, c, s) = r::ncs(&shape);
        let mut x: Vec<f64> = r::normal(80, n * c * s).iter().map(|v| 3.0 * v).collect();
        let xt = upload(&g, &x, &shape);
        for (start, len) in [(0, n), (0, 2), (2, n - 2), (n - 1, 1)] {
            let got = ops::argmax_softmax(&xt, start, len).unwrap();
            let mut want_shape = shape.to_vec();
            want_shape[0] = len;
            want_shape.remove(1);
            assert_eq!(got.shape(), want_shape.as_slice());
            assert_eq!(
                got.to_u32().unwrap(),
                r::argmax_softmax(&x, n, c, s, start, len),
                "{shape:?} samples {start}+{len} vs twin"
            );
        }
        // Near ties (logits one f32 step apart, whose probabilities may round to the same
        // value), equal logits, NaN and infinities: the same answer as the unfused path.
        let f32s = |v: f64| v as f32 as f64;
        for ss in 0..s.min(40) {
            let at = |k: usize| k * s + ss;
            let v = f32s(0.25 + 0.01 * ss as f64);
            let next = f32::from_bits((v as f32).to_bits() + 1) as f64;
            x[at(0)] = v;
            x[at(1)] = next;
            match ss % 8 {
                0 => x[at(0)] = f64::NAN,
                1 => x[at(1)] = f64::INFINITY,
                2 => x[at(0)] = f64::NEG_INFINITY,
                3 => x[at(1)] = v,
                4 => {
                    x[at(0)] = 80.0;
                    x[at(1)] = 80.0;
                }
                _ => {}
            }
            for k in 2..c {
                x[at(k)] = v - 1.0;
            }
        }
        let xt = upload(&g, &x, &shape);
        for (start, len) in [(0, n), (0, 2), (2, n - 2)] {
            let fused = ops::argmax_softmax(&xt, start, len)
                .unwrap()
                .to_u32()
                .unwrap();
            let p = ops::softmax(&ops::narrow_batch(&xt, start, len).unwrap()).unwrap();
            let unfused = ops::argmax_channels(&p).unwrap().to_u32().unwrap();
            assert_eq!(fused, unfused, "{shape:?} samples {start}+{len}");
        }
    }
}

#[test]
fn softmax_dice_errors_name_the_op() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4, 5]).unwrap();
    let lab = Tensor::from_u32(&g, &[0; 40], &[2, 4, 5]).unwrap();
    let kind = ops::DiceKind::MeanClasses;
    let err = |r: ssnet::Result<Tensor>| r.expect_err("an error").to_string();
    let bad_shape = Tensor::from_u32(&g, &[0; 20], &[1, 4, 5]).unwrap();
    let e = err(ops::softmax_dice_loss(&x, &bad_shape, kind));
    assert!(
        e.starts_with("softmax_dice_loss:") && !e.contains('\n'),
        "{e}"
    );
    let f32_labels = Tensor::zeros(&g, &[2, 4, 5]).unwrap();
    let e = err(ops::softmax_dice_loss(&x, &f32_labels, kind));
    assert!(e.starts_with("softmax_dice_loss:"), "{e}");
    let one = Tensor::zeros(&g, &[2, 1, 4, 5]).unwrap();
    let e = err(ops::softmax_dice_loss(
        &one,
        &lab,
        ops::DiceKind::BinaryForeground,
    ));
    assert!(e.starts_with("softmax_dice_loss:"), "{e}");
    let e = err(ops::softmax_dice_loss(
        &Tensor::zeros(&g, &[4]).unwrap(),
        &lab,
        kind,
    ));
    assert!(e.starts_with("softmax_dice_loss:"), "{e}");
    // Labels out of range: counted, the loss NaN; the checked op fails naming itself.
    let mut v = vec![0u32; 40];
    v[3] = 3;
    v[17] = 7;
    v[39] = u32::MAX;
    let oob = Tensor::from_u32(&g, &v, &[2, 4, 5]).unwrap();
    let d = ops::softmax_dice(&x, &oob, kind).unwrap();
    assert_eq!(d.invalid_labels.item().unwrap(), 3.0);
    assert!(d.loss.item().unwrap().is_nan());
    let e = d.check().unwrap_err().to_string();
    assert!(
        e.starts_with("softmax_dice_loss:") && e.contains("3 labels out of range"),
        "{e}"
    );
    let e = err(ops::softmax_dice_loss(&x, &oob, kind));
    assert!(e.starts_with("softmax_dice_loss:"), "{e}");
    let e = err(ops::argmax_softmax(&x, 1, 2));
    assert!(e.starts_with("argmax_softmax:"), "{e}");
}

/// Values as the GPU sees them (rounded to f32), so the twin computes on the same inputs.
fn f32r(v: &[f64]) -> Vec<f64> {
    r::to_f64(&r::to_f32(v))
}

fn bits_of(t: &Tensor) -> Vec<u32> {
    t.to_f32().unwrap().into_iter().map(f32::to_bits).collect()
}

/// The heads' fused BatchNorm1d (+ activation) → Linear against its twin (forward, running
/// statistics, every gradient), and against the unfused GPU ops (batch_norm, then linear):
/// the same values. Shapes: the heads' [rows, 32] → 32, a selector's 32 → 1, odd sizes, and
/// 20011 rows (split-K weight gradient, several statistics chunks).
#[test]
fn batch_norm_linear_matches_twin_and_unfused_ops() {
    use ssnet::ops::{Act, BnMode};
    let g = gpu();
    let cases = [
        (9usize, 32usize, 32usize, BnMode::Train, Act::Relu),
        (67, 33, 65, BnMode::Train, Act::LeakyRelu(0.2)),
        (37, 32, 1, BnMode::Frozen, Act::LeakyRelu(0.2)),
        (50, 16, 7, BnMode::Eval, Act::Relu),
        (23, 5, 3, BnMode::Train, Act::None),
        (20_011, 32, 32, BnMode::Train, Act::Relu),
    ];
    for (i, &(m, c, o, mode, act)) in cases.iter().enumerate() {
        let what = format!("{m}x{c}->{o} {mode:?} {act:?}");
        let seed = 100 + 10 * i as u64;
        let h: Vec<f64> = f32r(
            &r::normal(seed, m * c)
                .iter()
                .enumerate()
                .map(|(j, v)| 1.5 * v + 0.3 * (j % c) as f64)
                .collect::<Vec<_>>(),
        );
        let gamma = f32r(&r::uniform(seed + 1, c, 0.5, 1.5));
        let beta = f32r(&r::uniform(seed + 2, c, -0.5, 0.5));
        let rm = f32r(&r::uniform(seed + 3, c, -0.2, 0.2));
        let rv = f32r(&r::uniform(seed + 4, c, 0.5, 2.0));
        let w = f32r(&r::normal(seed + 5, o * c));
        let b = f32r(&r::normal(seed + 6, o));
        let dy = f32r(&r::normal(seed + 7, m * o));
        let (want_y, bn) = r::batch_norm_linear(
            &h,
            m,
            c,
            &gamma,
            &beta,
            &rm,
            &rv,
            mode,
            0.1,
            1e-5,
            act,
            &w,
            Some(&b),
            o,
        );
        let (gh, ggamma, gbeta, gw, gb) =
            r::batch_norm_linear_bwd(&h, m, c, &gamma, &beta, &bn, mode, act, &w, o, &dy);
        // Fused and unfused on the GPU, each with its own running statistics.
        let run = |fused: bool| {
            let ht = upload(&g, &h, &[m, c]).with_grad();
            let gt = upload(&g, &gamma, &[c]).with_grad();
            let bt = upload(&g, &beta, &[c]).with_grad();
            let (rmt, rvt) = (upload(&g, &rm, &[c]), upload(&g, &rv, &[c]));
            let wt = upload(&g, &w, &[o, c]).with_grad();
            let lbt = upload(&g, &b, &[o]).with_grad();
            let y = if fused {
                let args = ops::BnArgs {
                    gamma: &gt,
                    beta: &bt,
                    running_mean: &rmt,
                    running_var: &rvt,
                    mode,
                    momentum: 0.1,
                    eps: 1e-5,
                    act,
                };
                ops::batch_norm_linear(&ht, &args, &wt, Some(&lbt)).unwrap()
            } else {
                let a = ops::batch_norm(&ht, &gt, &bt, &rmt, &rvt, mode, 0.1, 1e-5, act).unwrap();
                ops::linear(&a, &wt, Some(&lbt)).unwrap()
            };
            let gr = backward_with(&y, &upload(&g, &dy, &[m, o])).unwrap();
            let grads: Vec<Tensor> = [&ht, &gt, &bt, &wt, &lbt]
                .iter()
                .map(|t| gr.get(t).unwrap().clone())
                .collect();
            (y, grads, rmt, rvt)
        };
        let (y, grads, rmt, rvt) = run(true);
        assert_close(&format!("{what} y"), &down(&y), &want_y, TOL_FWD * 10.0);
        assert_close(
            &format!("{what} running_mean"),
            &down(&rmt),
            &bn.running_mean,
            TOL_FWD * 10.0,
        );
        assert_close(
            &format!("{what} running_var"),
            &down(&rvt),
            &bn.running_var,
            TOL_FWD * 10.0,
        );
        for (name, got, want) in [
            ("gh", &grads[0], &gh),
            ("ggamma", &grads[1], &ggamma),
            ("gbeta", &grads[2], &gbeta),
            ("gw", &grads[3], &gw),
            ("gb", &grads[4], &gb),
        ] {
            assert_close(&format!("{what} {name}"), &down(got), want, TOL_BWD);
        }
        let (uy, ugrads, urm, urv) = run(false);
        let same = bits_of(&y) == bits_of(&uy)
            && grads
                .iter()
                .zip(&ugrads)
                .all(|(a, b)| bits_of(a) == bits_of(b))
            && bits_of(&rmt) == bits_of(&urm)
            && bits_of(&rvt) == bits_of(&urv);
        println!("{what}: fused and unfused bit-identical: {same}");
        assert_close(&format!("{what} y vs unfused"), &down(&y), &down(&uy), 1e-6);
        for (k, (a, b)) in grads.iter().zip(&ugrads).enumerate() {
            assert_close(
                &format!("{what} grad {k} vs unfused"),
                &down(a),
                &down(b),
                1e-6,
            );
        }
        // Deterministic: a second fused run gives the same bits.
        let (y2, grads2, _, _) = run(true);
        assert_eq!(bits_of(&y), bits_of(&y2), "{what}: y bits differ");
        for (a, b) in grads.iter().zip(&grads2) {
            assert!(bits_of(a) == bits_of(b), "{what}: gradient bits differ");
        }
    }
}

/// The composed twin's backward against central differences (h, gamma, beta, w, b), train
/// mode with batch statistics, leaky ReLU (no kink within h of the sampled points).
#[test]
fn batch_norm_linear_twin_finite_differences() {
    use ssnet::ops::{Act, BnMode};
    let (m, c, o) = (13usize, 6usize, 5usize);
    let (mode, act) = (BnMode::Train, Act::LeakyRelu(0.2));
    let h = r::normal(201, m * c);
    let gamma = r::uniform(202, c, 0.5, 1.5);
    let beta = r::uniform(203, c, -0.5, 0.5);
    let (rm, rv) = (vec![0.0; c], vec![1.0; c]);
    let w = r::normal(204, o * c);
    let b = r::normal(205, o);
    let dy = r::normal(206, m * o);
    let f = |h: &[f64], gamma: &[f64], beta: &[f64], w: &[f64], b: &[f64]| {
        let (y, _) = r::batch_norm_linear(
            h,
            m,
            c,
            gamma,
            beta,
            &rm,
            &rv,
            mode,
            0.1,
            1e-5,
            act,
            w,
            Some(b),
            o,
        );
        r::dot(&y, &dy)
    };
    let (_, bn) = r::batch_norm_linear(
        &h,
        m,
        c,
        &gamma,
        &beta,
        &rm,
        &rv,
        mode,
        0.1,
        1e-5,
        act,
        &w,
        Some(&b),
        o,
    );
    let (gh, ggamma, gbeta, gw, gb) =
        r::batch_norm_linear_bwd(&h, m, c, &gamma, &beta, &bn, mode, act, &w, o, &dy);
    let checks = [
        r::gradcheck(&|v| f(v, &gamma, &beta, &w, &b), &h, &gh, 1e-5, 78),
        r::gradcheck(&|v| f(&h, v, &beta, &w, &b), &gamma, &ggamma, 1e-5, 6),
        r::gradcheck(&|v| f(&h, &gamma, v, &w, &b), &beta, &gbeta, 1e-5, 6),
        r::gradcheck(&|v| f(&h, &gamma, &beta, v, &b), &w, &gw, 1e-5, 30),
        r::gradcheck(&|v| f(&h, &gamma, &beta, &w, v), &b, &gb, 1e-5, 5),
    ];
    for (name, e) in ["h", "gamma", "beta", "w", "b"].iter().zip(checks) {
        println!("batch_norm_linear twin fd {name}: {e:.2e}");
        assert!(e < TOL_FD, "batch_norm_linear twin fd {name}: {e:.2e}");
    }
}

#[test]
fn batch_norm_linear_errors_name_the_op() {
    let g = gpu();
    let (gamma, beta) = (
        Tensor::zeros(&g, &[4]).unwrap(),
        Tensor::zeros(&g, &[4]).unwrap(),
    );
    let (rm, rv) = (
        Tensor::zeros(&g, &[4]).unwrap(),
        Tensor::zeros(&g, &[4]).unwrap(),
    );
    let args = ops::BnArgs {
        gamma: &gamma,
        beta: &beta,
        running_mean: &rm,
        running_var: &rv,
        mode: ops::BnMode::Train,
        momentum: 0.1,
        eps: 1e-5,
        act: ops::Act::Relu,
    };
    let h = Tensor::zeros(&g, &[6, 4]).unwrap();
    let w = Tensor::zeros(&g, &[3, 5]).unwrap();
    let e = ops::batch_norm_linear(&h, &args, &w, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("batch_norm_linear:") && !e.contains('\n'),
        "{e}"
    );
    let w = Tensor::zeros(&g, &[3, 4]).unwrap();
    let bad_b = Tensor::zeros(&g, &[4]).unwrap();
    let e = ops::batch_norm_linear(&h, &args, &w, Some(&bad_b))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("batch_norm_linear:"), "{e}");
    let bad_gamma = Tensor::zeros(&g, &[3]).unwrap();
    let e = ops::batch_norm_linear(
        &h,
        &ops::BnArgs {
            gamma: &bad_gamma,
            ..args
        },
        &w,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("batch_norm_linear:"), "{e}");
    let e = ops::batch_norm_linear(
        &h,
        &ops::BnArgs {
            act: ops::Act::LeakyRelu(f32::NAN),
            ..args
        },
        &w,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("batch_norm_linear:"), "{e}");
}
