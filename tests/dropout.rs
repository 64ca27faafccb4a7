//! Dropout and channel dropout: bit-exact against the twin (same counter-based hash on the
//! GPU and the CPU), drop rate and scaling checked statistically, whole channels dropped,
//! determinism per seed, the backward reusing the forward's mask, and argument errors.

mod common;
use common::*;
use ssnet::autograd::backward_with;
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::Tensor;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn dropout_matches_twin_bit_for_bit() {
    let g = gpu();
    for (k, shape) in [vec![1000usize], vec![3, 5, 17, 9], vec![2, 3, 4, 5, 7]]
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let x = r::to_f64(&r::to_f32(&r::normal(k as u64, n)));
        let dy = r::to_f64(&r::to_f32(&r::normal(10 + k as u64, n)));
        for (p, seed) in [
            (0.05f32, 1u64),
            (0.3, 2),
            (0.5, 0xdead_beef_0000_0001),
            (0.9, u64::MAX),
        ] {
            let xt = upload(&g, &x, &shape).with_grad();
            let dyt = upload(&g, &dy, &shape);
            let y = ops::dropout(&xt, p, seed).unwrap();
            assert_eq!(
                bits(&y.to_f32().unwrap()),
                bits(&r::to_f32(&r::dropout(&x, p, seed))),
                "dropout {shape:?} p {p}"
            );
            let gr = backward_with(&y, &dyt).unwrap();
            let want = r::to_f32(&r::dropout_bwd_input(&dy, p, seed));
            assert_eq!(
                bits(&gr.get(&xt).unwrap().to_f32().unwrap()),
                bits(&want),
                "dropout bwd {shape:?} p {p}"
            );
            if shape.len() >= 2 {
                let y = ops::channel_dropout(&xt, p, seed).unwrap();
                let want = r::to_f32(&r::channel_dropout(&x, &shape, p, seed));
                assert_eq!(
                    bits(&y.to_f32().unwrap()),
                    bits(&want),
                    "channel dropout {shape:?} p {p}"
                );
                let gr = backward_with(&y, &dyt).unwrap();
                let want = r::to_f32(&r::channel_dropout_bwd_input(&dy, &shape, p, seed));
                assert_eq!(
                    bits(&gr.get(&xt).unwrap().to_f32().unwrap()),
                    bits(&want),
                    "channel dropout bwd {shape:?} p {p}"
                );
            }
        }
    }
}

#[test]
fn dropout_rate_and_scale_are_right() {
    let g = gpu();
    let n = 200_003usize;
    let x = r::uniform(20, n, 0.5, 1.5);
    let xf = r::to_f32(&x);
    let xt = upload(&g, &x, &[n]);
    for (p, seed) in [(0.5f32, 7u64), (0.05, 8), (0.2, 9)] {
        let y = ops::dropout(&xt, p, seed).unwrap().to_f32().unwrap();
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64;
        let pp = p as f64;
        let se = (n as f64 * pp * (1.0 - pp)).sqrt();
        let z = (dropped - n as f64 * pp) / se;
        println!(
            "p {p}: dropped {dropped} of {n}, expected {:.0}, z {z:.2}",
            n as f64 * pp
        );
        assert!(
            z.abs() < 5.0,
            "p {p}: dropped {dropped} of {n}, {z:.2} standard errors off"
        );
        let scale = 1.0 / (1.0 - pp);
        for (i, (&yv, &xv)) in y.iter().zip(&xf).enumerate() {
            if yv != 0.0 {
                let rel = ((yv as f64) - (xv as f64) * scale).abs() / ((xv as f64) * scale);
                assert!(
                    rel < 2e-7,
                    "p {p}: survivor {i} is {yv}, expected {xv} x {scale}"
                );
            }
        }
        // The expectation is preserved.
        let mean_y = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let mean_x = x.iter().sum::<f64>() / n as f64;
        let se_mean =
            (pp / (1.0 - pp) * x.iter().map(|v| v * v).sum::<f64>() / n as f64 / n as f64).sqrt();
        assert!(
            (mean_y - mean_x).abs() < 5.0 * se_mean,
            "p {p}: mean {mean_y} vs {mean_x}"
        );
    }
}

#[test]
fn channel_dropout_drops_whole_channels_at_the_right_rate() {
    let g = gpu();
    for (shape, p, seed) in [
        (vec![40usize, 50, 3, 3], 0.5f32, 11u64),
        (vec![8, 250, 2, 3, 2], 0.2, 12),
        (vec![2000, 1], 0.5, 13),
    ] {
        let n: usize = shape.iter().product();
        let (nc, s) = (shape[0] * shape[1], n / (shape[0] * shape[1]));
        let x = r::uniform(30, n, 0.5, 1.5);
        let y = ops::channel_dropout(&upload(&g, &x, &shape), p, seed)
            .unwrap()
            .to_f32()
            .unwrap();
        let mut dropped = 0usize;
        for ch in 0..nc {
            let vals = &y[ch * s..(ch + 1) * s];
            let zeros = vals.iter().filter(|&&v| v == 0.0).count();
            assert!(
                zeros == 0 || zeros == s,
                "{shape:?}: channel {ch} partly dropped ({zeros} of {s} zeros)"
            );
            dropped += (zeros == s) as usize;
            if zeros == 0 {
                for (j, &v) in vals.iter().enumerate() {
                    let want = x[ch * s + j] as f32 as f64 / (1.0 - p as f64);
                    assert!(
                        ((v as f64) - want).abs() < 2e-7 * want,
                        "{shape:?}: channel {ch} not scaled by 1/(1-p)"
                    );
                }
            }
        }
        let pp = p as f64;
        let z = (dropped as f64 - nc as f64 * pp) / (nc as f64 * pp * (1.0 - pp)).sqrt();
        println!("{shape:?} p {p}: {dropped} of {nc} channels dropped, z {z:.2}");
        assert!(
            z.abs() < 5.0,
            "{shape:?} p {p}: {dropped} of {nc} channels dropped"
        );
    }
}

#[test]
fn dropout_masks_are_deterministic_per_seed() {
    let g = gpu();
    let n = 50_001usize;
    let xt = upload(&g, &r::uniform(40, n, 0.5, 1.5), &[n]);
    let run = |seed: u64| ops::dropout(&xt, 0.5, seed).unwrap().to_f32().unwrap();
    let a = run(42);
    assert_eq!(bits(&a), bits(&run(42)), "same seed, different output");
    for other in [43u64, 42 + (1 << 32), 42 ^ (1 << 63)] {
        let b = run(other);
        // Two independent p = 0.5 masks agree on about half of the elements.
        let agree = a
            .iter()
            .zip(&b)
            .filter(|(u, v)| (**u == 0.0) == (**v == 0.0))
            .count() as f64
            / n as f64;
        assert!(
            (agree - 0.5).abs() < 0.02,
            "seeds 42 and {other:#x}: masks agree on {agree:.3} of the elements"
        );
    }
    let c1 = ops::channel_dropout(&xt.reshape(&[3, 16667]).unwrap(), 0.5, 5)
        .unwrap()
        .to_f32()
        .unwrap();
    let c2 = ops::channel_dropout(&xt.reshape(&[3, 16667]).unwrap(), 0.5, 5)
        .unwrap()
        .to_f32()
        .unwrap();
    assert_eq!(bits(&c1), bits(&c2));
}

#[test]
fn dropout_hash_has_no_visible_structure() {
    // Neighbouring units and neighbouring seeds are independent: pair frequencies match p^2.
    let (n, p) = (200_000u32, 0.5f32);
    for seed in [0u64, 1, 1 << 40] {
        let keep: Vec<bool> = (0..n).map(|i| ops::dropout_keep(seed, p, i)).collect();
        let both = keep.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (n - 1) as f64;
        assert!(
            (both - 0.25).abs() < 0.005,
            "seed {seed}: adjacent kept pairs {both:.4}"
        );
        let next: Vec<bool> = (0..n).map(|i| ops::dropout_keep(seed + 1, p, i)).collect();
        let both = keep.iter().zip(&next).filter(|(a, b)| **a && **b).count() as f64 / n as f64;
        assert!(
            (both - 0.25).abs() < 0.005,
            "seeds {seed}, {}: kept in both {both:.4}",
            seed + 1
        );
    }
}

#[test]
fn dropout_p_zero_is_identity_and_bad_p_is_an_error() {
    let g = gpu();
    let x = Tensor::full(&g, &[2, 3, 4], 1.5).unwrap();
    assert!(ops::dropout(&x, 0.0, 1).unwrap().same_storage(&x));
    assert!(ops::channel_dropout(&x, 0.0, 1).unwrap().same_storage(&x));
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        let e = ops::dropout(&x, p, 1).unwrap_err().to_string();
        assert!(e.contains("dropout") && e.contains("[0, 1)"), "{e}");
        assert!(ops::channel_dropout(&x, p, 1).is_err());
    }
    assert!(ops::channel_dropout(&Tensor::zeros(&g, &[5]).unwrap(), 0.5, 1).is_err());
}

#[test]
fn dropout_twin_backward_passes_finite_differences() {
    let shape = [2usize, 3, 7];
    let x = r::normal(50, 42);
    let dy = r::normal(51, 42);
    for p in [0.1f32, 0.5] {
        let f = |v: &[f64]| r::dot(&r::dropout(v, p, 3), &dy);
        let e = r::gradcheck(&f, &x, &r::dropout_bwd_input(&dy, p, 3), 1e-6, 42);
        assert!(e < TOL_FD, "dropout fd error {e:.2e}");
        let f = |v: &[f64]| r::dot(&r::channel_dropout(v, &shape, p, 3), &dy);
        let e = r::gradcheck(
            &f,
            &x,
            &r::channel_dropout_bwd_input(&dy, &shape, p, 3),
            1e-6,
            42,
        );
        assert!(e < TOL_FD, "channel dropout fd error {e:.2e}");
    }
}
