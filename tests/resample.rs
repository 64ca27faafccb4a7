//! Max pooling, bilinear ×2 upsampling (align_corners) and channel concatenation / slicing
//! against their f64 twins, forward and backward with a random upstream gradient, on shapes
//! that are not workgroup multiples; finite differences on the twins' backwards.

mod common;
use common::*;
use ssnet::autograd::backward_with;
use ssnet::ops;
use ssnet::reference as r;
use ssnet::tensor::{DType, Tensor};

#[test]
fn max_pool_matches_twin_including_ties_and_floor() {
    let g = gpu();
    for (k, (shape, kern)) in [
        (vec![2usize, 3, 9, 11], 2usize),
        (vec![1, 2, 8, 6], 2),
        (vec![2, 1, 7, 10], 3),
        (vec![3, 5, 17, 13], 2),
        (vec![1, 1, 4, 4], 4),
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = shape.iter().product();
        // Rounded values: many ties inside windows (first maximum wins).
        for ties in [false, true] {
            let x: Vec<f64> = r::normal(k as u64, n)
                .iter()
                .map(|v| if ties { (v * 1.5).round() } else { *v })
                .collect();
            let xt = upload(&g, &x, &shape).with_grad();
            let (y, idx) = ops::max_pool2d_with_indices(&xt, kern).unwrap();
            let (yr, idxr) = r::max_pool2d(&x, &shape, kern);
            let what = format!("{shape:?} k{kern} ties {ties}");
            assert_eq!(
                y.shape(),
                [shape[0], shape[1], shape[2] / kern, shape[3] / kern]
            );
            assert_close(&format!("max_pool fwd {what}"), &down(&y), &yr, TOL_FWD);
            assert_eq!(idx.to_u32().unwrap(), idxr, "argmax {what}");
            let dy = r::normal(50 + k as u64, yr.len());
            let gr = backward_with(&y, &upload(&g, &dy, y.shape())).unwrap();
            assert_close(
                &format!("max_pool bwd {what}"),
                &down(gr.get(&xt).unwrap()),
                &r::max_pool2d_bwd_input(&dy, &idxr, &shape, kern),
                TOL_BWD,
            );
        }
    }
    let x = Tensor::zeros(&g, &[1, 1, 3, 5]).unwrap();
    let e = ops::max_pool2d(&x, 4).unwrap_err().to_string();
    assert!(e.contains("max_pool2d"), "{e}");
}

#[test]
fn upsample_matches_twin() {
    let g = gpu();
    for (k, shape) in [
        vec![2usize, 3, 4, 5],
        vec![1, 2, 1, 1],
        vec![1, 1, 1, 7],
        vec![2, 3, 13, 17],
        vec![1, 2, 33, 2],
    ]
    .into_iter()
    .enumerate()
    {
        let n: usize = shape.iter().product();
        let x = r::normal(100 + k as u64, n);
        let xt = upload(&g, &x, &shape).with_grad();
        let y = ops::upsample_bilinear2x(&xt).unwrap();
        assert_eq!(y.shape(), [shape[0], shape[1], 2 * shape[2], 2 * shape[3]]);
        assert_close(
            &format!("upsample fwd {shape:?}"),
            &down(&y),
            &r::upsample_bilinear2x(&x, &shape),
            TOL_FWD,
        );
        let dy = r::normal(200 + k as u64, 4 * n);
        let gr = backward_with(&y, &upload(&g, &dy, y.shape())).unwrap();
        assert_close(
            &format!("upsample bwd {shape:?}"),
            &down(gr.get(&xt).unwrap()),
            &r::upsample_bilinear2x_bwd_input(&dy, &shape),
            TOL_BWD,
        );
    }
}

#[test]
fn concat_and_slice_match_twin() {
    let g = gpu();
    for (k, (rest, chans)) in [
        (vec![], vec![3usize, 1, 4]),
        (vec![5, 7], vec![2, 3]),
        (vec![3, 2, 5], vec![1, 4, 2]),
        (vec![257], vec![16, 16]),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 2;
        let shapes: Vec<Vec<usize>> = chans
            .iter()
            .map(|&c| [vec![n, c], rest.clone()].concat())
            .collect();
        let xs: Vec<Vec<f64>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| r::normal(300 + 10 * k as u64 + i as u64, s.iter().product()))
            .collect();
        let ts: Vec<Tensor> = xs
            .iter()
            .zip(&shapes)
            .map(|(x, s)| upload(&g, x, s).with_grad())
            .collect();
        let refs: Vec<&Tensor> = ts.iter().collect();
        let y = ops::concat_channels(&refs).unwrap();
        let parts: Vec<(&[f64], &[usize])> = xs
            .iter()
            .zip(&shapes)
            .map(|(x, s)| (x.as_slice(), s.as_slice()))
            .collect();
        let yr = r::concat_channels(&parts);
        assert_close(&format!("concat fwd {shapes:?}"), &down(&y), &yr, 0.0);
        let dy = r::normal(400 + k as u64, yr.len());
        let gr = backward_with(&y, &upload(&g, &dy, y.shape())).unwrap();
        let mut off = 0;
        for (t, &c) in ts.iter().zip(&chans) {
            assert_close(
                &format!("concat bwd {shapes:?} part at {off}"),
                &down(gr.get(t).unwrap()),
                &r::slice_channels(&dy, y.shape(), off, c),
                0.0,
            );
            off += c;
        }
        // Slicing back, on the tape.
        let yt = y.detach().with_grad();
        let sl = ops::slice_channels(&yt, chans[0], chans[1]).unwrap();
        assert_close("slice fwd", &down(&sl), &xs[1], 0.0);
        let ds = r::normal(500 + k as u64, xs[1].len());
        let gr = backward_with(&sl, &upload(&g, &ds, sl.shape())).unwrap();
        let want: Vec<f64> = {
            let mut z: Vec<Vec<f64>> = shapes
                .iter()
                .map(|s| vec![0.0; s.iter().product()])
                .collect();
            z[1] = ds.clone();
            let zp: Vec<(&[f64], &[usize])> = z
                .iter()
                .zip(&shapes)
                .map(|(x, s)| (x.as_slice(), s.as_slice()))
                .collect();
            r::concat_channels(&zp)
        };
        assert_close("slice bwd", &down(gr.get(&yt).unwrap()), &want, 0.0);
    }
    // u32 tensors concatenate bit for bit.
    let a = Tensor::from_u32(&g, &[1, 2, 3, 4], &[2, 1, 2]).unwrap();
    let b = Tensor::from_u32(&g, &[u32::MAX, 0x7fc0_0001, 7, 8], &[2, 1, 2]).unwrap();
    let c = ops::concat_channels(&[&a, &b]).unwrap();
    assert_eq!(c.dtype(), DType::U32);
    assert_eq!(
        c.to_u32().unwrap(),
        vec![1, 2, u32::MAX, 0x7fc0_0001, 3, 4, 7, 8]
    );
    let e = ops::concat_channels(&[&a, &Tensor::zeros(&g, &[2, 1, 3]).unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("concat_channels"), "{e}");
}

#[test]
fn resample_twin_backwards_pass_finite_differences() {
    let shape = [2usize, 2, 5, 7];
    let n: usize = shape.iter().product();
    let x = r::normal(600, n);
    let dy = r::normal(601, 4 * n);
    let f = |v: &[f64]| r::dot(&r::upsample_bilinear2x(v, &shape), &dy);
    let e = r::gradcheck(
        &f,
        &x,
        &r::upsample_bilinear2x_bwd_input(&dy, &shape),
        1e-6,
        70,
    );
    assert!(e < TOL_FD, "upsample fd error {e:.2e}");
    // Max pool: distinct values (no ties within h of each other).
    let (y, idx) = r::max_pool2d(&x, &shape, 2);
    let dy = r::normal(602, y.len());
    let f = |v: &[f64]| r::dot(&r::max_pool2d(v, &shape, 2).0, &dy);
    let e = r::gradcheck(
        &f,
        &x,
        &r::max_pool2d_bwd_input(&dy, &idx, &shape, 2),
        1e-6,
        70,
    );
    assert!(e < TOL_FD, "max_pool fd error {e:.2e}");
    // Concat: the split of the upstream gradient.
    let (a, b) = (r::normal(603, 2 * 3 * 4), r::normal(604, 2 * 2 * 4));
    let dy = r::normal(605, 2 * 5 * 4);
    let f = |v: &[f64]| {
        r::dot(
            &r::concat_channels(&[(v, &[2, 3, 4]), (&b, &[2, 2, 4])]),
            &dy,
        )
    };
    let e = r::gradcheck(&f, &a, &r::slice_channels(&dy, &[2, 5, 4], 0, 3), 1e-6, 24);
    assert!(e < TOL_FD, "concat fd error {e:.2e}");
}
