//! Inference: sliding-window planning and accumulation (with stand-in predictors whose
//! output is known), padding and cropping with a real VNet, the 2D slice pipeline on a real
//! ACDC crop, and the `predict` / `eval --checkpoint` command lines end to end on tiny real
//! crops, including their one-line errors. Everything is written to temporary folders.

mod common;
use common::*;

use ssnet::data::{h5, nifti};
use ssnet::infer::{
    gaussian_importance, predict_slices, predict_slices_with, sliding_window, sliding_window_with,
    window_starts, SliceWise, SlidingWindow, Weighting,
};
use ssnet::metrics::index_map;
use ssnet::nn::{Arch, Model, ModelConfig, Pass};
use ssnet::ops;
use ssnet::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn la_h5(id: &str) -> PathBuf {
    data_dir()
        .join("la/2018LA_Seg_Training Set")
        .join(id)
        .join("mri_norm2.h5")
}

fn acdc_image(case: &str) -> PathBuf {
    data_dir().join("acdc/test").join(format!("{case}.nii.gz"))
}

const VNET: ModelConfig = ModelConfig {
    arch: Arch::VNet,
    in_channels: 1,
    num_classes: 2,
};
const UNET: ModelConfig = ModelConfig {
    arch: Arch::UNet,
    in_channels: 1,
    num_classes: 4,
};

fn window(
    patch: [usize; 3],
    stride_xy: usize,
    stride_z: usize,
    weighting: Weighting,
) -> SlidingWindow {
    SlidingWindow {
        patch,
        stride_xy,
        stride_z,
        weighting,
        batch: 0,
    }
}

/// A volume whose every voxel value encodes its position, in (0.05, 0.95).
fn coded(shape: [usize; 3]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    (0..n).map(|i| 0.05 + 0.9 * (i as f32 / n as f32)).collect()
}

/// Stand-in predictor: two classes, p0 = the input voxel, p1 = 1 - it.
fn identity_probs(x: &Tensor) -> ssnet::Result<Tensor> {
    let q = ops::affine(x, -1.0, 1.0)?;
    ops::concat_channels(&[x, &q])
}

// ---------------------------------------------------------------- planning (CPU)

#[test]
fn window_positions_and_padding_hand_computed() {
    // x: 40 ≥ 32, ceil(8 / 8) + 1 = 2 starts 0, 8. y: 20 < 32 → pad 12, 6 before, 6 after,
    // one start. z: 23 ≥ 16, ceil(7 / 4) + 1 = 3 starts 0, 4, min(8, 7) = 7.
    let w = window([32, 32, 16], 8, 4, Weighting::Uniform);
    let plan = w.plan([40, 20, 23]).unwrap();
    assert_eq!(plan.pad_before, [0, 6, 0]);
    assert_eq!(plan.padded, [40, 32, 23]);
    assert_eq!(plan.starts, [vec![0, 8], vec![0], vec![0, 4, 7]]);
    assert_eq!(plan.num_patches(), 6);
    assert_eq!(
        plan.patches(),
        vec![
            [0, 0, 0],
            [0, 0, 4],
            [0, 0, 7],
            [8, 0, 0],
            [8, 0, 4],
            [8, 0, 7]
        ]
    );
    // Odd padding: 32 - 19 = 13 → 6 before, 7 after.
    let plan = w.plan([19, 32, 16]).unwrap();
    assert_eq!((plan.pad_before, plan.padded), ([6, 0, 0], [32, 32, 16]));
    // SS-Net's LA setting on a 192×160×88 volume: 5 × 4 × 3 = 60... starts per axis:
    // x ceil(80/18)+1 = 6: 0,18,36,54,72,80; y 0,18,36,48; z ceil(8/4)+1 = 3: 0,4,8.
    let la = SlidingWindow::default().plan([192, 160, 88]).unwrap();
    assert_eq!(la.starts[0], vec![0, 18, 36, 54, 72, 80]);
    assert_eq!(la.starts[1], vec![0, 18, 36, 48]);
    assert_eq!(la.starts[2], vec![0, 4, 8]);
    assert_eq!(window_starts(112, 112, 18), vec![0]);
    // Settings that cannot work are refused with a message.
    for bad in [
        window([32, 0, 16], 8, 4, Weighting::Uniform),
        window([32, 32, 16], 0, 4, Weighting::Uniform),
        window([32, 32, 16], 40, 4, Weighting::Uniform),
    ] {
        let e = bad.plan([40, 40, 40]).unwrap_err().to_string();
        assert!(e.contains("sliding window"), "{e}");
    }
}

#[test]
fn gaussian_importance_is_nnunet_map() {
    let w = gaussian_importance([32, 32, 16]);
    assert_eq!(w.len(), 32 * 32 * 16);
    let at = |i: usize, j: usize, k: usize| w[(i * 32 + j) * 16 + k];
    assert_eq!(at(16, 16, 8), 1.0, "normalised to 1 at patch // 2");
    let min = w.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(min > 0.0, "no zero weight");
    // exp(-d²/(2σ²)) per axis: σ = 4 along x, 2 along z.
    assert!((at(12, 16, 8) as f64 - (-0.5f64).exp()).abs() < 1e-6);
    assert!((at(16, 16, 6) as f64 - (-0.5f64).exp()).abs() < 1e-6);
    assert!((at(0, 16, 8) as f64 - (-8.0f64).exp()).abs() < 1e-9);
}

// ---------------------------------------------------------------- accumulation (GPU)

/// With p0 = input, every patch's prediction at a voxel is the voxel's own value, so any
/// (weighted) average must give the image back: checks positions, padding and cropping.
#[test]
fn sliding_window_accumulation_returns_the_image() {
    let g = gpu();
    for (shape, weighting) in [
        ([40, 36, 20], Weighting::Uniform),
        ([20, 45, 17], Weighting::Gaussian),
        ([9, 7, 5], Weighting::Uniform),
        ([33, 17, 24], Weighting::Gaussian),
    ] {
        let img = coded(shape);
        let cfg = SlidingWindow {
            batch: 3,
            ..window([16, 16, 8], 5, 3, weighting)
        };
        let pred = sliding_window_with(&g, &img, shape, &cfg, 2, &mut identity_probs).unwrap();
        assert_eq!(pred.shape, shape);
        let p0 = pred.class_probs(0).unwrap();
        let p1 = pred.class_probs(1).unwrap();
        let worst = p0
            .iter()
            .zip(&img)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{shape:?} {weighting:?}: {} patches, worst |p0 - image| {worst:.2e}",
            cfg.plan(shape).unwrap().num_patches()
        );
        assert!(worst < 2e-6, "{shape:?} {weighting:?}: {worst}");
        for (l, p) in pred.labels.iter().zip(p1) {
            assert_eq!(*l, (*p > 0.5) as u8);
        }
    }
}

/// A constant prediction stays constant under the Gaussian weighting (the importance map is
/// normalised by the accumulated weights), with three classes and argmax labels.
#[test]
fn gaussian_weighting_constant_in_constant_out() {
    let g = gpu();
    let shape = [30, 21, 19];
    let cfg = window([16, 16, 16], 6, 5, Weighting::Gaussian);
    let mut constant = |x: &Tensor| -> ssnet::Result<Tensor> {
        let b = x.shape()[0];
        let one = |v: f32| Tensor::full(x.gpu(), &[b, 1, 16, 16, 16], v);
        let (a, c, d) = (one(0.2)?, one(0.5)?, one(0.3)?);
        ops::concat_channels(&[&a, &c, &d])
    };
    let pred = sliding_window_with(&g, &coded(shape), shape, &cfg, 3, &mut constant).unwrap();
    for (c, want) in [0.2f32, 0.5, 0.3].into_iter().enumerate() {
        let worst = pred
            .class_probs(c)
            .unwrap()
            .iter()
            .map(|p| (p - want).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "class {c}: worst {worst}");
    }
    assert!(pred.labels.iter().all(|&l| l == 1));
}

/// A real VNet on a volume smaller than the patch: one patch, the volume padded pad//2 before
/// and cropped back; the result equals the network's softmax on the hand-padded volume.
#[test]
fn small_volume_is_padded_and_cropped_back() {
    let g = gpu();
    let model = Model::init(&g, VNET, 7).unwrap();
    let shape = [20, 29, 10];
    let il = h5::read_image_label(la_h5("06SR5RBREL16DQ6M8LWS")).unwrap();
    let [_, sy, sz] = [il.shape[0], il.shape[1], il.shape[2]];
    let (x0, y0, z0) = (60, 50, 40);
    let mut img = Vec::new();
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                img.push(il.image[((x0 + x) * sy + y0 + y) * sz + z0 + z]);
            }
        }
    }
    let cfg = window([32, 32, 16], 8, 4, Weighting::Uniform);
    let t = Instant::now();
    let pred = sliding_window(&model, &img, shape, &cfg).unwrap();
    println!(
        "VNet sliding window on {shape:?}: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(pred.shape, shape);
    assert_eq!(pred.labels.len(), img.len());
    assert_eq!(pred.probs.len(), 2 * img.len());
    // By hand: pad (6, 6) along x, (1, 2) along y, (3, 3) along z.
    let (px, py, pz) = (6, 1, 3);
    let mut padded = vec![0f32; 32 * 32 * 16];
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                padded[((x + px) * 32 + y + py) * 16 + z + pz] =
                    img[(x * shape[1] + y) * shape[2] + z];
            }
        }
    }
    let xt = Tensor::from_f32(&g, &padded, &[1, 1, 32, 32, 16]).unwrap();
    let probs =
        ssnet::autograd::no_grad(|| ops::softmax(&model.forward(&xt, Pass::EVAL).unwrap().0))
            .unwrap()
            .to_f32()
            .unwrap();
    let mut want = Vec::new();
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                want.push(probs[32 * 32 * 16 + ((x + px) * 32 + y + py) * 16 + z + pz]);
            }
        }
    }
    let got: Vec<f64> = pred
        .class_probs(1)
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close("p1 vs hand-padded forward", &got, &want, 1e-6);
    for (l, p) in pred.labels.iter().zip(&want) {
        assert_eq!(*l, (*p > 0.5) as u8);
    }
}

// ---------------------------------------------------------------- 2D slices

/// A real ACDC crop [2, 30, 25]: the stand-in predictor pins the zoom in / argmax / zoom back
/// composition voxel by voxel, then a real UNet gives labels of the input's shape.
#[test]
fn slices_round_trip_on_acdc_crop() {
    let g = gpu();
    let v = nifti::read(acdc_image("patient001_frame01")).unwrap();
    let [_, hh, ww] = v.shape_zyx();
    let (shape, k0, r0, c0) = ([2, 30, 25], 4, 100, 90);
    let mut img = Vec::new();
    for k in 0..shape[0] {
        for r in 0..shape[1] {
            for c in 0..shape[2] {
                img.push(v.data[((k0 + k) * hh + r0 + r) * ww + c0 + c]);
            }
        }
    }
    // Stand-in: p0 = pixel, p1 = 1 - pixel → label 1 where the pixel < 0.5 (0 on ties).
    let cfg = SliceWise {
        size: [256, 256],
        batch: 0,
    };
    let pred = predict_slices_with(&g, &img, shape, &cfg, 2, true, &mut identity_probs).unwrap();
    assert_eq!(pred.shape, shape);
    let (rin, cin) = (index_map(30, 256), index_map(25, 256));
    let (rback, cback) = (index_map(256, 30), index_map(256, 25));
    for k in 0..2 {
        for r in 0..30 {
            for c in 0..25 {
                let src = img[(k * 30 + rin[rback[r]]) * 25 + cin[cback[c]]];
                let i = (k * 30 + r) * 25 + c;
                assert_eq!(
                    pred.labels[i],
                    (1.0 - src > src) as u8,
                    "slice {k} ({r}, {c})"
                );
                assert_eq!(pred.class_probs(0).unwrap()[i], src);
            }
        }
    }
    // A real UNet (4 classes) on the same crop (at 32×32: 256×256 takes a minute on lavapipe).
    let model = Model::init(&g, UNET, 3).unwrap();
    let t = Instant::now();
    let pred = predict_slices(
        &model,
        &img,
        shape,
        &SliceWise {
            size: [32, 32],
            batch: 0,
        },
        false,
    )
    .unwrap();
    println!(
        "UNet on {} slices at 32×32: {:.2} s",
        shape[0],
        t.elapsed().as_secs_f64()
    );
    assert_eq!((pred.shape, pred.labels.len()), (shape, img.len()));
    assert!(pred.labels.iter().all(|&l| l < 4));
    assert!(pred.probs.is_empty());
    // The wrong network for the pipeline is refused.
    let e = predict_slices(
        &Model::init(&g, VNET, 1).unwrap(),
        &img,
        shape,
        &SliceWise::default(),
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("2D model"), "{e}");
}

// ---------------------------------------------------------------- command line

fn ssnet(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssnet"))
        .args(args)
        .output()
        .unwrap()
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// A failed run: non-zero exit, exactly one line on stderr, no panic, mentioning `what`.
fn one_line_error(out: &std::process::Output, what: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    println!("stderr: {err}");
    assert!(!out.status.success(), "expected a failure: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for w in what {
        assert!(err.contains(w), "'{w}' not in: {err}");
    }
    err
}

fn save_model(dir: &Path, cfg: ModelConfig, seed: u64) -> PathBuf {
    let path = dir.join(format!("{}.safetensors", cfg.arch.name()));
    Model::init(&gpu(), cfg, seed)
        .unwrap()
        .save(&path, &Default::default(), &Default::default())
        .unwrap();
    path
}

/// A [36, 30, 16] crop of a real LA volume as NIfTI with a translated affine.
fn la_crop_nifti(path: &Path) -> nifti::Volume {
    let il = h5::read_image_label(la_h5("0RZDK210BSMWAA6467LU")).unwrap();
    let (sy, sz) = (il.shape[1], il.shape[2]);
    let shape = [36, 30, 16];
    let mut xyz = Vec::new();
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                xyz.push(il.image[((70 + x) * sy + 60 + y) * sz + 36 + z]);
            }
        }
    }
    let mut v = nifti::Volume::new(nifti::xyz_to_zyx(&xyz, shape), shape, [0.625; 3]).unwrap();
    v.header.srow_x[3] = 12.5;
    v.header.srow_y[3] = -7.25;
    v.header.srow_z[3] = 3.0;
    nifti::write_volume(path, &v.data, &v).unwrap();
    nifti::read(path).unwrap()
}

#[test]
fn cli_predict_vnet_on_a_real_crop() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = save_model(dir.path(), VNET, 11);
    let input = dir.path().join("la_crop.nii.gz");
    let vin = la_crop_nifti(&input);
    let out_dir = dir.path().join("out");
    let t = Instant::now();
    let out = ssnet(&[
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        input.as_os_str(),
        os("--output"),
        out_dir.as_os_str(),
        os("--patch"),
        os("32,32,16"),
        os("--stride-xy"),
        os("16"),
        os("--stride-z"),
        os("8"),
        os("--largest-cc"),
        os("--probabilities"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{stdout}{}({:.1} s)",
        String::from_utf8_lossy(&out.stderr),
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success());
    assert!(stdout.contains("[1/1] la_crop [36, 30, 16]"), "{stdout}");
    let labels = nifti::read(out_dir.join("la_crop.nii.gz")).unwrap();
    assert_eq!(labels.dims, vin.dims);
    assert_eq!(labels.affine, vin.affine);
    assert_eq!(labels.spacing, vin.spacing);
    let lab = labels.labels().unwrap();
    assert!(lab.iter().all(|&l| l <= 1));
    let prob = nifti::read(out_dir.join("la_crop_prob.nii.gz")).unwrap();
    assert_eq!((prob.dims, prob.affine), (vin.dims, vin.affine));
    assert!(prob.data.iter().all(|p| (0.0..=1.0).contains(p)));
    // The largest component is a subset of p1 > 0.5.
    for (l, p) in lab.iter().zip(&prob.data) {
        assert!(*l == 0 || *p > 0.5);
    }
}

/// Writes `n` slices of a 40×36 crop around the heart of a real ACDC case (image and label).
fn acdc_crop(case: &str, dir: &Path, name: &str) {
    let v = nifti::read(acdc_image(case)).unwrap();
    let gt = nifti::read(
        data_dir()
            .join("acdc/test")
            .join(format!("{case}_gt.nii.gz")),
    )
    .unwrap();
    let [s, hh, ww] = v.shape_zyx();
    let gl = gt.labels().unwrap();
    // The centre of the labelled voxels of the middle slice.
    let k0 = s / 2 - 1;
    let (mut rs, mut cs, mut n) = (0, 0, 0);
    for r in 0..hh {
        for c in 0..ww {
            if gl[(k0 * hh + r) * ww + c] != 0 {
                rs += r;
                cs += c;
                n += 1;
            }
        }
    }
    assert!(n > 0);
    let (h, w) = (40, 36);
    let (r0, c0) = (
        (rs / n).saturating_sub(h / 2).min(hh - h),
        (cs / n).saturating_sub(w / 2).min(ww - w),
    );
    let (mut img, mut lab) = (Vec::new(), Vec::new());
    for k in k0..k0 + 2 {
        for r in r0..r0 + h {
            for c in c0..c0 + w {
                img.push(v.data[(k * hh + r) * ww + c]);
                lab.push(gl[(k * hh + r) * ww + c]);
            }
        }
    }
    let vi = nifti::Volume::new(img, [w, h, 2], [1.0, 1.0, 10.0]).unwrap();
    nifti::write_volume(dir.join(format!("{name}.nii.gz")), &vi.data, &vi).unwrap();
    nifti::write_labels(dir.join(format!("{name}_gt.nii.gz")), &lab, &vi).unwrap();
}

#[test]
fn cli_eval_checkpoint_on_tiny_acdc_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("acdc");
    std::fs::create_dir_all(root.join("splits")).unwrap();
    std::fs::create_dir_all(root.join("test")).unwrap();
    acdc_crop("patient001_frame01", &root.join("test"), "caseA");
    acdc_crop("patient001_frame02", &root.join("test"), "caseB");
    std::fs::write(root.join("splits/test.list"), "caseA\ncaseB\n").unwrap();
    std::fs::write(root.join("splits/train.list"), "").unwrap();
    std::fs::write(root.join("splits/val.list"), "").unwrap();
    let ckpt = save_model(dir.path(), UNET, 5);
    let preds = dir.path().join("preds");
    let t = Instant::now();
    // Slices zoomed to 32×32 instead of 256×256 to keep lavapipe's time down.
    let out = ssnet(&[
        os("eval"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--data"),
        root.as_os_str(),
        os("--split"),
        os("test"),
        os("--save-pred"),
        preds.as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{stdout}{}({:.1} s)",
        String::from_utf8_lossy(&out.stderr),
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success());
    for w in [
        "[1/2] caseA",
        "[2/2] caseB",
        "mean",
        "RV",
        "Myo",
        "LV",
        "all",
    ] {
        assert!(stdout.contains(w), "'{w}' missing");
    }
    for case in ["caseA", "caseB"] {
        let p = nifti::read(preds.join(format!("{case}.nii.gz"))).unwrap();
        assert_eq!(p.dims, [36, 40, 2]);
        assert!(p.labels().unwrap().iter().all(|&l| l < 4));
    }
    let csv = std::fs::read_to_string(preds.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("case,class,dice,jaccard,hd95,asd,assd,hd")
    );
    assert_eq!(csv.lines().filter(|l| l.starts_with("case")).count(), 1 + 6);
    // The saved predictions scored by `eval --pred/--gt` give the same CSV.
    let csv2 = dir.path().join("again.csv");
    let out = ssnet(&[
        os("eval"),
        os("--pred"),
        preds.as_os_str(),
        os("--gt"),
        root.join("test").as_os_str(),
        os("--classes"),
        os("1,2,3"),
        os("--csv"),
        csv2.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&csv2).unwrap(), csv);
}

/// `predict` on an `.h5` and `eval --checkpoint` on a tiny LA layout (one 32×32×16 case cut
/// from a real file: one patch each). The corner of an LA crop holds no atrium, so the
/// metrics are those of an empty ground truth; the point is the LA path end to end.
#[test]
fn cli_predict_and_eval_on_a_tiny_la_h5() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("la");
    let h5path = root.join("2018LA_Seg_Training Set/CASE01/mri_norm2.h5");
    shrink_la_h5(&la_h5("1D7CUD1955YZPGK8XHJX"), &h5path, [32, 32, 16]);
    let il = h5::read_image_label(&h5path).unwrap();
    assert_eq!(il.shape, vec![32, 32, 16]);
    std::fs::write(root.join("train.list"), "CASE01\n").unwrap();
    std::fs::write(root.join("test.list"), "CASE01\n").unwrap();
    let ckpt = save_model(dir.path(), VNET, 4);
    let small = [
        "--patch",
        "32,32,16",
        "--stride-xy",
        "16",
        "--stride-z",
        "8",
    ]
    .map(os);
    let out_dir = dir.path().join("out");
    let mut args = vec![
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        h5path.as_os_str(),
        os("--output"),
        out_dir.as_os_str(),
        os("--largest-cc"),
    ];
    args.extend(small);
    let out = ssnet(&args);
    println!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    // An .h5 has no geometry: NIfTI dims [X, Y, Z], 0.625 mm, identity orientation.
    let v = nifti::read(out_dir.join("CASE01.nii.gz")).unwrap();
    assert_eq!((v.dims, v.spacing), ([32, 32, 16], [0.625; 3]));
    assert_eq!(
        v.affine,
        nalgebra::Matrix4::from_diagonal(&nalgebra::Vector4::new(0.625, 0.625, 0.625, 1.0))
    );

    let preds = dir.path().join("preds");
    let mut args = vec![
        os("eval"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--data"),
        root.as_os_str(),
        os("--save-pred"),
        preds.as_os_str(),
    ];
    args.extend(small);
    let out = ssnet(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(
        stdout.contains("LA")
            && stdout.contains("[1/1] CASE01 [32, 32, 16]")
            && stdout.contains("largest connected component kept"),
        "{stdout}"
    );
    // Same network, same largest-component step: the same label map as `predict`.
    let e = nifti::read(preds.join("CASE01.nii.gz")).unwrap();
    assert_eq!((e.dims, e.affine), (v.dims, v.affine));
    assert_eq!(e.labels().unwrap(), v.labels().unwrap());
    let csv = std::fs::read_to_string(preds.join("metrics.csv")).unwrap();
    assert!(csv.lines().any(|l| l.starts_with("CASE01,LA,")), "{csv}");
}

#[test]
fn cli_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = save_model(dir.path(), VNET, 2);
    let input = dir.path().join("vol.nii.gz");
    la_crop_nifti(&input);
    let out_dir = dir.path().join("out");
    let predict = |ckpt: &Path, input: &Path| {
        ssnet(&[
            os("predict"),
            os("--checkpoint"),
            ckpt.as_os_str(),
            os("--input"),
            input.as_os_str(),
            os("--output"),
            out_dir.as_os_str(),
            os("--patch"),
            os("32,32,16"),
        ])
    };

    // A missing input file.
    let missing = dir.path().join("nope.nii.gz");
    one_line_error(&predict(&ckpt, &missing), &["nope.nii.gz"]);

    // A checkpoint without one of its tensors.
    let mut c = ssnet::nn::checkpoint::read(&ckpt).unwrap();
    c.tensors
        .remove("encoder.block_three.conv.3.weight")
        .unwrap();
    let cut = dir.path().join("cut.safetensors");
    ssnet::nn::checkpoint::write(&cut, &c.tensors, &c.metadata).unwrap();
    one_line_error(
        &predict(&cut, &input),
        &["cut.safetensors", "encoder.block_three.conv.3.weight"],
    );

    // VNet tensors under a UNet configuration: the wrong architecture.
    let mut c = ssnet::nn::checkpoint::read(&ckpt).unwrap();
    c.metadata.insert(
        ssnet::nn::checkpoint::META_MODEL.into(),
        serde_json::to_string(&UNET).unwrap(),
    );
    let wrong = dir.path().join("wrong.safetensors");
    ssnet::nn::checkpoint::write(&wrong, &c.tensors, &c.metadata).unwrap();
    one_line_error(&predict(&wrong, &input), &["wrong.safetensors", "unet"]);

    // An .h5 without an `image` dataset (a real LA file with the name patched).
    let mut bytes = std::fs::read(la_h5("0RZDK210BSMWAA6467LU")).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"image\0")
        .expect("dataset name in the local heap");
    bytes[at..at + 5].copy_from_slice(b"imagf");
    let h5dir = dir.path().join("CASE01");
    std::fs::create_dir_all(&h5dir).unwrap();
    let bad_h5 = h5dir.join("mri_norm2.h5");
    std::fs::write(&bad_h5, &bytes).unwrap();
    one_line_error(
        &predict(&ckpt, &bad_h5),
        &["mri_norm2.h5", "no dataset 'image'"],
    );
    // The same through a folder: the LA layout's <ID>/mri_norm2.h5 is found and named.
    one_line_error(&predict(&ckpt, dir.path()), &["mri_norm2.h5", "'image'"]);

    // A patch the VNet cannot take.
    let out = ssnet(&[
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        input.as_os_str(),
        os("--output"),
        out_dir.as_os_str(),
        os("--patch"),
        os("30,32,16"),
    ]);
    one_line_error(&out, &["multiple of 16"]);

    // eval: a 2D checkpoint on the LA dataset.
    let unet = save_model(dir.path(), UNET, 1);
    let out = ssnet(&[
        os("eval"),
        os("--checkpoint"),
        unet.as_os_str(),
        os("--data"),
        data_dir().join("la").as_os_str(),
    ]);
    one_line_error(&out, &["unet.safetensors", "vnet"]);
    // eval: --checkpoint without --data, and a missing dataset.
    one_line_error(
        &ssnet(&[os("eval"), os("--checkpoint"), unet.as_os_str()]),
        &["--data"],
    );
    one_line_error(
        &ssnet(&[
            os("eval"),
            os("--checkpoint"),
            unet.as_os_str(),
            os("--data"),
            missing.as_os_str(),
        ]),
        &["nope.nii.gz"],
    );
    assert!(!out_dir.join("vol.nii.gz").exists());
}

// ---------------------------------------------------------------- never lose a file (issue 12)

/// A tiny real ACDC case `X.nii.gz` (+ `X_gt.nii.gz`) in `dir`, and a UNet checkpoint.
fn unet_and_case(dir: &Path) -> (PathBuf, PathBuf) {
    let scans = dir.join("scans");
    std::fs::create_dir_all(&scans).unwrap();
    acdc_crop("patient001_frame01", &scans, "caseA");
    (save_model(dir, UNET, 3), scans)
}

/// Issue 12 item 1: `predict --output` equal to the input folder would replace each scan by
/// its label map: refused in one line before anything is written, the scan untouched.
#[test]
fn cli_predict_never_writes_over_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, scans) = unet_and_case(dir.path());
    let scan = scans.join("caseA.nii.gz");
    let before = std::fs::read(&scan).unwrap();
    let out = ssnet(&[
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        scans.as_os_str(),
        os("--output"),
        scans.as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    one_line_error(&out, &["caseA.nii.gz", "would be written over an input"]);
    assert_eq!(std::fs::read(&scan).unwrap(), before);
    // The single file given as --input, its own folder as --output: the same.
    let out = ssnet(&[
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        scan.as_os_str(),
        os("--output"),
        scans.as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    one_line_error(&out, &["would be written over an input"]);
    assert_eq!(std::fs::read(&scan).unwrap(), before);
}

/// Issue 12 item 1: `eval --checkpoint --save-pred` into the split folder it reads would
/// replace each scan: refused, nothing written.
#[test]
fn cli_eval_save_pred_never_writes_over_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("acdc");
    for s in ["splits", "test", "val"] {
        std::fs::create_dir_all(root.join(s)).unwrap();
    }
    acdc_crop("patient001_frame01", &root.join("val"), "caseA");
    std::fs::write(root.join("splits/val.list"), "caseA\n").unwrap();
    std::fs::write(root.join("splits/train.list"), "").unwrap();
    std::fs::write(root.join("splits/test.list"), "").unwrap();
    let ckpt = save_model(dir.path(), UNET, 5);
    let scan = root.join("val/caseA.nii.gz");
    let before = std::fs::read(&scan).unwrap();
    let out = ssnet(&[
        os("eval"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--data"),
        root.as_os_str(),
        os("--split"),
        os("val"),
        os("--save-pred"),
        root.join("val").as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    one_line_error(&out, &["would be written over an input", "--save-pred"]);
    assert_eq!(std::fs::read(&scan).unwrap(), before);
    assert!(!root.join("val/metrics.csv").exists());

    // Item 9: a label map whose affine disagrees with its image's: evaluated on the voxel
    // grid, with a warning naming both files.
    let gt = root.join("val/caseA_gt.nii.gz");
    let mut v = nifti::read(&gt).unwrap();
    v.header.srow_y[3] -= 50.0;
    let labels = v.labels().unwrap();
    nifti::write_labels(&gt, &labels, &v).unwrap();
    let preds = dir.path().join("preds");
    let out = ssnet(&[
        os("eval"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--data"),
        root.as_os_str(),
        os("--split"),
        os("val"),
        os("--save-pred"),
        preds.as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning")
            && err.contains("caseA_gt.nii.gz")
            && err.contains("affines disagree"),
        "{err}"
    );
    assert!(preds.join("caseA.nii.gz").is_file());
}

/// Issue 12 item 4: a patch no adapter can hold is refused at once with the limit, instead
/// of filling the host memory.
#[test]
fn cli_predict_patch_beyond_the_adapter_states_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, scans) = unet_and_case(dir.path());
    let t = Instant::now();
    let out = ssnet(&[
        os("predict"),
        os("--checkpoint"),
        ckpt.as_os_str(),
        os("--input"),
        scans.as_os_str(),
        os("--output"),
        dir.path().join("out").as_os_str(),
        os("--patch"),
        os("65536,65536"),
    ]);
    one_line_error(&out, &["--patch [65536, 65536]", "largest buffer", "GiB"]);
    assert!(t.elapsed().as_secs_f64() < 60.0, "{:?}", t.elapsed());
    assert!(!dir.path().join("out").exists());
}

/// Issue 12 items 7 and 12: a checkpoint with a NaN weight is refused by `predict` and
/// `eval --checkpoint` (no all-background prediction with exit 0); a folder given as the
/// checkpoint is named a folder, with the checkpoints it holds.
#[test]
fn cli_refuses_non_finite_checkpoints_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, scans) = unet_and_case(dir.path());
    let mut c = ssnet::nn::checkpoint::read(&ckpt).unwrap();
    c.tensors.get_mut("decoder.out_conv.weight").unwrap().0[3] = f32::NAN;
    let bad = dir.path().join("nan.safetensors");
    ssnet::nn::checkpoint::write(&bad, &c.tensors, &c.metadata).unwrap();
    let out_dir = dir.path().join("out");
    let predict = |ckpt: &Path| {
        ssnet(&[
            os("predict"),
            os("--checkpoint"),
            ckpt.as_os_str(),
            os("--input"),
            scans.as_os_str(),
            os("--output"),
            out_dir.as_os_str(),
            os("--patch"),
            os("32,32"),
        ])
    };
    one_line_error(
        &predict(&bad),
        &[
            "nan.safetensors",
            "decoder.out_conv.weight",
            "NaN or infinite",
        ],
    );
    let out = ssnet(&[
        os("eval"),
        os("--checkpoint"),
        bad.as_os_str(),
        os("--data"),
        scans.as_os_str(),
        os("--patch"),
        os("32,32"),
    ]);
    one_line_error(&out, &["nan.safetensors", "NaN or infinite"]);
    assert!(!out_dir.exists());
    // A run folder as the checkpoint.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::copy(&ckpt, run.join("best.safetensors")).unwrap();
    one_line_error(&predict(&run), &["is a folder", "best.safetensors"]);
}

/// Issue 12 item 7: non-finite probabilities stop both pipelines with a message (they
/// would argmax to an all-background segmentation).
#[test]
fn non_finite_probabilities_stop_prediction() {
    let g = gpu();
    let nan = |x: &Tensor| -> ssnet::Result<Tensor> {
        let s = x.shape();
        let n: usize = s.iter().product::<usize>() * 2;
        let mut shape = s.to_vec();
        shape[1] = 2;
        Tensor::from_f32(x.gpu(), &vec![f32::NAN; n], &shape)
    };
    let img: Vec<f32> = (0..2 * 20 * 18).map(|i| (i % 7) as f32).collect();
    let cfg = SliceWise {
        size: [32, 32],
        batch: 0,
    };
    let e = predict_slices_with(&g, &img, [2, 20, 18], &cfg, 2, false, &mut |x| nan(x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite probabilities"), "{e}");
    let w = SlidingWindow {
        patch: [16, 16, 16],
        stride_xy: 8,
        stride_z: 8,
        weighting: Weighting::Uniform,
        batch: 0,
    };
    let img: Vec<f32> = (0..20 * 18 * 16).map(|i| (i % 7) as f32).collect();
    let e = sliding_window_with(&g, &img, [20, 18, 16], &w, 2, &mut |x| nan(x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite probability"), "{e}");
}

/// Issue 12 item 11: a selector from SSNET_DEVICE is named as such; with no driver found
/// while VK_ICD_FILENAMES is set, the message says so and to what.
#[test]
fn cli_device_errors_name_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, scans) = unet_and_case(dir.path());
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ssnet"));
        c.args([
            os("predict"),
            os("--checkpoint"),
            ckpt.as_os_str(),
            os("--input"),
            scans.as_os_str(),
            os("--output"),
            dir.path().join("out").as_os_str(),
        ]);
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    one_line_error(
        &run(&[("SSNET_DEVICE", "no-such-gpu-xyz")]),
        &["SSNET_DEVICE='no-such-gpu-xyz'", "matches no adapter"],
    );
    one_line_error(
        &run(&[("VK_ICD_FILENAMES", "/nonexistent/icd.json")]),
        &[
            "no GPU adapter found",
            "VK_ICD_FILENAMES='/nonexistent/icd.json'",
        ],
    );
}
