//! AD-MT's GPU kernels against their float64 twins (`ssnet::reference::admt`,
//! `ssnet::admt::cutmix`), on shapes that are not workgroup multiples.

mod common;
use common::{assert_close, down, gpu, upload};
use rand::SeedableRng;
use ssnet::ops::{self, IGNORE};
use ssnet::reference::admt as r;
use ssnet::tensor::Tensor;

const N: usize = 2;
const C: usize = 3;
const DIMS: [usize; 3] = [5, 7, 3];
const S: usize = 5 * 7 * 3;

fn softmax_twin(z: &[f64], n: usize, c: usize) -> Vec<f64> {
    let s = z.len() / (n * c);
    let mut p = z.to_vec();
    for b in 0..n {
        for v in 0..s {
            let m = (0..c)
                .map(|k| z[(b * c + k) * s + v])
                .fold(f64::NEG_INFINITY, f64::max);
            let t: f64 = (0..c).map(|k| (z[(b * c + k) * s + v] - m).exp()).sum();
            for k in 0..c {
                p[(b * c + k) * s + v] = (z[(b * c + k) * s + v] - m).exp() / t;
            }
        }
    }
    p
}

/// f32-rounded probabilities (what the GPU holds), back in f64.
fn probs(seed: u64, scale: f64) -> Vec<f64> {
    let z: Vec<f64> = ssnet::reference::normal(seed, N * C * S)
        .iter()
        .map(|x| x * scale)
        .collect();
    softmax_twin(&z, N, C)
        .iter()
        .map(|&v| v as f32 as f64)
        .collect()
}

fn shape() -> Vec<usize> {
    vec![N, C, DIMS[0], DIMS[1], DIMS[2]]
}

fn map_shape() -> Vec<usize> {
    vec![N, DIMS[0], DIMS[1], DIMS[2]]
}

fn u32s(t: &Tensor) -> Vec<u32> {
    t.to_u32().unwrap()
}

#[test]
fn teacher_fuse_matches_the_twin() {
    let g = gpu();
    let (p1, p2) = (probs(1, 2.0), probs(2, 1.0));
    for (mode, tau) in [
        (r::Fusion::Entropy, 1.0),
        (r::Fusion::Mean, 1.0),
        (r::Fusion::Entropy, 0.5),
    ] {
        let maps = ops::admt::teacher_fuse(
            &upload(&g, &p1, &shape()),
            &upload(&g, &p2, &shape()),
            mode,
            tau as f32,
        )
        .unwrap();
        let q = r::fuse(&p1, &p2, N, C, mode, tau);
        let (conf, label) = r::max_argmax(&q, N, C);
        let (_, a1) = r::max_argmax(&p1, N, C);
        let (_, a2) = r::max_argmax(&p2, N, C);
        assert_close(
            &format!("conf {mode:?} tau {tau}"),
            &down(&maps.conf),
            &conf,
            1e-5,
        );
        assert_eq!(u32s(&maps.label), label, "label {mode:?} tau {tau}");
        let conflict: Vec<u32> = a1.iter().zip(&a2).map(|(a, b)| (a != b) as u32).collect();
        assert_eq!(u32s(&maps.conflict), conflict);
        assert!(
            conflict.contains(&1) && conflict.contains(&0),
            "the data must exercise both"
        );
    }
    let bad = ops::admt::teacher_fuse(
        &upload(&g, &p1, &shape()),
        &upload(&g, &p2[..N * C * S - 3], &[N * C * S - 3]),
        r::Fusion::Entropy,
        1.0,
    );
    assert!(bad.is_err());
}

#[test]
fn student_max_and_targets_match_the_twin() {
    let g = gpu();
    let z: Vec<f64> = ssnet::reference::normal(5, N * C * S)
        .iter()
        .map(|&x| (x * 2.0) as f32 as f64)
        .collect();
    let (label_s, conf_s) = ops::admt::student_max(&upload(&g, &z, &shape())).unwrap();
    let (cs, ls) = r::max_argmax(&softmax_twin(&z, N, C), N, C);
    assert_close("student conf", &down(&conf_s), &cs, 1e-6);
    assert_eq!(u32s(&label_s), ls);

    let (p1, p2) = (probs(6, 2.0), probs(7, 2.0));
    let maps = ops::admt::teacher_fuse(
        &upload(&g, &p1, &shape()),
        &upload(&g, &p2, &shape()),
        r::Fusion::Entropy,
        1.0,
    )
    .unwrap();
    let threshold = 0.6;
    let target = ops::admt::compromise_targets(&maps, &label_s, &conf_s, threshold as f32).unwrap();
    // The twin on the GPU's own maps (their f32 rounding), so that only the logic is compared.
    let mut label = u32s(&maps.label);
    let mut conf = down(&maps.conf);
    let conflict: Vec<bool> = u32s(&maps.conflict).iter().map(|&c| c != 0).collect();
    let before = label.clone();
    r::compromise(
        &mut label,
        &mut conf,
        &conflict,
        &u32s(&label_s),
        &down(&conf_s),
    );
    let want: Vec<u32> = label
        .iter()
        .zip(&conf)
        .map(|(&l, &c)| if c >= threshold { l } else { IGNORE })
        .collect();
    assert_eq!(u32s(&target), want);
    assert!(label != before, "the data must exercise the compromise");
    assert!(want.contains(&IGNORE) && want.iter().any(|&l| l != IGNORE));
}

fn labels_with_ignored(seed: u64) -> Vec<u32> {
    ssnet::reference::normal(seed, N * S)
        .iter()
        .map(|&x| {
            if x < -0.7 {
                IGNORE
            } else {
                ((x.abs() * 5.0) as u32) % C as u32
            }
        })
        .collect()
}

#[test]
fn masked_cross_entropy_matches_the_twin() {
    let g = gpu();
    let z: Vec<f64> = ssnet::reference::normal(8, N * C * S)
        .iter()
        .map(|&x| (x * 2.0) as f32 as f64)
        .collect();
    for labels in [labels_with_ignored(9), vec![IGNORE; N * S]] {
        let valid: Vec<bool> = labels.iter().map(|&l| l != IGNORE).collect();
        let lab = Tensor::from_u32(&g, &labels, &map_shape()).unwrap();
        let x = upload(&g, &z, &shape()).with_grad();
        let loss = ops::masked_cross_entropy(&x, &lab).unwrap();
        let (want, gwant) = r::masked_ce(&z, &labels, &valid, N, C);
        let got = loss.item().unwrap() as f64;
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1e-6),
            "loss {got} vs {want}"
        );
        let gr = ssnet::autograd::backward(&loss).unwrap();
        let gx = down(gr.get(&x).unwrap());
        if valid.iter().any(|&v| v) {
            assert_close("masked CE gradient", &gx, &gwant, 1e-5);
        } else {
            assert!(
                got == 0.0 && gx.iter().all(|&v| v == 0.0),
                "all ignored: loss {got}"
            );
        }
    }
}

#[test]
fn admt_dice_with_ignored_voxels_matches_the_twin() {
    let g = gpu();
    let p = probs(10, 1.5);
    let labels = labels_with_ignored(11);
    let valid: Vec<bool> = labels.iter().map(|&l| l != IGNORE).collect();
    let lab = Tensor::from_u32(&g, &labels, &map_shape()).unwrap();
    let x = upload(&g, &p, &shape()).with_grad();
    let loss = ops::dice_loss(
        &x,
        ops::DiceTarget::Labels(&lab),
        ops::DiceKind::MeanClassesAdmt,
    )
    .unwrap();
    let (want, gwant) = r::masked_dice(&p, &labels, &valid, N, C);
    let got = loss.item().unwrap() as f64;
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "loss {got} vs {want}"
    );
    let gr = ssnet::autograd::backward(&loss).unwrap();
    assert_close(
        "masked Dice gradient",
        &down(gr.get(&x).unwrap()),
        &gwant,
        1e-5,
    );
}

#[test]
fn cutmix_and_ema_match_the_cpu() {
    let g = gpu();
    let mut rng = rand_pcg::Pcg32::seed_from_u64(12);
    let n = 3;
    // 3-D images with a channel axis, and 2-D u32 maps.
    let draw = ssnet::admt::cutmix::CutMix::draw(n, &DIMS, &mut rng);
    let boxes = Tensor::from_u32(&g, &ops::admt::cutmix_boxes(&draw).unwrap(), &[n * 7]).unwrap();
    let x: Vec<f32> = (0..n * 2 * S).map(|i| i as f32).collect();
    let xs = [vec![n, 2], DIMS.to_vec()].concat();
    let got = ops::admt::cutmix(&Tensor::from_f32(&g, &x, &xs).unwrap(), &boxes, 3).unwrap();
    assert_eq!(got.to_f32().unwrap(), draw.apply(&x, 2, &DIMS));
    let hw = [9usize, 6];
    let draw2 = ssnet::admt::cutmix::CutMix::draw(n, &hw, &mut rng);
    let boxes2 = Tensor::from_u32(&g, &ops::admt::cutmix_boxes(&draw2).unwrap(), &[n * 7]).unwrap();
    let m: Vec<u32> = (0..n * 54).map(|i| i as u32).collect();
    let got2 =
        ops::admt::cutmix(&Tensor::from_u32(&g, &m, &[n, 9, 6]).unwrap(), &boxes2, 2).unwrap();
    let want2 = draw2.apply(&m, 1, &hw);
    assert_eq!(got2.to_u32().unwrap(), want2);
    assert!(
        want2 != m || draw2.perm.iter().enumerate().all(|(i, &p)| i == p),
        "the draw must mix something"
    );

    let t: Vec<f64> = ssnet::reference::normal(13, 1000);
    let s: Vec<f64> = ssnet::reference::normal(14, 1000);
    let (tt, st) = (upload(&g, &t, &[10, 100]), upload(&g, &s, &[10, 100]));
    ops::admt::ema_into(&tt, &st, 0.99).unwrap();
    let want: Vec<f64> = t
        .iter()
        .zip(&s)
        .map(|(a, b)| 0.99 * (*a as f32 as f64) + 0.01 * (*b as f32 as f64))
        .collect();
    assert_close("ema", &down(&tt), &want, 1e-6);
    assert!(ops::admt::ema_into(&tt, &upload(&g, &s[..100], &[100]), 0.5).is_err());
}

/// Tensor lengths around the 256-wide workgroup (1, 255, 256, 257, ...) and odd ones, 20 of
/// them: more than one dispatch at every width.
const EMA_LENS: [usize; 20] = [
    1, 3, 64, 255, 256, 257, 511, 1000, 4097, 77, 5, 300, 12, 999, 2, 129, 700, 33, 1, 258,
];

fn ema_pairs(g: &std::sync::Arc<ssnet::gpu::Gpu>, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let t = EMA_LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| upload(g, &ssnet::reference::normal(seed + i as u64, n), &[n]))
        .collect();
    let s = EMA_LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| upload(g, &ssnet::reference::normal(seed + 100 + i as u64, n), &[n]))
        .collect();
    (t, s)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_f32().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The grouped EMA at every width (16, 8, 4 pairs per dispatch, and 1: the per-tensor
/// fallback) gives the per-tensor kernel's bits, is within f32 rounding of the f64 twin,
/// and takes ⌈20 / width⌉ dispatches (width capped by the device; counted on a device of its
/// own).
#[test]
fn grouped_ema_gives_the_per_tensor_bits_in_few_dispatches() {
    let g = common::new_gpu();
    // 16 with 32 storage buffers per stage (lavapipe), 4 under SSNET_LIMITS=webgpu.
    let slots = ops::ema::ema_slots(&g);
    assert!(
        slots >= 4,
        "every WebGPU adapter offers 8 storage buffers: {slots}"
    );
    for alpha in [0.99f32, 0.0, 0.37] {
        for width in [16usize, 8, 4, 1] {
            let (t, s) = ema_pairs(&g, 40);
            let (want_t, _) = ema_pairs(&g, 40);
            for (wt, st) in want_t.iter().zip(&s) {
                ops::admt::ema_into(wt, st, alpha).unwrap();
            }
            let pairs: Vec<(&Tensor, &Tensor)> = t.iter().zip(&s).collect();
            g.sync().unwrap();
            let before = g.dispatches();
            ops::ema::ema_many_with(&pairs, alpha, width).unwrap();
            let dispatched = g.dispatches() - before;
            assert_eq!(
                dispatched,
                EMA_LENS.len().div_ceil(width.min(slots)) as u64,
                "width {width}: dispatches"
            );
            for (i, (got, want)) in t.iter().zip(&want_t).enumerate() {
                assert_eq!(
                    bits(got),
                    bits(want),
                    "alpha {alpha} width {width} tensor {i}"
                );
                let (t0, s0) = (
                    ssnet::reference::normal(40 + i as u64, EMA_LENS[i]),
                    ssnet::reference::normal(140 + i as u64, EMA_LENS[i]),
                );
                let f32s = |v: &[f64]| ssnet::reference::to_f64(&ssnet::reference::to_f32(v));
                let twin = r::ema(&f32s(&t0), &f32s(&s0), alpha as f64);
                assert_close(&format!("ema tensor {i}"), &down(got), &twin, 1e-6);
            }
        }
    }
}

/// `ema_teacher` (what the AD-MT step calls) over a whole VNet: every parameter and running
/// statistic gets the per-tensor kernel's bits, in ⌈176 / 16⌉ = 11 dispatches instead of 176
/// (44 under WebGPU's limits).
#[test]
fn ema_teacher_blends_a_whole_vnet_in_eleven_dispatches() {
    use ssnet::nn::{Arch, Model, ModelConfig, Variant};
    let g = common::new_gpu();
    let cfg = ModelConfig {
        arch: Arch::VNet,
        in_channels: 1,
        num_classes: 2,
    };
    let init = |seed| Model::init_variant(&g, cfg, Variant::Admt, seed).unwrap();
    let (student, teacher, reference) = (init(1), init(2), init(2));
    // Running statistics that are not the initial 0 / 1, so the buffers' blend shows.
    for (name, b) in student.buffers() {
        let v = ssnet::reference::normal(name.len() as u64, b.numel());
        b.write_f32(&ssnet::reference::to_f32(&v)).unwrap();
    }
    let tensors = teacher.params().len() + teacher.buffers().len();
    assert_eq!(tensors, 176);
    g.sync().unwrap();
    let before = g.dispatches();
    ssnet::admt::ema_teacher(&teacher, &student, 0.99).unwrap();
    let want = match ops::ema::ema_slots(&g) {
        16 => 11,
        8 => 22,
        4 => 44,
        s => panic!("{s} slots per dispatch"),
    };
    assert_eq!(g.dispatches() - before, want);
    let before = g.dispatches();
    for (name, t) in reference.params().iter().chain(reference.buffers()) {
        ops::admt::ema_into(t, student.get(name).unwrap(), 0.99).unwrap();
    }
    assert_eq!(g.dispatches() - before, 176);
    let (got, want) = (teacher.state().unwrap(), reference.state().unwrap());
    for (name, w) in &want {
        let same = got[name]
            .iter()
            .zip(w)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{name}: grouped EMA differs from the per-tensor kernel"
        );
    }
    // And it moved: a teacher is not its own init any more.
    let untouched = init(2).state().unwrap();
    assert!(got.iter().any(|(k, v)| v != &untouched[k]));
}

#[test]
fn grouped_ema_refuses_bad_pairs_naming_the_op() {
    let g = gpu();
    let a = upload(&g, &ssnet::reference::normal(1, 10), &[10]);
    let b = upload(&g, &ssnet::reference::normal(2, 10), &[10]);
    let c = upload(&g, &ssnet::reference::normal(3, 12), &[12]);
    let cases: [(&[(&Tensor, &Tensor)], &str); 4] = [
        (&[(&a, &c)], "same shapes"),
        (&[(&a, &b), (&a, &b)], "share a teacher"),
        (&[(&a, &a)], "share a teacher"),
        (&[(&a, &b), (&b, &a)], "share a teacher"),
    ];
    for (pairs, why) in cases {
        let e = ops::ema::ema_many(pairs, 0.5).unwrap_err().to_string();
        assert!(
            e.contains("ema") && e.contains(why) && !e.contains('\n'),
            "{e}"
        );
    }
    let u = Tensor::from_u32(&g, &[1; 10], &[10]).unwrap();
    assert!(ops::ema::ema_many(&[(&a, &u)], 0.5).is_err());
    ops::ema::ema_many(&[], 0.5).unwrap();
}

/// Under WebGPU's default limits (8 storage buffers per stage) the grouped EMA takes 4
/// pairs per dispatch and still gives the per-tensor bits.
#[test]
fn grouped_ema_under_webgpu_limits_takes_four_pairs_per_dispatch() {
    let g = ssnet::gpu::Gpu::with_options(
        std::env::var("SSNET_DEVICE").ok().as_deref(),
        ssnet::gpu::GpuOptions {
            limits: ssnet::gpu::LimitsMode::WebGpu,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    assert_eq!(g.limits.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(ops::ema::ema_slots(&g), 4);
    let (t, s) = ema_pairs(&g, 7);
    let (want, _) = ema_pairs(&g, 7);
    for (w, st) in want.iter().zip(&s) {
        ops::admt::ema_into(w, st, 0.9).unwrap();
    }
    let pairs: Vec<(&Tensor, &Tensor)> = t.iter().zip(&s).collect();
    let before = g.dispatches();
    ops::ema::ema_many(&pairs, 0.9).unwrap();
    assert_eq!(g.dispatches() - before, 5);
    for (i, (got, w)) in t.iter().zip(&want).enumerate() {
        assert_eq!(bits(got), bits(w), "tensor {i}");
    }
}
